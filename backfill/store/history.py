"""The history cache: runs per factory and pipeline, and each pipeline's sync state.

This is a cache, not the ledger: rows are upserted as runs change status. ``data`` holds
``Run.to_json()``; the other columns exist so that a preview can match 200,000 runs without
decoding every document (only the winners are decoded in full), and for queries by time.
Times are stored as integer microseconds since the Unix epoch (UTC): exact, portable across
SQLite, PostgreSQL and Azure SQL, and cheap to convert.

``history_keys`` indexes the runs by match key, per set of matched fields (``history_key_sets``),
so that a preview reads only the runs that can belong to its windows (see
``backfill.store.history_keys``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint, delete, func, or_, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from backfill.factory.run import Run, RunStatus

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
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


class HistoryKeySet(SQLModel, table=True):
    """A set of matched fields of one pipeline whose keys ``history_keys`` holds."""

    __tablename__ = "history_key_sets"
    __table_args__ = (UniqueConstraint("factory_key", "pipeline", "signature", name="uq_history_key_sets"),)

    id: int | None = Field(default=None, primary_key=True)
    factory_key: str = Field(max_length=255)
    pipeline: str = Field(max_length=260)
    signature: str = Field(max_length=64)
    fields: str = Field(sa_column=Column(Text, nullable=False))


class HistoryKey(SQLModel, table=True):
    """One cached run's match key under one key set (NULL: a matched field is missing)."""

    __tablename__ = "history_keys"
    __table_args__ = (Index("ix_history_keys_hash", "set_id", "key_hash"),)

    set_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    run_id: str = Field(primary_key=True, max_length=64)
    key_hash: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


NAME_LIMIT = 128


class HistorySecret(SQLModel, table=True):
    """A parameter of a pipeline that a plan marked secret: masked in every cached run."""

    __tablename__ = "history_secrets"

    factory_key: str = Field(primary_key=True, max_length=255)
    pipeline: str = Field(primary_key=True, max_length=260)
    # Within MariaDB's 3072-byte key (utf8mb4) together with the two columns above.
    name: str = Field(primary_key=True, max_length=NAME_LIMIT)


_STATUSES = {status.value: status for status in RunStatus}
RUNS = HistoryRun.__table__  # type: ignore[attr-defined]
SYNC = HistorySync.__table__  # type: ignore[attr-defined]
KEY_SETS = HistoryKeySet.__table__  # type: ignore[attr-defined]
KEYS = HistoryKey.__table__  # type: ignore[attr-defined]
SECRETS = HistorySecret.__table__  # type: ignore[attr-defined]
# One encoder for every document: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


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
        return _STATUSES.get(self.status_text) or RunStatus.read(self.status_text)


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None
    horizon: datetime
    synced_at: datetime


def to_us(value: datetime | None) -> int | None:
    if value is None:
        return None
    return (value - EPOCH) // _MICROSECOND


def from_us(value: int | None) -> datetime | None:
    if value is None:
        return None
    return EPOCH + timedelta(microseconds=value)


def _row(factory_key: str, pipeline: str, run: Run) -> dict[str, Any]:
    return {
        "factory_key": factory_key,
        "pipeline": pipeline,
        "run_id": run.run_id,
        # An unknown status keeps the service's word (the column holds 16 characters).
        "status": run.status_label[:16],
        "run_start_us": to_us(run.start),
        "last_updated_us": to_us(run.last_updated),
        "run_group_id": run.run_group_id,
        "is_latest": run.is_latest,
        "parameters": _ENCODER.encode(dict(run.parameters)),
        "data": _ENCODER.encode(run.to_json()),
    }


