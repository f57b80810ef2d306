"""The use cases: what each command (and, later, the console) asks of backfill, written once.

Every function here takes plain values and the acting identity, opens and closes the ledger
database itself (``store.database.opened``) unless the caller passes one it holds (``db=``), and
returns a typed result; none prints or imports click. The CLI parses, calls one function, prints.
The errors they raise are the ``BackfillError`` family, whose exit codes the spec gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from backfill import events as ev
from backfill import progress as pg
from backfill.approvals import (
    ApprovalPolicy,
    BackfillRecord,
    BackfillState,
    BackfillStatus,
    approved_keys,
    assert_runnable,
    assert_satisfiable,
    expiry_reason,
    gate_approval,
    gate_rejection,
    gate_window_acceptance,
    load_backfill,
)
from backfill.errors import BackfillError, ConfigError, FactoryError, LedgerError, LedgerInvalid
from backfill.identity import Actor
from backfill.seal import Seal, require_variables, verify_seal
from backfill.store.database import Database, opened
from backfill.store.ledger import Ledger
from backfill.terminal import strip_controls
from backfill.timeutil import format_utc, utcnow

if TYPE_CHECKING:
    from backfill.anchors import SignedCheckpoint
    from backfill.checks.base import Check
    from backfill.factory.client import FactoryClient
    from backfill.factory.protocol import Factory, FactoryRef
    from backfill.factory.run import ActivityRun, Run
    from backfill.history import HistoryView, SyncResult
    from backfill.ledger import LedgerEvent
    from backfill.plan import LoadedPlan
    from backfill.preview import Preview
    from backfill.runner import RunnerOptions, StepHook
    from backfill.workers import Outcome

PLAN_CHANGED = "plan changed since request; make a new request"


@contextmanager
def _database(db: Database | None, *, create: bool = True) -> Iterator[Database]:
    """The caller's database, or one opened (and disposed) for this call."""
    if db is not None:
        yield db
        return
    with opened(create=create) as fresh:
        yield fresh


def _connect(ref: FactoryRef) -> FactoryClient:
    from backfill.factory.client import connect

    return connect(ref)


def recorded_text(value: str | None) -> str | None:
    """A note or reason as it is printed and recorded: no escape sequence rewrites anyone's
    screen; empty is None."""
    return strip_controls(value) or None if value is not None else None


# --- plans -----------------------------------------------------------------------------------


def check_plan(path: str | Path, *, check_env: bool = False, env: Mapping[str, str] | None = None) -> LoadedPlan:
    """Load and validate PLAN, its checks' definitions included (nothing connects); with
    ``check_env``, also refuse the ``${VAR}``s it needs that ``env`` does not set."""
    from backfill.plan import load_plan

    loaded = load_plan(path)
    verify_checks(loaded)
    if check_env:
        require_environment(loaded, os.environ if env is None else env)
    return loaded


def verify_checks(loaded: LoadedPlan) -> None:
    """Build every check as ``preview`` would (nothing connects): a refusal names file and check."""
    from backfill.checks.registry import build_checks
    from backfill.errors import CheckError, PlanError

    for index, spec in enumerate(loaded.check_specs):
        try:
            build_checks([spec], base_dir=loaded.path.parent)
        except CheckError as exc:
            raise PlanError(str(loaded.path), f"checks[{index}]", str(exc)) from None


