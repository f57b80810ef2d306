"""``backfill runs list|show|cancel``: read a factory's pipeline runs (and cancel one, guarded)."""

from __future__ import annotations

import statistics
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from backfill import events as ev
from backfill.cli.factory_options import factory_options
from backfill.cli.output import echo_json, echo_table, short_id
from backfill.errors import BackfillError, FactoryError, UsageError
from backfill.factory.client import FactoryClient, connect
from backfill.factory.run import ActivityRun, Run, RunStatus
from backfill.factory.settings import factory_ref_from_options
from backfill.masking import declared_secrets, mask_run
from backfill.timeutil import format_duration, format_utc, parse_utc_option, utcnow

if TYPE_CHECKING:
    from backfill.store.ledger import Ledger

STATUSES = [s.value for s in RunStatus]


def _client(subscription: str | None, resource_group: str | None, factory: str | None) -> FactoryClient:
    return connect(factory_ref_from_options(subscription, resource_group, factory))


class _Masker:
    """Masks secret parameter values before a run is printed: the pipeline's SecureString
    parameters (one pipeline get per pipeline shown) and those any plan marked secret (kept in
    the history cache)."""

    def __init__(self, client: FactoryClient) -> None:
        self._client = client
        self._names: dict[str, frozenset[str]] = {}

    def __call__(self, run: Run) -> Run:
        names = self._names.get(run.pipeline)
        if names is None:
            names = self._names[run.pipeline] = self._secret_names(run.pipeline)
        return mask_run(run, names)

    def _secret_names(self, pipeline: str) -> frozenset[str]:
        from backfill.store.database import Database
        from backfill.store.history import known_secrets

        try:
            declared = declared_secrets(self._client.get_pipeline(pipeline))
        except FactoryError:
            # A deleted pipeline keeps its runs; what plans marked secret still applies.
            declared = frozenset()
        if not _ledger_exists():
            return declared
        db = Database()
        try:
            with db.engine.connect() as conn:
                remembered = known_secrets(conn, self._client.ref.key, pipeline)
        finally:
            db.dispose()
        return declared | remembered


def _ledger_exists() -> bool:
    """False for a SQLite ledger file that is not there: reading runs must not create one."""
    from sqlalchemy.engine import make_url

    from backfill.store.database import ledger_url

    url = make_url(ledger_url())
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return True
    return Path(url.database).exists()


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
    client = _client(subscription, resource_group, factory)
    statuses = [RunStatus.parse(s).value for s in status] or None
    found = [
        run
        for run in client.query_runs(
            updated_after=start_from,
            updated_before=now + timedelta(days=1),
            pipeline=pipeline,
            statuses=statuses,
            newest_first=True,
        )
        if run.start is not None and run.start >= start_from and (start_until is None or run.start < start_until)
    ]
    found.sort(key=lambda r: r.start or start_from, reverse=True)
    mask = _Masker(client)
    found = [mask(run) for run in found]
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


def _usual_durations(client: FactoryClient, pipeline: str) -> list[timedelta]:
    now = utcnow()
    durations = [
        run.duration
        for run in client.query_runs(
            updated_after=now - timedelta(days=7),
            updated_before=now + timedelta(days=1),
            pipeline=pipeline,
            statuses=[RunStatus.SUCCEEDED.value],
        )
        if run.duration is not None
    ]
    return durations[-200:]


def _usual_line(durations: list[timedelta], run: Run, now: datetime) -> str:
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
    client = _client(subscription, resource_group, factory)
    run = _Masker(client)(client.get_run(run_id))
    activities = client.query_activity_runs(run_id)
    durations = _usual_durations(client, run.pipeline)
    failing = next((a for a in activities if a.failed), None)
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


def _median_ms(durations: list[timedelta]) -> int | None:
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
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger

    client = _client(subscription, resource_group, factory)
    run = client.get_run(run_id)
    click.echo(f"{run.run_id} {run.pipeline} {run.status.value} since {format_utc(run.start)}")
    click.echo(_usual_line(_usual_durations(client, run.pipeline), run, utcnow()))
    if not yes and not _confirmed(run_id):
        raise BackfillError(f"run {run_id} not cancelled: not confirmed")
    ledger = Ledger(Database())
    from backfill.terminal import strip_controls

    # Recorded and printed later: no escape sequence reaches a reader's terminal (issue 9 #9).
    payload = {
        "run_id": run_id,
        "pipeline": run.pipeline,
        "status": run.status.value,
        "reason": strip_controls(reason),
        "factory": client.ref.key,
        "recursive": recursive,
    }
    actor = resolve_actor()
    # A run of a backfill's window: the events name the backfill and window, so its report and
    # status say who cancelled it and why, not just "Cancelled".
    backfill_id, window_key = _owner(ledger, run_id)
    ledger.append("run.cancel-requested", payload, actor=actor, backfill_id=backfill_id, window_key=window_key)
    if backfill_id and window_key:
        # Before the cancel is sent: the backfill's runner then sees who asked and why first.
        ledger.append(
            ev.WINDOW_CANCELLED,
            {"run_id": run_id, "reason": reason, "by": "runs cancel"},
            actor=actor,
            backfill_id=backfill_id,
            window_key=window_key,
        )
    client.cancel_run(run_id, recursive=recursive)
    ledger.append("run.cancelled", payload, actor=actor, backfill_id=backfill_id, window_key=window_key)
    if backfill_id and window_key:
        click.echo(f"cancel requested for {run_id} (backfill {backfill_id}, window {window_key})")
    else:
        click.echo(f"cancel requested for {run_id}")


def _owner(ledger: Ledger, run_id: str) -> tuple[str | None, str | None]:
    """The backfill and window whose run ``run_id`` is, if a backfill created or adopted it."""
    for event in ledger.iter_events(kinds=(ev.WINDOW_CREATED, ev.WINDOW_ADOPTED)):
        if event.payload.get("run_id") == run_id and event.backfill_id and event.window_key:
            return event.backfill_id, event.window_key
    return None, None
