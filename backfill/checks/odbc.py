"""The ``odbc`` kind: count a window's committed rows through a pyodbc connection string.

Options: ``connection`` (``${VAR}`` expanded only when the check connects), ``query`` or
``query_file`` with ``?`` placeholders, ``args`` (a list of templates, always bound as
parameters), ``expect`` (a number, or a table ``{query | query_file, args, connection}`` giving
the source count; its connection defaults to the check's).

pyodbc is imported only when a check runs, so building the CLI never loads the ODBC manager.
Connections are read-only (``backfill.checks.readonly``), never in autocommit, and rolled back
after every count. They are pooled per expanded connection string: a preview of thousands of windows would
otherwise spend most of its time logging in.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from typing import Any, ClassVar

from backfill.checks._support import (
    Scrubber,
    as_count,
    fail,
    first_cell,
    password_values,
    secret_values,
    template,
)
from backfill.checks.base import CheckSpec
from backfill.checks.counting import CheckTimeout, CountingCheck, CountQuery
from backfill.secrets import expand
from backfill.windows import Window, render

_MAX_IDLE = 8


class _Pool:
    """Idle connections by expanded connection string; a connection is used by one thread at a time."""

    def __init__(self) -> None:
        self._idle: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> Any | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def give(self, key: str, connection: Any) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < _MAX_IDLE:
                idle.append(connection)
                return
        _close(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                _close(connection)


_POOL = _Pool()


def close_connections() -> None:
    """Close every pooled ODBC connection (tests, and long-lived processes between previews)."""
    _POOL.close()


def _close(connection: Any) -> None:
    # A connection that cannot even close is already gone; nothing is left to release.
    with contextlib.suppress(Exception):
        connection.close()


class OdbcCheck(CountingCheck):
    connection_option = "connection"
    args_default: ClassVar[Any] = ()

    def _parse_args(self, spec: CheckSpec, option: str, value: Any, query: str) -> list[Any]:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise fail(spec, option, "must be a list of templates, bound to the ? placeholders in order")
        args = [template(spec, f"{option}[{i}]", item) for i, item in enumerate(value)]
        wanted = placeholders(query)
        # A query without any marker is accepted as before (plans in use pass values it ignores);
        # the driver names that mismatch when the check runs.
        if wanted and wanted != len(args):
            marks = "placeholder" if wanted == 1 else "placeholders"
            values = "value" if len(args) == 1 else "values"
            raise fail(spec, option, f"gives {len(args)} {values} but the query has {wanted} ? {marks}")
        return args

    def _render(self, args: Any, window: Window) -> list[Any]:
        return [render(item, window.start, window.end) for item in args]

    def _count(self, query: CountQuery, args: Any, deadline: float, scrub: Scrubber) -> int:
        connection = expand(query.connection)
        scrub.add(connection, *secret_values(query.connection, self.environment()), *password_values(connection))
        return count(connection, query.text, args, deadline)


_NOT_PLACEHOLDERS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)


def placeholders(query: str) -> int:
    """The ``?`` markers of a statement, leaving out those in literals, quoted names and comments."""
    return _NOT_PLACEHOLDERS.sub(" ", query).count("?")


def count(connection: str, query: str, args: list[Any], deadline: float) -> int:
    """Run a counting query, on a pooled connection when one is idle; raise on any failure."""
    import pyodbc

    pooled = _POOL.take(connection)
    if pooled is not None:
        try:
            value = _execute(pooled, query, args, deadline)
        except pyodbc.Error:
            # An idle connection may have been dropped by the server; the query only reads, so
            # one more try on a fresh connection is safe.
            _close(pooled)
        except BaseException:
            _close(pooled)
            raise
        else:
            _POOL.give(connection, pooled)
            return value
    # Never autocommit: every count runs in a read-only transaction that is rolled back.
    fresh = pyodbc.connect(_no_create(connection), timeout=_whole_seconds(deadline), autocommit=False)
    try:
        _read_only(fresh)
        value = _execute(fresh, query, args, deadline)
    except BaseException:
        _close(fresh)
        raise
    _POOL.give(connection, fresh)
    return value


_SQL_ATTR_ACCESS_MODE, _SQL_MODE_READ_ONLY = 101, 1
_SQLITE_DRIVER = re.compile(r"(?i)(?:^|;)\s*driver\s*=\s*\{?[^;}]*sqlite")
_NO_CREATE = re.compile(r"(?i)(?:^|;)\s*nocreat\s*=")


def _no_create(connection: str) -> str:
    # SQLite's driver creates a missing database file on connect: a check must not.
    if _SQLITE_DRIVER.search(connection) and not _NO_CREATE.search(connection):
        return connection.rstrip(";") + ";NoCreat=1"
    return connection


def _read_only(connection: Any) -> None:
    """Make a fresh connection read-only on the server, by what the driver says it talks to."""
    import pyodbc

    # The ODBC access-mode hint first: drivers that do not know it refuse it harmlessly.
    with contextlib.suppress(pyodbc.Error):
        connection.set_attr(_SQL_ATTR_ACCESS_MODE, _SQL_MODE_READ_ONLY)
    dbms = str(connection.getinfo(pyodbc.SQL_DBMS_NAME)).lower()
    if "sqlite" in dbms:
        statement = "PRAGMA query_only = 1"
    elif "postgres" in dbms:
        # A session-level change made by a later query is undone by the rollback after it.
        statement = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
    elif "mariadb" in dbms or "mysql" in dbms:
        statement = "SET SESSION TRANSACTION READ ONLY"
    else:
        return
    cursor = connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
    connection.commit()


def _roll_back_quietly(connection: Any) -> None:
    # The statement already failed; the caller closes the connection, which also discards its
    # transaction, so a failing rollback adds nothing to report.
    with contextlib.suppress(Exception):
        connection.rollback()


def _whole_seconds(deadline: float) -> int:
    return max(1, math.ceil(CountingCheck.remaining(deadline)))


def _execute(connection: Any, query: str, args: list[Any], deadline: float) -> int:
    import pyodbc

    cursor = connection.cursor()
    cancelled = threading.Event()

    def cancel() -> None:
        cancelled.set()
        cursor.cancel()

    # Drivers disagree on query timeouts (psqlodbc refuses the attribute, MariaDB's ignores it),
    # but all three tested honour SQLCancel from another thread.
    timer = threading.Timer(CountingCheck.remaining(deadline), cancel)
    timer.daemon = True
    timer.start()
    try:
        if args:
            cursor.execute(query, list(args))
        else:
            cursor.execute(query)
        rows = cursor.fetchmany(2)
    except pyodbc.Error:
        _roll_back_quietly(connection)
        if cancelled.is_set() or time.monotonic() >= deadline:
            raise CheckTimeout from None
        raise
    except BaseException:
        _roll_back_quietly(connection)
        raise
    finally:
        timer.cancel()
        cursor.close()
    # Whatever the statement did, none of it stays. A connection that cannot roll back raises
    # here and is closed by the caller, never pooled.
    connection.rollback()
    return as_count(first_cell(rows))