def require_environment(loaded: LoadedPlan, env: Mapping[str, str]) -> None:
    """Refuse, in one line naming each and its first use, the ``${VAR}``s that are not set."""
    from backfill.plan import plan_variables

    unset = [f"{name} ({where})" for name, where in plan_variables(loaded) if name not in env]
    if unset:
        noun = "variable is" if len(unset) == 1 else "variables are"
        raise ConfigError(f"{loaded.path}: environment {noun} not set: {', '.join(unset)}")


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of plan files (for editors)."""
    from backfill.plan_model import Plan

    document = Plan.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "backfill plan"
    return document


# --- history and preview ---------------------------------------------------------------------


class Sync(Enum):
    """How ``preview_plan`` brings the history cache up to date first."""

    NONE = "none"  # the cache as it is (preview --no-sync)
    TARGET = "target"  # read the target pipeline (refusing a wrong plan), then sync: preview, request
    # Sync with the plan's secrets only: run; the target was read, and the pipeline's secure
    # parameters remembered, when the backfill was requested.
    HISTORY = "history"


@dataclass(frozen=True)
class PlanSync:
    pipeline: str
    result: SyncResult


@dataclass(frozen=True)
class PlanPreview:
    loaded: LoadedPlan
    preview: Preview
    history: HistoryView
    checks: Sequence[Check]
    synced: SyncResult | None  # None: not synced (Sync.NONE)
    synced_from: datetime  # when the sync began: the runner re-reads what changed since (spec §14)


def history_sync(path: str | Path, *, db: Database | None = None) -> PlanSync:
    """Fetch the runs of PLAN's pipeline that changed since the last sync into the cache."""
    from backfill.plan import load_plan
    from backfill.target import sync_for_plan

    loaded = load_plan(path)
    with _database(db) as database:
        result, _ = sync_for_plan(database, _connect(loaded.ref), loaded)
    return PlanSync(loaded.pipeline, result)


def preview_plan(
    loaded: LoadedPlan, *, sync: Sync = Sync.TARGET, db: Database | None = None, factory: Factory | None = None
) -> PlanPreview:
    """Sync the history, load it, build the checks and decide every window: the one preview of
    ``preview``, ``request`` and ``run``."""
    from backfill.checks.registry import build_checks
    from backfill.history import load_history, sync_history
    from backfill.masking import plan_secrets
    from backfill.preview import compute_preview
    from backfill.target import sync_for_plan

    # Built before any network call, so a wrong check definition fails fast.
    checks = build_checks(loaded.check_specs, base_dir=loaded.path.parent)
    with _database(db) as database:
        synced_from = utcnow()
        synced: SyncResult | None = None
        if sync is Sync.TARGET:
            synced, _ = sync_for_plan(database, factory or _connect(loaded.ref), loaded)
        elif sync is Sync.HISTORY:
            secret = plan_secrets(loaded.plan.parameters)
            synced = sync_history(database, factory or _connect(loaded.ref), loaded.pipeline, secret=secret)
        history = load_history(database, loaded.ref, loaded.pipeline)
        preview = compute_preview(loaded, history, checks)
    return PlanPreview(loaded, preview, history, checks, synced, synced_from)


def preview_plan_file(path: str | Path, *, sync: bool = True, db: Database | None = None) -> PlanPreview:
    """``preview_plan`` of the plan file at ``path`` (``sync=False``: the cache as it is)."""
    from backfill.plan import load_plan

    return preview_plan(load_plan(path), sync=Sync.TARGET if sync else Sync.NONE, db=db)


# --- request, approve, reject ------------------------------------------------------------------


@dataclass(frozen=True)
class Requested:
    record: BackfillRecord
    policy: ApprovalPolicy
    summary: dict[str, int]  # windows per decision in the frozen preview


def request_backfill(
    path: str | Path, *, actor: Actor, note: str | None = None, db: Database | None = None
) -> Requested:
    """Freeze PLAN's hash and preview as a backfill awaiting approval (spec §6)."""
    from backfill.plan import load_plan
    from backfill.requests import assert_requestable, draft_request
    from backfill.store.backfills import create_backfill

    where = str(path)
    # One instant for the whole request: relative windows resolve against the time it records.
    now = utcnow()
    loaded = load_plan(path, now=now)
    policy = ApprovalPolicy.from_plan(loaded.plan.approval)
    assert_satisfiable(policy, actor.name, where)
    # A check whose connection is unset would only show as blocked windows: say what is missing.
    require_variables(loaded, when="cannot request", parts=("checks",))
    with _database(db) as database:
        preview = preview_plan(loaded, db=database).preview
        draft, payload = draft_request(loaded, preview, actor, recorded_text(note), now)
        assert_requestable(where, draft)
        require_variables(loaded, when="cannot request")
        record = create_backfill(database, draft, payload, actor)
    return Requested(record, policy, dict(preview.summary()))


def _load_for_review(db: Database, backfill_id: str, actor: Actor) -> tuple[BackfillRecord, BackfillState]:
    record, state = load_backfill(db, backfill_id)
    if state.status is BackfillStatus.EXPIRED and not state.expiry_recorded:
        # The deadline passed without an event saying so; the first command to notice records it,
        # so the ledger tells the whole story without re-deriving deadlines.
        Ledger(db).append(
            ev.EXPIRED,
            {"reason": expiry_reason(record, state), "expired_at": format_utc(state.expires_at)},
            actor=actor,
            backfill_id=record.id,
        )
    return record, state


