"""The use cases the console calls: the same functions, in the same order, as the CLI's commands.

The web layer has no rules of its own (issue 15): every gate, every event and every message comes
from ``backfill.approvals``, ``backfill.execution``, ``backfill.report`` and the ledger store, called
exactly as ``cli/approvals.py``, ``cli/execute.py``, ``cli/status.py`` and ``cli/report.py`` call
them. Each function takes the acting ``Actor`` (from the console's sign-in, never a form field) and
returns the one line the CLI would print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backfill import events as ev
from backfill.approvals import (
    BackfillRecord,
    BackfillState,
    BackfillStatus,
    approved_keys,
    derive_state,
    expiry_reason,
    gate_approval,
    gate_rejection,
    gate_window_acceptance,
    load_backfill,
)
from backfill.console.frozen import FrozenRequests, Shown
from backfill.errors import BackfillError, UsageError
from backfill.identity import Actor
from backfill.progress import Progress, summarize
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.terminal import strip_controls
from backfill.timeutil import format_utc, utcnow


def clean_text(value: str | None) -> str | None:
    """A note or reason as the CLI records it: control characters stripped, empty is None."""
    return strip_controls(value) or None if value is not None else None


@dataclass(frozen=True)
class Listed:
    record: BackfillRecord
    state: BackfillState
    progress: Progress


def progress_of(record: BackfillRecord, state: BackfillState, now: datetime) -> Progress:
    """Done / running / left over the windows the approval covers (as ``status`` counts them)."""
    return summarize((state.windows[k] for k in approved_keys(record, state)), now, state.concurrency)


def list_backfills(frozen: FrozenRequests, now: datetime | None = None) -> list[Listed]:
    """Every backfill with its derived state, as ``backfill status`` lists them."""
    from backfill.store.backfills import list_backfills as rows

    now = now or utcnow()
    listed = []
    for record in rows(frozen.db):
        state = derive_state(record, frozen.events(record.id), now)
        listed.append(Listed(record, state, progress_of(record, state, now)))
    return listed


def show_backfill(frozen: FrozenRequests, backfill_id: str, now: datetime | None = None) -> Shown:
    """The frozen request (as the chain seals it) and its state, as ``backfill status ID`` reads them."""
    return frozen.show(backfill_id, now or utcnow())


def _load_for_decision(db: Database, backfill_id: str, actor: Actor) -> tuple[BackfillRecord, BackfillState]:
    record, state = load_backfill(db, backfill_id)
    if state.status is BackfillStatus.EXPIRED and not state.expiry_recorded:
        # As the CLI does: the first command to notice a passed deadline records it.
        Ledger(db).append(
            ev.EXPIRED,
            {"reason": expiry_reason(record, state), "expired_at": format_utc(state.expires_at)},
            actor=actor,
            backfill_id=record.id,
        )
    return record, state


def approve_backfill(db: Database, backfill_id: str, actor: Actor, note: str | None) -> str:
    """``backfill approve ID``: the approval, or the canary approval at the pause."""
    note = clean_text(note)
    record, state = _load_for_decision(db, backfill_id, actor)
    ledger = Ledger(db)
    kind = gate_approval(record, state, actor)
    if kind == ev.CANARY_APPROVED:
        ledger.append(kind, {"note": note}, actor=actor, backfill_id=record.id)
        return f"canary approved for {record.id}: the remaining windows may run"
    count = len(state.approvals) + 1
    approval: dict[str, object] = {"note": note, "approval": count, "required": state.required}
    ledger.append(kind, approval, actor=actor, backfill_id=record.id)
    if count >= state.required:
        return f"approved {record.id} ({count} of {state.required}): backfill run {record.id}"
    return f"approval recorded for {record.id} ({count} of {state.required}); {state.required - count} more needed"


def accept_window(db: Database, backfill_id: str, actor: Actor, window_key: str, note: str | None) -> str:
    """``backfill approve ID --window KEY --accept partial --note TEXT``."""
    note = clean_text(note)
    if note is None:
        raise UsageError("accepting a partial window needs a note: why the partial window may run")
    record, state = _load_for_decision(db, backfill_id, actor)
    gate_window_acceptance(record, state, actor, window_key)
    accepted = {"accept": "partial", "decision": record.decisions[window_key], "note": note}
    Ledger(db).append(ev.WINDOW_ACCEPTED, accepted, actor=actor, backfill_id=record.id, window_key=window_key)
    return f"accepted window {window_key} of {record.id} (partial): it runs with the backfill"


def reject_backfill(db: Database, backfill_id: str, actor: Actor, reason: str | None) -> str:
    """``backfill reject ID --reason TEXT``."""
    text = clean_text(reason)
    if text is None:
        raise UsageError("a rejection must say why the backfill is rejected")
    record, state = _load_for_decision(db, backfill_id, actor)
    gate_rejection(record, state, actor)
    Ledger(db).append(ev.REJECTED, {"reason": text}, actor=actor, backfill_id=record.id)
    return f"rejected {record.id}: {text}"


def stop_backfill(db: Database, backfill_id: str, actor: Actor) -> Sequence[str]:
    """``backfill stop ID`` (without --cancel-run: cancelling runs stays a CLI decision)."""
    from backfill.execution import request_stop

    return request_stop(db, backfill_id, actor=actor)


def backfill_report(db: Database, backfill_id: str) -> dict[str, Any]:
    """``backfill report ID --json``: the evidence as plain data (docs/report-json.md)."""
    from backfill.report import collect_report

    return collect_report(db, backfill_id)


@dataclass(frozen=True)
class Allowed:
    """What ``actor`` may do to a backfill now, asked of the same gates the POSTs pass through:
    None when allowed, else the one-line refusal (shown instead of the button)."""

    approve: str | None
    reject: str | None
    accept: str | None
    stop: str | None
    canary: bool


def allowed_actions(record: BackfillRecord, state: BackfillState, actor: Actor | None) -> Allowed:
    from backfill.errors import BackfillError

    def refusal(gate: Any, *args: Any) -> str | None:
        if actor is None:
            return "sign in to act"
        try:
            gate(record, state, actor, *args)
        except BackfillError as exc:
            return str(exc)
        return None

    acceptable = next((k for k in record.blocked_keys if record.decisions[k] == "blocked-partial"), None)
    accept = refusal(gate_window_acceptance, acceptable) if acceptable else "no blocked-partial window"
    live = state.status in (BackfillStatus.RUNNING, BackfillStatus.PAUSED)
    stop = None if live else f"{record.id} is {state.status.value}; nothing to stop"
    if stop is None:
        stop = "sign in to act" if actor is None else may_stop(record, actor)
    return Allowed(
        approve=refusal(gate_approval),
        reject=refusal(gate_rejection),
        accept=accept,
        stop=stop,
        canary=state.status is BackfillStatus.PAUSED,
    )


def may_stop(record: BackfillRecord, actor: Actor) -> str | None:
    """Anyone may stop a backfill on the CLI; in the console a read-only reader (outside a set
    approvers list, and not the requester) may not: None when ``actor`` may, else why not."""
    from backfill.approvals import same_person

    policy = record.policy
    if not policy.approvers or same_person(actor.name, record.requester, policy.aliases):
        return None
    if any(same_person(actor.name, a, policy.aliases) for a in policy.approvers):
        return None
    return f"{record.id}: {actor.name} is neither the requester nor among the approvers; read-only"


def stop_backfill_as(db: Database, backfill_id: str, actor: Actor) -> Sequence[str]:
    """``stop_backfill`` for a console user: refused for read-only readers (``may_stop``)."""
    from backfill.errors import BackfillError

    record, _ = load_backfill(db, backfill_id)
    refusal = may_stop(record, actor)
    if refusal is not None:
        raise BackfillError(refusal)
    return stop_backfill(db, backfill_id, actor)


@dataclass(frozen=True)
class Changed:
    key: str
    frozen: str
    now: str
    reason: str


@dataclass(frozen=True)
class FreshPreview:
    """What a preview computed now would change against the frozen one (spec §6: a window may drop
    out at execution, none may be added)."""

    dropped: list[Changed]
    would_add: list[Changed]
    other: list[Changed]
    synced: str


def fresh_preview(db: Database, record: BackfillRecord) -> FreshPreview:
    """``backfill preview PLAN`` of the request's plan (synced first), compared window by window with
    the frozen preview; BackfillError when the plan file changed (a new request is needed)."""
    from backfill.checks.registry import build_checks
    from backfill.execution import PLAN_CHANGED
    from backfill.factory.client import connect
    from backfill.history import load_history
    from backfill.plan.loader import load_plan
    from backfill.preview import compute_preview
    from backfill.target import sync_for_plan

    # As ``run`` reads it: relative windows mean what they meant at the request.
    loaded = load_plan(record.plan_path, now=record.requested_at)
    if loaded.hash != record.plan_hash:
        raise BackfillError(PLAN_CHANGED)
    checks = build_checks(loaded.check_specs, base_dir=loaded.path.parent)
    synced, _ = sync_for_plan(db, connect(loaded.ref), loaded)
    preview = compute_preview(loaded, load_history(db, loaded.ref, loaded.pipeline), checks)
    runnable = {"run", "rerun"}
    dropped, added, other = [], [], []
    for item in preview.decisions:
        was, now = record.decisions.get(item.key), item.decision.value
        if was is None or was == now:
            continue
        change = Changed(item.key, was, now, item.reason)
        if was in runnable and now not in runnable:
            dropped.append(change)
        elif now in runnable and was not in runnable:
            added.append(change)
        else:
            other.append(change)
    line = f"history of {loaded.pipeline} synced: {synced.fetched} runs fetched in {synced.api_calls} API calls"
    return FreshPreview(dropped, added, other, line)
