"""Sink commit checks: the Check protocol, the registry, and the built-in kinds."""

from backfill.checks.base import Check, CheckResult, CheckSpec, CheckStatus

__all__ = ["Check", "CheckResult", "CheckSpec", "CheckStatus"]
