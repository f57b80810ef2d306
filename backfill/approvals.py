"""Backfill requests, approvals and gates (spec §2 Backfill states, §6).

A backfill's state is never stored: ``derive_state`` replays its ledger events over the frozen
request (``BackfillRecord``), so every worker and every command agrees on it, and the ledger alone
explains it. The gate functions say whether an actor may approve, reject or accept a window; they
raise ``BackfillError`` with the one-line reason, and the CLI writes the event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from backfill import events as ev
from backfill.errors import AwaitingApproval, BackfillError, LedgerInvalid
from backfill.identity import VERIFIED_SOURCES, Actor, IdentitySource
from backfill.progress import WindowProgress, apply_window_event, initial_windows
from backfill.timeutil import format_duration, format_utc, require_utc, utcnow

if TYPE_CHECKING:
    from backfill.store.database import Database

RUNNABLE_DECISIONS = frozenset({"run", "rerun"})
ACCEPTABLE_DECISION = "blocked-partial"


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
    # from the chain by ``load_backfill``, or for requests recorded before inputs were sealed.
    seal: Mapping[str, Any] | None = None

    @property
    def runnable_keys(self) -> list[str]:
        return [k for k, d in self.decisions.items() if d in RUNNABLE_DECISIONS]

    @property
    def blocked_keys(self) -> list[str]:
        return [k for k, d in self.decisions.items() if d.startswith("blocked")]


class EventLike(Protocol):
    """What derivation reads of a ledger event (``LedgerEvent`` satisfies it)."""

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


def derive_state(record: BackfillRecord, events: Iterable[EventLike], now: datetime) -> BackfillState:
    """Replay ``events`` (in ledger order) over the frozen request, as of ``now``."""
    now = require_utc(now, "now")
    state = BackfillState(record.id, BackfillStatus.REQUESTED, record.policy.required)
    state.windows = initial_windows(record.decisions)
    for event in events:
        at = require_utc(event.at, "event time")
        # An event that arrived after a deadline cannot revive the wait it missed.
        _expire_if_due(record, state, at)
        _apply(record, state, event, at)
    _expire_if_due(record, state, now)
    if state.status not in (BackfillStatus.REQUESTED, BackfillStatus.APPROVED, BackfillStatus.EXPIRED):
        state.expires_at = None
    return state


def _apply(record: BackfillRecord, state: BackfillState, event: EventLike, at: datetime) -> None:
    kind, payload = event.kind, event.payload
    decided = Decided(event.actor, event.identity_source, at, payload.get("note") or payload.get("reason"))
    if kind.startswith("window."):
        if event.window_key:
            apply_window_event(state.windows, event.window_key, kind, payload, at)
        return
    if kind == ev.EXPIRED:
        state.expiry_recorded = True
        if state.status not in FINISHED:
            state.status = BackfillStatus.EXPIRED
        return
    if state.status in (BackfillStatus.REJECTED, BackfillStatus.EXPIRED):
        return
    if kind == ev.APPROVED:
        aliases = record.policy.aliases
        if not any(same_person(event.actor, d.actor, aliases) is not False for d in state.approval_events):
            state.approvals.append(event.actor)
            state.approval_events.append(decided)
        if state.status is BackfillStatus.REQUESTED and len(state.approvals) >= record.policy.required:
            state.status = BackfillStatus.APPROVED
            state.approved_at = at
    elif kind == ev.REJECTED:
        state.status = BackfillStatus.REJECTED
        state.rejection = decided
    elif kind == ev.STARTED:
        # Only an approved backfill starts; a stray start event cannot skip the approval.
        if state.status in _STARTABLE:
            state.status = BackfillStatus.PAUSED if _awaits_canary(state) else BackfillStatus.RUNNING
            state.started_at = state.started_at or at
            state.finished_at = None
            state.stop_requested = False
            state.concurrency = max(1, int(payload.get("concurrency", state.concurrency)))
    elif kind == ev.CANARY_PAUSED:
        state.canary_paused, state.canary_approved = True, False
        if state.status is BackfillStatus.RUNNING:
            state.status = BackfillStatus.PAUSED
    elif kind == ev.CANARY_APPROVED:
        state.canary_approved, state.canary_approval = True, decided
        if state.status is BackfillStatus.PAUSED:
            state.status = BackfillStatus.RUNNING
    elif kind == ev.WINDOW_ACCEPTED and event.window_key:
        state.accepted_windows.add(event.window_key)
        state.acceptances[event.window_key] = decided
        apply_window_event(state.windows, event.window_key, kind, payload, at)
    elif kind == ev.STOP_REQUESTED:
        state.stop_requested = True
    elif kind in (ev.COMPLETED, ev.FAILED, ev.STOPPED):
        state.status = BackfillStatus(kind.removeprefix("backfill."))
        state.finished_at = at


def _awaits_canary(state: BackfillState) -> bool:
    return state.canary_paused and not state.canary_approved


def _same(a: str, b: str) -> bool:
    # Principal names (UPNs, OS users) are compared case-insensitively, as Azure AD does.
    return a.casefold() == b.casefold()


def _local(name: str) -> tuple[str, str | None]:
    local, at, domain = name.casefold().partition("@")
    return (local, domain) if at else (local, None)


def same_person(a: str, b: str, aliases: Sequence[Sequence[str]] = ()) -> bool | None:
    """Whether two names, perhaps from two identity sources, are one person (spec §15).

    True when equal (case-insensitively), listed in one ``[approval] aliases`` group, or when one
    is a bare name and the other a principal (``alice@contoso.com``) with that local part. None
    (unsure) when two principals share a local part in different domains: callers refuse then.
    False otherwise."""
    if _same(a, b):
        return True
    for group in aliases:
        if any(_same(a, n) for n in group) and any(_same(b, n) for n in group):
            return True
    (local_a, domain_a), (local_b, domain_b) = _local(a), _local(b)
    if local_a != local_b:
        return False
    if domain_a is None or domain_b is None:
        return True
    return None


def assert_runnable(state: BackfillState, now: datetime) -> None:
    """Raise unless the runner may go on: AwaitingApproval (exit 3) while an approval or the
    canary approval is missing, BackfillError (exit 1) when rejected, expired or completed.
    A failed or stopped backfill may be resumed (``backfill run ID`` is resumable)."""
    bid = state.backfill_id
    if state.expires_at is not None and require_utc(now, "now") >= state.expires_at:
        raise BackfillError(f"{bid} expired at {format_utc(state.expires_at)}; request it again")
    if state.status is BackfillStatus.REQUESTED:
        raise AwaitingApproval(
            f"{bid} awaits approval ({len(state.approvals)} of {state.required}): backfill approve {bid}"
        )
    if state.status is BackfillStatus.PAUSED:
        raise AwaitingApproval(f"{bid} is paused after its canary windows: backfill approve {bid}")
    _refuse_sealed(state, "run")


def _refuse_sealed(state: BackfillState, action: str) -> None:
    bid = state.backfill_id
    if state.status is BackfillStatus.REJECTED:
        who = state.rejection.actor if state.rejection else "someone"
        reason = state.rejection.note if state.rejection and state.rejection.note else "no reason"
        raise BackfillError(f"{bid} was rejected by {who}: {reason}")
    if state.status is BackfillStatus.EXPIRED:
        when = f" at {format_utc(state.expires_at)}" if state.expires_at else ""
        raise BackfillError(f"{bid} expired{when}; request it again")
    if state.status is BackfillStatus.COMPLETED:
        raise BackfillError(f"{bid} is completed; nothing to {action}")


def check_reviewer(record: BackfillRecord, actor: Actor, action: str) -> None:
    """Four eyes, the approvers allow-list and the identity demand, for any gate decision."""
    bid, policy = record.id, record.policy
    check_identity_policy(bid, policy, actor)
    same = same_person(actor.name, record.requester, policy.aliases)
    if same:
        who = actor.name if _same(actor.name, record.requester) else f"{actor.name} ({record.requester})"
        raise BackfillError(f"{bid}: {who} requested this backfill and cannot {action} it (four eyes)")
    if same is None:
        raise BackfillError(
            f"{bid}: cannot tell whether {actor.name} is {record.requester}, who requested it (four eyes); "
            "name them in [approval] aliases, or approve as someone else"
        )
    if policy.approvers and not any(_listed(actor.name, a, policy.aliases) for a in policy.approvers):
        allowed = ", ".join(policy.approvers)
        raise BackfillError(f"{bid}: {actor.name} is not among the approvers ({allowed})")


def _listed(name: str, approver: str, aliases: Sequence[Sequence[str]]) -> bool:
    # Granting is stricter than refusing: the allow-list matches a name or its aliases, never a
    # local part (bob@another-tenant.com is not the "bob" the plan meant).
    return _same(name, approver) or any(
        any(_same(name, n) for n in group) and any(_same(approver, n) for n in group) for group in aliases
    )


def check_identity_policy(bid: str, policy: ApprovalPolicy, actor: Actor) -> None:
    """``[approval] identity``: ``any``, ``verified`` (a source a third party vouches for) or one source."""
    demanded = policy.identity
    if demanded == "any":
        return
    if demanded == "verified":
        if actor.source not in VERIFIED_SOURCES:
            names = ", ".join(sorted(s.value for s in VERIFIED_SOURCES))
            raise BackfillError(
                f"{bid}: the approval policy demands a verified identity ({names}); "
                f"{actor.name} is {actor.source.value}"
            )
        return
    if actor.source.value != demanded:
        raise BackfillError(
            f"{bid}: the approval policy demands an {demanded} identity; {actor.name} is {actor.source.value}"
            if demanded[0] in "aeiou"
            else f"{bid}: the approval policy demands a {demanded} identity; {actor.name} is {actor.source.value}"
        )


def declared_may_approve(policy: ApprovalPolicy) -> bool:
    """Whether a name anyone can type (BACKFILL_ACTOR) satisfies the policy: ``request`` warns."""
    return policy.identity in ("any", IdentitySource.DECLARED.value)


def assert_satisfiable(policy: ApprovalPolicy, requester: str, where: str) -> None:
    """Refuse a policy nobody can ever satisfy: the approvers allow-list, without the requester
    (four eyes), names fewer distinct people than ``required`` (issue 9 #8)."""
    if not policy.approvers:
        return
    others: list[str] = []
    for name in policy.approvers:
        if same_person(name, requester, policy.aliases) is not False:
            continue
        if not any(same_person(name, o, policy.aliases) is not False for o in others):
            others.append(name)
    if len(others) >= policy.required:
        return
    listed = ", ".join(others) if others else "nobody"
    raise BackfillError(
        f"{where}: approval.approvers can never approve it: {policy.required} approval"
        f"{'s' if policy.required > 1 else ''} needed from someone other than {requester} "
        f"(four eyes), and the list leaves {listed}"
    )


def gate_approval(record: BackfillRecord, state: BackfillState, actor: Actor) -> str:
    """The event kind ``approve ID`` records (an approval or a canary approval), or raise."""
    bid = state.backfill_id
    _refuse_sealed(state, "approve")
    if state.status in (BackfillStatus.FAILED, BackfillStatus.STOPPED):
        raise BackfillError(f"{bid} is {state.status.value}; nothing to approve")
    check_reviewer(record, actor, "approve")
    if state.status is BackfillStatus.PAUSED:
        return ev.CANARY_APPROVED
    if state.status is BackfillStatus.RUNNING:
        raise BackfillError(f"{bid} is running and awaits no approval")
    for given in state.approval_events:
        same = same_person(actor.name, given.actor, record.policy.aliases)
        if same:
            raise BackfillError(
                f"{bid}: {actor.name} has already approved it ({len(state.approvals)} of {state.required})"
            )
        if same is None:
            raise BackfillError(
                f"{bid}: cannot tell whether {actor.name} is {given.actor}, who already approved it; "
                "name them in [approval] aliases, or approve as someone else"
            )
    if state.status is BackfillStatus.APPROVED:
        raise BackfillError(f"{bid} is already approved by {', '.join(state.approvals)}: backfill run {bid}")
    return ev.APPROVED


def gate_rejection(record: BackfillRecord, state: BackfillState, actor: Actor) -> None:
    """Raise unless ``actor`` may reject: before the run starts, or at the canary pause."""
    bid = state.backfill_id
    _refuse_sealed(state, "reject")
    if state.status in (BackfillStatus.FAILED, BackfillStatus.STOPPED):
        raise BackfillError(f"{bid} is {state.status.value}; nothing to reject")
    if state.status is BackfillStatus.RUNNING:
        raise BackfillError(f"{bid} is running; stop it with: backfill stop {bid}")
    check_reviewer(record, actor, "reject")


def gate_window_acceptance(record: BackfillRecord, state: BackfillState, actor: Actor, key: str) -> None:
    """Raise unless ``actor`` may clear the blocked-partial window ``key`` of the frozen preview."""
    bid = state.backfill_id
    _refuse_sealed(state, "accept")
    if state.status in FINISHED:
        raise BackfillError(f"{bid} is {state.status.value}; no window can be accepted any more")
    decision = record.decisions.get(key)
    if decision is None:
        raise BackfillError(f"{bid}: window {key} is not in the frozen preview")
    if decision != ACCEPTABLE_DECISION:
        raise BackfillError(f"{bid}: window {key} is {decision}, not {ACCEPTABLE_DECISION}; nothing to accept")
    check_reviewer(record, actor, "accept a window of")
    if key in state.accepted_windows:
        by = state.acceptances[key].actor
        raise BackfillError(f"{bid}: window {key} was already accepted by {by}")


def expiry_reason(record: BackfillRecord, state: BackfillState) -> str:
    """Why an expired backfill expired, for the ``backfill.expired`` event and messages."""
    waited = format_duration(record.policy.expires)
    if state.approved_at is not None:
        return f"approved at {format_utc(state.approved_at)} but not started within {waited}"
    return f"not approved within {waited} of the request"


def approved_keys(record: BackfillRecord, state: BackfillState) -> list[str]:
    """The windows the approval covers: the frozen runnable ones and the accepted blocked ones."""
    return [k for k, d in record.decisions.items() if d in RUNNABLE_DECISIONS or k in state.accepted_windows]


def load_backfill(db: Database, backfill_id: str, now: datetime | None = None) -> tuple[BackfillRecord, BackfillState]:
    """The frozen request and its state derived from the ledger (BackfillError if unknown)."""
    from backfill.store.backfills import get_backfill
    from backfill.store.ledger import Ledger

    record = get_backfill(db, backfill_id)
    events: Sequence[EventLike] = Ledger(db).events(backfill_id=record.id)
    record = sealed_record(record, events)
    return record, derive_state(record, events, now or utcnow())


def sealed_record(record: BackfillRecord, events: Iterable[EventLike]) -> BackfillRecord:
    """The request as its ``backfill.requested`` event in the chain records it (spec §15).

    The ``backfills`` row is outside the hash chain: whatever it says about the plan, the
    requester, the policy or the approved windows must agree with the event, which is what
    gates and ``run`` then use (issue 8, attack 4). A disagreement is tampering (exit 5)."""
    requested = next((e for e in events if e.kind == ev.REQUESTED), None)
    bid = record.id
    if requested is None:
        raise LedgerInvalid(f"{bid}: its request event is missing from the ledger; the ledger was tampered with")
    payload = requested.payload
    requester = payload.get("requester")
    sealed: dict[str, Any] = {
        "plan_path": payload.get("plan_path"),
        "plan_hash": payload.get("plan_hash"),
        "pipeline": payload.get("pipeline"),
        "factory_key": payload.get("factory"),
        "requester": requester.get("name") if isinstance(requester, Mapping) else None,
        "requester_source": requester.get("source") if isinstance(requester, Mapping) else None,
    }
    for name, value in sealed.items():
        if value is not None and getattr(record, name) != value:
            raise LedgerInvalid(
                f"{bid}: the backfills row's {name} differs from its sealed request event; the ledger was tampered with"
            )
    if "approval" in payload and ApprovalPolicy.from_json(payload["approval"]) != record.policy:
        raise LedgerInvalid(
            f"{bid}: the backfills row's approval policy differs from its sealed request event; "
            "the ledger was tampered with"
        )
    if "runnable" in payload and list(payload["runnable"]) != record.runnable_keys:
        raise LedgerInvalid(
            f"{bid}: the backfills row's runnable windows differ from its sealed request event; "
            "the ledger was tampered with"
        )
    if "blocked" in payload and sorted(payload["blocked"]) != sorted(record.blocked_keys):
        raise LedgerInvalid(
            f"{bid}: the backfills row's blocked windows differ from its sealed request event; "
            "the ledger was tampered with"
        )
    # Four eyes compares against the identity the chain recorded for the request.
    seal = payload.get("seal")
    return replace(
        record,
        requester=requested.actor,
        requester_source=requested.identity_source,
        seal=seal if isinstance(seal, Mapping) else None,
    )


def verify_requests(db: Database) -> str | None:
    """The first ``backfills`` row that disagrees with its sealed request event, as one line, or
    None: ``ledger verify`` holds the rows outside the chain to the events inside it."""
    from backfill.store.backfills import list_backfills
    from backfill.store.ledger import Ledger

    requested: dict[str, EventLike] = {}
    for event in Ledger(db).events(kinds=[ev.REQUESTED]):
        if event.backfill_id:
            requested.setdefault(event.backfill_id, event)
    for record in list_backfills(db):
        try:
            sealed_record(record, [requested[record.id]] if record.id in requested else [])
        except LedgerInvalid as exc:
            return str(exc)
    return None