@dataclass(frozen=True)
class Approval:
    backfill_id: str
    what: Literal["window", "canary", "backfill"]
    count: int = 0  # approvals of the backfill so far, this one included
    required: int = 0
    window_key: str | None = None
    accept: str | None = None

    @property
    def complete(self) -> bool:
        return self.count >= self.required


def approve_backfill(
    backfill_id: str,
    *,
    actor: Actor,
    note: str | None = None,
    window_key: str | None = None,
    accept: str | None = None,
    db: Database | None = None,
) -> Approval:
    """Approve the backfill, its canary pause, or (``window_key`` and ``accept``) a blocked window."""
    note = recorded_text(note)
    with _database(db) as database:
        record, state = _load_for_review(database, backfill_id, actor)
        ledger = Ledger(database)
        if window_key is not None:
            gate_window_acceptance(record, state, actor, window_key)
            accepted = {"accept": accept, "decision": record.decisions[window_key], "note": note}
            ledger.append(ev.WINDOW_ACCEPTED, accepted, actor=actor, backfill_id=record.id, window_key=window_key)
            return Approval(record.id, "window", window_key=window_key, accept=accept)
        kind = gate_approval(record, state, actor)
        if kind == ev.CANARY_APPROVED:
            ledger.append(kind, {"note": note}, actor=actor, backfill_id=record.id)
            return Approval(record.id, "canary")
        count = len(state.approvals) + 1
        approval: dict[str, object] = {"note": note, "approval": count, "required": state.required}
        ledger.append(kind, approval, actor=actor, backfill_id=record.id)
    return Approval(record.id, "backfill", count, state.required)


def reject_backfill(backfill_id: str, *, actor: Actor, reason: str, db: Database | None = None) -> str:
    """Reject the backfill (before it runs, or at its canary pause); its ID."""
    with _database(db) as database:
        record, state = _load_for_review(database, backfill_id, actor)
        gate_rejection(record, state, actor)
        Ledger(database).append(ev.REJECTED, {"reason": reason}, actor=actor, backfill_id=record.id)
    return record.id


# --- run and stop ------------------------------------------------------------------------------


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
    from backfill.plan import load_plan
    from backfill.polling import policy_for
    from backfill.runner import LedgerView, RunnerOptions, WindowMachine
    from backfill.store.claims import Claims
    from backfill.workers import WorkerPool, conclude, progress_printer, select_jobs

    with _database(db) as database:
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
        factory = factory or _connect(loaded.ref)
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
    from backfill.polling import RECENT_RUNS, usual_duration

    return usual_duration(history.newest_runs(RunStatus.SUCCEEDED, RECENT_RUNS))


def _stopped_by(db: Database, backfill_id: str) -> str:
    """`` by carol@contoso.com (declared) at 2026-...Z``: the last stop of the backfill, or ""."""
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


_FINAL = frozenset({"Succeeded", "Failed", "Cancelled", "Canceled"})


def stop_backfill(
    backfill_id: str,
    *,
    actor: Actor,
    cancel_run: bool = False,
    db: Database | None = None,
    factory: Factory | None = None,
) -> Stop:
    """Record a stop request (and cancel the runs in flight with ``cancel_run``)."""
    with _database(db) as database:
        record, state = load_backfill(database, backfill_id)
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
        ledger = Ledger(database)
        if not ended:
            ledger.append(ev.STOP_REQUESTED, {"cancel_run": cancel_run}, actor=actor, backfill_id=backfill_id)
        if state.status is BackfillStatus.PAUSED:
            ledger.append(ev.STOPPED, {"reason": "stopped at the canary pause"}, actor=actor, backfill_id=backfill_id)
        stop = Stop(backfill_id, state.status, ended, cancel_run)
        if not cancel_run or not flying:
            return stop
        factory = factory or _connect(_factory_ref(record))
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
    from backfill.plan import load_plan

    return load_plan(record.plan_path).ref


