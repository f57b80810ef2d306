"""The ledger database: engine, transactions, schema and migrations.

One database holds the history cache, the backfills and the ledger. SQLite by default
(``sqlite:///backfill-ledger.db`` in the working directory), a PostgreSQL URL through
``BACKFILL_LEDGER`` for teams. Only dialects whose append-only triggers exist are accepted:
MariaDB/MySQL and in-memory SQLite are refused with one line, never opened half-protected.

Every transaction goes through ``Database.reading()`` or ``Database.writing()`` (a Core
``Connection``). On SQLite a read is a deferred ``BEGIN``: no lock, and under WAL it reads a
snapshot while the runner writes. A write is ``BEGIN IMMEDIATE``: it queues for the write lock up
front, so two writers wait on the busy timeout instead of one failing when its read turns into a
write. On PostgreSQL both are the usual transaction.

Migrations are Alembic revisions in ``backfill/migrations/versions`` (shipped in the package).
Opening an up-to-date database costs two catalogue reads and never imports Alembic, so a
read-only role can open it and a command starts fast. A database made by the hand-rolled
``schema_version`` steps of earlier releases is adopted: the missing old steps run, then it is
stamped with the baseline revision and upgraded to the head.

Tampering is refused, not repaired: once a database records a schema, a missing ``ledger_events``
or ``backfills`` table is exit 5, and so is a ledger whose tables are gone although this machine
has seen events in it (``backfill.store.seen``).
"""

from __future__ import annotations

import atexit
import importlib
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, NoSuchModuleError, SQLAlchemyError

from backfill.errors import ConfigError, LedgerInvalid
from backfill.migrations import BASELINE, HEAD, REVISIONS, SCRIPT_LOCATION
from backfill.store.schema import HEAD_TABLES, METADATA

DEFAULT_URL = "sqlite:///backfill-ledger.db"
SUPPORTED = "SQLite or PostgreSQL"
# Tables whose loss is tampering: the chain itself and the frozen requests.
PROTECTED_TABLES = ("ledger_events", "backfills")
SCHEMA_TABLES = ("alembic_version", "schema_version", "ledger_meta")
BASELINE_TABLES = (
    "backfills",
    "history_key_sets",
    "history_keys",
    "history_runs",
    "history_sync",
    "ledger_events",
    "window_claims",
)
# The connection execution option through which reading()/writing() tell the SQLite begin hook
# which BEGIN to emit. A transaction opened on the engine directly (a test tampering with a table)
# has no option and takes the write lock: waiting is safe where failing a write would not be.
_WRITES = "backfill_writes"
# "backfilm" in ASCII: the advisory lock that serialises migrators on PostgreSQL.
_PG_MIGRATE_LOCK = 0x6261636B66696C6D


def ledger_url() -> str:
    return os.environ.get("BACKFILL_LEDGER", "").strip() or DEFAULT_URL


TABLE_MODULES = (
    "backfill.store.backfills",
    "backfill.store.claims",
    "backfill.store.history_tables",
    "backfill.store.ledger",
)


def load_tables() -> None:
    # Imported for their side effect: each registers its tables on store.schema.METADATA. Only
    # creating or migrating a schema needs them all; an up-to-date database is checked against
    # HEAD_TABLES, so a read path imports just the tables it reads.
    for module in TABLE_MODULES:
        importlib.import_module(module)


_load_tables = load_tables  # the name earlier callers used


class NoLedger(ConfigError):
    """A read-only command found no ledger at the URL (and created nothing)."""


