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

import json
import queue
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from backfill.factory.protocol import Factory, FactoryRef
from backfill.factory.run import Run, RunStatus
from backfill.gcpause import paused_gc
from backfill.matching import Matchable, group_by_window, key_hash, key_hashes, latest_of, match_fields
from backfill.timeutil import require_utc, utcnow
from backfill.windows import Window

if TYPE_CHECKING:
    from backfill.store.database import Database
    from backfill.store.history import RunRecord, SyncState

RETENTION = timedelta(days=45)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
OVERLAP = timedelta(minutes=5)
FUTURE = timedelta(days=1)
# Runs per write transaction, written while the next pages are fetched. Larger batches rewrite
# each page of the run-ID index fewer times (run IDs are random); the lock is held only while a
# batch is written (about a second on SQLite), never while paging.
BATCH = 10_000


@dataclass(frozen=True)
class SyncResult:
    fetched: int
    api_calls: int
    watermark: datetime | None
    horizon: datetime
    first_sync: bool


class HistoryView:
    """The cached runs of one pipeline, the horizon they cover and when they were synced.

    Built from plain runs (``HistoryView(runs, horizon, synced_at)``) or, by ``load_history``,
    over the cache itself: then ``latest_runs`` looks the windows' match keys up in the cache's
    key index and decodes only each window's latest run, and ``records`` (every run, light) and
    ``runs`` (every run, decoded) are read only when asked for.
    """

    def __init__(
        self,
        runs: Iterable[Run] = (),
        horizon: datetime | None = None,
        synced_at: datetime | None = None,
        *,
        cache: CachedRuns | None = None,
    ) -> None:
        self.horizon = horizon
        self.synced_at = synced_at
        self._cache = cache
        self._runs: tuple[Run, ...] | None = None if cache is not None else tuple(runs)
        self._records: Sequence[Matchable] | None = self._runs

    @property
    def records(self) -> Sequence[Matchable]:
        """Every cached run, light (full runs are decoded by ``resolve``); loaded on first use."""
        if self._records is None:
            assert self._cache is not None
            self._records = self._cache.records()
        return self._records

    @property
    def runs(self) -> tuple[Run, ...]:
        """Every cached run, fully decoded (loaded on first use)."""
        if self._runs is None:
            assert self._cache is not None
            self._runs = tuple(self._cache.all_runs())
        return self._runs

    def newest_runs(self, status: RunStatus, limit: int) -> list[Run]:
        """The ``limit`` runs with ``status`` that started last, newest first; from the cache, a
        narrow query instead of reading every cached run."""
        if self._cache is not None:
            return self._cache.newest_runs(status, limit)
        started = [r for r in self.runs if r.status is status and r.start is not None]
        return sorted(started, key=lambda r: (r.start, r.run_id), reverse=True)[:limit]

    def __len__(self) -> int:
        return self._cache.count if self._cache is not None else len(self.records)

    def resolve(self, items: Sequence[Matchable]) -> dict[str, Run]:
        """Full runs for some of ``records``, by run ID."""
        found = {item.run_id: item for item in items if isinstance(item, Run)}
        wanted = [item.run_id for item in items if not isinstance(item, Run)]
        if wanted:
            if self._cache is None:
                raise TypeError("this history view holds light records but no way to fetch full runs")
            found.update(self._cache.fetch(wanted))
        return found

    def latest_runs(self, windows: Sequence[Window], match_on: Sequence[str]) -> list[Run | None]:
        """For each window (same order), its latest run in this history, or None (SPEC §4)."""
        return [latest for latest, _ in self.window_runs(windows, match_on)]

    def window_runs(self, windows: Sequence[Window], match_on: Sequence[str]) -> list[tuple[Run | None, Run | None]]:
        """For each window (same order), its latest run and, when another of its runs is still
        in flight, the newest such run (SPEC §4, §14); None where there is none."""
        with paused_gc():
            if self._cache is None:
                chosen: dict[int, tuple[Matchable | None, Matchable | None]] = {}
                buckets = group_by_window(windows, self.records, match_on)
                for bucket in buckets:
                    # Windows that share a key share a bucket: resolved once.
                    if id(bucket) not in chosen:
                        winner = latest_of(bucket)
                        chosen[id(bucket)] = (winner, _active_record(bucket, winner))
                full = self.resolve([r for pair in chosen.values() for r in pair if r is not None])
                return [
                    tuple(full[r.run_id] if r is not None else None for r in chosen[id(bucket)])  # type: ignore[misc]
                    for bucket in buckets
                ]
            return self._cache.window_runs(windows, match_fields(windows, match_on))


