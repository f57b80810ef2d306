"""``backfill incident RUN_ID``: the incident record of a stuck or failed run (SPEC §12).

Exit 0 when the incident is resolved (the latest follow-up run of the same window succeeded),
4 while it is not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from backfill.cli.factory_options import factory_options
from backfill.cli.output import echo_json, echo_table, exit_with
from backfill.errors import BackfillError, ExitCode
from backfill.timeutil import format_duration, format_utc, utcnow

if TYPE_CHECKING:
    from backfill.incident import Incident


def _ms(value: int | None) -> str:
    return format_duration(timedelta(milliseconds=value)) if value is not None else ""


@click.command()
@factory_options
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output.")
@click.option("--html", "html_file", metavar="FILE", help="Also write a self-contained HTML page.")
def incident(
    subscription: str | None,
    resource_group: str | None,
    factory: str | None,
    run_id: str,
    as_json: bool,
    html_file: str | None,
) -> None:
    """The incident record of a run: what it did, who cancelled it and why, and the follow-up
    runs of its window; exit 4 until the latest follow-up succeeded."""
    from backfill.factory.settings import factory_ref_from_options
    from backfill.services import runs as service

    record = service.incident(factory_ref_from_options(subscription, resource_group, factory), run_id, now=utcnow())
    if html_file:
        from backfill.incident_html import render_incident

        try:
            Path(html_file).write_text(render_incident(record), encoding="utf-8")
        except OSError as exc:
            raise BackfillError(f"cannot write {html_file}: {exc.strerror or exc}") from None
    if as_json:
        echo_json(record.to_json())
    else:
        _print(record)
    if not record.resolved:
        exit_with(ExitCode.BLOCKED)


def _print(record: Incident) -> None:
    run, verdict = record.run, record.subject.verdict
    click.echo(f"incident record of run {run.run_id} ({run.pipeline})")
    echo_table(
        ["field", "value"],
        [
            ["status", run.status_label],
            ["start", format_utc(run.start)],
            ["end", format_utc(run.end)],
            ["duration", _ms(verdict.elapsed_ms) + (" (outlier)" if verdict.outlier else "")],
            ["usual", verdict.usual.describe() if verdict.usual else "none"],
            ["invoked by", run.invoked_by],
            ["parameters", ", ".join(f"{k}={v}" for k, v in run.parameters.items())],
            ["window", ", ".join(f"{f}={run.parameters.get(f)}" for f in record.match_fields)],
        ],
    )
    if record.stuck is not None:
        stuck = record.stuck
        error = f": {stuck.error_code} {stuck.message}".rstrip(": ") if stuck.failed else ""
        click.echo(f"\nstuck or failing activity: {stuck.name} {stuck.status} since {format_utc(stuck.start)}{error}")
    for story in record.cancels:
        asked = story.requested
        outcome = (
            f"ADF confirmed {story.confirmed.payload.get('status')} at {format_utc(story.confirmed.at)}"
            if story.confirmed
            else "no outcome recorded (no confirmation of the cancel)"
        )
        click.echo(
            f"cancel requested {format_utc(asked.at)} by {asked.actor}: {asked.payload.get('reason')}; {outcome}"
        )
    click.echo("\nfollow-up runs of the same window:")
    echo_table(
        ["run ID", "status", "start", "end", "duration", "invoked by"],
        [
            [
                j.run.run_id,
                j.run.status_label,
                format_utc(j.run.start),
                format_utc(j.run.end),
                _ms(j.verdict.elapsed_ms),
                j.run.invoked_by,
            ]
            for j in record.follow_up
        ],
    )
    click.echo(f"\nledger events naming these runs: {len(record.ledger_events)}")
    for event in record.ledger_events:
        where = f" {event.backfill_id}" if event.backfill_id else ""
        click.echo(f"  #{event.seq} {format_utc(event.at)} {event.kind}{where} by {event.actor}")
    replacement = record.replacement
    if record.resolved and replacement is not None:
        click.echo(f"\nresolved: {replacement.run.run_id} succeeded at {format_utc(replacement.run.end)}")
    elif replacement is not None:
        click.echo(f"\nnot resolved: the latest follow-up {replacement.run.run_id} is {replacement.run.status_label}")
    else:
        click.echo("\nnot resolved: no later run of this window yet")
