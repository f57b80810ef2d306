"""The ledger database: engine, sessions, schema and migrations.

One database holds the history cache, the backfills and the ledger. SQLite by default
(``sqlite:///backfill-ledger.db`` in the working directory), any SQLAlchemy URL through
``BACKFILL_LEDGER`` (PostgreSQL or Azure SQL for teams).

Migrations: every schema change is a numbered step in ``MIGRATIONS``; ``schema_version`` records
which ones ran. Table modules register their SQLModel tables by being imported in ``_load_tables``;
dialect-specific DDL (triggers) registers with ``on_migrate``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.engine import Connection
from sqlmodel import Session, SQLModel, create_engine

from backfill.errors import ConfigError

DEFAULT_URL = "sqlite:///backfill-ledger.db"

# (version, description, step). A step gets a connection inside the migration transaction.
Migration = tuple[int, str, Callable[[Connection], None]]
MIGRATIONS: list[Migration] = []


Step = Callable[[Connection], None]


def on_migrate(version: int, description: str) -> Callable[[Step], Step]:
    def register(step: Step) -> Step:
        MIGRATIONS.append((version, description, step))
        return step

    return register


def ledger_url() -> str:
    return os.environ.get("BACKFILL_LEDGER", "").strip() or DEFAULT_URL


TABLE_MODULES = (
    "backfill.store.backfills",
    "backfill.store.claims",
    "backfill.store.history",
    "backfill.store.ledger",
)


def _load_tables() -> None:
    # Imported for their side effect: each registers its tables on SQLModel.metadata and its
    # migration steps in MIGRATIONS.
    for module in TABLE_MODULES:
        importlib.import_module(module)


class Database:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or ledger_url()
        try:
            self.engine: Engine = create_engine(self.url, pool_pre_ping=True)
        except Exception as exc:  # a malformed URL or a missing driver
            raise ConfigError(f"ledger database {self.url!r}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        self.migrate()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception."""
        with Session(self.engine) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def migrate(self) -> None:
        _load_tables()
        if self._up_to_date():
            # Nothing to do, and nothing written: an auditor's read-only role can open the ledger.
            return
        with self.engine.begin() as conn:
            SQLModel.metadata.create_all(conn)
            conn.execute(
                text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT)")
            )
            done = {row[0] for row in conn.execute(text("SELECT version FROM schema_version"))}
            for version, description, step in sorted(MIGRATIONS, key=lambda m: m[0]):
                if version in done:
                    continue
                step(conn)
                conn.execute(
                    text("INSERT INTO schema_version (version, description) VALUES (:v, :d)"),
                    {"v": version, "d": description},
                )

    def _up_to_date(self) -> bool:
        with self.engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            if "schema_version" not in names or not set(SQLModel.metadata.tables) <= names:
                return False
            done = {row[0] for row in conn.execute(text("SELECT version FROM schema_version"))}
        return {version for version, _, _ in MIGRATIONS} <= done

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    # WAL lets readers go on while the runner writes; a busy timeout instead of "database is
    # locked" when two processes append at once. BEGIN IMMEDIATE (taken in store code that must
    # serialise) needs the driver's own transaction handling switched off.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")
