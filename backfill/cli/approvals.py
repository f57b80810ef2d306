"""``backfill request``, ``approve`` and ``reject``: freeze a plan's preview and gate it (spec §6)."""

from __future__ import annotations

import click

from backfill.errors import UsageError
from backfill.identity import Actor, IdentitySource, resolve_actor
from backfill.services import review
from backfill.services.common import recorded_text


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--note", help="Why this backfill is needed; recorded with the request.")
def request(plan: str, note: str | None) -> None:
    """Freeze PLAN's hash and preview for approval; prints the backfill ID first."""
    from backfill.approvals import identity_lines
    from backfill.backfills import summary_lines

    requested = review.request_backfill(plan, actor=resolve_actor(), note=note)
    record = requested.record
    click.echo(record.id)
    for line in summary_lines(record, requested.summary):
        click.echo(line)
    # In team mode the requester is the database's role, whatever the client declared.
    for line in identity_lines(Actor(record.requester, IdentitySource(record.requester_source)), requested.policy):
        click.echo(line)
    if record.blocked_keys:
        click.echo(
            f"blocked windows never run; a supervisor may clear a blocked-partial one with: "
            f"backfill approve {record.id} --window KEY --accept partial --note TEXT"
        )
    click.echo(f"next: backfill approve {record.id}")


@click.command()
@click.argument("backfill_id", metavar="ID")
@click.option("--window", "window_key", metavar="KEY", help="Clear this blocked window (with --accept).")
@click.option("--accept", type=click.Choice(["partial"]), help="What to accept in the window's sink.")
@click.option("--note", help="Recorded with the approval; required with --accept.")
def approve(backfill_id: str, window_key: str | None, accept: str | None, note: str | None) -> None:
    """Approve backfill ID, its canary pause, or (--window KEY --accept partial) a blocked window."""
    note = recorded_text(note)
    if (window_key is None) != (accept is None):
        raise UsageError("--window KEY and --accept partial go together")
    if window_key is not None and note is None:
        raise UsageError("--accept partial needs --note TEXT: why the partial window may run")
    done = review.approve_backfill(backfill_id, actor=resolve_actor(), note=note, window_key=window_key, accept=accept)
    bid = done.backfill_id
    if done.what == "window":
        click.echo(f"accepted window {done.window_key} of {bid} ({done.accept}): it runs with the backfill")
    elif done.what == "canary":
        click.echo(f"canary approved for {bid}: the remaining windows may run (backfill run {bid})")
    elif done.complete:
        click.echo(f"approved {bid} ({done.count} of {done.required}): backfill run {bid}")
    else:
        more = done.required - done.count
        click.echo(f"approval recorded for {bid} ({done.count} of {done.required}); {more} more needed")


@click.command()
@click.argument("backfill_id", metavar="ID")
@click.option("--reason", required=True, help="Why; recorded in the ledger.")
def reject(backfill_id: str, reason: str) -> None:
    """Reject backfill ID (before it runs, or at its canary pause)."""
    text = recorded_text(reason)
    if text is None:
        raise UsageError("--reason must say why the backfill is rejected")
    rejected = review.reject_backfill(backfill_id, actor=resolve_actor(), reason=text)
    click.echo(f"rejected {rejected}: {text}")
