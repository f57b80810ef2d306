"""``backfill runs list|show|cancel``: read a factory's pipeline runs (and cancel one, guarded)."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta

import click

from backfill.cli.factory_options import factory_options
from backfill.cli.output import echo_json, echo_table, short_id
from backfill.errors import BackfillError, UsageError
from backfill.factory.protocol import FactoryRef
from backfill.factory.run import ActivityRun, Run, RunStatus
from backfill.factory.settings import factory_ref_from_options
from backfill.services import runs as service
from backfill.timeutil import format_duration, format_utc, parse_utc_option, utcnow

STATUSES = [s.value for s in RunStatus]


def _ref(subscription: str | None, resource_group: str | None, factory: str | None) -> FactoryRef:
    return factory_ref_from_options(subscription, resource_group, factory)


@click.group()
def runs() -> None:
    """List, show and cancel pipeline runs of a factory."""


@runs.command("list")
@factory_options
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--since", help="Runs that started at or after this UTC time (default: 24 hours ago).")
@click.option("--until", help="Runs that started before this UTC time (default: now).")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), multiple=True)
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output.")
@click.option("--wide", is_flag=True, help="Whole run IDs and parameters, however wide the table gets.")
def list_runs(
    subscription: str | None,
    resource_group: str | None,
    factory: str | None,
    pipeline: str | None,
    since: str | None,
    until: str | None,
    status: tuple[str, ...],
    as_json: bool,
    wide: bool,
) -> None:
    """Pipeline runs, newest first.

    ADF filters on a run's last-updated time, so the query asks for runs updated since SINCE and
    keeps those that started in [SINCE, UNTIL)."""
    now = utcnow()
    start_from = parse_utc_option(since, "--since") if since else now - timedelta(days=1)
    start_until = parse_utc_option(until, "--until") if until else None
    if start_until is not None and start_until <= start_from:
        raise UsageError("--until must be later than --since")
    found = service.list_runs(
        _ref(subscription, resource_group, factory),
        start_from=start_from,
        start_until=start_until,
        pipeline=pipeline,
        statuses=status,
        now=now,
    )
    if as_json:
        echo_json({"runs": [r.to_json() for r in found]})
        return
    echo_table(
        ["run ID", "pipeline", "status", "start", "duration", "parameters"],
        [
            [
                r.run_id if wide else short_id(r.run_id),
                r.pipeline,
                r.status.value,
                format_utc(r.start),
                format_duration(r.duration),
                _short_params(r),
            ]
            for r in found
        ],
        shrink=["parameters"],
        wide=wide,
    )
    click.echo(f"{len(found)} runs")


def _short_params(run: Run) -> str:
    return ", ".join(f"{k}={v}" for k, v in run.parameters.items())


def _usual_line(durations: Sequence[timedelta], run: Run, now: datetime) -> str:
    if not durations:
        return "usual duration: no succeeded run of this pipeline in the last 7 days"
    median = timedelta(seconds=statistics.median(d.total_seconds() for d in durations))
    longest = max(durations)
    took = run.duration or ((now - run.start) if run.start else None)
    verb = "took" if run.duration is not None else "running for"
    return (
        f"usual duration: median {format_duration(median)}, longest {format_duration(longest)} "
        f"over {len(durations)} succeeded runs; this run {verb} {format_duration(took)}"
    )


@runs.command("show")
@factory_options
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output.")
def show_run(
    subscription: str | None, resource_group: str | None, factory: str | None, run_id: str, as_json: bool
) -> None:
    """A run: parameters, timestamps, status, activity runs and the failing activity's error."""
    detail = service.show_run(_ref(subscription, resource_group, factory), run_id)
    run, activities, durations, failing = detail.run, detail.activities, detail.usual, detail.failing
    if as_json:
        echo_json(
            {
                "run": run.to_json(),
                "activities": [_activity_json(a) for a in activities],
                "failing_activity": _activity_json(failing) if failing else None,
                "usual_duration_ms": _median_ms(durations),
            }
        )
        return
    echo_table(
        ["field", "value"],
        [
            ["run ID", run.run_id],
            ["pipeline", run.pipeline],
            ["status", run.status.value],
            ["run group", run.run_group_id or ""],
            ["is latest", "yes" if run.is_latest else "no"],
            ["start", format_utc(run.start)],
            ["end", format_utc(run.end)],
            ["last updated", format_utc(run.last_updated)],
            ["duration", format_duration(run.duration)],
            ["invoked by", run.invoked_by],
            ["message", run.message],
        ],
    )
    click.echo()
    echo_table(["parameter", "value"], [[k, str(v)] for k, v in run.parameters.items()])
    click.echo()
    echo_table(
        ["activity", "type", "status", "start", "duration", "error"],
        [
            [
                a.name,
                a.type,
                a.status,
                format_utc(a.start),
                format_duration(a.duration),
                f"{a.error_code} {a.message}".strip(),
            ]
            for a in activities
        ],
    )
    if failing:
        click.echo(f"\nfailed in {failing.name}: {failing.error_code} ({failing.failure_type}) {failing.message}")
    click.echo(_usual_line(durations, run, utcnow()))


def _median_ms(durations: Sequence[timedelta]) -> int | None:
    if not durations:
        return None
    return int(statistics.median(d.total_seconds() for d in durations) * 1000)


def _activity_json(activity: ActivityRun) -> dict[str, object]:
    return {
        "name": activity.name,
        "type": activity.type,
        "status": activity.status,
        "start": format_utc(activity.start, precise=True) or None,
        "end": format_utc(activity.end, precise=True) or None,
        "duration_ms": int(activity.duration.total_seconds() * 1000) if activity.duration else None,
        "error_code": activity.error_code,
        "message": activity.message,
        "failure_type": activity.failure_type,
    }


def _confirmed(run_id: str) -> bool:
    try:
        return click.confirm("cancel this run?", default=False)
    except click.Abort:
        # No answer can come without a terminal (a script, CI, a pipe at its end): that is a
        # refusal to fix with --yes, not an interruption.
        if not sys.stdin.isatty():
            raise BackfillError(
                f"run {run_id} not cancelled: no terminal to confirm on; pass --yes to cancel without asking"
            ) from None
        raise


@runs.command("cancel")
@factory_options
@click.argument("run_id")
@click.option("--reason", required=True, help="Why; recorded in the ledger.")
@click.option("--recursive", is_flag=True, help="Also cancel child pipelines.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cancel_run(
    subscription: str | None,
    resource_group: str | None,
    factory: str | None,
    run_id: str,
    reason: str,
    recursive: bool,
    yes: bool,
) -> None:
    """Cancel a run, after showing how long runs of its pipeline usually take."""
    from backfill.identity import resolve_actor

    target = service.run_to_cancel(_ref(subscription, resource_group, factory), run_id)
    run = target.run
    click.echo(f"{run.run_id} {run.pipeline} {run.status.value} since {format_utc(run.start)}")
    click.echo(_usual_line(target.usual, run, utcnow()))
    if not yes and not _confirmed(run_id):
        raise BackfillError(f"run {run_id} not cancelled: not confirmed")
    backfill_id, window_key = service.cancel_run(target, reason=reason, recursive=recursive, actor=resolve_actor())
    if backfill_id and window_key:
        click.echo(f"cancel requested for {run_id} (backfill {backfill_id}, window {window_key})")
    else:
        click.echo(f"cancel requested for {run_id}")
