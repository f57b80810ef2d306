"""SLA evidence (spec §13): check an SLA file; report its business dates (sync the pipeline's
history, read the runs of the dates, build the report with ``backfill.sla``).

History comes from the history cache, synced first as for a preview, so a report reaches past
ADF's 45 days for a pipeline that has been synced. The longest activity of each completing run is
asked of the factory (one call per date, only for runs ADF still keeps); ``sync=False`` reads the
cache alone, without the factory, and leaves the longest activity out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from backfill.errors import FactoryError, UsageError
from backfill.factory.run import PipelineInfo, Run
from backfill.services.common import connect_factory, database_for
from backfill.sla.calendar import business_dates_before, midnight_utc
from backfill.sla.days import Activity
from backfill.sla.model import LoadedSla, SlaFileError, load_sla
from backfill.sla.report import SlaReport, build_report, default_range
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from backfill.factory.protocol import Factory
    from backfill.history import SyncResult
    from backfill.store.database import Database

RETENTION = timedelta(days=45)
ACTIVITY_THREADS = 8
# A run for a business date starts on or around that date; two days' slack for early starts.
EARLY = timedelta(days=2)


@dataclass(frozen=True)
class SlaRun:
    report: SlaReport
    synced: SyncResult | None


def report_sla(
    path: str | Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sync: bool = True,
    now: datetime | None = None,
    connect: Callable[[LoadedSla], Factory] | None = None,
    db: Database | None = None,
) -> SlaRun:
    """``backfill sla report``: the SLA file, its dates in ``[since, until)`` and the drift."""
    from backfill.history import sync_history
    from backfill.store.history import load_history, runs_started_since

    loaded = load_sla(path)
    now = now or utcnow()
    since, until = default_range(now, since, until)
    if until <= since:
        raise UsageError("--until must be later than --since")
    factory: Factory | None = None
    synced = None
    with database_for(db) as database:
        if sync:
            from backfill.masking import declared_secrets

            factory = (connect or _connect)(loaded)
            info = _read_target(factory, loaded)
            synced = sync_history(database, factory, loaded.pipeline, now=now, secret=declared_secrets(info))
        history = load_history(database, loaded.ref, loaded.pipeline)
        with database.reading() as conn:
            runs = runs_started_since(conn, loaded.ref.key, loaded.pipeline, _earliest(loaded, since, until))
    lookup = _longest_activity(factory, now) if factory is not None else None
    report = build_report(
        loaded,
        runs,
        since=since,
        until=until,
        now=now,
        horizon=history.horizon,
        synced_at=history.synced_at,
        longest_activity=lookup,
    )
    return SlaRun(report, synced)


def check_sla(path: str | Path) -> LoadedSla:
    """``backfill sla check``: the file validated (nothing connects)."""
    return load_sla(path)


def _connect(loaded: LoadedSla) -> Factory:
    return connect_factory(loaded.ref)


def _read_target(factory: Factory, loaded: LoadedSla) -> PipelineInfo:
    """The pipeline exists and declares the business date parameter (one pipeline get)."""
    try:
        info = factory.get_pipeline(loaded.pipeline)
    except FactoryError as exc:
        if exc.status == 404:
            raise SlaFileError(
                str(loaded.path),
                "target.pipeline",
                f"pipeline {loaded.pipeline!r} does not exist in factory {loaded.ref.factory!r}",
            ) from None
        raise
    name = loaded.spec.business_date
    if name not in info.parameters:
        shown = ", ".join(sorted(info.parameters)) or "none"
        raise SlaFileError(
            str(loaded.path),
            "sla.business_date",
            f"pipeline {loaded.pipeline!r} declares no parameter {name!r} (it declares: {shown})",
        )
    return info


def _earliest(loaded: LoadedSla, since: datetime, until: datetime) -> datetime:
    """The earliest start of a run the report needs: the range's and the drift windows' dates."""
    drift = loaded.file.drift
    wanted = drift.recent + drift.baseline + 7
    first = business_dates_before(until, loaded.zone, frozenset(loaded.spec.days), wanted)[0]
    return min(since, midnight_utc(first, loaded.zone)) - EARLY


def _longest_activity(factory: Factory, now: datetime) -> Callable[[Sequence[Run]], Mapping[str, Activity]]:
    """Asks the factory for the activity runs of several runs at once (a few threads: each call
    waits on the service; the client counts its calls under a lock)."""

    def longest(run: Run) -> Activity | None:
        if run.end is None or run.end < now - RETENTION:
            return None  # ADF no longer holds its activity runs
        try:
            activities = factory.query_activity_runs(run.run_id)
        except FactoryError:
            return None
        timed = [a for a in activities if a.duration is not None]
        if not timed:
            return None
        top = max(timed, key=lambda a: a.duration or timedelta(0))
        assert top.duration is not None
        return Activity(top.name, top.duration)

    def lookup(runs: Sequence[Run]) -> Mapping[str, Activity]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as pool:
            found = dict(zip((run.run_id for run in runs), pool.map(longest, runs), strict=True))
        return {run_id: activity for run_id, activity in found.items() if activity is not None}

    return lookup
