"""Per-window progress of a backfill, derived from ``window.*`` ledger events, and the
done / running / left / estimated-finish summary that ``status`` prints (spec §7)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from backfill import events as ev

# Window state names, shared with the runner and the status JSON.
PENDING = "pending"
SKIPPED = "skipped"
INTENT = "intent"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
NEEDS_OPERATOR = "needs-operator"
BLOCKED = "blocked"
WINDOW_STATES = (PENDING, SKIPPED, INTENT, RUNNING, SUCCEEDED, FAILED, CANCELLED, NEEDS_OPERATOR, BLOCKED)

_FROM_ADF_STATUS = {
    "Queued": RUNNING,
    "InProgress": RUNNING,
    "Canceling": RUNNING,
    "Succeeded": SUCCEEDED,
    "Failed": FAILED,
    "Cancelled": CANCELLED,
    "Canceled": CANCELLED,
}


class WindowProgress(TypedDict):
    decision: str
    state: str
    run_id: str | None
    status: str | None
    reason: str | None
    accepted: bool
    cancel_requested: bool
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None


def _initial_state(decision: str) -> str:
    if decision.startswith("blocked"):
        return BLOCKED
    if decision.startswith("skip"):
        return SKIPPED
    return PENDING


def new_window(decision: str) -> WindowProgress:
    return WindowProgress(
        decision=decision,
        state=_initial_state(decision),
        run_id=None,
        status=None,
        reason=None,
        accepted=False,
        cancel_requested=False,
        attempts=0,
        started_at=None,
        finished_at=None,
        duration_ms=None,
    )


def initial_windows(decisions: Mapping[str, str]) -> dict[str, WindowProgress]:
    """Every window of the frozen preview, in its state before the runner touched it."""
    return {key: new_window(decision) for key, decision in decisions.items()}


def _text(payload: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = payload.get(name)
        if value not in (None, ""):
            return str(value)
    return None


def apply_window_event(
    windows: dict[str, WindowProgress], key: str, kind: str, payload: Mapping[str, Any], at: datetime
) -> None:
    """Fold one ``window.*`` (or ``gate.window-accepted``) event into ``windows[key]``."""
    window = windows.setdefault(key, new_window(""))
    run_id = _text(payload, "run_id")
    status = _text(payload, "status")
    reason = _text(payload, "reason", "message")
    if run_id:
        window["run_id"] = run_id
    if status:
        window["status"] = status
    if reason:
        window["reason"] = reason
    if kind == ev.WINDOW_ACCEPTED:
        window["accepted"] = True
        if window["state"] == BLOCKED:
            window["state"] = PENDING
    elif kind == ev.WINDOW_SKIPPED:
        window["state"] = SKIPPED
        window["decision"] = _text(payload, "decision") or window["decision"]
    elif kind == ev.WINDOW_CHECKED:
        decision = _text(payload, "decision") or ""
        if decision.startswith("blocked") and not window["accepted"]:
            window["state"] = BLOCKED
    elif kind == ev.WINDOW_INTENT:
        window["state"] = INTENT
        window["attempts"] += 1
        window["run_id"], window["status"] = None, None
        window["started_at"], window["finished_at"], window["duration_ms"] = at, None, None
    elif kind in (ev.WINDOW_CREATED, ev.WINDOW_ADOPTED):
        window["state"] = _FROM_ADF_STATUS.get(status or "", RUNNING)
        window["started_at"] = window["started_at"] or at
    elif kind == ev.WINDOW_STATUS:
        window["state"] = _FROM_ADF_STATUS.get(status or "", window["state"])
    elif kind == ev.WINDOW_FINISHED:
        window["state"] = _FROM_ADF_STATUS.get(status or "", _text(payload, "state") or FAILED)
        window["finished_at"] = at
        duration = payload.get("duration_ms")
        window["duration_ms"] = int(duration) if isinstance(duration, int | float) else None
    elif kind == ev.WINDOW_CREATE_FAILED:
        window["state"] = FAILED
    elif kind == ev.WINDOW_NEEDS_OPERATOR:
        window["state"] = NEEDS_OPERATOR
    elif kind == ev.WINDOW_CANCELLED:
        window["cancel_requested"] = True


def window_duration(window: WindowProgress, now: datetime | None = None) -> timedelta | None:
    """ADF's duration when recorded, else from the ledger's times (until ``now`` while running)."""
    if window["duration_ms"] is not None:
        return timedelta(milliseconds=window["duration_ms"])
    start = window["started_at"]
    if start is None:
        return None
    end = window["finished_at"] or (now if window["state"] in (INTENT, RUNNING) else None)
    return end - start if end is not None else None


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    running: int
    failed: int
    left: int
    average: timedelta | None
    estimated_finish: datetime | None

    def to_json(self) -> dict[str, Any]:
        from backfill.timeutil import format_utc

        return {
            "total": self.total,
            "done": self.done,
            "running": self.running,
            "failed": self.failed,
            "left": self.left,
            "average_seconds": self.average.total_seconds() if self.average is not None else None,
            "estimated_finish": format_utc(self.estimated_finish) or None,
        }


def summarize(windows: Iterable[WindowProgress], now: datetime, concurrency: int = 1) -> Progress:
    """Done (succeeded or skipped), running, failed, left, and the estimated finish from the
    average duration of the windows that succeeded so far."""
    chosen = list(windows)
    done = [w for w in chosen if w["state"] in (SUCCEEDED, SKIPPED)]
    running = [w for w in chosen if w["state"] in (INTENT, RUNNING)]
    failed = [w for w in chosen if w["state"] in (FAILED, CANCELLED, NEEDS_OPERATOR)]
    left = [w for w in chosen if w["state"] in (PENDING, BLOCKED)]
    durations = [d for w in chosen if w["state"] == SUCCEEDED and (d := window_duration(w)) is not None]
    average = sum(durations, timedelta()) / len(durations) if durations else None
    finish = None
    if average is not None and (running or left):
        remaining = timedelta()
        for w in running:
            elapsed = window_duration(w, now) or timedelta()
            remaining += max(average - elapsed, timedelta())
        remaining += average * len(left)
        # Windows run `concurrency` at a time; whole rounds, so one window left is one duration.
        rounds = math.ceil((len(left) + len(running)) / max(concurrency, 1))
        per_round = remaining / max(len(left) + len(running), 1)
        finish = now + per_round * rounds
    return Progress(len(chosen), len(done), len(running), len(failed), len(left), average, finish)
