"""What a notification says, per event, and its body for each kind of webhook."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from backfill import events as ev
from backfill.chain import LedgerEvent
from backfill.timeutil import format_utc

# The events a supervisor hears of, and how each reads.
HEADLINES = {
    ev.REQUESTED: "requested: awaiting approval",
    ev.APPROVED: "approved",
    ev.REJECTED: "rejected",
    ev.CANARY_PAUSED: "paused after its canary windows: awaiting approval",
    ev.WINDOW_NEEDS_OPERATOR: "a window needs an operator",
    ev.COMPLETED: "completed",
    ev.FAILED: "failed",
}
WINDOW_FAILED = "a window failed"


@dataclass(frozen=True)
class Notice:
    event: str
    backfill_id: str
    headline: str
    actor: str
    at: str
    window: str | None
    detail: str | None
    link: str


def notice_for(event: LedgerEvent, console_url: str) -> Notice | None:
    """The notice an event gives, or None for the events nobody is told of."""
    headline = HEADLINES.get(event.kind)
    payload: Mapping[str, Any] = event.payload
    if event.kind == ev.WINDOW_FINISHED and payload.get("status") == "Failed":
        headline = WINDOW_FAILED
    if headline is None or not event.backfill_id:
        return None
    detail = payload.get("reason") or payload.get("message") or payload.get("note")
    link = f"{console_url.rstrip('/')}/backfills/{quote(event.backfill_id, safe='')}"
    return Notice(
        event=event.kind,
        backfill_id=event.backfill_id,
        headline=headline,
        actor=f"{event.actor} ({event.identity_source})",
        at=format_utc(event.at),
        window=event.window_key,
        detail=str(detail)[:500] if detail else None,
        link=link,
    )


def _facts(notice: Notice) -> list[tuple[str, str]]:
    facts = [("Backfill", notice.backfill_id), ("By", notice.actor), ("At", notice.at)]
    if notice.window:
        facts.append(("Window", notice.window))
    if notice.detail:
        facts.append(("Why", notice.detail))
    return facts


def body(kind: str, notice: Notice) -> dict[str, Any]:
    """The JSON body to POST for a ``teams``, ``slack`` or ``json`` target."""
    title = f"Backfill {notice.backfill_id} {notice.headline}"
    if kind == "teams":
        card = {
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True},
                {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(notice)]},
            ],
            "actions": [{"type": "Action.OpenUrl", "title": "Open in the console", "url": notice.link}],
        }
        return {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }
    if kind == "slack":
        lines = "\n".join(f"*{k}:* {v}" for k, v in _facts(notice))
        return {
            "text": title,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{lines}"}},
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Open in the console"},
                            "url": notice.link,
                        }
                    ],
                },
            ],
        }
    return {
        "event": notice.event,
        "backfill_id": notice.backfill_id,
        "headline": notice.headline,
        "actor": notice.actor,
        "at": notice.at,
        "window": notice.window,
        "detail": notice.detail,
        "link": notice.link,
    }
