"""The worker pool of ``backfill run``: which windows a run works on, the threads that claim and
drive them, and how the run ends.

``select_jobs`` picks the windows from the recomputed preview (windows may drop out, none may be
added beyond the approval); ``WorkerPool`` runs them with ``concurrency`` threads that claim them
through ``window_claims`` (so several processes, on several machines, can work on one backfill)
and drive each with ``WindowMachine``; ``conclude`` records one backfill event (completed,
failed, stopped, or the canary pause) and raises the ``BackfillError`` whose exit code the spec
gives for anything but success. The use case around them is ``services.run.execute_backfill``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backfill import events as ev
from backfill import progress as pg
from backfill.approvals import approved_keys
from backfill.backfills import BackfillRecord, BackfillState
from backfill.chain import LedgerEvent
from backfill.decisions import Decision
from backfill.errors import BackfillError, BlockedWindows, CanaryPause
from backfill.runner.machine import DEFERRED, Job, WindowMachine
from backfill.runner.ports import Claim
from backfill.runner.view import LedgerView
from backfill.store.claims import Claims
from backfill.timeutil import format_utc, utcnow

if TYPE_CHECKING:
    from backfill.preview import WindowDecision

FAILED_STATES = frozenset({pg.WindowState.FAILED, pg.WindowState.CANCELLED})
OPEN_STATES = frozenset({pg.WindowState.PENDING, pg.WindowState.INTENT, pg.WindowState.RUNNING})


@dataclass(frozen=True)
class Outcome:
    status: str
    message: str
    counts: Mapping[str, int] = field(default_factory=dict)
    api_calls: int = 0


# Events per transaction when select_jobs records windows that dropped out.
_STEP_BATCH = 500


def select_jobs(
    view: LedgerView, record: BackfillRecord, state: BackfillState, decisions: Sequence[WindowDecision]
) -> dict[str, Job]:
    """The windows this run works on; records the ones that dropped out or are not approved."""
    approved = set(approved_keys(record, state))
    jobs: dict[str, Job] = {}
    # What dropped out is recorded in batches (one commit each), not one append per window:
    # each window appears once in ``decisions``, so no later check reads what a batch writes.
    steps: list[tuple[str, Mapping[str, Any], str | None]] = []
    for item in decisions:
        if len(steps) >= _STEP_BATCH:
            view.append_many(steps)
            steps = []
        key = item.key
        window = view.window(key)
        accepted = key in state.accepted_windows
        if key in view.closed:
            continue
        if (
            key in view.pending
            or window["run_id"]
            or window["state"] in (pg.WindowState.INTENT, pg.WindowState.RUNNING, pg.WindowState.NEEDS_OPERATOR)
        ):
            jobs[key] = Job(item.window, item, accepted)  # touched before: resume it whatever history says
            continue
        decision: Decision = item.decision
        if key not in approved:
            if decision.runnable:
                frozen = record.decisions.get(key, "not in the request")
                steps.append(
                    (
                        ev.WINDOW_SKIPPED,
                        {
                            "decision": "not-approved",
                            "reason": f"now {decision}, but it was {frozen} when approved: the approval does not "
                            f"cover it ({item.reason})",
                        },
                        key,
                    )
                )
            continue
        if decision.runnable or (decision is Decision.BLOCKED_PARTIAL and accepted):
            jobs[key] = Job(item.window, item, accepted)
        elif not decision.blocked:
            steps.append(
                (ev.WINDOW_SKIPPED, {"decision": decision, "reason": f"since the request: {item.reason}"}, key)
            )
        elif window["state"] != pg.WindowState.BLOCKED:
            steps.append(
                (
                    ev.WINDOW_CHECKED,
                    {"decision": decision, "reason": item.reason, "checks": [r.to_json() for r in item.checks]},
                    key,
                )
            )
    view.append_many(steps)
    return jobs


def progress_printer(
    view: LedgerView, scope: set[str], concurrency: int, emit: Callable[[str], None]
) -> Callable[[LedgerEvent], None]:
    def listener(event: LedgerEvent) -> None:
        if not event.window_key or event.kind == ev.WINDOW_CHECKED:
            return
        now = utcnow()
        with view.lock:
            summary = pg.summarize([view.windows[k] for k in scope if k in view.windows], now, concurrency)
        words = [event.kind.removeprefix("window.")]
        words += [str(event.payload[k]) for k in ("run_id", "status", "decision") if event.payload.get(k)]
        finish = f", finish ~{format_utc(summary.estimated_finish)}" if summary.estimated_finish else ""
        emit(
            f"{format_utc(now)} {event.window_key} {' '.join(words)} | done {summary.done}/{summary.total}, "
            f"running {summary.running}, left {summary.left}{finish}"
        )

    return listener


class WorkerPool:
    """Worker threads claiming windows in order; a heartbeat keeps their claims' leases alive."""

    def __init__(
        self,
        view: LedgerView,
        claims: Claims,
        machine: WindowMachine,
        jobs: dict[str, Job],
        order: list[str],
        canary: int,
        stop_on_failure: bool,
    ) -> None:
        self.view, self.claims, self.machine, self.jobs, self.order = view, claims, machine, jobs, order
        self.canary, self.stop_on_failure = canary, stop_on_failure
        self.visited: set[str] = set()
        # Windows another backfill holds, by the monotonic time to look at them again.
        self.deferred: dict[str, float] = {}
        self.held: dict[str, Claim] = {}
        self.fresh: set[str] = set()  # claimed windows no earlier run had touched (canary count)
        self.halt: str | None = None
        self.failure: str | None = None
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.claiming = threading.Lock()
        self.done = threading.Event()

    def run(self, concurrency: int) -> None:
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(concurrency)]
        beat = threading.Thread(target=self._heartbeat, daemon=True)
        beat.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.done.set()
        if self.errors:
            raise self.errors[0]

    def _heartbeat(self) -> None:
        while not self.done.wait(self.claims.lease.total_seconds() / 3):
            with self.lock:
                held = list(self.held.values())
            with self.view.hook.quiet:
                for claim in held:
                    self.claims.renew(claim)
                self.machine.renew_identities()

    def _touched(self, key: str) -> bool:
        window = self.view.windows[key]
        return key in self.view.pending or bool(window["run_id"])

    def _candidates(self) -> list[str]:
        self.view.refresh()
        with self.lock, self.view.lock:
            if self.halt is not None:
                return []
            now = time.monotonic()
            keys = [
                k
                for k in self.order
                if k not in self.visited and k not in self.view.closed and self.deferred.get(k, 0.0) <= now
            ]
            if keys and self.view.stop_requested:
                self.halt = "stop"
                return []
            if self.canary:
                succeeded = sum(1 for w in self.view.windows.values() if w["state"] == pg.WindowState.SUCCEEDED)
                fresh_running = sum(1 for k in self.held if k in self.fresh)
                if succeeded + fresh_running >= self.canary:
                    keys = [k for k in keys if self._touched(k)]
            return keys

    def _later(self) -> float | None:
        """Seconds until a deferred window is due again, or None when none is left."""
        with self.lock, self.view.lock:
            if self.halt is not None:
                return None
            due = [at for k, at in self.deferred.items() if k not in self.visited and k not in self.view.closed]
        if not due:
            return None
        return min(max(0.05, min(due) - time.monotonic()), 1.0)

    def _work(self) -> None:
        try:
            while True:
                # One claim at a time per process: the canary count must see every window in flight.
                later: float | None = None
                with self.claiming:
                    keys = self._candidates()
                    claim = self.claims.claim(self.view.backfill_id, keys) if keys else None
                    if claim is None:
                        later = self._later()
                        if later is None:
                            return  # nothing left, or what is left is held by other workers
                    else:
                        with self.lock:
                            self.visited.add(claim.window_key)
                            self.held[claim.window_key] = claim
                            if not self._touched(claim.window_key):
                                self.fresh.add(claim.window_key)
                if claim is None:
                    time.sleep(later or 0.05)  # only windows another backfill holds are left
                    continue
                try:
                    state = self.machine.process(self.jobs[claim.window_key], claim)
                finally:
                    with self.lock:
                        self.held.pop(claim.window_key, None)
                    self.claims.release(claim)
                if state == DEFERRED:
                    with self.lock:
                        self.visited.discard(claim.window_key)
                        self.fresh.discard(claim.window_key)
                        self.deferred[claim.window_key] = time.monotonic() + self.machine.options.defer.total_seconds()
                    continue
                self.view.refresh()
                with self.lock:
                    if self.view.stop_requested and self.halt is None:
                        self.halt = "stop"  # a run cancelled by `stop --cancel-run` is no failure
                    if state in FAILED_STATES:
                        self.failure = self.failure or claim.window_key
                        if self.stop_on_failure and self.halt is None:
                            self.halt = "failure"
        except BaseException as exc:
            with self.lock:
                self.errors.append(exc)
                self.halt = self.halt or "error"


