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

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint, func, select
from sqlalchemy.engine import Connection

from backfill.factory.run import RunStatus
from backfill.store.schema import METADATA

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Bounded by PostgreSQL's and SQL Server's parameter limits (65535, 2100) with room to spare.
FETCH_CHUNK = 500
# Rows per round trip when loading a whole history: bounds the transient memory of the load.
LOAD_CHUNK = 20_000


# Core tables, not SQLModel classes: a preview reads them, and SQLModel's import with the ORM
# behind it cost the preview command a fifth of its start-up (issue 14). Columns as the SQLModel
# classes declared them (revision 0001 and 0003 create them; a test compares the two).
RUNS = Table(
    "history_runs",
    METADATA,
    Column("factory_key", String(255), primary_key=True),
    Column("pipeline", String(260), primary_key=True),
    Column("run_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("run_start_us", BigInteger, nullable=True),
    Column("last_updated_us", BigInteger, nullable=True),
    Column("run_group_id", String(64), nullable=True),
    Column("is_latest", Boolean, nullable=False, default=True),
    Column("parameters", Text, nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_history_runs_start", "factory_key", "pipeline", "run_start_us"),
)
SYNC = Table(
    "history_sync",
    METADATA,
    Column("factory_key", String(255), primary_key=True),
    Column("pipeline", String(260), primary_key=True),
    Column("watermark_us", BigInteger, nullable=True),
    Column("horizon_us", BigInteger, nullable=False),
    Column("synced_at_us", BigInteger, nullable=False),
)
# A set of matched fields of one pipeline whose keys ``history_keys`` holds.
KEY_SETS = Table(
    "history_key_sets",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("factory_key", String(255), nullable=False),
    Column("pipeline", String(260), nullable=False),
    Column("signature", String(64), nullable=False),
    Column("fields", Text, nullable=False),
    UniqueConstraint("factory_key", "pipeline", "signature", name="uq_history_key_sets"),
)
# One cached run's match key under one key set (NULL: a matched field is missing).
KEYS = Table(
    "history_keys",
    METADATA,
    Column("set_id", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(64), primary_key=True),
    Column("key_hash", BigInteger, nullable=True),
    Index("ix_history_keys_hash", "set_id", "key_hash"),
)

NAME_LIMIT = 128

# A parameter of a pipeline that a plan marked secret: masked in every cached run.
SECRETS = Table(
    "history_secrets",
    METADATA,
    Column("factory_key", String(255), primary_key=True),
    Column("pipeline", String(260), primary_key=True),
    # Within MariaDB's 3072-byte key (utf8mb4) together with the two columns above.
    Column("name", String(NAME_LIMIT), primary_key=True),
)
_STATUSES = {status.value: status for status in RunStatus}


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
