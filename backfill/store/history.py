"""Reading the history cache: the runs of a pipeline and the horizon they cover (SPEC §2).

``load_history`` gives a ``HistoryView`` over the cache: it reads the sync state and the number of
runs, and the runs only when asked, looking the windows' match keys up in the key index
(``backfill.store.history_keys``) so that a preview decodes only each window's latest run. The
tables are in ``backfill.store.history_tables``; ``backfill.history`` fills them (the sync).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.engine import Connection

from backfill.factory.protocol import FactoryRef
from backfill.factory.run import Run, RunStatus
from backfill.gcpause import paused_gc
from backfill.matching import Matchable, group_by_window, key_hash, key_hashes, latest_of, match_fields
from backfill.store import history_keys as keys
from backfill.store.history_tables import (
    FETCH_CHUNK,
    LOAD_CHUNK,
    RUNS,
    SECRETS,
    SYNC,
    RunRecord,
    SyncState,
    count_runs,
    from_us,
    to_us,
)
from backfill.windows import Window

if TYPE_CHECKING:
    from backfill.store.database import Database

_EARLIEST = datetime.min.replace(tzinfo=UTC)


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
        with self.db.reading() as conn:
            return load_records(conn, self.factory_key, self.pipeline)

    def newest_runs(self, status: RunStatus, limit: int) -> list[Run]:
        with self.db.reading() as conn:
            return newest_runs(conn, self.factory_key, self.pipeline, status.value, limit)

    def all_runs(self) -> list[Run]:
        with self.db.reading() as conn:
            return list(iter_runs(conn, self.factory_key, self.pipeline))

    def fetch(self, run_ids: Sequence[str]) -> Mapping[str, Run]:
        with self.db.reading() as conn:
            return fetch_runs(conn, self.factory_key, self.pipeline, run_ids)

    def latest_runs(self, windows: Sequence[Window], fields: Sequence[str]) -> list[Run | None]:
        return [latest for latest, _ in self.window_runs(windows, fields)]

    def window_runs(self, windows: Sequence[Window], fields: Sequence[str]) -> list[tuple[Run | None, Run | None]]:
        """Look the windows' keys up in the key index; decode only each window's latest run (and
        the run still in flight, in the rare window that has one besides its latest)."""
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


def load_history(db: Database, ref: FactoryRef, pipeline: str) -> HistoryView:
    """The cached history of a pipeline (empty, with no horizon, when it was never synced).

    Reads only the sync state and the number of runs; runs are read when the view is asked."""
    key = ref.key
    with db.reading() as conn:
        state = read_state(conn, key, pipeline)
        count = count_runs(conn, key, pipeline)
    return HistoryView(
        horizon=state.horizon if state else None,
        synced_at=state.synced_at if state else None,
        cache=CachedRuns(db, key, pipeline, count),
    )


def read_state(conn: Connection, factory_key: str, pipeline: str, *, lock: bool = False) -> SyncState | None:
    query = select(SYNC.c.watermark_us, SYNC.c.horizon_us, SYNC.c.synced_at_us).where(
        SYNC.c.factory_key == factory_key, SYNC.c.pipeline == pipeline
    )
    if lock and conn.dialect.name != "sqlite":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return None
    horizon, synced_at = from_us(row[1]), from_us(row[2])
    assert horizon is not None and synced_at is not None
    return SyncState(watermark=from_us(row[0]), horizon=horizon, synced_at=synced_at)


def known_secrets(conn: Connection, factory_key: str, pipeline: str) -> set[str]:
    """The parameter names plans have marked secret for this pipeline."""
    query = select(SECRETS.c.name).where(SECRETS.c.factory_key == factory_key, SECRETS.c.pipeline == pipeline)
    return {row[0] for row in conn.execute(query)}


def load_records(conn: Connection, factory_key: str, pipeline: str) -> list[RunRecord]:
    """Every cached run of a pipeline, light: one select, parameters decoded, documents not."""
    query = select(
        RUNS.c.run_id,
        RUNS.c.run_start_us,
        RUNS.c.run_group_id,
        RUNS.c.is_latest,
        RUNS.c.status,
        RUNS.c.parameters,
    ).where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline)
    records: list[RunRecord] = []
    new = tuple.__new__
    # One object per distinct status and per lone run's group (ADF gives a lone run its own ID as
    # group): 200,000 records must stay well under the preview's memory budget.
    shared: dict[str, str] = {status.value: status.value for status in RunStatus}
    result = conn.execute(query.execution_options(yield_per=LOAD_CHUNK))
    for rows in result.partitions():
        # One json.loads per chunk: per-call overhead dominates for small documents, and the
        # decoder shares repeated key strings within a call.
        parameters = json.loads("[" + ",".join([row[5] for row in rows]) + "]")
        records.extend(
            new(
                RunRecord,
                (
                    run_id,
                    start_us,
                    run_id if group == run_id else group,
                    latest,
                    shared.setdefault(status, status),
                    params,
                ),
            )
            for (run_id, start_us, group, latest, status, _), params in zip(rows, parameters, strict=True)
        )
    return records


def decode_run(data: str) -> Run:
    return Run.from_cache(json.loads(data))


def fetch_runs(conn: Connection, factory_key: str, pipeline: str, run_ids: Sequence[str]) -> dict[str, Run]:
    """The full runs for the given IDs (those missing from the cache are left out)."""
    found: dict[str, Run] = {}
    unique = sorted(set(run_ids))
    for start in range(0, len(unique), FETCH_CHUNK):
        chunk = unique[start : start + FETCH_CHUNK]
        query = select(RUNS.c.run_id, RUNS.c.data).where(
            RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, RUNS.c.run_id.in_(chunk)
        )
        for run_id, data in conn.execute(query):
            found[run_id] = decode_run(data)
    return found


def iter_runs(conn: Connection, factory_key: str, pipeline: str) -> Iterator[Run]:
    """Every cached run of a pipeline, fully decoded, oldest start first."""
    query = (
        select(RUNS.c.data)
        .where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline)
        .order_by(RUNS.c.run_start_us, RUNS.c.run_id)
    )
    for (data,) in conn.execute(query):
        yield decode_run(data)


def newest_runs(conn: Connection, factory_key: str, pipeline: str, status: str, limit: int) -> list[Run]:
    """The ``limit`` cached runs with ``status`` that started last, newest first, decoded."""
    query = (
        select(RUNS.c.data)
        .where(
            RUNS.c.factory_key == factory_key,
            RUNS.c.pipeline == pipeline,
            RUNS.c.status == status,
            RUNS.c.run_start_us.is_not(None),
        )
        .order_by(RUNS.c.run_start_us.desc(), RUNS.c.run_id)
        .limit(limit)
    )
    return [decode_run(data) for (data,) in conn.execute(query)]


def runs_started_since(conn: Connection, factory_key: str, pipeline: str, since: datetime) -> list[Run]:
    """The cached runs of a pipeline that started at or after ``since``, decoded, oldest first
    (an SLA report reads its dates' runs through the start index, not the whole history)."""
    query = (
        select(RUNS.c.data)
        .where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, RUNS.c.run_start_us >= to_us(since))
        .order_by(RUNS.c.run_start_us, RUNS.c.run_id)
    )
    return [decode_run(data) for (data,) in conn.execute(query)]
