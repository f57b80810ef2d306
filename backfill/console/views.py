"""What the console's pages show, as plain values for the templates (formatting only, no rules).

A backfill's page reads the frozen request and the state the ledger derives, and shows one page of
its windows at a time (filtered by decision), so a 35,040-window backfill opens as fast as a small
one: the per-window evidence is looked up only for the rows on the page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from backfill.backfills import BackfillRecord, BackfillStatus, Decided
from backfill.console.calls import Listed, progress_of
from backfill.console.frozen import Shown
from backfill.progress import window_duration
from backfill.secrets import redact_payload
from backfill.timeutil import format_duration, format_utc

PAGE_SIZE = 100
ADF_MONITOR = "https://adf.azure.com/en/monitoring/pipelineruns/"
_PENDING_FIRST = {BackfillStatus.REQUESTED: 0, BackfillStatus.PAUSED: 1, BackfillStatus.APPROVED: 2}


def redacted(text: str | None) -> str | None:
    """Free text held to the ledger's redaction rule, exactly as the report does."""
    if text is None:
        return None
    value = redact_payload({"note": text})["note"]
    return str(value) if value is not None else None


def decided(item: Decided | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"actor": item.actor, "source": item.source, "at": format_utc(item.at), "note": redacted(item.note)}


def monitor_url(record: BackfillRecord, run_id: str) -> str:
    """The ADF Studio monitoring page of one run of this backfill's factory."""
    frozen = record.preview.get("factory") if record.preview else None
    if isinstance(frozen, Mapping):
        sub, group, factory = frozen["subscription_id"], frozen["resource_group"], frozen["factory"]
    else:
        sub, group, factory = [*record.factory_key.split("/"), "", "", ""][:3]
    resource = f"/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.DataFactory/factories/{factory}"
    return f"{ADF_MONITOR}{quote(run_id, safe='')}?{urlencode({'factory': resource})}"


def listing(items: Sequence[Listed], now: datetime) -> list[dict[str, Any]]:
    """Backfills, pending ones first (awaiting approval, then paused, then approved), newest first."""
    ordered = sorted(items, key=lambda i: (_PENDING_FIRST.get(i.state.status, 3), -i.record.requested_at.timestamp()))
    rows = []
    for item in ordered:
        record, state, progress = item.record, item.state, item.progress
        rows.append(
            {
                "id": record.id,
                "title": record.title,
                "pipeline": record.pipeline,
                "state": state.status.value,
                "pending": state.status in _PENDING_FIRST,
                "requester": f"{record.requester} ({record.requester_source})",
                "requested_at": format_utc(record.requested_at),
                "age": format_duration(now - record.requested_at),
                "expires_at": format_utc(state.expires_at) or "",
                "to_run": len(record.runnable_keys),
                "done": progress.done,
                "total": progress.total,
            }
        )
    return rows


@dataclass(frozen=True)
class Page:
    number: int
    count: int
    decision: str | None
    total: int


def _checks(frozen: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not frozen:
        return []
    shown = []
    for check in frozen.get("checks") or ():
        if not isinstance(check, Mapping):
            continue
        found = check.get("evidence")
        evidence: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        shown.append(
            {
                "name": check.get("check"),
                "status": check.get("status"),
                "found": evidence.get("committed"),
                "expected": evidence.get("expected"),
                "reason": check.get("reason"),
            }
        )
    return shown


def backfill_page(shown: Shown, now: datetime, *, decision: str | None, page: int) -> dict[str, Any]:
    """Everything the backfill page shows, for one page of windows."""
    record, state = shown.record, shown.state
    progress = progress_of(record, state, now)
    summary = Counter(record.decisions.values())
    keys = [k for k, d in record.decisions.items() if decision is None or d == decision]
    count = max(1, -(-len(keys) // PAGE_SIZE))
    number = min(max(page, 1), count)
    keys_shown = keys[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    frozen = shown.windows.get(keys_shown)
    windows = []
    for key in keys_shown:
        w = state.windows[key]
        run_id = w["run_id"]
        windows.append(
            {
                "key": key,
                "decision": w["decision"],
                "reason": redacted((frozen.get(key) or {}).get("reason") or w["reason"]),
                "checks": _checks(frozen.get(key)),
                "state": w["state"],
                "run_id": run_id,
                "run_url": monitor_url(record, run_id) if run_id else None,
                "status": w["status"] or "",
                "duration": format_duration(window_duration(w, now)),
                "accepted": w["accepted"],
                "acceptable": w["decision"] == "blocked-partial" and key not in state.accepted_windows,
            }
        )
    live = state.status in (BackfillStatus.RUNNING, BackfillStatus.APPROVED)
    return {
        "id": record.id,
        "title": record.title,
        "ticket": record.ticket,
        "target": f"{record.pipeline} in {record.factory_key}",
        "plan_path": record.plan_path,
        "plan_hash": record.plan_hash,
        "state": state.status.value,
        "requester": f"{record.requester} ({record.requester_source})",
        "requested_at": format_utc(record.requested_at),
        "age": format_duration(now - record.requested_at),
        "note": redacted(record.note),
        "expires_at": format_utc(state.expires_at) or "",
        "policy": record.policy,
        "approvals": [decided(a) for a in state.approval_events],
        "required": state.required,
        "rejection": decided(state.rejection),
        "canary": {
            "windows": record.policy.canary,
            "paused": state.canary_paused and not state.canary_approved,
            "approval": decided(state.canary_approval),
        },
        "acceptances": [{"key": k, **(decided(d) or {})} for k, d in sorted(state.acceptances.items())],
        "stop_requested": state.stop_requested,
        "progress": {
            "done": progress.done,
            "running": progress.running,
            "left": progress.left,
            "failed": progress.failed,
            "total": progress.total,
            "estimated_finish": format_utc(progress.estimated_finish) if progress.estimated_finish else "",
        },
        "summary": sorted(summary.items()),
        "blocked_partial": [k for k in record.blocked_keys if record.decisions[k] == "blocked-partial"],
        "windows": windows,
        "page": Page(number, count, decision, len(keys)),
        # Progress without JavaScript: the page reloads itself while runs may be moving.
        "refresh": 5 if live else None,
    }
