"""The history cache: runs per factory and pipeline, and each pipeline's sync state.

This is a cache, not the ledger: rows are upserted as runs change status. ``data`` holds
``Run.to_json()``; the other columns exist so that a preview can match 200,000 runs without
decoding every document (only the winners are decoded in full), and for queries by time.
Times are stored as integer microseconds since the Unix epoch (UTC): exact, portable across
SQLite, PostgreSQL and Azure SQL, and cheap to convert.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Column, Index, Text, delete, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Executable
from sqlmodel import Field, SQLModel

from backfill.factory.run import Run, RunStatus

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Bounded by PostgreSQL's and SQL Server's parameter limits (65535, 2100) with room to spare.
FETCH_CHUNK = 500
# Rows per round trip when loading a whole history: bounds the transient memory of the load.
LOAD_CHUNK = 20_000


class HistoryRun(SQLModel, table=True):
    __tablename__ = "history_runs"
    __table_args__ = (Index("ix_history_runs_start", "factory_key", "pipeline", "run_start_us"),)

    factory_key: str = Field(primary_key=True, max_length=255)
    pipeline: str = Field(primary_key=True, max_length=260)
    run_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16)
    run_start_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_updated_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    run_group_id: str | None = Field(default=None, max_length=64)
    is_latest: bool = True
    parameters: str = Field(sa_column=Column(Text, nullable=False))
    data: str = Field(sa_column=Column(Text, nullable=False))


class HistorySync(SQLModel, table=True):
    __tablename__ = "history_sync"

    factory_key: str = Field(primary_key=True, max_length=255)
    pipeline: str = Field(primary_key=True, max_length=260)
    watermark_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    horizon_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    synced_at_us: int = Field(sa_column=Column(BigInteger, nullable=False))


_STATUSES = {status.value: status for status in RunStatus}
RUNS = HistoryRun.__table__  # type: ignore[attr-defined]
SYNC = HistorySync.__table__  # type: ignore[attr-defined]


class RunRecord(NamedTuple):
    """The columns matching needs, without decoding the whole run document. Built straight
    from the database row; ``start`` and ``status`` are converted only when read, which for
    200,000 runs saves more time than reading them costs."""

    run_id: str
    start_us: int | None
    run_group_id: str | None
    latest: bool
    status_text: str
    parameters: Mapping[str, Any]

    @property
    def start(self) -> datetime | None:
        return from_us(self.start_us)

    @property
    def is_latest(self) -> bool:
        return bool(self.latest)

    @property
    def status(self) -> RunStatus:
        return _STATUSES.get(self.status_text) or RunStatus.parse(self.status_text)


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None
    horizon: datetime
    synced_at: datetime


def to_us(value: datetime | None) -> int | None:
    if value is None:
        return None
    return (value - EPOCH) // timedelta(microseconds=1)


def from_us(value: int | None) -> datetime | None:
    if value is None:
        return None
    return EPOCH + timedelta(microseconds=value)


def _row(factory_key: str, pipeline: str, run: Run) -> dict[str, Any]:
    return {
        "factory_key": factory_key,
        "pipeline": pipeline,
        "run_id": run.run_id,
        "status": run.status.value,
        "run_start_us": to_us(run.start),
        "last_updated_us": to_us(run.last_updated),
        "run_group_id": run.run_group_id,
        "is_latest": run.is_latest,
        "parameters": json.dumps(dict(run.parameters), separators=(",", ":"), default=str),
        "data": json.dumps(run.to_json(), separators=(",", ":"), default=str),
    }


def upsert_runs(conn: Connection, factory_key: str, pipeline: str, runs: Sequence[Run]) -> int:
    """Insert or refresh runs by run ID, in bulk; a row never goes back to an older version.

    Returns how many distinct runs were written.
    """
    newest: dict[str, Run] = {}
    for run in runs:
        # One statement must not touch a row twice (PostgreSQL refuses), and a run can appear on
        # two pages when it changes while we page.
        seen = newest.get(run.run_id)
        if seen is None or (to_us(run.last_updated) or 0) >= (to_us(seen.last_updated) or 0):
            newest[run.run_id] = run
    if not newest:
        return 0
    rows = [_row(factory_key, pipeline, run) for run in newest.values()]
    dialect = conn.dialect.name
    updated = ("status", "run_start_us", "last_updated_us", "run_group_id", "is_latest", "parameters", "data")
    if dialect in ("sqlite", "postgresql"):
        conn.execute(_upsert(dialect, updated), rows)
        return len(rows)
    # Other dialects (Azure SQL, MySQL): replace inside the caller's transaction, keeping any row
    # a concurrent sync already brought further.
    fresh: list[dict[str, Any]] = []
    for start in range(0, len(rows), FETCH_CHUNK):
        chunk = {row["run_id"]: row for row in rows[start : start + FETCH_CHUNK]}
        where = (RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, RUNS.c.run_id.in_(list(chunk)))
        for run_id, updated_us in conn.execute(select(RUNS.c.run_id, RUNS.c.last_updated_us).where(*where)):
            if updated_us is not None and (chunk[run_id]["last_updated_us"] or 0) < updated_us:
                del chunk[run_id]
        if chunk:
            conn.execute(delete(RUNS).where(*where[:2], RUNS.c.run_id.in_(list(chunk))))
            fresh.extend(chunk.values())
    if fresh:
        conn.execute(RUNS.insert(), fresh)
    return len(rows)


def _upsert(dialect: str, updated: Sequence[str]) -> Executable:
    """INSERT ... ON CONFLICT DO UPDATE, the same statement text on SQLite and PostgreSQL."""
    from sqlalchemy.dialects import postgresql, sqlite

    stmt = sqlite.insert(RUNS) if dialect == "sqlite" else postgresql.insert(RUNS)
    return stmt.on_conflict_do_update(
        index_elements=["factory_key", "pipeline", "run_id"],
        set_={name: stmt.excluded[name] for name in updated},
        # Two syncs racing must not let the slower one write an older state back.
        where=RUNS.c.last_updated_us.is_(None) | (stmt.excluded.last_updated_us >= RUNS.c.last_updated_us),
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


def write_state(conn: Connection, factory_key: str, pipeline: str, state: SyncState, *, exists: bool) -> None:
    values = {
        "watermark_us": to_us(state.watermark),
        "horizon_us": to_us(state.horizon),
        "synced_at_us": to_us(state.synced_at),
    }
    if exists:
        conn.execute(
            SYNC.update().where(SYNC.c.factory_key == factory_key, SYNC.c.pipeline == pipeline).values(**values)
        )
    else:
        conn.execute(SYNC.insert().values(factory_key=factory_key, pipeline=pipeline, **values))


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
            new(RunRecord, (run_id, start_us, run_id if group == run_id else group, latest,
                            shared.setdefault(status, status), params))
            for (run_id, start_us, group, latest, status, _), params in zip(rows, parameters, strict=True)
        )
    return records


def _run(data: str) -> Run:
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
            found[run_id] = _run(data)
    return found


def iter_runs(conn: Connection, factory_key: str, pipeline: str) -> Iterator[Run]:
    """Every cached run of a pipeline, fully decoded, oldest start first."""
    query = (
        select(RUNS.c.data)
        .where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline)
        .order_by(RUNS.c.run_start_us, RUNS.c.run_id)
    )
    for (data,) in conn.execute(query):
        yield _run(data)


def count_runs(conn: Connection, factory_key: str, pipeline: str) -> int:
    query = select(func.count()).select_from(RUNS).where(
        RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline
    )
    return int(conn.execute(query).scalar_one())
