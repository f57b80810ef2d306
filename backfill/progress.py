"""Per-window progress of a backfill (folded from its ``window.*`` events by ``backfill.backfills``), and the
done / running / left / estimated-finish summary that ``status`` prints (spec §7)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypedDict


class WindowState(StrEnum):
    """Where one window stands, as ``status`` and its JSON name it (spec §7)."""

    PENDING = "pending"
    SKIPPED = "skipped"
    INTENT = "intent"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NEEDS_OPERATOR = "needs-operator"
    BLOCKED = "blocked"


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


def _initial_state(decision: str) -> WindowState:
    if decision.startswith("blocked"):
        return WindowState.BLOCKED
    if decision.startswith("skip"):
        return WindowState.SKIPPED
    return WindowState.PENDING


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


def window_duration(window: WindowProgress, now: datetime | None = None) -> timedelta | None:
    """ADF's duration when recorded, else from the ledger's times (until ``now`` while running)."""
    if window["duration_ms"] is not None:
        return timedelta(milliseconds=window["duration_ms"])
    start = window["started_at"]
    if start is None:
        return None
    end = window["finished_at"] or (now if window["state"] in (WindowState.INTENT, WindowState.RUNNING) else None)
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
    done = [w for w in chosen if w["state"] in (WindowState.SUCCEEDED, WindowState.SKIPPED)]
    running = [w for w in chosen if w["state"] in (WindowState.INTENT, WindowState.RUNNING)]
    failed = [
        w for w in chosen if w["state"] in (WindowState.FAILED, WindowState.CANCELLED, WindowState.NEEDS_OPERATOR)
    ]
    left = [w for w in chosen if w["state"] in (WindowState.PENDING, WindowState.BLOCKED)]
    durations = [d for w in chosen if w["state"] == WindowState.SUCCEEDED and (d := window_duration(w)) is not None]
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
