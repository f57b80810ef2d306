"""``backfill runs list|show|cancel``: read a factory's pipeline runs (and cancel one, guarded)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import click

from backfill.cli.factory_options import factory_options
from backfill.cli.output import echo_json, echo_table, short_id
from backfill.errors import BackfillError
from backfill.factory.protocol import FactoryRef
from backfill.factory.run import Run, RunStatus
from backfill.factory.settings import factory_ref_from_options
from backfill.runs_query import RunQuery, parse_params
from backfill.services import runs as service
from backfill.spans import parse_range
from backfill.timeutil import format_duration, format_utc, utcnow
from backfill.usual import MIN_USUAL, Verdict

STATUSES = [s.value for s in RunStatus]


def _ref(subscription: str | None, resource_group: str | None, factory: str | None) -> FactoryRef:
    return factory_ref_from_options(subscription, resource_group, factory)


@click.group()
def runs() -> None:
    """List, show and cancel pipeline runs of a factory."""


@runs.command("list")
@factory_options
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option(
    "--since",
    metavar="T",
    help="Runs that started at or after T: a UTC time, a date or a span back (6h, 2d); default 24h.",
)
@click.option("--until", metavar="T", help="Runs that started before T (default: now).")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), multiple=True)
@click.option(
    "--param", "params", metavar="NAME=VALUE", multiple=True, help="Only runs with this parameter value (repeatable)."
)
@click.option("--outliers", is_flag=True, help="Only runs far outside their usual duration.")
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
    params: tuple[str, ...],
    outliers: bool,
    as_json: bool,
    wide: bool,
) -> None:
    """Pipeline runs, newest first, each against its usual duration (an outlier is marked !).

    ADF filters on a run's last-updated time, so the query asks for runs updated since SINCE and
    keeps those that started in [SINCE, UNTIL)."""
    now = utcnow()
    query = _query(now, since, until, pipeline, status, params, default_since=timedelta(days=1))
    found = service.list_runs(_ref(subscription, resource_group, factory), query, outliers=outliers, now=now)
    if as_json:
        echo_json({"runs": [judged.to_json() for judged in found]})
        return
    echo_table(
        ["run ID", "pipeline", "status", "start", "duration", "usual", "parameters"],
        [
            [
                r.run_id if wide else short_id(r.run_id),
                r.pipeline,
                r.status.value,
                format_utc(r.start),
                _took(verdict.elapsed_ms, r) + (" !" if verdict.outlier else ""),
                _ms(verdict.usual_ms),
                _short_params(r),
            ]
            for r, verdict in ((j.run, j.verdict) for j in found)
        ],
        shrink=["parameters"],
        wide=wide,
    )
    marked = sum(1 for j in found if j.verdict.outlier)
    click.echo(
        f"{len(found)} runs" + (f", {marked} outside their usual duration (!)" if marked and not outliers else "")
    )


def _query(
    now: datetime,
    since: str | None,
    until: str | None,
    pipeline: str | None,
    status: tuple[str, ...],
    params: tuple[str, ...],
    *,
    default_since: timedelta | None = None,
) -> RunQuery:
    return RunQuery(
        span=parse_range(since, until, now, default_since=default_since),
        pipeline=pipeline,
        statuses=tuple(RunStatus.parse(s).value for s in status),
        params=parse_params(params),
    )


def _took(elapsed_ms: int | None, run: Run) -> str:
    text = _ms(elapsed_ms)
    return text if run.duration is not None or not text else f"{text}+"  # still running


def _ms(value: int | None) -> str:
    return format_duration(timedelta(milliseconds=value)) if value is not None else ""


def _short_params(run: Run) -> str:
    return ", ".join(f"{k}={v}" for k, v in run.parameters.items())


def _usual_line(verdict: Verdict, run: Run) -> str:
    verb = "took" if run.duration is not None else "running for"
    this = f"this run {verb} {_ms(verdict.elapsed_ms)}"
    if verdict.usual is None:
        return f"usual duration: none (fewer than {MIN_USUAL} succeeded runs in the last 30 days); {this}"
    judged = "far outside it" if verdict.outlier else "within it"
    return f"usual duration: {verdict.usual.describe()}; {this}, {judged}"


@runs.command("show")
@factory_options
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output.")
def show_run(
    subscription: str | None, resource_group: str | None, factory: str | None, run_id: str, as_json: bool
) -> None:
    """A run: parameters, timestamps, status, activity runs, the failing activity's error, the
    activity that dominates it, the one still in progress, and its usual duration."""
    from backfill.runs_query import activity_json

    now = utcnow()
    detail = service.show_run(_ref(subscription, resource_group, factory), run_id, now=now)
    run, activities, failing = detail.run, detail.activities, detail.failing
    if as_json:
        echo_json(
            {
                "run": run.to_json(),
                "activities": [activity_json(a) for a in activities],
                "failing_activity": activity_json(failing) if failing else None,
                "dominant_activity": activity_json(detail.dominant) if detail.dominant else None,
                "in_progress_activity": activity_json(detail.in_progress) if detail.in_progress else None,
                "usual_duration_ms": detail.verdict.usual_ms,
                "usual_ms": detail.verdict.usual_ms,
                "elapsed_ms": detail.verdict.elapsed_ms,
                "outlier": detail.verdict.outlier,
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
    if detail.dominant is not None:
        took = detail.dominant.duration or (
            (now - detail.dominant.start) if detail.dominant.start is not None else None
        )
        click.echo(f"dominant activity: {detail.dominant.name} ({format_duration(took)})")
    if detail.in_progress is not None:
        since = detail.in_progress.start
        running = format_duration(now - since) if since else ""
        click.echo(f"in progress: {detail.in_progress.name} since {format_utc(since)} ({running})")
    click.echo(_usual_line(detail.verdict, run))


@runs.command("export")
@factory_options
@click.option(
    "--since", metavar="T", required=True, help="Runs that started at or after T (a UTC time, a date, or 6h, 2d...)."
)
@click.option("--until", metavar="T", help="Runs that started before T (default: now).")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), multiple=True)
@click.option(
    "--param", "params", metavar="NAME=VALUE", multiple=True, help="Only runs with this parameter value (repeatable)."
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--activities", is_flag=True, help="With each run's activity runs (one more call per run).")
@click.option("--output", metavar="FILE", help="Write here (default: stdout); replaced only when complete.")
def export_runs(
    subscription: str | None,
    resource_group: str | None,
    factory: str | None,
    since: str,
    until: str | None,
    pipeline: str | None,
    status: tuple[str, ...],
    params: tuple[str, ...],
    fmt: str,
    activities: bool,
    output: str | None,
) -> None:
    """Every run of a range, every page, as JSONL (the runs list --json row) or CSV; runs ADF no
    longer holds (past 45 days) come from the history cache. The ledger records the export."""
    from backfill.identity import resolve_actor

    now = utcnow()
    query = _query(now, since, until, pipeline, status, params)

    def progress(line: str) -> None:
        click.echo(line, err=True)

    result = service.export_runs(
        _ref(subscription, resource_group, factory),
        query,
        fmt=fmt,
        activities=activities,
        output=output,
        progress=progress,
        actor=resolve_actor(),
        now=now,
    )
    for note in result.notes:
        progress(note)
    where = f" to {output}" if output and output != "-" else ""
    progress(f"exported {result.runs:,} runs{where} ({result.sources})")


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
@click.option(
    "--plan",
    "plan",
    metavar="PLAN",
    help="The plan whose window the run loads: its sink checks must find the window clean.",
)
@click.option("--no-check", is_flag=True, help="Cancel without checking the sink (say so: it is recorded).")
@click.option("--force", is_flag=True, help="Cancel a run within its usual duration, or whose window holds rows.")
@click.option("--recursive", is_flag=True, help="Also cancel child pipelines.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cancel_run(
    subscription: str | None,
    resource_group: str | None,
    factory: str | None,
    run_id: str,
    reason: str,
    plan: str | None,
    no_check: bool,
    force: bool,
    recursive: bool,
    yes: bool,
) -> None:
    """Cancel a run, guarded: it must be running far longer than usual, and with --plan its
    window's sink must hold nothing; waits for ADF to confirm Cancelled."""
    from backfill.cancel import CancelRequest
    from backfill.identity import resolve_actor

    request = CancelRequest(run_id, reason, plan=plan, no_check=no_check, force=force, recursive=recursive)
    target = service.run_to_cancel(_ref(subscription, resource_group, factory), request)
    guarded = target.guarded
    run = guarded.run
    click.echo(f"{run.run_id} {run.pipeline} {run.status.value} since {format_utc(run.start)}")
    click.echo(_usual_line(guarded.verdict, run))
    if guarded.window is not None:
        checks = ", ".join(f"{c.check} {c.status.value}" for c in guarded.checks) or "no checks in the plan"
        click.echo(f"window {guarded.window.key}: {checks}")
    for why in guarded.forced:
        click.echo(f"forced: {why}")
    if not yes and not _confirmed(run_id):
        raise BackfillError(f"run {run_id} not cancelled: not confirmed")
    click.echo(f"cancel requested for {run_id}; waiting for ADF to confirm")
    outcome = service.cancel_run(target, actor=resolve_actor())
    owner = f" (backfill {outcome.backfill_id}, window {outcome.window_key})" if outcome.backfill_id else ""
    click.echo(f"cancelled {run_id}{owner}: ADF confirmed {outcome.status} after {format_duration(outcome.waited)}")