# --- status and report -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillView:
    record: BackfillRecord
    state: BackfillState
    last_seen: datetime | None = None  # the last event of the backfill (with ``liveness``)
    alive: bool = False  # a runner holds a live claim (with ``liveness``, while it runs)


def list_backfills(*, now: datetime | None = None, db: Database | None = None) -> list[BackfillView]:
    """Every backfill with its state (read-only: never creates a ledger, issue 9 #2)."""
    from backfill.approvals import derive_state
    from backfill.store import backfills as store

    now = now or utcnow()
    with _database(db, create=False) as database:
        ledger = Ledger(database)
        return [
            BackfillView(record, derive_state(record, ledger.events(backfill_id=record.id), now))
            for record in store.list_backfills(database)
        ]


def backfill_status(
    backfill_id: str, *, now: datetime | None = None, liveness: bool = False, db: Database | None = None
) -> BackfillView:
    """One backfill's record and state; with ``liveness``, when the ledger last heard of it and
    whether a runner is alive (read-only: never creates a ledger)."""
    with _database(db, create=False) as database:
        record, state = load_backfill(database, backfill_id, now)
        if not liveness:
            return BackfillView(record, state)
        alive = state.status is BackfillStatus.RUNNING and _runner_alive(database, record.id)
        return BackfillView(record, state, _last_seen(database, record.id), alive)


def _runner_alive(db: Database, backfill_id: str) -> bool:
    """A runner holds a live claim: it renews its lease every third of it while a window is in
    flight, even when the run's status does not change for an hour (and nothing is recorded)."""
    from backfill.store.claims import Claims

    return bool(Claims(db).held_by_others(backfill_id))


def _last_seen(db: Database, backfill_id: str) -> datetime | None:
    """When the ledger last heard of this backfill: a live runner records every step it takes."""
    last = None
    for event in Ledger(db).events(backfill_id=backfill_id):
        last = event.at
    return last


def backfill_report(backfill_id: str, *, db: Database | None = None) -> dict[str, Any]:
    """The evidence of one backfill as plain data (docs/report-json.md)."""
    from backfill.report import collect_report

    with _database(db) as database:
        return collect_report(database, backfill_id)


# --- the ledger --------------------------------------------------------------------------------


@contextmanager
def _reading(db: Database | None) -> Iterator[Ledger]:
    """The ledger for reading: a database holding none of backfill's tables is refused, not
    given a schema."""
    if db is not None:
        yield Ledger(db)
        return
    from sqlalchemy.exc import SQLAlchemyError

    with ExitStack() as stack:
        try:
            database = stack.enter_context(opened(create=False))
        except SQLAlchemyError as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LedgerError(f"ledger database unreachable: {detail}") from None
        yield Ledger(database)


def _origin(store: Ledger) -> str:
    origin = store.db.meta().get("origin")
    if origin is None:  # an empty view of a ledger not created yet
        raise LedgerError(f"ledger {store.db.display_url}: no ledger yet, nothing is anchored")
    return origin


def ledger_events(
    *,
    backfill_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    kinds: Sequence[str] | None = None,
    db: Database | None = None,
) -> list[LedgerEvent]:
    """Ledger events in sequence order."""
    with _reading(db) as store:
        return list(store.events(backfill_id=backfill_id, since=since, until=until, kinds=kinds))


@dataclass(frozen=True)
class Verification:
    message: str
    anchors: Sequence[SignedCheckpoint] = ()  # the signed checkpoints it extends (with ``anchors``)


def verify_ledger(
    *,
    checkpoint: tuple[int, str] | None = None,
    anchors: str | None = None,
    key_path: Path | None = None,
    db: Database | None = None,
) -> Verification:
    """Recompute the hash chain (LedgerInvalid, exit 5, naming the first bad event); also prove it
    extends ``checkpoint`` and every checkpoint signed with ``key_path``'s key at ``anchors``."""
    public = None
    if key_path is not None:
        from backfill.anchors import load_public_key

        public = load_public_key(key_path)
    with _reading(db) as store:
        if checkpoint is None:
            # The newest head a `run` on this machine verified: a ledger shrunk below it is tampering.
            from backfill.store.seen import seen_checkpoint

            checkpoint = seen_checkpoint(store.db.url)
        report = store.verify(checkpoint)
        if not report.ok:
            raise LedgerInvalid(report.message)
        from backfill.approvals import verify_requests

        # The backfills rows sit outside the chain: each must agree with its request event (spec §15).
        problem = verify_requests(store.db)
        if problem is not None:
            raise LedgerInvalid(problem)
        if anchors is not None and public is not None:
            from backfill.anchors import check_anchors

            checked = check_anchors(anchors, public, _origin(store), report.head_seq, store.hashes_at)
            return Verification(report.message, checked)
    return Verification(report.message)


