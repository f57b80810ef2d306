"""Finding runs and judging them against their usual duration (SPEC §12): ``runs list`` and
``runs show``, and the pieces ``runs export``, ``runs cancel`` and ``incident`` share.

Reading runs never creates a ledger: the history cache is read only when the ledger database
already exists (``open_cache``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backfill.errors import UsageError
from backfill.factory.run import ActivityRun, Run, RunStatus
from backfill.matching import normalise
from backfill.spans import TimeRange
from backfill.timeutil import format_utc
from backfill.usual import LOOKBACK, UsualIndex, Verdict

if TYPE_CHECKING:
    from backfill.factory.protocol import Factory
    from backfill.store.database import Database

# ADF's lastUpdated may lag a run's start by its whole life; the query reaches this far ahead.
FUTURE = timedelta(days=1)
Mask = Callable[[Run], Run]
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ParamFilter:
    """``--param NAME=VALUE``: compared after the normalisation of window matching."""

    name: str
    value: str
    key: Hashable

    def holds(self, run: Run) -> bool:
        return self.name in run.parameters and normalise(run.parameters[self.name]) == self.key


def parse_params(items: Iterable[str]) -> tuple[ParamFilter, ...]:
    filters = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {item!r}: write it NAME=VALUE, like --param feederRegion=north")
        filters.append(ParamFilter(name.strip(), value, normalise(value)))
    return tuple(filters)


@dataclass(frozen=True)
class RunQuery:
    """Which runs: started in ``span``, of ``pipeline`` (all when None), with these statuses and
    parameters."""

    span: TimeRange
    pipeline: str | None = None
    statuses: tuple[str, ...] = ()
    params: tuple[ParamFilter, ...] = field(default_factory=tuple)

    def holds(self, run: Run) -> bool:
        return (
            self.span.holds(run.start)
            and (self.pipeline is None or run.pipeline == self.pipeline)
            and (not self.statuses or run.status.value in self.statuses)
            and all(p.holds(run) for p in self.params)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "since": format_utc(self.span.since) or None,
            "until": format_utc(self.span.until) or None,
            "pipeline": self.pipeline,
            "statuses": list(self.statuses),
            "params": {p.name: p.value for p in self.params},
        }


def factory_runs(
    factory: Factory, query: RunQuery, now: datetime, *, updated_after: datetime | None = None
) -> Iterator[Run]:
    """The runs ADF holds that ``query`` keeps, every page, oldest start first. ADF filters on
    a run's last update, so it is asked for runs updated since the start of the range (a run
    that started in the range was updated after it started)."""
    after = updated_after or query.span.since or now - LOOKBACK
    for run in factory.query_runs(
        updated_after=after,
        updated_before=now + FUTURE,
        pipeline=query.pipeline,
        statuses=list(query.statuses) or None,
    ):
        if query.holds(run):
            yield run


def ledger_exists() -> bool:
    """False for a SQLite ledger file that is not there: reading runs must not create one."""
    from sqlalchemy.engine import make_url

    from backfill.store.database import ledger_url

    url = make_url(ledger_url())
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return True
    return Path(url.database).exists()


@contextmanager
def open_cache() -> Iterator[Database | None]:
    """The ledger database holding the history cache, or None when there is no ledger yet."""
    if not ledger_exists():
        yield None
        return
    from backfill.store.database import Database

    db = Database()
    try:
        yield db
    finally:
        db.dispose()


class UsualDurations:
    """The usual duration of each pipeline's runs, read once per pipeline: from the history cache
    when the pipeline is synced there, from ADF otherwise (SPEC §12)."""

    def __init__(self, factory: Factory, db: Database | None, now: datetime, match_on: Sequence[str] | None = None):
        self.factory, self.db, self.now = factory, db, now
        self.match_on = tuple(match_on) if match_on else None
        self._indexes: dict[str, UsualIndex] = {}
        self.sources: dict[str, str] = {}  # pipeline -> "cache" | "adf"

    def index(self, pipeline: str) -> UsualIndex:
        found = self._indexes.get(pipeline)
        if found is None:
            found = self._indexes[pipeline] = self._read(pipeline)
        return found

    def _read(self, pipeline: str) -> UsualIndex:
        since = self.now - LOOKBACK
        if self.db is not None:
            from backfill.store import history_ranges

            with self.db.reading() as conn:
                key = self.factory.ref.key
                if history_ranges.is_synced(conn, key, pipeline):
                    match_on = self.match_on or history_ranges.matched_fields(conn, key, pipeline)
                    self.sources[pipeline] = "cache"
                    return UsualIndex(
                        history_ranges.succeeded_since(conn, key, pipeline, since), self.now, match_on=match_on
                    )
        self.sources[pipeline] = "adf"
        runs = self.factory.query_runs(
            updated_after=since,
            updated_before=self.now + FUTURE,
            pipeline=pipeline,
            statuses=[RunStatus.SUCCEEDED.value],
        )
        return UsualIndex(runs, self.now, match_on=self.match_on)

    def judge(self, run: Run) -> Verdict:
        return self.index(run.pipeline).judge(run)


def run_row(run: Run, verdict: Verdict) -> dict[str, Any]:
    """A run as ``runs list --json`` and ``runs export`` write it."""
    return {**run.to_json(), "usual_ms": verdict.usual_ms, "outlier": verdict.outlier}


@dataclass(frozen=True)
class JudgedRun:
    run: Run
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return run_row(self.run, self.verdict)


def list_runs(
    factory: Factory, query: RunQuery, now: datetime, mask: Mask, *, outliers: bool = False
) -> list[JudgedRun]:
    """``runs list``: the runs of the query, newest first, each judged; only outliers with
    ``outliers``."""
    with open_cache() as db:
        usual = UsualDurations(factory, db, now)
        found = [JudgedRun(mask(run), usual.judge(run)) for run in factory_runs(factory, query, now)]
    if outliers:
        found = [judged for judged in found if judged.verdict.outlier]
    found.sort(key=lambda j: (j.run.start or now, j.run.run_id), reverse=True)
    return found


def dominant_activity(activities: Sequence[ActivityRun], now: datetime) -> ActivityRun | None:
    """The activity that took (or, still running, has taken) the longest of the run."""

    def took(activity: ActivityRun) -> timedelta:
        if activity.duration is not None:
            return activity.duration
        if activity.start is None:
            return timedelta(0)
        return (activity.end or now) - activity.start

    return max(activities, key=took, default=None)


def in_progress_activity(activities: Sequence[ActivityRun]) -> ActivityRun | None:
    """The activity still running (the newest that started, when several are)."""
    running = [a for a in activities if a.status in ("InProgress", "Queued")]
    return max(running, key=lambda a: a.start or _EARLIEST, default=None)


@dataclass(frozen=True)
class RunDetail:
    """``runs show``: the run, its activity runs, what dominates and what still runs, its verdict."""

    run: Run
    activities: tuple[ActivityRun, ...]
    verdict: Verdict
    dominant: ActivityRun | None
    in_progress: ActivityRun | None
    usual_source: str

    @property
    def failing(self) -> ActivityRun | None:
        return next((a for a in self.activities if a.failed), None)


def show_run(
    factory: Factory, run_id: str, now: datetime, mask: Mask, *, match_on: Sequence[str] | None = None
) -> RunDetail:
    run = mask(factory.get_run(run_id))
    activities = tuple(factory.query_activity_runs(run_id))
    with open_cache() as db:
        usual = UsualDurations(factory, db, now, match_on)
        verdict = usual.judge(run)
    return RunDetail(
        run,
        activities,
        verdict,
        dominant_activity(activities, now),
        in_progress_activity(activities),
        usual.sources.get(run.pipeline, "adf"),
    )


def activity_json(activity: ActivityRun) -> dict[str, object]:
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
