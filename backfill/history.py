"""Fetch a pipeline's run history into the cache, and read it back for previews (SPEC §2).

ADF keeps runs for 45 days and ``queryPipelineRuns`` filters on the *last updated* time, so:

- the first sync reads every page of [now - 45 days, now + 1 day] (the future bound is harmless
  and absorbs clock skew);
- later syncs read only what changed since the watermark, the newest ``lastUpdated`` seen (server
  time, never ours), minus a 5-minute overlap for skew between the service's nodes;
- the horizon is the earliest last-updated time our syncs have covered without a gap; a window
  starting before it, with no run in the cache, is one we know nothing about. When the previous
  sync is older than the retention, runs may have come and gone unseen, so the horizon restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from backfill.factory.protocol import Factory, FactoryRef
from backfill.factory.run import Run
from backfill.matching import Matchable
from backfill.timeutil import require_utc, utcnow

if TYPE_CHECKING:
    from backfill.store.database import Database
    from backfill.store.history import SyncState

RETENTION = timedelta(days=45)
OVERLAP = timedelta(minutes=5)
FUTURE = timedelta(days=1)
# Runs per write transaction: short enough not to hold SQLite's write lock across many pages.
BATCH = 2000


@dataclass(frozen=True)
class SyncResult:
    fetched: int
    api_calls: int
    watermark: datetime | None
    horizon: datetime
    first_sync: bool


class HistoryView:
    """The cached runs of one pipeline, the horizon they cover and when they were synced.

    Built from plain runs (``HistoryView(runs, horizon, synced_at)``) or, by ``load_history``, from
    light records whose full runs are decoded only when asked for: a preview needs every run's
    matched parameters but only each window's latest run in full.
    """

    def __init__(
        self,
        runs: Iterable[Run] = (),
        horizon: datetime | None = None,
        synced_at: datetime | None = None,
        *,
        records: Sequence[Matchable] | None = None,
        fetch: Callable[[Sequence[str]], Mapping[str, Run]] | None = None,
        fetch_all: Callable[[], Sequence[Run]] | None = None,
    ) -> None:
        self.horizon = horizon
        self.synced_at = synced_at
        self._runs: tuple[Run, ...] | None = None
        if records is None:
            self._runs = tuple(runs)
            records = self._runs
        self.records: Sequence[Matchable] = records
        self._fetch = fetch
        self._fetch_all = fetch_all

    @property
    def runs(self) -> tuple[Run, ...]:
        """Every cached run, fully decoded (loaded on first use)."""
        if self._runs is None:
            if self._fetch_all is not None:
                self._runs = tuple(self._fetch_all())
            else:
                self._runs = tuple(self.resolve(list(self.records)).values())
        return self._runs

    def __len__(self) -> int:
        return len(self.records)

    def resolve(self, items: Sequence[Matchable]) -> dict[str, Run]:
        """Full runs for some of ``records``, by run ID."""
        found = {item.run_id: item for item in items if isinstance(item, Run)}
        wanted = [item.run_id for item in items if not isinstance(item, Run)]
        if wanted:
            if self._fetch is None:
                raise TypeError("this history view holds light records but no way to fetch full runs")
            found.update(self._fetch(wanted))
        return found


def sync_history(db: Database, factory: Factory, pipeline: str, *, now: datetime | None = None) -> SyncResult:
    """Fetch what changed since the last sync (everything ADF holds, the first time) and cache it."""
    from sqlalchemy.exc import IntegrityError

    from backfill.store import history as store

    now = require_utc(now, "now") if now is not None else utcnow()
    key = factory.ref.key
    with db.engine.begin() as conn:
        state = store.read_state(conn, key, pipeline)
    oldest = now - RETENTION
    watermark = state.watermark if state is not None else None
    after = watermark - OVERLAP if watermark is not None else oldest
    # The service answers nothing older than its retention, so that is all we cover.
    covered_from = max(after, oldest)
    calls_before = factory.api_calls
    fetched = 0
    seen_max: datetime | None = None
    batch: list[Run] = []
    for run in factory.query_runs(updated_after=after, updated_before=now + FUTURE, pipeline=pipeline):
        batch.append(run)
        fetched += 1
        if run.last_updated is not None and (seen_max is None or run.last_updated > seen_max):
            seen_max = run.last_updated
        if len(batch) >= BATCH:
            with db.engine.begin() as conn:
                store.upsert_runs(conn, key, pipeline, batch)
            batch = []
    api_calls = factory.api_calls - calls_before

    for attempt in (1, 2):
        try:
            with db.engine.begin() as conn:
                if batch:
                    store.upsert_runs(conn, key, pipeline, batch)
                current = store.read_state(conn, key, pipeline, lock=True)
                new_state = _next_state(current, seen_max, covered_from, now)
                store.write_state(conn, key, pipeline, new_state, exists=current is not None)
            break
        except IntegrityError:
            # Another process recorded its first sync of this pipeline meanwhile; merge with it.
            if attempt == 2:
                raise
    return SyncResult(
        fetched=fetched,
        api_calls=api_calls,
        watermark=new_state.watermark,
        horizon=new_state.horizon,
        first_sync=state is None,
    )


def _next_state(
    current: SyncState | None, seen_max: datetime | None, covered_from: datetime, now: datetime
) -> SyncState:
    from backfill.store.history import SyncState

    if current is None:
        return SyncState(watermark=seen_max, horizon=covered_from, synced_at=now)
    watermark = current.watermark
    if seen_max is not None and (watermark is None or seen_max > watermark):
        watermark = seen_max
    gap = now - current.synced_at > RETENTION - OVERLAP
    horizon = covered_from if gap else min(current.horizon, covered_from)
    return SyncState(watermark=watermark, horizon=horizon, synced_at=max(now, current.synced_at))


def load_history(db: Database, ref: FactoryRef, pipeline: str) -> HistoryView:
    """The cached history of a pipeline (empty, with no horizon, when it was never synced)."""
    from backfill.store import history as store

    key = ref.key
    with db.engine.begin() as conn:
        state = store.read_state(conn, key, pipeline)
        records = store.load_records(conn, key, pipeline)

    def fetch(run_ids: Sequence[str]) -> Mapping[str, Run]:
        with db.engine.begin() as conn:
            return store.fetch_runs(conn, key, pipeline, run_ids)

    def fetch_all() -> Sequence[Run]:
        with db.engine.begin() as conn:
            return list(store.iter_runs(conn, key, pipeline))

    return HistoryView(
        horizon=state.horizon if state else None,
        synced_at=state.synced_at if state else None,
        records=records,
        fetch=fetch,
        fetch_all=fetch_all,
    )