def upsert_runs(conn: Connection, factory_key: str, pipeline: str, runs: Sequence[Run]) -> int:
    """Insert or refresh runs by run ID, in bulk; a row never goes back to an older version.
    Their match keys are written for every key set of the pipeline in the same transaction.

    Returns how many distinct runs were written.
    """
    from backfill.store.history_keys import write_keys

    newest: dict[str, Run] = {}
    for run in runs:
        # One statement must not touch a row twice (PostgreSQL refuses), and a run can appear on
        # two pages when it changes while we page.
        seen = newest.get(run.run_id)
        if seen is None or (to_us(run.last_updated) or 0) >= (to_us(seen.last_updated) or 0):
            newest[run.run_id] = run
    if not newest:
        return 0
    # In primary-key order: consecutive inserts land on the same index pages (run IDs are random).
    rows = [_row(factory_key, pipeline, newest[run_id]) for run_id in sorted(newest)]
    dialect = conn.dialect.name
    updated = ("status", "run_start_us", "last_updated_us", "run_group_id", "is_latest", "parameters", "data")
    if dialect in ("sqlite", "postgresql"):
        conn.execute(_upsert(dialect, updated), rows)
        write_keys(conn, factory_key, pipeline, list(newest.values()))
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
    write_keys(conn, factory_key, pipeline, list(newest.values()))
    return len(rows)


def _upsert(dialect: str, updated: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE, the same statement text on SQLite and PostgreSQL."""
    stmt = dialect_insert(dialect, RUNS)
    return stmt.on_conflict_do_update(
        index_elements=["factory_key", "pipeline", "run_id"],
        set_={name: stmt.excluded[name] for name in updated},
        # Two syncs racing must not let the slower one write an older state back.
        where=RUNS.c.last_updated_us.is_(None) | (stmt.excluded.last_updated_us >= RUNS.c.last_updated_us),
    )


def dialect_insert(dialect: str, table: Any) -> Any:
    """INSERT with ON CONFLICT for SQLite or PostgreSQL (only that dialect's module is imported:
    PostgreSQL's costs a tenth of a second to import)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    from sqlalchemy.dialects import postgresql

    return postgresql.insert(table)


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


def known_secrets(conn: Connection, factory_key: str, pipeline: str) -> set[str]:
    """The parameter names plans have marked secret for this pipeline."""
    query = select(SECRETS.c.name).where(SECRETS.c.factory_key == factory_key, SECRETS.c.pipeline == pipeline)
    return {row[0] for row in conn.execute(query)}


def remember_secrets(conn: Connection, factory_key: str, pipeline: str, names: Collection[str]) -> set[str]:
    """Record secret parameter names and mask their values in the runs already cached; returns
    the names that were new."""
    from backfill.masking import mask_run

    # A name too long to keep is still masked by the sync that names it, just not remembered.
    new = {name for name in names if len(name) <= NAME_LIMIT} - known_secrets(conn, factory_key, pipeline)
    if not new:
        return new
    rows = [{"factory_key": factory_key, "pipeline": pipeline, "name": name} for name in sorted(new)]
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        # Two syncs may learn the same name at once (workers of one backfill start together).
        conn.execute(dialect_insert(dialect, SECRETS).on_conflict_do_nothing(), rows)
    else:
        conn.execute(SECRETS.insert(), rows)
    # Runs cached before a plan said so still hold the value: rewrite only the rows naming one.
    named = or_(*(RUNS.c.parameters.contains(_ENCODER.encode(name) + ":", autoescape=True) for name in sorted(new)))
    query = select(RUNS.c.run_id, RUNS.c.data).where(
        RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, named
    )
    for run_id, data in list(conn.execute(query)):
        run = _run(data)
        masked = mask_run(run, new)
        if masked is not run:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline, RUNS.c.run_id == run_id)
                .values(parameters=_ENCODER.encode(dict(masked.parameters)), data=_ENCODER.encode(masked.to_json()))
            )
    return new


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
    return [_run(data) for (data,) in conn.execute(query)]


def count_runs(conn: Connection, factory_key: str, pipeline: str) -> int:
    query = select(func.count()).select_from(RUNS).where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline)
    return int(conn.execute(query).scalar_one())