@dataclass(frozen=True)
class CachedRuns:
    """The history cache of one pipeline, read on demand (``load_history`` makes one)."""

    db: Database
    factory_key: str
    pipeline: str
    count: int

    def records(self) -> list[RunRecord]:
        from backfill.store import history as store

        with self.db.reading() as conn:
            return store.load_records(conn, self.factory_key, self.pipeline)

    def newest_runs(self, status: RunStatus, limit: int) -> list[Run]:
        from backfill.store import history as store

        with self.db.reading() as conn:
            return store.newest_runs(conn, self.factory_key, self.pipeline, status.value, limit)

    def all_runs(self) -> list[Run]:
        from backfill.store import history as store

        with self.db.reading() as conn:
            return list(store.iter_runs(conn, self.factory_key, self.pipeline))

    def fetch(self, run_ids: Sequence[str]) -> Mapping[str, Run]:
        from backfill.store import history as store

        with self.db.reading() as conn:
            return store.fetch_runs(conn, self.factory_key, self.pipeline, run_ids)

    def latest_runs(self, windows: Sequence[Window], fields: Sequence[str]) -> list[Run | None]:
        return [latest for latest, _ in self.window_runs(windows, fields)]

    def window_runs(self, windows: Sequence[Window], fields: Sequence[str]) -> list[tuple[Run | None, Run | None]]:
        """Look the windows' keys up in the key index; decode only each window's latest run (and
        the run still in flight, in the rare window that has one besides its latest)."""
        from backfill.store import history_keys as keys

        slots: dict[str, list[int]] = {}
        hashes: set[int] = set()
        for index, keyed in enumerate(key_hashes([window.parameters for window in windows], fields)):
            if keyed is not None:
                slots.setdefault(keyed[0], []).append(index)
                hashes.add(keyed[1])
        # A write: the first lookup of a key set registers it and fills its keys in.
        with self.db.writing() as conn:
            set_id = keys.key_set(conn, self.factory_key, self.pipeline, fields)
            keys.fill_keys(conn, self.factory_key, self.pipeline, set_id, fields, runs=self.count)
            found = keys.lookup(conn, self.factory_key, self.pipeline, set_id, hashes) if hashes else []
        buckets: dict[str, list[RunRecord]] = {}
        documents: dict[str, str] = {}
        for _, record, document in found:
            # A hash is an index, not an identity: the run belongs to a window only if the keys'
            # canonical texts are equal.
            keyed = key_hash(record.parameters, fields)
            if keyed is not None and keyed[0] in slots:
                buckets.setdefault(keyed[0], []).append(record)
                documents[record.run_id] = document
        pairs: list[tuple[Run | None, Run | None]] = [(None, None)] * len(windows)
        for key, bucket in buckets.items():
            winner = latest_of(bucket)
            assert winner is not None
            run = Run.from_cache(json.loads(documents[winner.run_id]))
            flying = _active_record(bucket, winner)
            active = Run.from_cache(json.loads(documents[flying.run_id])) if flying is not None else None
            for index in slots[key]:
                pairs[index] = (run, active)
        return pairs


def _active_record(bucket: Sequence[Matchable], winner: Matchable | None) -> Matchable | None:
    """The newest run of ``bucket`` still in flight when it is not ``winner`` (SPEC §14)."""
    flying = [r for r in bucket if _status(r).is_active]
    if not flying:
        return None
    newest = max(flying, key=lambda r: (r.start is None, r.start or _EARLIEST, r.run_id))
    return None if winner is not None and newest.run_id == winner.run_id else newest


def _status(record: Matchable) -> RunStatus:
    status = getattr(record, "status", None)
    return status if isinstance(status, RunStatus) else RunStatus.UNKNOWN


def sync_history(
    db: Database, factory: Factory, pipeline: str, *, now: datetime | None = None, secret: Collection[str] = ()
) -> SyncResult:
    """Fetch what changed since the last sync (everything ADF holds, the first time) and cache it.

    ``secret`` names parameters whose values are masked before they are cached (a plan's
    ``{ secret = ... }`` ones, the pipeline's ``SecureString`` ones); they are remembered for the
    pipeline, so later syncs mask them whichever plan asks."""
    from sqlalchemy.exc import IntegrityError

    from backfill.masking import mask_run
    from backfill.store import history as store

    now = require_utc(now, "now") if now is not None else utcnow()
    key = factory.ref.key
    with db.writing() as conn:
        store.remember_secrets(conn, key, pipeline, secret)
        masked = store.known_secrets(conn, key, pipeline) | set(secret)
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
    writer = _BatchWriter(db, key, pipeline)
    try:
        for run in factory.query_runs(updated_after=after, updated_before=now + FUTURE, pipeline=pipeline):
            batch.append(mask_run(run, masked))
            fetched += 1
            if run.last_updated is not None and (seen_max is None or run.last_updated > seen_max):
                seen_max = run.last_updated
            if len(batch) >= BATCH:
                writer.write(batch)
                batch = []
    except BaseException:
        # The batches already fetched are still worth caching; the state does not move.
        writer.close(raise_error=False)
        raise
    writer.close()
    api_calls = factory.api_calls - calls_before

    for attempt in (1, 2):
        try:
            with db.writing() as conn:
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


class _BatchWriter:
    """Writes batches of runs in a background thread, each in its own transaction, while the
    caller fetches the next pages: the database works outside the GIL, so waiting for the
    service and writing to the cache overlap. At most one batch waits, which bounds memory."""

    def __init__(self, db: Database, key: str, pipeline: str) -> None:
        self._db, self._key, self._pipeline = db, key, pipeline
        self._queue: queue.Queue[list[Run] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from backfill.store import history as store

        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller learns of the failure at its next write
            try:
                with self._db.writing() as conn:
                    store.upsert_runs(conn, self._key, self._pipeline, batch)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

    def write(self, batch: list[Run]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every queued batch is written; raise the first error a write met."""
        self._queue.put(None)
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


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
    """The cached history of a pipeline (empty, with no horizon, when it was never synced).

    Reads only the sync state and the number of runs; runs are read when the view is asked."""
    from backfill.store import history as store

    key = ref.key
    with db.reading() as conn:
        state = store.read_state(conn, key, pipeline)
        count = store.count_runs(conn, key, pipeline)
    return HistoryView(
        horizon=state.horizon if state else None,
        synced_at=state.synced_at if state else None,
        cache=CachedRuns(db, key, pipeline, count),
    )