def mask(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, for error lines."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return str(url)
    if parsed.password is None and isinstance(url, str):
        return url  # as the user wrote it (rendering would percent-encode the path)
    return parsed.render_as_string(hide_password=True)


def check_url(url: str) -> URL:
    """Parse a ledger URL and refuse what cannot be a protected, persistent ledger."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"ledger {url!r} is not a database URL; use e.g. sqlite:///backfill-ledger.db or "
            "postgresql+psycopg://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    shown = mask(url)
    if backend in ("mysql", "mariadb"):
        raise ConfigError(
            f"ledger {shown}: MariaDB/MySQL cannot be a ledger (no append-only triggers); use {SUPPORTED}"
        )
    if backend not in ("sqlite", "postgresql", "mssql"):
        raise ConfigError(f"ledger {shown}: {backend} cannot be a ledger (no append-only triggers); use {SUPPORTED}")
    if backend == "sqlite":
        database = parsed.database or ""
        if (
            database in ("", ":memory:")
            or database.startswith("file::memory:")
            or parsed.query.get("mode") == "memory"
            or "mode=memory" in database
        ):
            raise ConfigError(
                f"ledger {shown} is an in-memory database that the next command would not see; "
                "use a file, e.g. sqlite:///backfill-ledger.db"
            )
    return parsed


def sqlite_path(parsed: URL) -> Path | None:
    """The file of a SQLite URL (None for ``file:`` URIs, which SQLite resolves itself)."""
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database.startswith("file:"):
        return None
    return Path(database)


@dataclass(frozen=True)
class Survey:
    tables: frozenset[str]
    revision: str | None
    legacy_steps: frozenset[int] | None  # schema_version rows of earlier releases, if any

    @property
    def has_schema(self) -> bool:
        return self.revision is not None or bool(self.legacy_steps)

    @property
    def ours(self) -> frozenset[str]:
        return self.tables & (HEAD_TABLES | frozenset(SCHEMA_TABLES))


class Database:
    """The ledger database. ``create=False`` (read-only commands): never create a schema; a
    database holding none of backfill's tables is ``NoLedger``, and a SQLite file that does not
    exist yet is shown as an empty ledger without being created."""

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        self.url = url or ledger_url()
        self.display_url = mask(self.url)
        parsed = check_url(self.url)
        self.empty_view = False
        path = sqlite_path(parsed)
        if path is not None:
            self._check_sqlite_path(path)
            if not create and not path.exists():
                self.empty_view = True
        self.engine: Engine = self._engine(parsed)
        self._meta: dict[str, str] | None = None
        self._session_user: str | None = None
        # Set by Ledger.verify_for_action: the head this process verified and then extended.
        self.trusted_head: tuple[int, str] | None = None
        self.trusted_written = 0.0  # time.monotonic() of its last write to the state file
        # (seq, hash) of the last event this process's own append transactions committed: the head
        # its next append most likely extends. Only a guess: the append's guarded insert checks it
        # against the ledger (backfill.store.ledger), so a stale one costs the locked path, no more.
        self.appended: tuple[int, str] | None = None
        self.state_dir: Path | None = None
        # The connection ledger appends on SQLite keep checked out (see appending()), the process
        # that checked it out, and who holds it now.
        self._held: Connection | None = None
        self._held_pid = 0
        self._held_lock = threading.Lock()
        self.migrate(create=create)

    def _engine(self, parsed: URL) -> Engine:
        # No pool_pre_ping: it costs a statement per checkout, a fifth of every ledger append.
        # _ping_when_idle tests only a connection that sat in the pool long enough to go stale.
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": 10}
        target: str | URL = parsed
        if self.empty_view:
            # Nothing to read and nothing may be written: an in-memory schema answers "no events"
            # (the state file still tells a vanished ledger from a new one, see migrate()).
            target = "sqlite://"
        try:
            engine = create_engine(target, **kwargs)
        except (ModuleNotFoundError, NoSuchModuleError, ImportError) as exc:
            if parsed.get_backend_name() == "postgresql":
                raise ConfigError(
                    f"ledger {self.display_url} needs the PostgreSQL driver: pip install 'backfill[postgres]'"
                ) from None
            raise ConfigError(f"ledger {self.display_url}: driver missing ({exc})") from None
        except (ArgumentError, TypeError, ValueError) as exc:
            raise ConfigError(f"ledger {self.display_url}: {exc}") from None
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        else:
            _ping_when_idle(engine)
        return engine

    def _check_sqlite_path(self, path: Path) -> None:
        folder = path.parent if str(path.parent) else Path()
        if path.is_dir():
            raise ConfigError(
                f"ledger {self.display_url}: {path} is a folder, not a database file; "
                f"name a file in it, e.g. sqlite:///{path / 'backfill-ledger.db'}"
            )
        if not folder.is_dir():
            raise ConfigError(
                f"ledger {self.display_url}: folder {folder} does not exist; create it or set "
                "BACKFILL_LEDGER to a file in an existing folder"
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction: committed on success, rolled back on any exception. On SQLite a
        deferred ``BEGIN``: no lock is taken, so a read never waits behind the runner's writes.
        Only for transactions that never write (a deferred transaction that writes after another
        process did may fail at once instead of waiting)."""
        with self._transaction(writes=False) as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A transaction that may write: committed on success, rolled back on any exception. On
        SQLite ``BEGIN IMMEDIATE``: the write lock is taken first (waiting up to the busy timeout),
        which serialises writers such as ledger appends and window claims."""
        with self._transaction(writes=True) as conn:
            yield conn

    @contextmanager
    def appending(self) -> Iterator[Connection]:
        """``writing()`` for a ledger append of its own. On SQLite the same ``BEGIN IMMEDIATE``
        transaction, on a connection kept checked out between appends: borrowing one from the
        pool and handing it back (the Connection object, the pool's events, its reset) cost as
        much CPU as SQLite spends writing the row. One thread at a time uses it; another that
        appends meanwhile takes ``writing()``. A transaction that fails closes it (the next
        append borrows a fresh one), so a broken connection is never reused."""
        if self.dialect != "sqlite" or not self._held_lock.acquire(blocking=False):
            with self.writing() as conn:
                yield conn
            return
        try:
            if self._held is None or self._held_pid != os.getpid():
                # None yet, or inherited through a fork: the parent's, never to be used here.
                self._held = self.engine.connect()
                self._held.execution_options(**{_WRITES: True})
                self._held_pid = os.getpid()
            conn = self._held
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                self._held = None
                conn.close()
                raise
        finally:
            self._held_lock.release()

    def _release_held(self) -> None:
        with self._held_lock:
            conn, self._held = self._held, None
            if conn is not None and self._held_pid == os.getpid():
                conn.close()

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """PostgreSQL only: a connection on which each statement is a transaction of its own,
        committed as it completes (the driver's autocommit). A write that is one statement then
        costs one round trip: no BEGIN, no COMMIT. Not for SQLite, whose writes take the write
        lock first (``writing()``)."""
        if self.dialect != "postgresql":
            raise ValueError(f"single_statement() is for PostgreSQL, not {self.dialect}")
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextmanager
    def writing_unsynced(self) -> Iterator[Connection]:
        """``writing()`` whose commit does not wait for the disk: only for data that can be
        rebuilt and that nothing durable claims before it is (the history cache's batches, see
        ``backfill.history``). SQLite: ``synchronous=NORMAL`` on the connection (WAL keeps it
        consistent), put back before it returns to the pool, where ledger appends find it;
        PostgreSQL: ``synchronous_commit`` off for this transaction only."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITES: True})
            driver = conn.connection.dbapi_connection if self.dialect == "sqlite" else None
            was = 2  # FULL, SQLite's default
            if driver is not None:
                was = int(driver.execute("PRAGMA synchronous").fetchone()[0])
                driver.execute("PRAGMA synchronous=NORMAL")  # autocommit mode: outside a transaction
            try:
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                    yield conn
            finally:
                if driver is not None:
                    driver.execute(f"PRAGMA synchronous={was}")

    @contextmanager
    def _transaction(self, *, writes: bool) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITES: writes})
            with conn.begin():
                yield conn

    # --- opening and migrating -------------------------------------------------------------------

    def migrate(self, *, create: bool = True) -> None:
        if self.empty_view:
            load_tables()
            self._refuse_vanished()
            with self.writing() as conn:
                METADATA.create_all(conn)
            return
        try:
            with self.reading() as conn:
                survey = _survey(conn)
        except DBAPIError as exc:
            raise self._connect_error(exc) from None
        self._check_survey(survey, create)
        if survey.revision is not None and survey.revision not in REVISIONS:
            raise ConfigError(
                f"ledger {self.display_url} has schema revision {survey.revision}, newer than this backfill knows; "
                "upgrade backfill"
            )
        if survey.revision == HEAD and not self._missing(survey):
            # Nothing to do, and nothing written: an auditor's read-only role can open the ledger.
            return
        try:
            self._upgrade()
        except DBAPIError as exc:
            raise self._connect_error(exc, writing=True) from None

    def _check_survey(self, survey: Survey, create: bool) -> None:
        if survey.has_schema:
            for table in PROTECTED_TABLES:
                if table not in survey.tables:
                    raise LedgerInvalid(
                        f"ledger {self.display_url}: table {table} is missing although the schema is recorded "
                        "(dropped: tampering); restore the database from a backup, nothing was recreated"
                    )
            return
        if not survey.ours:
            self._refuse_vanished()
            if not create:
                raise NoLedger(
                    f"no ledger here: {self.display_url} holds none of backfill's tables (nothing was created); "
                    "point BACKFILL_LEDGER at your ledger"
                )

    def _refuse_vanished(self) -> None:
        from backfill.store.seen import seen_checkpoint, state_file

        seen = seen_checkpoint(self.url)
        if seen is not None and seen[0] > 0:
            raise LedgerInvalid(
                f"ledger {self.display_url}: this machine has seen event {seen[0]} in it but it holds no ledger "
                "(dropped or replaced: tampering); restore it from a backup, nothing was recreated (replaced on "
                f"purpose: remove its entry from {state_file()})"
            )

    def _missing(self, survey: Survey) -> set[str]:
        return set(HEAD_TABLES) - survey.tables

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        load_tables()
        with self.writing() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATE_LOCK})")
            # Again under the lock: another process may have migrated meanwhile.
            survey = _survey(conn)
            config = Config()
            config.set_main_option("script_location", SCRIPT_LOCATION)
            config.attributes["connection"] = conn
            if survey.revision is None and survey.legacy_steps is not None:
                _adopt_legacy(conn, survey.legacy_steps)
                command.stamp(config, BASELINE)
            if survey.revision != HEAD:
                command.upgrade(config, "head")
            # Tables added to the models without a revision yet (a merge in flight): created so
            # the code runs; never the protected ones, whose absence was refused above.
            known = set(METADATA.tables) - _survey(conn).tables
            missing = [METADATA.tables[t] for t in sorted(known)]
            if missing:
                METADATA.create_all(conn, tables=missing)

    def _connect_error(self, exc: DBAPIError, *, writing: bool = False) -> Exception:
        detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        if self.dialect == "sqlite":
            if "not a database" in detail or "malformed" in detail:
                return ConfigError(
                    f"ledger {self.display_url} is not a SQLite database (corrupted, or another kind of file); "
                    "restore it from a backup or point BACKFILL_LEDGER elsewhere"
                )
            if "readonly" in detail or "read-only" in detail or "unable to open" in detail:
                return ConfigError(
                    f"ledger {self.display_url}: cannot open or write the file ({detail}); check "
                    "its permissions and folder"
                )
        if writing:
            return ConfigError(
                f"ledger {self.display_url}: cannot create or migrate the schema ({detail}); "
                "an administrator runs backfill ledger init"
            )
        return ConfigError(
            f"ledger {self.display_url} unreachable ({detail}); check that the server runs and the URL, "
            "user and password"
        )

    # --- ledger metadata (origin, team mode) --------------------------------------------------

    def meta(self) -> dict[str, str]:
        """``ledger_meta`` rows: ``origin`` (this ledger's identity) and, in team mode, ``mode``."""
        if self._meta is None:
            with self.reading() as conn:
                rows = conn.execute(text("SELECT name, value FROM ledger_meta")).all()
            self._meta = {str(name): str(value) for name, value in rows}
        return self._meta

    @property
    def team_mode(self) -> bool:
        return self.dialect == "postgresql" and self.meta().get("mode") == "team"

    def session_user(self) -> str:
        """The database's own name for who is connected (team mode's identity)."""
        if self._session_user is None:
            with self.reading() as conn:
                self._session_user = str(conn.execute(text("SELECT session_user")).scalar_one())
        return self._session_user

    def trust_from(self, head: tuple[int, str]) -> None:
        """``head`` was verified (and recorded): this process's own appends extend it."""
        from backfill.store.seen import state_dir

        self.trusted_head = head
        self.trusted_written = 0.0  # the first append after it is recorded at once
        self.state_dir = state_dir()
        _TRUSTING.add(self)

    def flush_seen(self) -> None:
        if self.trusted_head is not None:
            from backfill.store.seen import remember_checkpoint

            remember_checkpoint(self.url, self.trusted_head, self.state_dir)

    def dispose(self) -> None:
        self.flush_seen()
        self._release_held()
        self.engine.dispose()


