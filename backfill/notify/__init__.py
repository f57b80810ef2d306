"""Notifications: webhook messages (Microsoft Teams, Slack, generic JSON) for a backfill's events."""
