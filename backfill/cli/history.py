"""``backfill history sync PLAN``: fetch the plan's pipeline runs into the history cache."""

from __future__ import annotations

from pathlib import Path

import click

from backfill.history import SyncResult
from backfill.timeutil import format_utc


@click.group("history")
def history() -> None:
    """Fetch and cache a pipeline's run history."""


def describe_sync(result: SyncResult, pipeline: str) -> str:
    """One line: what a sync fetched and what the cache now covers."""
    kind = "first sync" if result.first_sync else "sync"
    calls = "API call" if result.api_calls == 1 else "API calls"
    runs = "run" if result.fetched == 1 else "runs"
    watermark = format_utc(result.watermark) if result.watermark else "none yet"
    return (
        f"history of {pipeline}: {kind}, {result.fetched} {runs} fetched in {result.api_calls} {calls}; "
        f"covered since {format_utc(result.horizon)}, last update seen {watermark}"
    )


@history.command("sync")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=True))
def sync(path: Path) -> None:
    """Fetch the runs of PLAN's pipeline that changed since the last sync (the first time: all
    that ADF keeps, 45 days) into the history cache in the ledger database."""
    from backfill.services.plans import history_sync

    synced = history_sync(path)
    click.echo(describe_sync(synced.result, synced.pipeline))
