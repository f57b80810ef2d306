"""Fetch a pipeline's run history into the cache (SPEC §2); ``backfill.store.history`` reads it back.

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

import queue
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from backfill.factory.protocol import Factory
from backfill.timeutil import require_utc, utcnow

if TYPE_CHECKING:
    from backfill.store.database import Database
    from backfill.store.history_tables import SyncState
    from backfill.store.history_writes import Row

RETENTION = timedelta(days=45)
OVERLAP = timedelta(minutes=5)
FUTURE = timedelta(days=1)
# Runs per write transaction. Larger batches rewrite each page of the run-ID index fewer times
# (run IDs are random); the lock is held only while a batch is written, never while paging.
BATCH = 10_000


@dataclass(frozen=True)
class SyncResult:
    fetched: int
    api_calls: int
    watermark: datetime | None
    horizon: datetime
    first_sync: bool


def sync_history(
    db: Database,
    factory: Factory,
    pipeline: str,
    *,
    now: datetime | None = None,
    secret: Collection[str] = (),
    key_fields: Sequence[str] | None = None,
) -> SyncResult:
    """Fetch what changed since the last sync (everything ADF holds, the first time) and cache it.

    ``secret`` names parameters whose values are masked before they are cached (a plan's
    ``{ secret = ... }`` ones, the pipeline's ``SecureString`` ones); they are remembered for the
    pipeline, so later syncs mask them whichever plan asks. ``key_fields``: the match fields of
    the preview that follows; their key set is registered first, so every batch is written with
    its keys (instead of a fill of every run after the sync).

    A factory that reads raw pages (``FactoryClient.query_run_pages``: concurrent slices) has its
    records turned straight into cache rows; others give ``Run`` values. A writer thread stores
    each batch of ready-made rows while the next pages are decoded."""
    from sqlalchemy.exc import IntegrityError

    from backfill.factory.run import MalformedRun
    from backfill.store.history import known_secrets, read_state
    from backfill.store.history_keys import key_set
    from backfill.store.history_tables import from_us
    from backfill.store.history_writes import (
        UPDATED,
        record_row,
        remember_secrets,
        run_row,
        upsert_rows,
        write_state,
    )

    now = require_utc(now, "now") if now is not None else utcnow()
    key = factory.ref.key
    with db.writing() as conn:
        remember_secrets(conn, key, pipeline, secret)
        masked = known_secrets(conn, key, pipeline) | set(secret)
        state = read_state(conn, key, pipeline)
        if key_fields:
            key_set(conn, key, pipeline, key_fields)
    oldest = now - RETENTION
    watermark = state.watermark if state is not None else None
    after = watermark - OVERLAP if watermark is not None else oldest
    # The service answers nothing older than its retention, so that is all we cover.
    covered_from = max(after, oldest)
    calls_before = factory.api_calls
    fetched = 0
    seen_max_us: int | None = None
    batch: list[tuple[Row, Mapping[str, Any]]] = []
    read_pages = getattr(factory, "query_run_pages", None)
    skipped = getattr(factory, "record_skipped", None)
    rows: Iterator[tuple[Row, Mapping[str, Any]]]
    if read_pages is not None:

        def from_pages() -> Iterator[tuple[Row, Mapping[str, Any]]]:
            for page in read_pages(updated_after=after, updated_before=now + FUTURE, pipeline=pipeline):
                for raw in page:
                    try:
                        yield record_row(key, pipeline, raw, masked)
                    except MalformedRun as exc:
                        if skipped is None:
                            raise
                        skipped(exc)

        rows = from_pages()
    else:
        runs = factory.query_runs(updated_after=after, updated_before=now + FUTURE, pipeline=pipeline)
        rows = (run_row(key, pipeline, run, masked) for run in runs)
    writer = _BatchWriter(db, key, pipeline)
    try:
        for pair in rows:
            batch.append(pair)
            fetched += 1
            updated_us = pair[0][UPDATED]
            if updated_us is not None and (seen_max_us is None or updated_us > seen_max_us):
                seen_max_us = updated_us
            if len(batch) >= BATCH:
                writer.write(batch)
                batch = []
    except BaseException:
        # Batches already fetched are still worth caching; the state does not move.
        writer.close(raise_error=False)
        raise
    writer.close()
    api_calls = factory.api_calls - calls_before
    seen_max = from_us(seen_max_us)

    for attempt in (1, 2):
        try:
            with db.writing() as conn:
                if batch:
                    upsert_rows(conn, key, pipeline, batch)
                current = read_state(conn, key, pipeline, lock=True)
                new_state = _next_state(current, seen_max, covered_from, now)
                write_state(conn, key, pipeline, new_state, exists=current is not None)
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
    """Writes batches of ready-made rows in a background thread, each in its own transaction.
    The rows are built by the caller (the records decoded once), so this thread holds the GIL
    only to bind values: SQLite and psycopg release it while they store them, and commits
    (fsync) overlap the next pages' decoding. At most one batch waits, which bounds memory."""

    def __init__(self, db: Database, key: str, pipeline: str) -> None:
        self._db, self._key, self._pipeline = db, key, pipeline
        self._queue: queue.Queue[list[tuple[Row, Mapping[str, Any]]] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller learns of the failure at its next write
            try:
                _write_relaxed(self._db, self._key, self._pipeline, batch)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

    def write(self, batch: list[tuple[Row, Mapping[str, Any]]]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every queued batch is written; raise the first error a write met."""
        self._queue.put(None)
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


def _write_relaxed(db: Database, key: str, pipeline: str, batch: list[tuple[Row, Mapping[str, Any]]]) -> None:
    """One batch of rows in its own write transaction, committed without waiting for the disk
    (``Database.writing_unsynced``: SQLite ``synchronous=NORMAL`` in WAL mode, PostgreSQL
    ``synchronous_commit`` off): a commit then costs no fsync.

    Safe because the cache is rebuildable and the watermark is written afterwards, in a
    transaction committed durably (``sync_history``): both logs are sequential, so a crash can
    lose only a suffix of the commits, and a watermark that survived has every batch before it
    on disk. A lost batch is a lost suffix, watermark included: the next sync fetches it again."""
    from backfill.store.history_writes import upsert_rows

    with db.writing_unsynced() as conn:
        upsert_rows(conn, key, pipeline, batch)


def _next_state(
    current: SyncState | None, seen_max: datetime | None, covered_from: datetime, now: datetime
) -> SyncState:
    from backfill.store.history_tables import SyncState

    if current is None:
        return SyncState(watermark=seen_max, horizon=covered_from, synced_at=now)
    watermark = current.watermark
    if seen_max is not None and (watermark is None or seen_max > watermark):
        watermark = seen_max
    gap = now - current.synced_at > RETENTION - OVERLAP
    horizon = covered_from if gap else min(current.horizon, covered_from)
    return SyncState(watermark=watermark, horizon=horizon, synced_at=max(now, current.synced_at))
