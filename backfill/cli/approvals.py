"""``backfill request``, ``approve`` and ``reject``: freeze a plan's preview and gate it (spec §6)."""

from __future__ import annotations

import click

from backfill import events as ev
from backfill.approvals import (
    ApprovalPolicy,
    BackfillRecord,
    BackfillState,
    BackfillStatus,
    assert_satisfiable,
    expiry_reason,
    gate_approval,
    gate_rejection,
    gate_window_acceptance,
    load_backfill,
)
from backfill.errors import UsageError
from backfill.identity import Actor, IdentitySource, resolve_actor
from backfill.seal import require_variables
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.terminal import strip_controls
from backfill.timeutil import format_utc


def _text(value: str | None) -> str | None:
    # Notes and reasons are printed and recorded: no escape sequence rewrites anyone's screen.
    return strip_controls(value) or None if value is not None else None


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--note", help="Why this backfill is needed; recorded with the request.")
def request(plan: str, note: str | None) -> None:
    """Freeze PLAN's hash and preview for approval; prints the backfill ID first."""
    from backfill.checks.registry import build_checks
    from backfill.factory.client import connect
    from backfill.history import load_history
    from backfill.plan.loader import load_plan
    from backfill.preview import compute_preview
    from backfill.requests import assert_requestable, draft_request, identity_lines, summary_lines
    from backfill.store.backfills import create_backfill
    from backfill.target import sync_for_plan
    from backfill.timeutil import utcnow

    # One instant for the whole request: relative windows resolve against the time it records.
    now = utcnow()
    loaded = load_plan(plan, now=now)
    actor = resolve_actor()
    policy = ApprovalPolicy.from_plan(loaded.plan.approval)
    assert_satisfiable(policy, actor.name, plan)
    # A check whose connection is unset would only show as blocked windows: say what is missing.
    require_variables(loaded, when="cannot request", parts=("checks",))
    db = Database()
    sync_for_plan(db, connect(loaded.ref), loaded)
    history = load_history(db, loaded.ref, loaded.pipeline)
    preview = compute_preview(loaded, history, build_checks(loaded.check_specs, base_dir=loaded.path.parent))
    draft, payload = draft_request(loaded, preview, actor, _text(note), now)
    assert_requestable(plan, draft)
    require_variables(loaded, when="cannot request")
    record = create_backfill(db, draft, payload, actor)
    click.echo(record.id)
    for line in summary_lines(record, dict(preview.summary())):
        click.echo(line)
    # In team mode the requester is the database's role, whatever the client declared.
    for line in identity_lines(Actor(record.requester, IdentitySource(record.requester_source)), policy):
        click.echo(line)
    if record.blocked_keys:
        click.echo(
            f"blocked windows never run; a supervisor may clear a blocked-partial one with: "
            f"backfill approve {record.id} --window KEY --accept partial --note TEXT"
        )
    click.echo(f"next: backfill approve {record.id}")


def _load(db: Database, backfill_id: str, actor: Actor) -> tuple[BackfillRecord, BackfillState]:
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


@click.command()
@click.argument("backfill_id", metavar="ID")
@click.option("--window", "window_key", metavar="KEY", help="Clear this blocked window (with --accept).")
@click.option("--accept", type=click.Choice(["partial"]), help="What to accept in the window's sink.")
@click.option("--note", help="Recorded with the approval; required with --accept.")
def approve(backfill_id: str, window_key: str | None, accept: str | None, note: str | None) -> None:
    """Approve backfill ID, its canary pause, or (--window KEY --accept partial) a blocked window."""
    note = _text(note)
    if (window_key is None) != (accept is None):
        raise UsageError("--window KEY and --accept partial go together")
    if window_key is not None and note is None:
        raise UsageError("--accept partial needs --note TEXT: why the partial window may run")
    actor = resolve_actor()
    db = Database()
    record, state = _load(db, backfill_id, actor)
    ledger = Ledger(db)
    if window_key is not None:
        gate_window_acceptance(record, state, actor, window_key)
        accepted = {"accept": accept, "decision": record.decisions[window_key], "note": note}
        ledger.append(ev.WINDOW_ACCEPTED, accepted, actor=actor, backfill_id=record.id, window_key=window_key)
        click.echo(f"accepted window {window_key} of {record.id} ({accept}): it runs with the backfill")
        return
    kind = gate_approval(record, state, actor)
    if kind == ev.CANARY_APPROVED:
        ledger.append(kind, {"note": note}, actor=actor, backfill_id=record.id)
        click.echo(f"canary approved for {record.id}: the remaining windows may run (backfill run {record.id})")
        return
    count = len(state.approvals) + 1
    approval: dict[str, object] = {"note": note, "approval": count, "required": state.required}
    ledger.append(kind, approval, actor=actor, backfill_id=record.id)
    if count >= state.required:
        click.echo(f"approved {record.id} ({count} of {state.required}): backfill run {record.id}")
    else:
        more = state.required - count
        click.echo(f"approval recorded for {record.id} ({count} of {state.required}); {more} more needed")


@click.command()
@click.argument("backfill_id", metavar="ID")
@click.option("--reason", required=True, help="Why; recorded in the ledger.")
def reject(backfill_id: str, reason: str) -> None:
    """Reject backfill ID (before it runs, or at its canary pause)."""
    text = _text(reason)
    if text is None:
        raise UsageError("--reason must say why the backfill is rejected")
    actor = resolve_actor()
    db = Database()
    record, state = _load(db, backfill_id, actor)
    gate_rejection(record, state, actor)
    Ledger(db).append(ev.REJECTED, {"reason": text}, actor=actor, backfill_id=record.id)
    click.echo(f"rejected {record.id}: {text}")
