"""The history cache's tables: runs per factory and pipeline, and each pipeline's sync state.

This is a cache, not the ledger: rows are upserted as runs change status. ``data`` holds
``Run.to_json()``; the other columns exist so that a preview can match 200,000 runs without
decoding every document (only the winners are decoded in full), and for queries by time.
Times are stored as integer microseconds since the Unix epoch (UTC): exact, portable across
SQLite, PostgreSQL and Azure SQL, and cheap to convert.

``history_keys`` indexes the runs by match key, per set of matched fields (``history_key_sets``),
so that a preview reads only the runs that can belong to its windows (see
``backfill.store.history_keys``). Reads are in ``backfill.store.history``, the writes of a sync in
``backfill.store.history_writes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Field

from backfill.factory.run import RunStatus
from backfill.store.orm import TableModel

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Bounded by PostgreSQL's and SQL Server's parameter limits (65535, 2100) with room to spare.
FETCH_CHUNK = 500
# Rows per round trip when loading a whole history: bounds the transient memory of the load.
LOAD_CHUNK = 20_000


class HistoryRun(TableModel, table=True):
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


class HistorySync(TableModel, table=True):
    __tablename__ = "history_sync"

    factory_key: str = Field(primary_key=True, max_length=255)
    pipeline: str = Field(primary_key=True, max_length=260)
    watermark_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    horizon_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    synced_at_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class HistoryKeySet(TableModel, table=True):
    """A set of matched fields of one pipeline whose keys ``history_keys`` holds."""

    __tablename__ = "history_key_sets"
    __table_args__ = (UniqueConstraint("factory_key", "pipeline", "signature", name="uq_history_key_sets"),)

    id: int | None = Field(default=None, primary_key=True)
    factory_key: str = Field(max_length=255)
    pipeline: str = Field(max_length=260)
    signature: str = Field(max_length=64)
    fields: str = Field(sa_column=Column(Text, nullable=False))


class HistoryKey(TableModel, table=True):
    """One cached run's match key under one key set (NULL: a matched field is missing)."""

    __tablename__ = "history_keys"
    __table_args__ = (Index("ix_history_keys_hash", "set_id", "key_hash"),)

    set_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    run_id: str = Field(primary_key=True, max_length=64)
    key_hash: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


NAME_LIMIT = 128


class HistorySecret(TableModel, table=True):
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


def dialect_insert(dialect: str, table: Any) -> Any:
    """INSERT with ON CONFLICT for SQLite or PostgreSQL (only that dialect's module is imported:
    PostgreSQL's costs a tenth of a second to import)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    from sqlalchemy.dialects import postgresql

    return postgresql.insert(table)


def count_runs(conn: Connection, factory_key: str, pipeline: str) -> int:
    # Here, beside the tables, because both the reads and the key index (which tells a stale key
    # set by comparing counts) need it, and the reads import the key index.
    query = select(func.count()).select_from(RUNS).where(RUNS.c.factory_key == factory_key, RUNS.c.pipeline == pipeline)
    return int(conn.execute(query).scalar_one())
