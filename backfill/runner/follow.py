"""Following one run of a window to its end (spec §7): adaptive polling (``runner.polling``),
``window.status`` on each change, ``run_timeout`` (report or cancel), and ``window.finished`` with
the failing activity and its error.

The window machine hands a run here once it is created or adopted; a resumed runner hands over a
run the ledger already names, and the schedule counts from the run's start either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from backfill import events as ev
from backfill import progress as pg
from backfill.errors import FactoryError
from backfill.factory.protocol import Factory
from backfill.factory.run import Run, RunStatus
from backfill.runner.polling import PollPolicy, median, next_poll
from backfill.runner.ports import Clock, Sleep
from backfill.runner.view import LedgerView
from backfill.timeutil import format_duration, format_utc


@dataclass
class RunFollower:
    """Polls runs of one backfill to their end; ``durations`` (succeeded runs' durations, shared
    with the machine) teach the schedule a pipeline's usual duration when history had none."""

    view: LedgerView
    factory: Factory
    poll: PollPolicy
    run_timeout: timedelta | None
    on_timeout: str
    max_poll_errors: int
    clock: Clock
    sleep: Sleep
    durations: list[timedelta]

    def follow(self, key: str, run_id: str, started_at: datetime) -> str:
        """Poll run ``run_id`` of window ``key`` until it ends (or an operator must decide)."""
        state = self.view.window(key)
        last_status = state["status"] if state["run_id"] == run_id else None
        deadline = started_at + self.run_timeout if self.run_timeout is not None else None
        cancelled_at: datetime | None = self.clock() if state["cancel_requested"] else None
        errors = 0
        while True:
            now = self.clock()
            if cancelled_at is not None:
                # A cancel takes effect in seconds, whatever the run's usual duration.
                fast = PollPolicy(floor=self.poll.effective_floor)
                wake = cancelled_at + next_poll(fast, now - cancelled_at)
            else:
                wake = started_at + next_poll(self._policy(), now - started_at)
                if deadline is not None:
                    wake = min(wake, max(deadline, now))
            self.sleep(max(0.0, (wake - now).total_seconds()))
            try:
                run = self.factory.get_run(run_id)
            except FactoryError as exc:
                errors += 1
                if errors >= self.max_poll_errors:
                    return needs_operator(
                        self.view, key, f"cannot read the run's status: {exc}", {"errors": errors}, run_id
                    )
                continue
            errors = 0
            if run.start is not None and run.start != started_at:
                # ADF's runStart, not our intent time, is what durations (and so the schedule and
                # run_timeout) count from: the queue time is not the run's.
                started_at = run.start
                deadline = started_at + self.run_timeout if self.run_timeout is not None else None
            if run.status.is_final:
                return self.finish(key, run)  # the final status goes in window.finished alone
            if run.status_label != last_status:
                self.view.append(ev.WINDOW_STATUS, {"run_id": run_id, "status": run.status_label}, key)
                last_status = run.status_label
            if deadline is not None and cancelled_at is None and self.clock() >= deadline:
                timeout = format_duration(self.run_timeout)
                evidence = {
                    "status": run.status.value,
                    "run_timeout": timeout,
                    "elapsed_seconds": round((self.clock() - started_at).total_seconds(), 3),
                }
                if self.on_timeout == "report":
                    return needs_operator(
                        self.view,
                        key,
                        f"run still {run.status.value} after run_timeout {timeout}; left running",
                        evidence,
                        run_id,
                    )
                try:
                    self.factory.cancel_run(run_id)
                except FactoryError as exc:
                    return needs_operator(
                        self.view, key, f"run_timeout {timeout} passed and the cancel failed: {exc}", evidence, run_id
                    )
                self.view.append(
                    ev.WINDOW_CANCELLED, {"run_id": run_id, "reason": f"run_timeout {timeout}", **evidence}, key
                )
                cancelled_at = self.clock()

    def _policy(self) -> PollPolicy:
        # A pipeline without history learns its usual duration from this backfill's own runs.
        if self.poll.usual is None and self.poll.fixed is None and self.durations:
            return replace(self.poll, usual=median(self.durations))
        return self.poll

    def finish(self, key: str, run: Run) -> str:
        """Record how the run ended (``window.finished``); return the window's state."""
        payload: dict[str, Any] = {
            "run_id": run.run_id,
            "status": run.status.value,
            "duration_ms": int(run.duration.total_seconds() * 1000) if run.duration is not None else None,
            "message": run.message,
            "run_start": format_utc(run.start, precise=True) or None,
            "run_end": format_utc(run.end, precise=True) or None,
        }
        if run.status is RunStatus.FAILED:
            payload.update(self._failing_activity(run))
        if run.status is RunStatus.SUCCEEDED and run.duration is not None:
            self.durations.append(run.duration)
        self.view.append(ev.WINDOW_FINISHED, payload, key)
        return self.view.window(key)["state"]

    def _failing_activity(self, run: Run) -> dict[str, Any]:
        try:
            activities = self.factory.query_activity_runs(
                run.run_id, updated_after=(run.start or self.clock()) - timedelta(minutes=5)
            )
        except FactoryError as exc:
            return {"activity_error": f"activity runs could not be read: {exc}"}
        failed = sorted((a for a in activities if a.failed), key=lambda a: a.end.timestamp() if a.end else math.inf)
        if not failed:
            return {}
        first = failed[0]
        return {
            "failed_activity": first.name,
            "activity_type": first.type,
            "error_code": first.error_code,
            "error": first.message,
        }


def needs_operator(
    view: LedgerView, key: str, reason: str, evidence: Mapping[str, Any], run_id: str | None = None
) -> str:
    """Leave window ``key`` to an operator (``window.needs-operator``), saying why."""
    payload: dict[str, Any] = {"reason": reason, "evidence": dict(evidence)}
    if run_id:
        payload["run_id"] = run_id
    view.append(ev.WINDOW_NEEDS_OPERATOR, payload, key)
    return pg.WindowState.NEEDS_OPERATOR