# Databases whose verified head moved on in this process: recorded once more at exit.
_TRUSTING: weakref.WeakSet[Database] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for db in list(_TRUSTING):
        db.flush_seen()


def _survey(conn: Connection) -> Survey:
    tables = frozenset(inspect(conn).get_table_names())
    revision = None
    if "alembic_version" in tables:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    legacy = None
    if "schema_version" in tables:
        legacy = frozenset(int(r[0]) for r in conn.execute(text("SELECT version FROM schema_version")))
    return Survey(tables, None if revision is None else str(revision), legacy)


def _adopt_legacy(conn: Connection, steps: frozenset[int]) -> None:
    """Bring a database of the hand-rolled steps (1: ledger triggers, 30: backfills triggers) to
    the baseline: tables that an older release had not made yet, and the missing steps."""
    from backfill.migrations.versions.r0001_baseline import create_triggers

    # Only the baseline's tables: later revisions create theirs when the upgrade runs.
    baseline = [t for name, t in METADATA.tables.items() if name in BASELINE_TABLES]
    METADATA.create_all(conn, tables=baseline)
    create_triggers(conn, tuple(step for step in (1, 30) if step not in steps))


# A pooled connection unused for longer than this is tested before use (a server restart or an
# idle timeout may have closed it); one used more recently is handed out as it is.
_IDLE_PING_SECONDS = 30.0


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < _IDLE_PING_SECONDS:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()
        except Exception as exc:
            # The pool discards this connection and retries the checkout with a fresh one.
            raise DisconnectionError(str(exc)) from exc


def _configure_sqlite(engine: Engine) -> None:
    # WAL lets readers go on while the runner writes (reads take no lock, see reading()); a busy
    # timeout instead of "database is locked" when two processes write at once. Choosing the
    # BEGIN ourselves needs the driver's own transaction handling switched off. synchronous=FULL
    # syncs the WAL at every commit, so a committed event survives a power cut; said here, not
    # left to how SQLite was built (NORMAL, often the WAL default elsewhere, may lose the last
    # commits).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        writes = conn.get_execution_options().get(_WRITES, True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


@contextmanager
def opened(url: str | None = None, *, create: bool = True) -> Iterator[Database]:
    """The one way to open the ledger database: disposed (its verified head recorded, its
    connections closed) however the block ends."""
    db = Database(url, create=create)
    try:
        yield db
    finally:
        db.dispose()


__all__ = [
    "DEFAULT_URL",
    "Database",
    "NoLedger",
    "SQLAlchemyError",
    "check_url",
    "ledger_url",
    "load_tables",
    "mask",
    "opened",
]
