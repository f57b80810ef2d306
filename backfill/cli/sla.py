"""``backfill sla check|report|schema``: SLA and duration-drift evidence per business date (spec §13)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import click

from backfill.cli.output import WIDTH, echo_json, echo_table, exit_with
from backfill.errors import UsageError

if TYPE_CHECKING:
    from datetime import datetime

    from backfill.sla.report import SlaReport


@click.group("sla")
def sla() -> None:
    """Check SLA files and report each business date against its deadline."""


@sla.command("check")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=True))
def check(path: Path) -> None:
    """Validate SLA_FILE and say what it promises (nothing connects)."""
    from backfill.services.sla import check_sla

    loaded = check_sla(path)
    spec = loaded.spec
    click.echo(f"sla: {loaded.path}")
    click.echo(f"title: {loaded.file.title}")
    target = loaded.file.target
    click.echo(f"target: {target.factory}/{target.pipeline} (resource group {target.resource_group})")
    click.echo(f"business date: parameter {spec.business_date}")
    click.echo(f"deadline: {spec.deadline.strftime('%H:%M')} {spec.timezone} on {', '.join(spec.days)}")
    drift = loaded.file.drift
    click.echo(
        f"drift: last {drift.recent} business dates against the {drift.baseline} before, "
        f"threshold {drift.threshold:.0%}"
    )


@sla.command("schema")
def schema() -> None:
    """Print the JSON Schema of SLA files (for editors)."""
    from backfill.sla.model import sla_schema

    echo_json(sla_schema())


@sla.command("report")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--since", help="First business date's start, UTC (default: 28 days before --until); or 2d, 6h.")
@click.option("--until", help="End of the range, UTC (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output (schema 1).")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV line per date.")
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False), help="Also write an HTML page.")
@click.option("--no-sync", is_flag=True, help="Use the cached history as it is, without asking the factory.")
@click.option("--wide", is_flag=True, help="Whole run IDs, however wide the table gets.")
def report(
    path: Path,
    since: str | None,
    until: str | None,
    as_json: bool,
    as_csv: bool,
    html_file: Path | None,
    no_sync: bool,
    wide: bool,
) -> None:
    """One row per business date in [SINCE, UNTIL): met, close, missed, failed, not-run or pending,
    with the completing run, its end against the deadline, and the duration drift.

    Syncs the history cache first. Exits 6 when a date missed, failed or did not run, or drift is
    detected; 0 otherwise."""
    from backfill.cli.history import describe_sync
    from backfill.services.sla import report_sla
    from backfill.timeutil import utcnow

    if as_json and as_csv:
        raise UsageError("--json and --csv: choose one")
    now = utcnow()
    result = report_sla(
        path,
        since=_when(since, "--since", now),
        until=_when(until, "--until", now),
        sync=not no_sync,
        now=now,
    )
    built = result.report
    if result.synced is not None:
        click.echo(describe_sync(result.synced, built.sla.pipeline), err=True)
    if html_file is not None:
        from backfill.sla.html import render_html

        html_file.write_text(render_html(built), encoding="utf-8")
    if as_json:
        echo_json(built.to_json())
    elif as_csv:
        from backfill.sla.text import to_csv

        click.echo(to_csv(built), nl=False)
    else:
        _echo_text(built, wide=wide)
        if html_file is not None:
            click.echo(f"wrote {html_file}")
    exit_with(built.exit_code)


def _when(text: str | None, option: str, now: datetime) -> datetime | None:
    """A UTC timestamp, a date (its 00:00Z) or a span back from now (``2d``, ``6h``)."""
    from backfill.timeutil import parse_duration, parse_utc_option

    if text is None:
        return None
    stripped = text.strip()
    if stripped[:1].isdigit() and stripped[-1:] in ("m", "h", "d", "w") and "-" not in stripped:
        try:
            return now - parse_duration(stripped, option)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if len(stripped) == 10 and stripped[4] == "-" and stripped[7] == "-":
        stripped += "T00:00:00Z"  # a date means its 00:00Z (spec §12)
    return parse_utc_option(stripped, option)


def _echo_text(built: SlaReport, *, wide: bool) -> None:
    from backfill.cli.output import short_id
    from backfill.sla.text import HEADERS, OUTSIDE_HEADERS, footer_lines, header_lines, outside_rows, table_rows

    ids = (lambda run_id: run_id) if wide else short_id
    for line in header_lines(built):
        click.echo(line)
    echo_table(HEADERS, table_rows(built, ids), shrink=["longest"], wide=wide)
    if built.outside_days:
        click.echo("\noutside the SLA's days (never counted):")
        echo_table(OUTSIDE_HEADERS, outside_rows(built, ids))
    click.echo()
    for line in footer_lines(built):
        for part in textwrap.wrap(line, WIDTH, subsequent_indent="  "):
            click.echo(part)