@dataclass(frozen=True)
class Checkpoint:
    head: tuple[int, str]
    document: str | None = None  # signed (with a key)
    published_to: str | None = None  # where the signed document was written


def ledger_checkpoint(
    *, key_path: Path | None = None, publish: str | None = None, db: Database | None = None
) -> Checkpoint:
    """The verified head; signed with ``key_path``'s key, and published to ``publish``."""
    with _reading(db) as store:
        head = store.checkpoint()
        if key_path is None:
            return Checkpoint(head)
        from backfill.anchors import destination, load_private_key, sign

        signed = sign(load_private_key(key_path), _origin(store), head[0], head[1])
    if publish is None:
        return Checkpoint(head, signed.document())
    return Checkpoint(head, signed.document(), destination(publish).write(signed.name, signed.document()))


def export_ledger(
    fmt: str,
    out: TextIO | Path,
    *,
    backfill_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    db: Database | None = None,
) -> int:
    """Write the events as JSON lines or CSV to ``out`` (a stream, or a file created once the
    ledger is open); how many."""
    with _reading(db) as store:
        if not isinstance(out, Path):
            return store.export(fmt, out, backfill_id=backfill_id, since=since, until=until)
        try:
            # newline="": the csv module writes its own line endings.
            with out.open("w", encoding="utf-8", newline="") as stream:
                return store.export(fmt, stream, backfill_id=backfill_id, since=since, until=until)
        except OSError as exc:
            raise LedgerError(f"cannot write {out}: {exc.strerror or exc}") from None


def init_team_ledger(role_prefix: str) -> tuple[str, str]:
    """Team mode on PostgreSQL: schema, roles, grants, identity stamping; the two roles."""
    from backfill.store.team import init_team_ledger as init

    return init(prefix=role_prefix)


def generate_signing_key(key_file: Path) -> Path:
    """A new Ed25519 key pair for signed checkpoints; the public key's file."""
    from backfill.anchors import generate_key

    return generate_key(key_file)


# --- pipeline runs -----------------------------------------------------------------------------


class _Masker:
    """Masks secret parameter values before a run is shown: the pipeline's SecureString
    parameters (one pipeline get per pipeline shown) and those any plan marked secret (kept in
    the history cache)."""

    def __init__(self, client: FactoryClient) -> None:
        self._client = client
        self._names: dict[str, frozenset[str]] = {}

    def __call__(self, run: Run) -> Run:
        from backfill.masking import mask_run

        names = self._names.get(run.pipeline)
        if names is None:
            names = self._names[run.pipeline] = self._secret_names(run.pipeline)
        return mask_run(run, names)

    def _secret_names(self, pipeline: str) -> frozenset[str]:
        from backfill.masking import declared_secrets
        from backfill.store.history import known_secrets

        try:
            declared = declared_secrets(self._client.get_pipeline(pipeline))
        except FactoryError:
            # A deleted pipeline keeps its runs; what plans marked secret still applies.
            declared = frozenset()
        if not _ledger_exists():
            return declared
        with opened() as db, db.engine.connect() as conn:
            remembered = known_secrets(conn, self._client.ref.key, pipeline)
        return declared | remembered


def _ledger_exists() -> bool:
    """False for a SQLite ledger file that is not there: reading runs must not create one."""
    from sqlalchemy.engine import make_url

    from backfill.store.database import ledger_url

    url = make_url(ledger_url())
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return True
    return Path(url.database).exists()


