"""Checks never write (issue 9, item 1): a writing statement in an ``odbc`` or ``sql`` check leaves
the sink byte-for-byte as it was and makes the window ``blocked-check-error`` saying why, on the
three real ODBC drivers and through SQLAlchemy on SQLite, PostgreSQL and MariaDB. Statements the
keyword check lets through (a leading comment, a CTE) are stopped by the read-only connection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import MARIADB_ADMIN, POSTGRES_ADMIN
from hypothesis import given
from hypothesis import strategies as st
from sink_support import close_pools, filled_database, filled_sqlite, require_driver
from sqlalchemy import create_engine, inspect, text

from backfill.checks.base import CheckSpec
from backfill.checks.readonly import QUERY_WORDS, refusal
from backfill.checks.registry import build_check
from backfill.decisions import Decision
from backfill.factory.protocol import FactoryRef
from backfill.preview import compute_preview
from backfill.store.history import HistoryView
from backfill.windows import Window

T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
WINDOW = Window(T0 + timedelta(minutes=15), T0 + timedelta(minutes=30))

# Refused by the keyword check before anything is sent: (statement, the reason's key words).
REFUSED = [
    ("DELETE FROM meter_readings", "DELETE is not a query"),
    ("UPDATE meter_readings SET feeder = 'x'", "UPDATE is not a query"),
    ("DROP TABLE meter_readings", "DROP is not a query"),
    ("INSERT INTO meter_readings VALUES ('north', NULL)", "INSERT is not a query"),
    ("/* looks harmless */ -- really\n  DELETE FROM meter_readings", "DELETE is not a query"),
    ("(DROP TABLE meter_readings)", "DROP is not a query"),
    ("SELECT COUNT(*) FROM meter_readings; DROP TABLE meter_readings", "more than one statement"),
    ("SELECT COUNT(*) FROM meter_readings /*! ; DROP TABLE meter_readings */", "executable comment"),
    ("SELECT * INTO stolen FROM meter_readings", "SELECT ... INTO writes"),
]
# Pass the keyword check; the server's read-only session must refuse them.
HIDDEN_SQLITE = ["WITH x AS (SELECT 1) DELETE FROM meter_readings"]
HIDDEN_POSTGRES = [
    "WITH gone AS (DELETE FROM meter_readings RETURNING 1) SELECT COUNT(*) FROM gone",
    "-- a count\nWITH x AS (SELECT 1) UPDATE meter_readings SET feeder = 'x'",
]
HIDDEN_MARIADB = [
    "WITH x AS (SELECT 1) DELETE FROM meter_readings",
    # A stored function that deletes: to the keyword check, an ordinary SELECT.
    "SELECT wipe_readings()",
]


REF = FactoryRef("s", "rg", "f")


@dataclass(frozen=True)
class OnePlan:
    """The part of a loaded plan a preview reads: one window, no parameters."""

    path: Path = Path("plan.toml")
    hash: str = "h"
    windows: tuple[Window, ...] = (WINDOW,)
    match_on: tuple[str, ...] = ()
    ref: FactoryRef = REF
    pipeline: str = "P"


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    yield
    close_pools()


@pytest.fixture(scope="module")
def pg_sink() -> Iterator[str]:
    yield from filled_database(POSTGRES_ADMIN, "PostgreSQL")


@pytest.fixture(scope="module")
def maria_sink() -> Iterator[str]:
    for url in filled_database(MARIADB_ADMIN, "MariaDB"):
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE FUNCTION wipe_readings() RETURNS INT MODIFIES SQL DATA "
                    "BEGIN DELETE FROM meter_readings; RETURN 0; END"
                )
            )
        engine.dispose()
        yield url


@pytest.fixture
def sqlite_sink(tmp_path: Path) -> str:
    return filled_sqlite(tmp_path)


def snapshot(url: str) -> Any:
    """Everything a check could change: the file's bytes (SQLite), every table and its rows."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            rows = {t: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {t}")).all()), key=repr) for t in tables}
    finally:
        engine.dispose()
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        files = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
        return hashlib.sha256(path.read_bytes()).hexdigest(), files, rows
    return rows


def blocked_reason(options: dict[str, Any], kind: str) -> str:
    check = build_check(CheckSpec("sink", kind, options, timedelta(seconds=10)))
    preview = compute_preview(OnePlan(), HistoryView([], horizon=T0 - timedelta(days=1)), [check])
    (decided,) = preview.decisions
    assert decided.decision is Decision.BLOCKED_CHECK_ERROR, decided.reason
    return decided.reason


def prove_nothing_written(url: str, kind: str, options: dict[str, Any], hidden: list[str], refuses: str) -> None:
    before = snapshot(url)
    for statement, why in REFUSED:
        reason = blocked_reason({**options, "query": statement}, kind)
        assert "count query refused before it was sent: " in reason and why in reason, (statement, reason)
        assert snapshot(url) == before, statement
    for statement in hidden:
        reason = blocked_reason({**options, "query": statement}, kind)
        assert "count query failed" in reason and refuses in reason, (statement, reason)
        assert snapshot(url) == before, statement
    # A real count still works on the same (pooled) connections afterwards.
    check = build_check(CheckSpec("sink", kind, {**options, "query": "SELECT COUNT(*) FROM meter_readings"}))
    assert check.evaluate(WINDOW).evidence["committed"] == 7


