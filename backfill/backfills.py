"""The Backfill aggregate (spec §2 Backfill states, §6): the frozen request, its states, and the
one fold that derives its state from its ledger events.

A backfill's state is never stored: ``derive_state`` replays its typed events (``backfill.events``)
over the frozen request (``BackfillRecord``), so every worker and every command agrees on it, and
the ledger alone explains it. The runner folds the same events incrementally (``apply_event``).
``draft_request`` builds the request ``backfill request`` freezes; ``backfill.store.backfills``
writes it with its ``backfill.requested`` event and reads it back; gates live in
``backfill.approvals``. Pure: nothing here reads the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from backfill import events as ev
from backfill.decision_kinds import Decision
from backfill.errors import BackfillError, LedgerInvalid
from backfill.identity import Actor, same_person
from backfill.progress import WindowProgress, WindowState, initial_windows, new_window
from backfill.secrets import redact_payload
from backfill.timeutil import format_utc, parse_utc, require_utc

if TYPE_CHECKING:
    from backfill.plan.loader import LoadedPlan
    from backfill.preview import Preview

RUNNABLE_DECISIONS = frozenset({Decision.RUN, Decision.RERUN})


class BackfillStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    REJECTED = "rejected"
    EXPIRED = "expired"


# States nothing can leave: no approval, rejection or run applies any more.
SEALED = frozenset({BackfillStatus.REJECTED, BackfillStatus.EXPIRED, BackfillStatus.COMPLETED})
FINISHED = frozenset({BackfillStatus.COMPLETED, BackfillStatus.FAILED, BackfillStatus.STOPPED})
_STARTABLE = frozenset({BackfillStatus.APPROVED, BackfillStatus.RUNNING, BackfillStatus.PAUSED}) | (
    FINISHED - {BackfillStatus.COMPLETED}
)
# The event that ends a run of the backfill -> the state it leaves.
_ENDED_AS: Mapping[type[ev.Ended], BackfillStatus] = {
    ev.Completed: BackfillStatus.COMPLETED,
    ev.Failed: BackfillStatus.FAILED,
    ev.Stopped: BackfillStatus.STOPPED,
}


@dataclass(frozen=True)
class ApprovalPolicy:
    """The plan's ``[approval]`` table, frozen with the request."""

    required: int = 1
    approvers: tuple[str, ...] = ()
    expires: timedelta = timedelta(hours=12)
    canary: int = 0
    identity: str = "any"
    # Each group names one person under several identity sources (``[approval] aliases``).
    aliases: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def from_plan(cls, approval: Any) -> ApprovalPolicy:
        """From the plan model's ``approval`` (required, approvers, expires, canary, identity, aliases)."""
        aliases = getattr(approval, "aliases", None) or {}
        return cls(
            required=int(approval.required),
            approvers=tuple(str(a) for a in approval.approvers),
            expires=approval.expires,
            canary=int(approval.canary),
            identity=str(approval.identity),
            aliases=tuple((str(name), *(str(o) for o in others)) for name, others in aliases.items()),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "required": self.required,
            "approvers": list(self.approvers),
            "expires_seconds": self.expires.total_seconds(),
            "canary": self.canary,
            "identity": self.identity,
        }
        if self.aliases:
            data["aliases"] = [list(group) for group in self.aliases]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApprovalPolicy:
        return cls(
            required=int(data["required"]),
            approvers=tuple(data.get("approvers", ())),
            expires=timedelta(seconds=float(data["expires_seconds"])),
            canary=int(data.get("canary", 0)),
            identity=str(data.get("identity", "any")),
            aliases=tuple(tuple(str(n) for n in group) for group in data.get("aliases", ())),
        )


