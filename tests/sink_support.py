"""The sinks the check tests read: the same rows on SQLite, PostgreSQL and MariaDB, and the ODBC
drivers they go through."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import _fresh_database, missing
from sqlalchemy import create_engine, text

from backfill.checks.odbc import close_connections
from backfill.checks.sql import dispose_engines
from backfill.windows import Window

T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
CLEAN, COMPLETE, PARTIAL = (
    Window(T0 + i * timedelta(minutes=15), T0 + (i + 1) * timedelta(minutes=15)) for i in range(3)
)


def _rows(window: Window, count: int, feeder: str = "north") -> list[dict[str, Any]]:
    return [{"f": feeder, "t": window.start + timedelta(minutes=i)} for i in range(count)]


def fill(url: str) -> None:
    """meter_readings: clean window empty (a south row only), complete 4 of 4, partial 2 of 4;
    a row exactly at the complete window's end belongs to the partial one (half-open)."""
    engine = create_engine(url)
    ts = "TEXT" if url.startswith("sqlite") else "TIMESTAMP"
    as_text = url.startswith("sqlite")
    sink = _rows(CLEAN, 1, "south") + _rows(COMPLETE, 4) + _rows(PARTIAL, 2)
    source = _rows(CLEAN, 4) + _rows(COMPLETE, 4) + _rows(PARTIAL, 4)
    with engine.begin() as conn:
        for table, rows in (("meter_readings", sink), ("source_readings", source)):
            conn.execute(text(f"CREATE TABLE {table} (feeder VARCHAR(200), reading_ts {ts})"))
            for row in rows:
                # SQLite keeps the timestamps as the same UTC text the window templates render.
                value = row["t"].strftime("%Y-%m-%dT%H:%M:%SZ") if as_text else row["t"].replace(tzinfo=None)
                conn.execute(text(f"INSERT INTO {table} VALUES (:f, :t)"), {"f": row["f"], "t": value})
    engine.dispose()


def filled_database(admin_url: str, kind: str) -> Iterator[str]:
    """A fresh database on the server at ``admin_url``, filled; dropped afterwards."""
    for url in _fresh_database(admin_url, kind):
        fill(url)
        yield url


def filled_sqlite(folder: Path) -> str:
    """A filled SQLite sink, ``folder/sink.db``; its URL."""
    url = f"sqlite:///{folder / 'sink.db'}"
    fill(url)
    return url


def close_pools() -> None:
    """Close what the odbc and sql checks keep open between evaluations."""
    close_connections()
    dispose_engines()


def require_driver(name: str) -> None:
    import pyodbc

    if name not in pyodbc.drivers():
        missing(f"ODBC driver {name!r}")
