"""What the console asks of backfill: the CLI's use cases (``backfill.services``) and its gates.

The web layer has no rules of its own (issue 15): approving, rejecting, accepting a window and
stopping are ``services.review`` and ``services.run`` calls, exactly as ``backfill approve``,
``reject`` and ``stop`` make them, as the signed-in ``Actor`` (never a form field); the report
and the fresh preview are ``services.status`` and ``services.plans``. Which buttons a page shows is
asked of the same gate functions the services pass through (``allowed_actions``), and the server
refuses whatever they refuse. Pages read through ``FrozenRequests`` (``derive_state`` over the
ledger, kept between page views). Each action returns the line the CLI would print.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backfill.approvals import approved_keys, gate_approval, gate_rejection, gate_window_acceptance
from backfill.backfills import BackfillRecord, BackfillState, BackfillStatus, derive_state
from backfill.console.frozen import FrozenRequests, Shown
from backfill.errors import BackfillError, UsageError
from backfill.identity import Actor
from backfill.progress import Progress, summarize
from backfill.services.common import recorded_text
from backfill.store.database import Database
from backfill.timeutil import utcnow


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


TEAM_MODE = (
    "team mode: the database stamps every event with its login, and the console has one login; "
    "act with your own (backfill approve, reject, stop), the console reads only"
)


def _writable(db: Database) -> None:
    # In team mode the identity is the database role (spec §15): an action sent through the
    # console's single login would be recorded as the console, whoever signed in.
    if db.team_mode:
        raise BackfillError(TEAM_MODE)


def approve_backfill(db: Database, backfill_id: str, actor: Actor, note: str | None) -> str:
    """``backfill approve ID``: the approval, or the canary approval at the pause."""
    from backfill.services.review import approve_backfill as approve

    _writable(db)
    done = approve(backfill_id, actor=actor, note=note, db=db)
    if done.what == "canary":
        return f"canary approved for {done.backfill_id}: the remaining windows may run"
    if done.complete:
        return f"approved {done.backfill_id} ({done.count} of {done.required}): backfill run {done.backfill_id}"
    more = done.required - done.count
    return f"approval recorded for {done.backfill_id} ({done.count} of {done.required}); {more} more needed"


def accept_window(db: Database, backfill_id: str, actor: Actor, window_key: str, note: str | None) -> str:
    """``backfill approve ID --window KEY --accept partial --note TEXT`` (the note is required, as there)."""
    from backfill.services.review import approve_backfill as approve

    _writable(db)
    note = recorded_text(note)
    if note is None:
        raise UsageError("accepting a partial window needs a note: why the partial window may run")
    approve(backfill_id, actor=actor, note=note, window_key=window_key, accept="partial", db=db)
    return f"accepted window {window_key} of {backfill_id} (partial): it runs with the backfill"


def reject_backfill(db: Database, backfill_id: str, actor: Actor, reason: str | None) -> str:
    """``backfill reject ID --reason TEXT`` (a reason is required, as there)."""
    from backfill.services.review import reject_backfill as reject

    _writable(db)
    text = recorded_text(reason)
    if text is None:
        raise UsageError("a rejection must say why the backfill is rejected")
    return f"rejected {reject(backfill_id, actor=actor, reason=text, db=db)}: {text}"


def stop_backfill(db: Database, backfill_id: str, actor: Actor) -> str:
    """``backfill stop ID`` (without --cancel-run: cancelling ADF runs stays a CLI decision);
    refused for read-only readers (``may_stop``)."""
    from backfill.services.run import stop_backfill as stop
    from backfill.store.backfills import load_backfill

    record, _ = load_backfill(db, backfill_id)
    refusal = may_stop(record, actor)
    if refusal is not None:
        raise BackfillError(refusal)
    done = stop(backfill_id, actor=actor, db=db)
    if done.status is BackfillStatus.PAUSED:
        return f"stopped {backfill_id} at its canary pause"
    return f"stop requested for {backfill_id}: the runner stops after the windows in flight"


def backfill_report(db: Database, backfill_id: str) -> dict[str, Any]:
    """``backfill report ID --json``: the evidence as plain data (docs/report-json.md)."""
    from backfill.services.status import backfill_report as report

    return report(backfill_id, db=db)


@dataclass(frozen=True)
class Allowed:
    """What ``actor`` may do to a backfill now, asked of the same gates the POSTs pass through:
    None when allowed, else the one-line refusal (shown instead of the button)."""

    approve: str | None
    reject: str | None
    accept: str | None
    stop: str | None
    canary: bool


def allowed_actions(
    record: BackfillRecord, state: BackfillState, actor: Actor | None, *, team_mode: bool = False
) -> Allowed:
    def refusal(gate: Any, *args: Any) -> str | None:
        if actor is None:
            return "sign in to act"
        if team_mode:
            return TEAM_MODE
        try:
            gate(record, state, actor, *args)
        except BackfillError as exc:
            return str(exc)
        return None

    acceptable = next(
        (k for k, d in record.decisions.items() if d == "blocked-partial" and k not in state.accepted_windows), None
    )
    accept = refusal(gate_window_acceptance, acceptable) if acceptable else "no blocked-partial window"
    live = state.status in (BackfillStatus.RUNNING, BackfillStatus.PAUSED)
    stop = None if live else f"{record.id} is {state.status.value}; nothing to stop"
    if stop is None:
        stop = "sign in to act" if actor is None else TEAM_MODE if team_mode else may_stop(record, actor)
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
    from backfill.identity import same_person

    policy = record.policy
    if not policy.approvers or same_person(actor.name, record.requester, policy.aliases):
        return None
    if any(same_person(actor.name, a, policy.aliases) for a in policy.approvers):
        return None
    return f"{record.id}: {actor.name} is neither the requester nor among the approvers; read-only"


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
    """The one preview (``services.plans.preview_plan``, synced first) of the request's plan, as
    ``run`` loads it, compared window by window with the frozen preview; BackfillError when the
    plan file changed (a new request is needed)."""
    from backfill.plan.loader import load_plan
    from backfill.services.plans import preview_plan
    from backfill.services.run import PLAN_CHANGED

    # As ``run`` reads it: relative windows mean what they meant at the request.
    loaded = load_plan(record.plan_path, now=record.requested_at)
    if loaded.hash != record.plan_hash:
        raise BackfillError(PLAN_CHANGED)
    fresh = preview_plan(loaded, db=db)
    runnable = {"run", "rerun"}
    dropped, added, other = [], [], []
    for item in fresh.preview.decisions:
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
    synced = fresh.synced
    line = (
        f"history of {loaded.pipeline} synced: {synced.fetched} runs fetched in {synced.api_calls} API calls"
        if synced is not None
        else f"history of {loaded.pipeline} as cached"
    )
    return FreshPreview(dropped, added, other, line)
