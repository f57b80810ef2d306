"""The ``sql`` kind: count a window's committed rows through a SQLAlchemy URL.

Options: ``url`` (``${VAR}`` expanded when the check connects), ``query`` or ``query_file`` with
``:name`` placeholders, ``args`` (a table of name = template, always bound as parameters),
``expect`` (a number, or a table ``{query | query_file, args, url}`` giving the source count).

Connections are read-only (``backfill.checks.readonly``): SQLite files open with ``mode=ro`` and
``query_only``, PostgreSQL and MariaDB sessions default to read-only transactions, and every
count is rolled back. One engine per expanded URL and timeout is kept for the life of the
process, so that every window and every check against the same sink shares a connection pool.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from backfill.checks._support import Scrubber, as_count, describe, fail, first_cell, secret_values, template
from backfill.checks.base import CheckSpec
from backfill.checks.counting import CheckTimeout, CountingCheck, CountQuery, require_mapping
from backfill.secrets import expand, variables_in
from backfill.windows import Window, render

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

_ENGINES: dict[tuple[str, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def dispose_engines() -> None:
    """Close every cached engine's connections (tests, and long-lived processes)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.dispose()


def _connect_args(backend: str, driver: str, seconds: int) -> dict[str, Any]:
    # Bound the login and, where the driver has one, the socket read: a sink that stops answering
    # must not hold a preview for longer than the check's timeout.
    if backend == "sqlite":
        return {"timeout": seconds}
    if driver in ("psycopg", "psycopg2", "pg8000"):
        return {"connect_timeout": seconds} if driver != "pg8000" else {"timeout": seconds}
    if driver in ("pymysql", "mysqldb"):
        return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    if driver == "pyodbc":
        return {"timeout": seconds}
    return {}


def _read_only_url(parsed: URL) -> URL:
    # SQLite opens the file read-only (and never creates a missing one); an in-memory database
    # holds nothing a check could damage.
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return parsed
    if parsed.database.startswith("file:"):
        return parsed.update_query_dict({"mode": "ro", "uri": "true"})
    return parsed.set(database="file:" + quote(parsed.database)).update_query_dict({"mode": "ro", "uri": "true"})


_SESSION_READ_ONLY: dict[str, str] = {
    "sqlite": "PRAGMA query_only = 1",
    # A session-level change made by a later query is undone by the rollback after it.
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


def _on_connect(backend: str) -> Callable[[Any, Any], None]:
    statement = _SESSION_READ_ONLY.get(backend)

    def read_only(dbapi_connection: Any, record: Any) -> None:
        del record
        if statement is None:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()

    return read_only


def _engine(url: str, seconds: int) -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    key = (url, seconds)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            parsed = make_url(url)
            backend = parsed.get_backend_name()
            engine = create_engine(
                _read_only_url(parsed),
                pool_pre_ping=True,
                connect_args=_connect_args(backend, parsed.get_driver_name(), seconds),
            )
            event.listen(engine, "connect", _on_connect(backend))
            _ENGINES[key] = engine
        return engine


def _canceller(dbapi_connection: Any) -> Callable[[], None] | None:
    """How to stop a running statement from another thread, for the drivers that can."""
    interrupt = getattr(dbapi_connection, "interrupt", None)  # sqlite3
    if callable(interrupt):
        return interrupt  # type: ignore[no-any-return]
    cancel = getattr(dbapi_connection, "cancel_safe", None) or getattr(dbapi_connection, "cancel", None)
    if callable(cancel):
        return cancel  # type: ignore[no-any-return]
    return None


class SqlCheck(CountingCheck):
    connection_option = "url"
    args_default: ClassVar[Any] = MappingProxyType({})

    def _check_connection(self, spec: CheckSpec, option: str, connection: str) -> None:
        if variables_in(connection):
            return
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(connection)
        except ArgumentError:
            raise fail(spec, option, "is not a SQLAlchemy URL (e.g. postgresql+psycopg://host/db)") from None

    def _parse_args(self, spec: CheckSpec, option: str, value: Any, query: str) -> dict[str, Any]:
        from sqlalchemy import text

        args = require_mapping(spec, option, value)
        placeholders = set(text(query).compile().params)
        missing = sorted(placeholders - set(args))
        if missing:
            raise fail(spec, option, f"no value for the placeholder :{missing[0]}")
        extra = sorted(set(args) - placeholders)
        if extra:
            raise fail(spec, option, f"{extra[0]!r} matches no :{extra[0]} placeholder in the query")
        return {str(name): template(spec, f"{option}.{name}", item) for name, item in args.items()}

    def _render(self, args: Any, window: Window) -> dict[str, Any]:
        return {name: render(item, window.start, window.end) for name, item in args.items()}

    def _explain(self, exc: BaseException) -> str:
        from sqlalchemy.exc import DBAPIError

        # SQLAlchemy's own message repeats the statement and the parameters (already in the
        # evidence) and a documentation link; the driver's message is the useful part.
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            return describe(exc.orig)
        return describe(exc)

    def _count(self, query: CountQuery, args: Any, deadline: float, scrub: Scrubber) -> int:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        url = expand(query.connection)
        scrub.add(url, *secret_values(query.connection, self.environment()))
        try:
            password = make_url(url).password
        except Exception:
            password = None
        if password:
            scrub.add(str(password))
        # Keyed by the configured timeout, not the time left, so that one engine serves every window.
        engine = _engine(url, max(1, math.ceil(self._seconds)))
        with engine.connect() as connection:
            cancelled = threading.Event()
            stop = _canceller(connection.connection.dbapi_connection)

            def cancel() -> None:
                cancelled.set()
                if stop is not None:
                    stop()

            timer = threading.Timer(self.remaining(deadline), cancel)
            timer.daemon = True
            timer.start()
            try:
                rows = list(connection.execute(text(query.text), args).fetchmany(2))
            except Exception:
                if cancelled.is_set():
                    connection.invalidate()
                    raise CheckTimeout from None
                try:
                    connection.rollback()
                except Exception:
                    # The statement's own error is the one to report; this connection is done.
                    connection.invalidate()
                raise
            finally:
                timer.cancel()
            # Whatever the statement did, none of it stays.
            connection.rollback()
        return as_count(first_cell(rows))