@pytest.mark.odbc
def test_odbc_sqlite_never_writes(sqlite_sink: str) -> None:
    require_driver("SQLite3")
    path = sqlite_sink.removeprefix("sqlite:///")
    options = {"connection": f"Driver=SQLite3;Database={path}"}
    prove_nothing_written(sqlite_sink, "odbc", options, HIDDEN_SQLITE, "readonly database")


@pytest.mark.odbc
@pytest.mark.postgres
def test_odbc_postgres_never_writes(pg_sink: str) -> None:
    require_driver("PostgreSQL Unicode")
    name = pg_sink.rsplit("/", 1)[1]
    options = {"connection": f"Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port=5432;Database={name};UID=postgres"}
    prove_nothing_written(pg_sink, "odbc", options, HIDDEN_POSTGRES, "read-only transaction")


@pytest.mark.odbc
@pytest.mark.mariadb
def test_odbc_mariadb_never_writes(maria_sink: str) -> None:
    require_driver("MariaDB Unicode")
    name = maria_sink.rsplit("/", 1)[1]
    options = {
        "connection": f"Driver={{MariaDB Unicode}};Server=127.0.0.1;Port=3306;Database={name};User=root;Password="
    }
    prove_nothing_written(maria_sink, "odbc", options, HIDDEN_MARIADB, "")
    reason = blocked_reason({**options, "query": HIDDEN_MARIADB[1]}, "odbc")
    assert "Cannot execute statement in a READ ONLY transaction" in reason


def test_sql_sqlite_never_writes(sqlite_sink: str) -> None:
    prove_nothing_written(sqlite_sink, "sql", {"url": sqlite_sink}, HIDDEN_SQLITE, "readonly database")


@pytest.mark.postgres
def test_sql_postgres_never_writes(pg_sink: str) -> None:
    prove_nothing_written(pg_sink, "sql", {"url": pg_sink}, HIDDEN_POSTGRES, "read-only transaction")


@pytest.mark.mariadb
def test_sql_mariadb_never_writes(maria_sink: str) -> None:
    prove_nothing_written(maria_sink, "sql", {"url": maria_sink}, HIDDEN_MARIADB, "")
    reason = blocked_reason({"url": maria_sink, "query": HIDDEN_MARIADB[1]}, "sql")
    assert "Cannot execute statement in a READ ONLY transaction" in reason


@pytest.mark.odbc
@pytest.mark.postgres
def test_postgres_a_query_cannot_turn_the_pooled_session_writable(pg_sink: str) -> None:
    """A SELECT may change the session's default (set_config); the rollback after each count
    undoes it, so the next count on the same pooled connection is read-only again."""
    require_driver("PostgreSQL Unicode")
    name = pg_sink.rsplit("/", 1)[1]
    connection = f"Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port=5432;Database={name};UID=postgres"
    before = snapshot(pg_sink)
    flip = "SELECT COUNT(*) FROM (SELECT set_config('default_transaction_read_only', 'off', false)) AS s"
    for kind, options in (("odbc", {"connection": connection}), ("sql", {"url": pg_sink})):
        flipped = build_check(CheckSpec("sink", kind, {**options, "query": flip})).evaluate(WINDOW)
        assert flipped.evidence.get("committed") == 1, flipped.reason
        reason = blocked_reason({**options, "query": HIDDEN_POSTGRES[0]}, kind)
        assert "read-only transaction" in reason
    assert snapshot(pg_sink) == before


@pytest.mark.odbc
def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    require_driver("SQLite3")
    absent = tmp_path / "typo.db"
    for kind, options in (
        ("odbc", {"connection": f"Driver=SQLite3;Database={absent}"}),
        ("sql", {"url": f"sqlite:///{absent}"}),
    ):
        query = {"query": "SELECT COUNT(*) FROM meter_readings"}
        result = build_check(CheckSpec("sink", kind, {**options, **query})).evaluate(WINDOW)
        assert result.status.value == "error", result.reason
        assert not absent.exists(), kind


def test_the_keyword_check_accepts_queries() -> None:
    for statement in (
        "SELECT COUNT(*) FROM t",
        "  -- leading comment\n/* and a block */ select count(*) from t;",
        "WITH x AS (SELECT 1) SELECT COUNT(*) FROM x",
        "(SELECT COUNT(*) FROM t)",
        "VALUES (3)",
        Path(__file__).parents[1].joinpath("checks/meter_readings_count.sql").read_text(encoding="utf-8"),
    ):
        assert refusal(statement) is None, statement


@given(
    word=st.from_regex(r"[A-Za-z_]{1,12}", fullmatch=True).filter(lambda w: w.upper() not in QUERY_WORDS),
    lead=st.lists(st.sampled_from([" ", "\n", "-- c\n", "/* c */", "("]), max_size=4).map("".join),
    rest=st.text(max_size=30),
)
def test_the_keyword_check_refuses_every_other_first_word(word: str, lead: str, rest: str) -> None:
    reason = refusal(f"{lead}{word} {rest}")
    assert reason is not None
