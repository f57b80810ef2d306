"""Request, approve and reject a backfill (spec §6): freeze a plan's preview and gate it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from backfill import events as ev
from backfill.approvals import assert_satisfiable, expiry_reason, gate_approval, gate_rejection, gate_window_acceptance
from backfill.backfills import ApprovalPolicy, BackfillRecord, BackfillState, BackfillStatus
from backfill.identity import Actor
from backfill.seal import require_variables
from backfill.services.common import database_for, recorded_text
from backfill.services.plans import preview_plan
from backfill.store.backfills import load_backfill
from backfill.timeutil import format_utc, utcnow

if TYPE_CHECKING:
    from backfill.store.database import Database


@dataclass(frozen=True)
class Requested:
    record: BackfillRecord
    policy: ApprovalPolicy
    summary: dict[str, int]  # windows per decision in the frozen preview


def request_backfill(
    path: str | Path, *, actor: Actor, note: str | None = None, db: Database | None = None
) -> Requested:
    """Freeze PLAN's hash and preview as a backfill awaiting approval (spec §6)."""
    from backfill.backfills import assert_requestable, draft_request
    from backfill.plan.loader import load_plan
    from backfill.store.backfills import create_backfill

    where = str(path)
    # One instant for the whole request: relative windows resolve against the time it records.
    now = utcnow()
    loaded = load_plan(path, now=now)
    policy = ApprovalPolicy.from_plan(loaded.plan.approval)
    assert_satisfiable(policy, actor.name, where)
    # A check whose connection is unset would only show as blocked windows: say what is missing.
    require_variables(loaded, when="cannot request", parts=("checks",))
    with database_for(db) as database:
        preview = preview_plan(loaded, db=database).preview
        draft, payload = draft_request(loaded, preview, actor, recorded_text(note), now)
        assert_requestable(where, draft)
        require_variables(loaded, when="cannot request")
        record = create_backfill(database, draft, payload, actor)
    return Requested(record, policy, dict(preview.summary()))


def _load_for_review(db: Database, backfill_id: str, actor: Actor) -> tuple[BackfillRecord, BackfillState]:
    from backfill.store.ledger import Ledger

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
    from backfill.store.ledger import Ledger

    note = recorded_text(note)
    with database_for(db) as database:
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
    from backfill.store.ledger import Ledger

    with database_for(db) as database:
        record, state = _load_for_review(database, backfill_id, actor)
        gate_rejection(record, state, actor)
        Ledger(database).append(ev.REJECTED, {"reason": reason}, actor=actor, backfill_id=record.id)
    return record.id