@dataclass(frozen=True)
class BackfillRecord:
    """The frozen request: one insert-only ``backfills`` row."""

    id: str
    plan_path: str
    plan_hash: str
    pipeline: str
    factory_key: str
    title: str
    ticket: str
    requester: str
    requester_source: str
    requested_at: datetime
    note: str | None
    policy: ApprovalPolicy
    # Window key -> decision of the frozen preview, in window order.
    decisions: Mapping[str, str]
    # The frozen Preview.to_json(), kept whole for reports.
    preview: Mapping[str, Any] = field(default_factory=dict)
    # The sealed inputs of the request event (backfill.seal.Seal.to_json()); None until read
    # from the chain by ``sealed_record``, or for requests recorded before inputs were sealed.
    seal: Mapping[str, Any] | None = None

    @property
    def runnable_keys(self) -> list[str]:
        return [k for k, d in self.decisions.items() if d in RUNNABLE_DECISIONS]

    @property
    def blocked_keys(self) -> list[str]:
        return [k for k, d in self.decisions.items() if d.startswith("blocked")]


class EventLike(Protocol):
    """What the fold reads of a ledger event (``LedgerEvent`` satisfies it)."""

    @property
    def kind(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def identity_source(self) -> str: ...
    @property
    def window_key(self) -> str | None: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Decided:
    """One approval, canary approval, window acceptance or rejection."""

    actor: str
    source: str
    at: datetime
    note: str | None = None


@dataclass
class WindowRun:
    """One ADF run of a window (or one createRun that was refused), as its events tell it."""

    window: str
    attempt: int
    mode: str | None
    reference_run_id: str | None
    run_id: str | None
    started_at: datetime
    adopted: bool = False
    status: str | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    failed_activity: str | None = None
    activity_type: str | None = None
    error_code: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    cancelled_by: str | None = None  # who asked ADF to cancel it (stop --cancel-run, runs cancel, run_timeout)
    cancel_reason: str | None = None


@dataclass
class BackfillState:
    backfill_id: str
    status: BackfillStatus
    required: int
    approvals: list[str] = field(default_factory=list)
    approval_events: list[Decided] = field(default_factory=list)
    accepted_windows: set[str] = field(default_factory=set)
    acceptances: dict[str, Decided] = field(default_factory=dict)
    canary_paused: bool = False
    canary_approved: bool = False
    canary_approval: Decided | None = None
    canary_paused_at: datetime | None = None
    stop_requested: bool = False
    rejection: Decided | None = None
    approved_at: datetime | None = None
    # The deadline of the current wait (for approval, or for the start after approval).
    expires_at: datetime | None = None
    expiry_recorded: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    concurrency: int = 1
    windows: dict[str, WindowProgress] = field(default_factory=dict)
    # What the runner reads to resume: window key -> (time, payload) of an intent not yet followed
    # by created/adopted/create-failed/finished/skipped (a createRun that may have happened) ...
    intents: dict[str, tuple[datetime, Mapping[str, Any]]] = field(default_factory=dict)
    # ... window key -> when its first intent in this backfill was meant (a run of the window that
    # started after it may be this backfill's own late effect, never another backfill's) ...
    first_intents: dict[str, datetime] = field(default_factory=dict)
    # ... and the windows whose end is recorded (finished or skipped). Not derived from the window
    # state: a status event saying Succeeded is not yet a recorded finish.
    closed: set[str] = field(default_factory=set)
    # Every ADF run (or refused createRun) of the windows, in the order they began (reports).
    runs: list[WindowRun] = field(default_factory=list)
    _run_of: dict[str, WindowRun] = field(default_factory=dict, repr=False)
    _last_intent: dict[str, ev.WindowIntent] = field(default_factory=dict, repr=False)
    _refused: dict[str, WindowRun] = field(default_factory=dict, repr=False)

    @property
    def awaiting_approval(self) -> bool:
        return self.status in (BackfillStatus.REQUESTED, BackfillStatus.PAUSED)


def _deadline(record: BackfillRecord, state: BackfillState) -> datetime | None:
    if state.status is BackfillStatus.REQUESTED:
        return record.requested_at + record.policy.expires
    if state.status is BackfillStatus.APPROVED and state.approved_at is not None:
        return state.approved_at + record.policy.expires
    return None


def _expire_if_due(record: BackfillRecord, state: BackfillState, when: datetime) -> None:
    deadline = _deadline(record, state)
    if deadline is None:
        return
    state.expires_at = deadline
    if when >= deadline:
        state.status = BackfillStatus.EXPIRED


def new_state(record: BackfillRecord) -> BackfillState:
    """The state before any event: requested, every window as the frozen preview left it."""
    state = BackfillState(record.id, BackfillStatus.REQUESTED, record.policy.required)
    state.windows = initial_windows(record.decisions)
    return state


def derive_state(record: BackfillRecord, events: Iterable[EventLike], now: datetime) -> BackfillState:
    """Replay ``events`` (in ledger order) over the frozen request, as of ``now``."""
    now = require_utc(now, "now")
    state = new_state(record)
    for event in events:
        apply_event(record, state, event)
    _expire_if_due(record, state, now)
    if state.status not in (BackfillStatus.REQUESTED, BackfillStatus.APPROVED, BackfillStatus.EXPIRED):
        state.expires_at = None
    return state


def apply_event(record: BackfillRecord, state: BackfillState, event: EventLike) -> None:
    """The one fold: one ledger event (in ledger order) into ``state``."""
    at = require_utc(event.at, "event time")
    # An event that arrived after a deadline cannot revive the wait it missed.
    _expire_if_due(record, state, at)
    body = ev.decode(event.kind, event.payload)
    key = event.window_key
    if isinstance(body, ev.WindowEvent) and not isinstance(body, ev.WindowAccepted):
        if key:
            _apply_window(state, key, body, at, event.payload)
            _apply_run(state, key, body, event.actor, at)
        return
    if isinstance(body, ev.Expired):
        state.expiry_recorded = True
        if state.status not in FINISHED:
            state.status = BackfillStatus.EXPIRED
        return
    if state.status in (BackfillStatus.REJECTED, BackfillStatus.EXPIRED):
        return
    note = body.note or body.reason if isinstance(body, ev.BackfillEvent | ev.WindowAccepted) else None
    decided = Decided(event.actor, event.identity_source, at, note)
    match body:
        case ev.Approved():
            aliases = record.policy.aliases
            if not any(same_person(event.actor, d.actor, aliases) is not False for d in state.approval_events):
                state.approvals.append(event.actor)
                state.approval_events.append(decided)
            if state.status is BackfillStatus.REQUESTED and len(state.approvals) >= record.policy.required:
                state.status = BackfillStatus.APPROVED
                state.approved_at = at
        case ev.Rejected():
            state.status = BackfillStatus.REJECTED
            state.rejection = decided
        case ev.Started():
            # Only an approved backfill starts; a stray start event cannot skip the approval.
            if state.status in _STARTABLE:
                awaits_canary = state.canary_paused and not state.canary_approved
                state.status = BackfillStatus.PAUSED if awaits_canary else BackfillStatus.RUNNING
                state.started_at = state.started_at or at
                state.finished_at = None
                state.stop_requested = False
                concurrency = body.concurrency if body.concurrency is not None else state.concurrency
                state.concurrency = max(1, int(concurrency))
        case ev.CanaryPaused():
            state.canary_paused, state.canary_approved = True, False
            state.canary_paused_at = at
            if state.status is BackfillStatus.RUNNING:
                state.status = BackfillStatus.PAUSED
        case ev.CanaryApproved():
            state.canary_approved, state.canary_approval = True, decided
            if state.status is BackfillStatus.PAUSED:
                state.status = BackfillStatus.RUNNING
        case ev.WindowAccepted() if key:
            state.accepted_windows.add(key)
            state.acceptances[key] = decided
            _apply_window(state, key, body, at, event.payload)
        case ev.StopRequested():
            state.stop_requested = True
        case ev.Completed() | ev.Failed() | ev.Stopped():
            state.status = _ENDED_AS[type(body)]
            state.finished_at = at


# ADF's run status -> the window state it means (a status this tool does not know keeps the state).
# Keyed by ``RunStatus``'s values (tests/test_backfills_fold_keys.py holds them to the enum): the
# fold runs on every ``status``, which need not import the factory's run model (issue 14).
_FROM_ADF_STATUS: Mapping[str, WindowState] = {
    "Queued": WindowState.RUNNING,
    "InProgress": WindowState.RUNNING,
    "Canceling": WindowState.RUNNING,
    "Succeeded": WindowState.SUCCEEDED,
    "Failed": WindowState.FAILED,
    "Cancelled": WindowState.CANCELLED,
    "Canceled": WindowState.CANCELLED,  # the spelling some ADF documents use
}


_FAILED = "Failed"  # RunStatus.FAILED's value: a refused createRun counts as a failed run


def _apply_window(
    state: BackfillState, key: str, body: ev.WindowEvent, at: datetime, payload: Mapping[str, Any]
) -> None:
    """Fold one ``window.*`` (or ``gate.window-accepted``) event into ``state.windows[key]``."""
    window = state.windows.get(key)
    if window is None:
        window = state.windows[key] = new_window("")
    status = body.status or None
    if body.run_id:
        window["run_id"] = body.run_id
    if status:
        window["status"] = status
    if reason := body.reason or body.message:
        window["reason"] = reason
    match body:
        case ev.WindowAccepted():
            window["accepted"] = True
            if window["state"] == WindowState.BLOCKED:
                window["state"] = WindowState.PENDING
        case ev.WindowSkipped():
            window["state"] = WindowState.SKIPPED
            window["decision"] = body.decision or window["decision"]
            state.intents.pop(key, None)
            state.closed.add(key)
        case ev.WindowChecked():
            if (body.decision or "").startswith("blocked") and not window["accepted"]:
                window["state"] = WindowState.BLOCKED
        case ev.WindowIntent():
            window["state"] = WindowState.INTENT
            window["attempts"] += 1
            window["run_id"], window["status"] = None, None
            window["started_at"], window["finished_at"], window["duration_ms"] = at, None, None
            state.intents[key] = (at, payload)
            state.first_intents.setdefault(key, intended_at(body, at))
        case ev.WindowCreated() | ev.WindowAdopted():
            window["state"] = _FROM_ADF_STATUS.get(status or "", WindowState.RUNNING)
            window["started_at"] = window["started_at"] or at
            state.intents.pop(key, None)
        case ev.WindowStatus():
            window["state"] = _FROM_ADF_STATUS.get(status or "", window["state"])
        case ev.WindowFinished():
            window["state"] = _FROM_ADF_STATUS.get(status or "", body.state or WindowState.FAILED)
            window["finished_at"] = at
            window["duration_ms"] = int(body.duration_ms) if body.duration_ms is not None else None
            state.intents.pop(key, None)
            state.closed.add(key)
        case ev.WindowCreateFailed():
            window["state"] = WindowState.FAILED
            state.intents.pop(key, None)
        case ev.WindowNeedsOperator():
            window["state"] = WindowState.NEEDS_OPERATOR
        case ev.WindowCancelled():
            window["cancel_requested"] = True


def _apply_run(state: BackfillState, key: str, body: ev.WindowEvent, actor: str, at: datetime) -> None:
    """Fold one ``window.*`` event into the run it is about (``state.runs``)."""
    run_id = body.run_id
    if isinstance(body, ev.WindowIntent):
        state._last_intent[key] = body
        return
    run = state._run_of.get(run_id) if run_id else None
    if run is None and (run_id or isinstance(body, ev.WindowCreateFailed | ev.WindowFinished)):
        if not run_id and key in state._refused:
            run = state._refused.pop(key)
        elif run_id or isinstance(body, ev.WindowCreateFailed):
            intent = state._last_intent.get(key)
            attempt = state.windows[key]["attempts"]
            mode, reference = (intent.mode, intent.reference_run_id) if intent else (None, None)
            run = WindowRun(key, attempt, mode, reference, run_id, at)
            state.runs.append(run)
            if run_id:
                state._run_of[run_id] = run
            else:
                state._refused[key] = run
    if run is None:
        return
    if isinstance(body, ev.WindowAdopted):
        run.adopted = True
    if body.status is not None:
        run.status = body.status
    match body:
        case ev.WindowCreateFailed():
            run.status = _FAILED
            run.error = body.reason
        case ev.WindowCancelled():
            run.cancel_requested = True
            run.cancelled_by = actor
            run.cancel_reason = body.reason
        case ev.WindowFinished():
            run.finished_at = at
            run.duration_seconds = run_seconds(body)
            run.failed_activity = body.failed_activity or run.failed_activity
            run.activity_type = body.activity_type or run.activity_type
            run.error_code = body.error_code or run.error_code
            run.error = body.error or body.activity_error or body.message or run.error


def run_seconds(finished: ev.WindowFinished) -> float | None:
    """How long a finished run took: ADF's ``durationInMs``, else its recorded start and end."""
    if finished.duration_ms is not None:
        return finished.duration_ms / 1000
    start, end = finished.run_start, finished.run_end
    if start and end:
        try:
            return (parse_utc(end) - parse_utc(start)).total_seconds()
        except ValueError:
            return None
    return None


def intended_at(intent: ev.WindowIntent, recorded: datetime) -> datetime:
    """When an intent meant its createRun: its ``intent_at``, else when it was recorded."""
    try:
        return parse_utc(intent.intent_at) if intent.intent_at is not None else recorded
    except ValueError:
        return recorded


def sealed_record(record: BackfillRecord, events: Iterable[EventLike]) -> BackfillRecord:
    """The request as its ``backfill.requested`` event in the chain records it (spec §15).

    The ``backfills`` row is outside the hash chain: whatever it says about the plan, the
    requester, the policy or the approved windows must agree with the event, which is what
    gates and ``run`` then use (issue 8, attack 4). A disagreement is tampering (exit 5)."""
    requested = next((e for e in events if e.kind == ev.REQUESTED), None)
    bid = record.id
    if requested is None:
        raise LedgerInvalid(f"{bid}: its request event is missing from the ledger; the ledger was tampered with")
    body = ev.decode(requested.kind, requested.payload)
    assert isinstance(body, ev.Requested)
    requester = body.requester
    sealed: dict[str, Any] = {
        "plan_path": body.plan_path,
        "plan_hash": body.plan_hash,
        "pipeline": body.pipeline,
        "factory_key": body.factory,
        "requester": requester.get("name") if requester is not None else None,
        "requester_source": requester.get("source") if requester is not None else None,
    }
    for name, value in sealed.items():
        if value is not None and getattr(record, name) != value:
            raise LedgerInvalid(
                f"{bid}: the backfills row's {name} differs from its sealed request event; the ledger was tampered with"
            )
    if body.approval is not None and ApprovalPolicy.from_json(body.approval) != record.policy:
        raise LedgerInvalid(
            f"{bid}: the backfills row's approval policy differs from its sealed request event; "
            "the ledger was tampered with"
        )
    if body.runnable is not None and list(body.runnable) != record.runnable_keys:
        raise LedgerInvalid(
            f"{bid}: the backfills row's runnable windows differ from its sealed request event; "
            "the ledger was tampered with"
        )
    if body.blocked is not None and sorted(body.blocked) != sorted(record.blocked_keys):
        raise LedgerInvalid(
            f"{bid}: the backfills row's blocked windows differ from its sealed request event; "
            "the ledger was tampered with"
        )
    # Four eyes compares against the identity the chain recorded for the request.
    return replace(record, requester=requested.actor, requester_source=requested.identity_source, seal=body.seal)


# --- the request: what ``backfill request`` freezes (spec §6) -------------------------------------


def draft_request(
    loaded: LoadedPlan, preview: Preview, actor: Actor, note: str | None, now: datetime
) -> tuple[BackfillRecord, dict[str, Any]]:
    """The request (its ID still empty) and the ``backfill.requested`` payload; the store writes
    both in one transaction (``backfill.store.backfills.create_backfill``)."""
    # Only a request seals its inputs: the fold, which every ``status`` loads, does not (issue 14).
    from backfill.seal import seal_request

    plan = loaded.plan
    policy = ApprovalPolicy.from_plan(plan.approval)
    decisions = {wd.window.key: str(wd.decision) for wd in preview.decisions}
    record = BackfillRecord(
        id="",
        plan_path=str(loaded.path.resolve()),
        plan_hash=loaded.hash,
        pipeline=loaded.pipeline,
        factory_key=loaded.ref.key,
        title=plan.title,
        ticket=plan.ticket or "",
        requester=actor.name,
        requester_source=actor.source.value,
        requested_at=require_utc(now, "now"),
        note=note,
        policy=policy,
        decisions=decisions,
        # Stored outside the ledger but held to the same rule: no credential is ever written.
        preview=redact_payload(preview.to_json()),
    )
    blocked = {
        wd.window.key: {"decision": str(wd.decision), "reason": wd.reason}
        for wd in preview.decisions
        if wd.decision.blocked
    }
    payload = {
        "plan_path": record.plan_path,
        "plan_hash": record.plan_hash,
        "title": record.title,
        "ticket": record.ticket,
        "note": note,
        "pipeline": record.pipeline,
        "factory": record.factory_key,
        "approval": policy.to_json(),
        "summary": dict(preview.summary()),
        "runnable": list(record.runnable_keys),
        "blocked": blocked,
        # Sealed in the chain (spec §15): gates and ``run`` read these, not the mutable row.
        "requester": {"name": actor.name, "source": actor.source.value},
        "seal": seal_request(loaded).to_json(),
    }
    if loaded.relative and loaded.windows:
        # The plan names its windows relative to now: record what they resolved to (the hash is of
        # the text, so it cannot tell the day); run resolves them against requested_at again.
        payload["windows"] = {
            "written": dict(loaded.relative),
            "resolved_at": format_utc(record.requested_at),
            "start": format_utc(loaded.windows[0].start),
            "end": format_utc(loaded.windows[-1].end),
        }
    return record, payload


def summary_lines(record: BackfillRecord, summary: dict[str, int] | None = None) -> Sequence[str]:
    """The short summary ``request`` prints under the ID."""
    total = len(record.decisions)
    runnable = len(record.runnable_keys)
    blocked = len(record.blocked_keys)
    skipped = total - runnable - blocked
    policy = record.policy
    title = f"{record.title} ({record.ticket})" if record.ticket else record.title
    who = f" from {', '.join(policy.approvers)}" if policy.approvers else ""
    lines = [
        title,
        f"pipeline {record.pipeline} in {record.factory_key}; plan {record.plan_hash[:12]}",
        f"windows: {total} in plan, {runnable} to run, {skipped} skipped, {blocked} blocked",
    ]
    if summary:
        lines.append("decisions: " + ", ".join(f"{k} {v}" for k, v in summary.items() if v))
    lines.append(
        f"needs {policy.required} approval{'s' if policy.required > 1 else ''}{who}, "
        f"by someone other than {record.requester}"
    )
    return lines


def assert_requestable(where: str, draft: BackfillRecord) -> None:
    """Refuse a request no approval could make run: every window skipped, or every one blocked
    by something only a new preview can clear (issue 9 #8). A blocked-partial window counts: a
    supervisor may accept it."""
    if not draft.runnable_keys and not draft.blocked_keys:
        count = len(draft.decisions)
        what = "its window needs no run" if count == 1 else f"none of its {count} windows needs a run"
        raise BackfillError(f"{where}: nothing to request: {what} (backfill preview shows why)")
    acceptable = [k for k in draft.blocked_keys if draft.decisions[k] == Decision.BLOCKED_PARTIAL]
    if not draft.runnable_keys and not acceptable:
        count = len(draft.blocked_keys)
        raise BackfillError(
            f"{where}: nothing to request: no window can run ({count} blocked; only a blocked-partial "
            "window can be accepted), fix what blocks them first (backfill preview shows why)"
        )
