"""Run and stop a backfill (spec §7, §9): the gates, the recomputed preview, the worker pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from backfill import events as ev
from backfill import progress as pg
from backfill.approvals import approved_keys, assert_runnable
from backfill.backfills import BackfillRecord, BackfillStatus
from backfill.errors import BackfillError, FactoryError
from backfill.factory.run import RunStatus
from backfill.identity import Actor
from backfill.seal import Seal, require_variables, verify_seal
from backfill.services.common import connect_factory, database_for
from backfill.services.plans import Sync, preview_plan
from backfill.store.backfills import load_backfill
from backfill.timeutil import format_utc, utcnow

if TYPE_CHECKING:
    from backfill.factory.protocol import Factory, FactoryRef
    from backfill.runner.machine import RunnerOptions
    from backfill.runner.ports import StepHook
    from backfill.store.database import Database
    from backfill.store.history import HistoryView
    from backfill.workers import Outcome

PLAN_CHANGED = "plan changed since request; make a new request"


def execute_backfill(
    backfill_id: str,
    *,
    actor: Actor,
    db: Database | None = None,
    factory: Factory | None = None,
    options: RunnerOptions | None = None,
    progress: Callable[[str], None] | None = None,
    resume: bool = False,
    hook: StepHook | None = None,
) -> Outcome:
    """Run (or resume) backfill ``backfill_id``; raise the spec's error for anything but success.

    Refuses what the gates refuse (approval, expiry, a changed plan), recomputes the preview, then
    hands the windows to ``workers.WorkerPool``. A stopped backfill (``stop``, or a stop requested
    that no runner has acted on yet) stays stopped: only ``resume`` lets it go on, and the ledger
    records who did (``backfill.resumed``). ``hook`` sees every ledger append (the crash
    harness's kill points); none in production."""
    from backfill.matching import match_fields
    from backfill.plan.loader import load_plan
    from backfill.runner.machine import RunnerOptions, WindowMachine
    from backfill.runner.polling import policy_for
    from backfill.runner.view import LedgerView
    from backfill.store.claims import Claims
    from backfill.store.ledger import Ledger
    from backfill.workers import WorkerPool, conclude, progress_printer, select_jobs

    with database_for(db) as database:
        # Attack 3 (issue 8): act only on a ledger that verifies (exit 5 otherwise).
        Ledger(database).verify_for_action(backfill_id)
        record, state = load_backfill(database, backfill_id)
        assert_runnable(state, utcnow())
        stopped = state.stop_requested or state.status is BackfillStatus.STOPPED
        if stopped and not resume:
            raise BackfillError(
                f"{backfill_id} was stopped{_stopped_by(database, backfill_id)}; "
                f"to go on: backfill run {backfill_id} --resume"
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
        factory = factory or connect_factory(loaded.ref)
        options = options or RunnerOptions.from_env(os.environ, settle=loaded.plan.execution.settle)
        planned = preview_plan(loaded, sync=Sync.HISTORY, db=database, factory=factory)
        preview = planned.preview
        execution = loaded.plan.execution

        view = LedgerView(Ledger(database), record, actor, hook=hook)
        view.refresh()
        if stopped:
            view.append(ev.RESUMED, {"stopped_by": _stopped_by(database, backfill_id).removeprefix(" by ") or None})
        claims = Claims(database, lease=options.lease)
        view.append(
            ev.STARTED,
            {
                "concurrency": execution.concurrency,
                "worker": claims.worker,
                "plan_hash": loaded.hash,
                "preview": preview.summary(),
            },
        )
        jobs = select_jobs(view, record, state, preview.decisions)
        order = [w.key for w in loaded.windows if w.key in jobs]
        if execution.order == "newest-first":
            order.reverse()
        machine = WindowMachine(
            view=view,
            factory=factory,
            claims=claims,
            pipeline=loaded.pipeline,
            match_fields=match_fields(loaded.windows, loaded.match_on),
            checks=planned.checks,
            horizon=preview.history_horizon,
            mode=execution.mode,
            run_timeout=execution.run_timeout,
            on_timeout=execution.on_timeout,
            poll=policy_for(execution.poll, _usual(planned.history)),
            options=options,
            history_since=planned.synced_from,
        )
        scope = set(approved_keys(record, state)) | set(jobs)
        if progress is not None:
            view.listeners.append(progress_printer(view, scope, execution.concurrency, progress))
        canary = record.policy.canary if not state.canary_approved else 0
        pool = WorkerPool(view, claims, machine, jobs, order, canary, execution.on_failure == "stop")
        claims.seed(record.id, order)
        pool.run(execution.concurrency)
        return conclude(view, claims, pool, record.id, scope, factory.api_calls)


def _usual(history: HistoryView) -> timedelta | None:
    """The pipeline's usual duration from its newest succeeded runs, decoding only those."""
    from backfill.factory.run import RunStatus
    from backfill.runner.polling import RECENT_RUNS, usual_duration

    return usual_duration(history.newest_runs(RunStatus.SUCCEEDED, RECENT_RUNS))


def _stopped_by(db: Database, backfill_id: str) -> str:
    """`` by carol@contoso.com (declared) at 2026-...Z``: the last stop of the backfill, or ""."""
    from backfill.store.ledger import Ledger

    last = None
    for event in Ledger(db).events(backfill_id=backfill_id):
        if event.kind in (ev.STOP_REQUESTED, ev.STOPPED) and event.actor:
            last = event
    if last is None:
        return ""
    return f" by {last.actor} at {format_utc(last.at)}"


@dataclass(frozen=True)
class Stop:
    backfill_id: str
    status: BackfillStatus  # before the stop
    ended: bool  # it had ended: only the runs it left in flight were cancelled
    cancel_run: bool
    cancelled: tuple[tuple[str, str], ...] = ()  # (window key, run ID) whose cancel was sent


# ADF statuses a run does not leave (and the other spelling of Cancelled ADF's documents use).
_FINAL = frozenset({s.value for s in RunStatus if s.is_final} | {"Canceled"})


def stop_backfill(
    backfill_id: str,
    *,
    actor: Actor,
    cancel_run: bool = False,
    db: Database | None = None,
    factory: Factory | None = None,
) -> Stop:
    """Record a stop request (and cancel the runs in flight with ``cancel_run``)."""
    from backfill.store.ledger import Ledger

    with database_for(db) as database:
        record, state = load_backfill(database, backfill_id)
        flying = [
            (k, w["run_id"])
            for k, w in state.windows.items()
            if w["run_id"]
            and w["state"] in (pg.WindowState.RUNNING, pg.WindowState.NEEDS_OPERATOR)
            and w["status"] not in _FINAL
        ]
        ended = state.status not in (BackfillStatus.RUNNING, BackfillStatus.PAUSED)
        # A backfill that ended (failed, say) may still have left a run going in a needs-operator
        # window: --cancel-run must still reach it, so the operator need not cancel run by run.
        if ended and not (cancel_run and flying):
            raise BackfillError(f"{backfill_id} is {state.status.value}; nothing to stop")
        ledger = Ledger(database)
        if not ended:
            ledger.append(ev.STOP_REQUESTED, {"cancel_run": cancel_run}, actor=actor, backfill_id=backfill_id)
        if state.status is BackfillStatus.PAUSED:
            ledger.append(ev.STOPPED, {"reason": "stopped at the canary pause"}, actor=actor, backfill_id=backfill_id)
        stop = Stop(backfill_id, state.status, ended, cancel_run)
        if not cancel_run or not flying:
            return stop
        factory = factory or connect_factory(_factory_ref(record))
        refused: list[str] = []
        cancelled: list[tuple[str, str]] = []
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
            cancelled.append((key, run_id))
        if refused:
            raise BackfillError(f"{backfill_id}: stop recorded, but cancelling failed for {'; '.join(refused)}")
    return Stop(backfill_id, state.status, ended, cancel_run, tuple(cancelled))


def _factory_ref(record: BackfillRecord) -> FactoryRef:
    from backfill.factory.protocol import FactoryRef

    frozen = record.preview.get("factory") if record.preview else None
    if isinstance(frozen, Mapping):
        return FactoryRef(str(frozen["subscription_id"]), str(frozen["resource_group"]), str(frozen["factory"]))
    from backfill.plan.loader import load_plan

    return load_plan(record.plan_path).ref