def conclude(
    view: LedgerView, claims: Claims, pool: WorkerPool, backfill_id: str, scope: set[str], api_calls: int
) -> Outcome:
    view.refresh()
    states = {key: view.windows[key]["state"] for key in scope if key in view.windows}
    counts = {name.value: sum(1 for s in states.values() if s == name) for name in pg.WindowState}
    counts = {name: n for name, n in counts.items() if n}
    failed = [k for k, s in states.items() if s in FAILED_STATES]
    open_keys = [k for k, s in states.items() if s in OPEN_STATES]
    held = claims.held_by_others(backfill_id)

    def end(kind: str, payload: dict[str, Any]) -> None:
        view.refresh()
        if view.ended is None:
            view.append(kind, {**payload, "windows": counts})

    if pool.halt == "stop":
        end(ev.STOPPED, {"reason": "stop requested"})
        raise BackfillError(
            f"{backfill_id} stopped after the windows in flight ({_tally(counts)}); "
            f"resume with: backfill run {backfill_id} --resume"
        )
    if pool.halt == "failure" and pool.failure is not None:
        why = _failure_text(view, pool.failure)
        end(ev.FAILED, {"reason": why, "window": pool.failure})
        raise BackfillError(f"{backfill_id} failed: {why}; on_failure = stop")
    if held:
        return Outcome(
            "running",
            f"{backfill_id}: this worker is done; {len(held)} windows are in flight on "
            f"other workers ({_tally(counts)})",
            counts,
            api_calls,
        )
    if pool.canary and open_keys:
        end(ev.CANARY_PAUSED, {"canary": pool.canary, "succeeded": counts.get(pg.WindowState.SUCCEEDED, 0)})
        canary, them = ("canary window", "it") if pool.canary == 1 else (f"{pool.canary} canary windows", "them")
        raise CanaryPause(
            f"{backfill_id} paused after its first {canary} succeeded, as the plan asks; "
            f"check {them}, then: backfill approve {backfill_id} and backfill run {backfill_id}"
        )
    if failed:
        why = _failure_text(view, failed[0])
        end(ev.FAILED, {"reason": why, "failed": failed})
        raise BackfillError(f"{backfill_id} failed: {len(failed)} of {len(states)} windows failed; first: {why}")
    stuck = [k for k, s in states.items() if s in (pg.WindowState.BLOCKED, pg.WindowState.NEEDS_OPERATOR)] + open_keys
    if stuck:
        end(ev.FAILED, {"reason": "windows blocked or needing an operator", "windows_left": stuck})
        first = view.windows[stuck[0]]
        many = f"{len(stuck)} windows are blocked or need" if len(stuck) > 1 else "1 window is blocked or needs"
        raise BlockedWindows(
            f"{backfill_id}: {many} an operator; first {stuck[0]}: "
            f"{first['reason'] or first['state']} (backfill status {backfill_id})"
        )
    # Windows blocked in the frozen preview and never accepted: the approval did not cover them.
    unapproved = [k for k, w in view.windows.items() if k not in scope and w["state"] == pg.WindowState.BLOCKED]
    end(ev.COMPLETED, {"blocked_outside_approval": unapproved})
    done = f"{backfill_id} completed: {_tally(counts)}"
    if unapproved:
        # Exit 0 all the same: the approval never covered them, and what it covered is done.
        first = view.windows[unapproved[0]]
        if len(unapproved) > 1:
            done += (
                f"\n{len(unapproved)} blocked windows were left alone (outside the approval), first "
                f"{unapproved[0]}: {first['decision']}"
            )
        else:
            done += f"\n1 blocked window was left alone (outside the approval): {unapproved[0]}: {first['decision']}"
    return Outcome("completed", done, counts, api_calls)


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items()) or "no windows"


def _failure_text(view: LedgerView, key: str) -> str:
    events = [
        e for e in view.ledger.events(backfill_id=view.backfill_id, kinds=[ev.WINDOW_FINISHED]) if e.window_key == key
    ]
    if not events:
        return f"window {key} {view.windows[key]['state']}"
    payload = events[-1].payload
    text = f"window {key} run {payload.get('run_id') or '-'} {payload.get('status')}"
    if payload.get("failed_activity"):
        text += f" in activity {payload['failed_activity']}"
    error = payload.get("error") or payload.get("message")
    return f"{text}: {error}" if error else text
