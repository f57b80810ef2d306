"""``backfill run`` and ``backfill stop`` as library calls: gates, selection, workers, outcome.

``execute_backfill`` refuses what the gates refuse (approval, expiry, a changed plan), recomputes
the preview (windows may drop out, none may be added beyond the approval), then runs the windows
with ``concurrency`` worker threads that claim them through ``window_claims`` (so several
processes, on several machines, can work on one backfill) and drive each with ``WindowMachine``.
It ends with one backfill event (completed, failed, stopped, or the canary pause) and raises the
``BackfillError`` whose exit code the spec gives for anything but success.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from backfill import events as ev
from backfill import progress as pg
from backfill.approvals import (
    BackfillRecord,
    BackfillState,
    BackfillStatus,
    approved_keys,
    assert_runnable,
    load_backfill,
)
from backfill.chain import LedgerEvent
from backfill.decisions import Decision
from backfill.errors import BackfillError, BlockedWindows, CanaryPause, FactoryError
from backfill.factory.protocol import Factory, FactoryRef
from backfill.factory.run import RunStatus
from backfill.identity import Actor
from backfill.matching import match_fields
from backfill.runner.machine import DEFERRED, Job, RunnerOptions, WindowMachine
from backfill.runner.polling import RECENT_RUNS, policy_for, usual_duration
from backfill.runner.ports import Claim, StepHook
from backfill.runner.view import LedgerView
from backfill.seal import Seal, require_variables, verify_seal
from backfill.store.claims import Claims
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.timeutil import format_utc, utcnow

if TYPE_CHECKING:
    from backfill.history import HistoryView
    from backfill.preview import WindowDecision

PLAN_CHANGED = "plan changed since request; make a new request"
FAILED_STATES = frozenset({pg.FAILED, pg.CANCELLED})
OPEN_STATES = frozenset({pg.PENDING, pg.INTENT, pg.RUNNING})


@dataclass(frozen=True)
class Outcome:
    status: str
    message: str
    counts: Mapping[str, int] = field(default_factory=dict)
    api_calls: int = 0


def _connect(ref: FactoryRef) -> Factory:
    from backfill.factory.client import connect

    return connect(ref)


def execute_backfill(
    db: Database,
    backfill_id: str,
    *,
    actor: Actor,
    factory: Factory | None = None,
    options: RunnerOptions | None = None,
    progress: Callable[[str], None] | None = None,
    resume: bool = False,
    hook: StepHook | None = None,
) -> Outcome:
    """Run (or resume) backfill ``backfill_id``; raise the spec's error for anything but success.

    A stopped backfill (``stop``, or a stop requested that no runner has acted on yet) stays
    stopped: only ``resume`` lets it go on, and the ledger records who did (``backfill.resumed``).
    ``hook`` sees every ledger append (the crash harness's kill points); none in production."""
    from backfill.checks.registry import build_checks
    from backfill.history import load_history, sync_history
    from backfill.masking import plan_secrets
    from backfill.plan.loader import load_plan
    from backfill.preview import compute_preview

    # Attack 3 (issue 8): act only on a ledger that verifies (exit 5 otherwise).
    Ledger(db).verify_for_action(backfill_id)
    record, state = load_backfill(db, backfill_id)
    assert_runnable(state, utcnow())
    stopped = state.stop_requested or state.status is BackfillStatus.STOPPED
    if stopped and not resume:
        raise BackfillError(
            f"{backfill_id} was stopped{_stopped_by(db, backfill_id)}; to go on: backfill run {backfill_id} --resume"
        )
    # Windows written relative to now ("yesterday 00:00Z") mean what they meant at the request.
    loaded = load_plan(record.plan_path, now=record.requested_at)
    if loaded.hash != record.plan_hash:
        raise BackfillError(PLAN_CHANGED)
    # Before any event: a backfill that cannot start stays approved (issue 9 #10), and one whose
    # sealed inputs changed since the approval never starts (spec §15).
    require_variables(loaded, when="cannot start")
    if record.seal is not None:
        verify_seal(record.id, Seal.from_json(record.seal), loaded)
    factory = factory or _connect(loaded.ref)
    options = options or RunnerOptions.from_env(os.environ, settle=loaded.plan.execution.settle)
    # The re-read before each createRun covers what changed since this sync (spec §14). The
    # pipeline's secure parameters were remembered when the backfill was requested.
    synced_from = utcnow()
    sync_history(db, factory, loaded.pipeline, secret=plan_secrets(loaded.plan.parameters))
    history = load_history(db, loaded.ref, loaded.pipeline)
    checks = build_checks(loaded.check_specs, base_dir=loaded.path.parent)
    preview = compute_preview(loaded, history, checks)
    execution = loaded.plan.execution

    view = LedgerView(Ledger(db), record, actor, hook=hook)
    view.refresh()
    if stopped:
        view.append(ev.RESUMED, {"stopped_by": _stopped_by(db, backfill_id).removeprefix(" by ") or None})
    claims = Claims(db, lease=options.lease)
    view.append(
        ev.STARTED,
        {
            "concurrency": execution.concurrency,
            "worker": claims.worker,
            "plan_hash": loaded.hash,
            "preview": preview.summary(),
        },
    )
    jobs = _select(view, record, state, preview.decisions)
    order = [w.key for w in loaded.windows if w.key in jobs]
    if execution.order == "newest-first":
        order.reverse()
    machine = WindowMachine(
        view=view,
        factory=factory,
        claims=claims,
        pipeline=loaded.pipeline,
        match_fields=match_fields(loaded.windows, loaded.match_on),
        checks=checks,
        horizon=preview.history_horizon,
        mode=execution.mode,
        run_timeout=execution.run_timeout,
        on_timeout=execution.on_timeout,
        poll=policy_for(execution.poll, _usual(history)),
        options=options,
        history_since=synced_from,
    )
    scope = set(approved_keys(record, state)) | set(jobs)
    if progress is not None:
        view.listeners.append(_progress_printer(view, scope, execution.concurrency, progress))
    canary = record.policy.canary if not state.canary_approved else 0
    pool = _Pool(view, claims, machine, jobs, order, canary, execution.on_failure == "stop")
    claims.seed(record.id, order)
    pool.run(execution.concurrency)
    return _conclude(view, claims, pool, record.id, scope, factory.api_calls)


def _usual(history: HistoryView) -> timedelta | None:
    """The pipeline's usual duration from its newest succeeded runs, decoding only those."""
    return usual_duration(history.newest_runs(RunStatus.SUCCEEDED, RECENT_RUNS))


def _select(
    view: LedgerView, record: BackfillRecord, state: BackfillState, decisions: Sequence[WindowDecision]
) -> dict[str, Job]:
    """The windows this run works on; records the ones that dropped out or are not approved."""
    approved = set(approved_keys(record, state))
    jobs: dict[str, Job] = {}
    for item in decisions:
        key = item.key
        window = view.window(key)
        accepted = key in state.accepted_windows
        if key in view.closed:
            continue
        if key in view.pending or window["run_id"] or window["state"] in (pg.INTENT, pg.RUNNING, pg.NEEDS_OPERATOR):
            jobs[key] = Job(item.window, item, accepted)  # touched before: resume it whatever history says
            continue
        decision: Decision = item.decision
        if key not in approved:
            if decision.runnable:
                frozen = record.decisions.get(key, "not in the request")
                view.append(
                    ev.WINDOW_SKIPPED,
                    {
                        "decision": "not-approved",
                        "reason": f"now {decision}, but it was {frozen} when approved: the approval does not "
                        f"cover it ({item.reason})",
                    },
                    key,
                )
            continue
        if decision.runnable or (decision is Decision.BLOCKED_PARTIAL and accepted):
            jobs[key] = Job(item.window, item, accepted)
        elif not decision.blocked:
            view.append(ev.WINDOW_SKIPPED, {"decision": decision, "reason": f"since the request: {item.reason}"}, key)
        elif window["state"] != pg.BLOCKED:
            view.append(
                ev.WINDOW_CHECKED,
                {"decision": decision, "reason": item.reason, "checks": [r.to_json() for r in item.checks]},
                key,
            )
    return jobs


def _progress_printer(
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


class _Pool:
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
                succeeded = sum(1 for w in self.view.windows.values() if w["state"] == pg.SUCCEEDED)
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


def _conclude(
    view: LedgerView, claims: Claims, pool: _Pool, backfill_id: str, scope: set[str], api_calls: int
) -> Outcome:
    view.refresh()
    states = {key: view.windows[key]["state"] for key in scope if key in view.windows}
    counts = {name: sum(1 for s in states.values() if s == name) for name in pg.WINDOW_STATES}
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
        end(ev.CANARY_PAUSED, {"canary": pool.canary, "succeeded": counts.get(pg.SUCCEEDED, 0)})
        canary, them = ("canary window", "it") if pool.canary == 1 else (f"{pool.canary} canary windows", "them")
        raise CanaryPause(
            f"{backfill_id} paused after its first {canary} succeeded, as the plan asks; "
            f"check {them}, then: backfill approve {backfill_id} and backfill run {backfill_id}"
        )
    if failed:
        why = _failure_text(view, failed[0])
        end(ev.FAILED, {"reason": why, "failed": failed})
        raise BackfillError(f"{backfill_id} failed: {len(failed)} of {len(states)} windows failed; first: {why}")
    stuck = [k for k, s in states.items() if s in (pg.BLOCKED, pg.NEEDS_OPERATOR)] + open_keys
    if stuck:
        end(ev.FAILED, {"reason": "windows blocked or needing an operator", "windows_left": stuck})
        first = view.windows[stuck[0]]
        many = f"{len(stuck)} windows are blocked or need" if len(stuck) > 1 else "1 window is blocked or needs"
        raise BlockedWindows(
            f"{backfill_id}: {many} an operator; first {stuck[0]}: "
            f"{first['reason'] or first['state']} (backfill status {backfill_id})"
        )
    # Windows blocked in the frozen preview and never accepted: the approval did not cover them.
    unapproved = [k for k, w in view.windows.items() if k not in scope and w["state"] == pg.BLOCKED]
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


def _stopped_by(db: Database, backfill_id: str) -> str:
    """`` by carol@contoso.com (declared) at 2026-...Z``: the last stop of the backfill, or ""."""
    last = None
    for event in Ledger(db).events(backfill_id=backfill_id):
        if event.kind in (ev.STOP_REQUESTED, ev.STOPPED) and event.actor:
            last = event
    if last is None:
        return ""
    return f" by {last.actor} at {format_utc(last.at)}"


def request_stop(
    db: Database, backfill_id: str, *, actor: Actor, cancel_run: bool = False, factory: Factory | None = None
) -> list[str]:
    """Record a stop request (and cancel the runs in flight with ``cancel_run``); lines to print."""
    record, state = load_backfill(db, backfill_id)
    flying = [
        (k, w["run_id"])
        for k, w in state.windows.items()
        if w["run_id"] and w["state"] in (pg.RUNNING, pg.NEEDS_OPERATOR) and w["status"] not in _FINAL
    ]
    ended = state.status not in (BackfillStatus.RUNNING, BackfillStatus.PAUSED)
    # A backfill that ended (failed, say) may still have left a run going in a needs-operator
    # window: --cancel-run must still reach it, so the operator need not cancel run by run.
    if ended and not (cancel_run and flying):
        raise BackfillError(f"{backfill_id} is {state.status.value}; nothing to stop")
    ledger = Ledger(db)
    if ended:
        lines = [f"{backfill_id} is {state.status.value}; cancelling the runs it left in flight"]
    else:
        ledger.append(ev.STOP_REQUESTED, {"cancel_run": cancel_run}, actor=actor, backfill_id=backfill_id)
        lines = [f"stop requested for {backfill_id}: the runner stops after the windows in flight"]
    if state.status is BackfillStatus.PAUSED:
        ledger.append(ev.STOPPED, {"reason": "stopped at the canary pause"}, actor=actor, backfill_id=backfill_id)
        lines = [f"stopped {backfill_id} at its canary pause"]
    if not cancel_run:
        return lines
    if not flying:
        return [*lines, "no run in flight to cancel"]
    factory = factory or _connect(_factory_ref(record))
    refused: list[str] = []
    for key, run_id in flying:
        assert run_id is not None
        # Recorded before it is sent, like an intent: a live runner that sees the run end
        # Cancelled then finds who asked and why already in the ledger, and ends after it.
        ledger.append(
            ev.WINDOW_CANCELLED,
            {"run_id": run_id, "reason": "backfill stop --cancel-run"},
            actor=actor,
            backfill_id=backfill_id,
            window_key=key,
        )
        try:
            factory.cancel_run(run_id)
        except FactoryError as exc:
            refused.append(f"{run_id} ({key}): {exc}")
            continue
        lines.append(f"cancel requested for run {run_id} ({key})")
    if refused:
        raise BackfillError(f"{backfill_id}: stop recorded, but cancelling failed for {'; '.join(refused)}")
    return lines


_FINAL = frozenset({"Succeeded", "Failed", "Cancelled", "Canceled"})


def _factory_ref(record: BackfillRecord) -> FactoryRef:
    frozen = record.preview.get("factory") if record.preview else None
    if isinstance(frozen, Mapping):
        return FactoryRef(str(frozen["subscription_id"]), str(frozen["resource_group"]), str(frozen["factory"]))
    from backfill.plan.loader import load_plan

    return load_plan(record.plan_path).ref