def list_runs(
    ref: FactoryRef,
    *,
    start_from: datetime,
    start_until: datetime | None = None,
    pipeline: str | None = None,
    statuses: Sequence[str] = (),
    now: datetime | None = None,
) -> list[Run]:
    """Runs that started in [start_from, start_until), newest first, secrets masked.

    ADF filters on a run's last-updated time, so the query asks for runs updated since
    ``start_from`` and keeps those that started in the range."""
    from backfill.factory.run import RunStatus

    now = now or utcnow()
    client = _connect(ref)
    wanted = [RunStatus.parse(s).value for s in statuses] or None
    found = [
        run
        for run in client.query_runs(
            updated_after=start_from,
            updated_before=now + timedelta(days=1),
            pipeline=pipeline,
            statuses=wanted,
            newest_first=True,
        )
        if run.start is not None and run.start >= start_from and (start_until is None or run.start < start_until)
    ]
    found.sort(key=lambda r: r.start or start_from, reverse=True)
    mask = _Masker(client)
    return [mask(run) for run in found]


def _usual_durations(client: FactoryClient, pipeline: str) -> list[timedelta]:
    from backfill.factory.run import RunStatus

    now = utcnow()
    durations = [
        run.duration
        for run in client.query_runs(
            updated_after=now - timedelta(days=7),
            updated_before=now + timedelta(days=1),
            pipeline=pipeline,
            statuses=[RunStatus.SUCCEEDED.value],
        )
        if run.duration is not None
    ]
    return durations[-200:]


@dataclass(frozen=True)
class RunDetail:
    run: Run  # secrets masked
    activities: Sequence[ActivityRun]
    usual: Sequence[timedelta]  # durations of the pipeline's succeeded runs of the last 7 days

    @property
    def failing(self) -> ActivityRun | None:
        return next((a for a in self.activities if a.failed), None)


def show_run(ref: FactoryRef, run_id: str) -> RunDetail:
    """A run with its activity runs and how long its pipeline's runs usually take."""
    client = _connect(ref)
    run = _Masker(client)(client.get_run(run_id))
    activities = client.query_activity_runs(run_id)
    return RunDetail(run, activities, _usual_durations(client, run.pipeline))


@dataclass(frozen=True)
class RunToCancel:
    """A run read before it is cancelled (to show and confirm), with the client to cancel it."""

    client: FactoryClient
    run_id: str
    run: Run
    usual: Sequence[timedelta]


def run_to_cancel(ref: FactoryRef, run_id: str) -> RunToCancel:
    """The run ``cancel_run`` would cancel and its pipeline's usual durations, to confirm."""
    client = _connect(ref)
    run = client.get_run(run_id)
    return RunToCancel(client, run_id, run, _usual_durations(client, run.pipeline))


def cancel_run(
    target: RunToCancel, *, reason: str, recursive: bool, actor: Actor, db: Database | None = None
) -> tuple[str | None, str | None]:
    """Cancel the run, recording who and why; the backfill and window whose run it is, if any."""
    run_id, run, client = target.run_id, target.run, target.client
    # Recorded and printed later: no escape sequence reaches a reader's terminal (issue 9 #9).
    payload = {
        "run_id": run_id,
        "pipeline": run.pipeline,
        "status": run.status.value,
        "reason": strip_controls(reason),
        "factory": client.ref.key,
        "recursive": recursive,
    }
    with _database(db) as database:
        ledger = Ledger(database)
        # A run of a backfill's window: the events name the backfill and window, so its report and
        # status say who cancelled it and why, not just "Cancelled".
        backfill_id, window_key = _owner(ledger, run_id)
        ledger.append("run.cancel-requested", payload, actor=actor, backfill_id=backfill_id, window_key=window_key)
        if backfill_id and window_key:
            # Before the cancel is sent: the backfill's runner then sees who asked and why first.
            ledger.append(
                ev.WINDOW_CANCELLED,
                {"run_id": run_id, "reason": reason, "by": "runs cancel"},
                actor=actor,
                backfill_id=backfill_id,
                window_key=window_key,
            )
        client.cancel_run(run_id, recursive=recursive)
        ledger.append("run.cancelled", payload, actor=actor, backfill_id=backfill_id, window_key=window_key)
    return backfill_id, window_key


def _owner(ledger: Ledger, run_id: str) -> tuple[str | None, str | None]:
    """The backfill and window whose run ``run_id`` is, if a backfill created or adopted it."""
    for event in ledger.iter_events(kinds=(ev.WINDOW_CREATED, ev.WINDOW_ADOPTED)):
        if event.payload.get("run_id") == run_id and event.backfill_id and event.window_key:
            return event.backfill_id, event.window_key
    return None, None
