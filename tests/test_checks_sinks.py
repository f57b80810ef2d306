"""The odbc and sql kinds against real databases: SQLite, PostgreSQL and MariaDB through unixODBC,
SQLite and PostgreSQL through SQLAlchemy. Each sink holds a clean, a complete and a partial window."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import MARIADB_ADMIN, POSTGRES_ADMIN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sink_support import CLEAN, COMPLETE, PARTIAL, T0, close_pools, filled_database, filled_sqlite, require_driver
from sqlalchemy import create_engine, text

from backfill.checks import sql as sql_module
from backfill.checks.base import CheckSpec, CheckStatus
from backfill.checks.registry import build_check
from backfill.errors import CheckError
from backfill.windows import Window

ROOT = Path(__file__).resolve().parents[1]
INJECTION = "north'; DROP TABLE meter_readings; --"
COUNT = "SELECT COUNT(*) FROM meter_readings WHERE feeder = ? AND reading_ts >= ? AND reading_ts < ?"
SOURCE = "SELECT COUNT(*) FROM source_readings WHERE feeder = ? AND reading_ts >= ? AND reading_ts < ?"
ARGS = ["north", "{start}", "{end}"]


def table_count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(text("SELECT COUNT(*) FROM meter_readings")).scalar_one()
    engine.dispose()
    return int(value)


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    yield
    close_pools()


@pytest.fixture(scope="module")
def pg_sink() -> Iterator[str]:
    """One filled PostgreSQL sink for the module: the tests only read it."""
    yield from filled_database(POSTGRES_ADMIN, "PostgreSQL")


@pytest.fixture(scope="module")
def maria_sink() -> Iterator[str]:
    yield from filled_database(MARIADB_ADMIN, "MariaDB")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return filled_sqlite(tmp_path)


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def odbc_sink(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(ODBC connection string template using ${SINK_DB}, SQLAlchemy URL) of a filled sink."""
    if request.param == "sqlite":
        require_driver("SQLite3")
        url: str = request.getfixturevalue("sqlite_url")
        monkeypatch.setenv("SINK_DB", url.removeprefix("sqlite:///"))
        return "Driver=SQLite3;Database=${SINK_DB}", url
    if request.param == "postgres":
        require_driver("PostgreSQL Unicode")
        url = request.getfixturevalue("pg_sink")
        monkeypatch.setenv("SINK_DB", url.rsplit("/", 1)[1])
        return "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=${SINK_DB};UID=postgres", url
    require_driver("MariaDB Unicode")
    url = request.getfixturevalue("maria_sink")
    monkeypatch.setenv("SINK_DB", url.rsplit("/", 1)[1])
    return "Driver={MariaDB Unicode};Server=127.0.0.1;Port=3306;Database=${SINK_DB};User=root;Password=", url


def odbc(connection: str, **options: Any) -> Any:
    timeout = options.pop("timeout", timedelta(seconds=10))
    return build_check(CheckSpec("readings", "odbc", {"connection": connection, **options}, timeout))


@pytest.mark.odbc
def test_odbc_clean_complete_partial_with_expected_query(odbc_sink: tuple[str, str]) -> None:
    connection, _ = odbc_sink
    check = odbc(connection, query=COUNT, args=ARGS, expect={"query": SOURCE, "args": ARGS})
    results = [check.evaluate(w) for w in (CLEAN, COMPLETE, PARTIAL)]
    assert [r.status for r in results] == [CheckStatus.CLEAN, CheckStatus.COMPLETE, CheckStatus.PARTIAL]
    partial = results[2]
    assert partial.reason == "2 of 4 rows committed"
    assert partial.evidence["committed"] == 2 and partial.evidence["expected"] == 4
    assert partial.evidence["statement"] == COUNT and partial.evidence["expected_statement"] == SOURCE
    assert partial.evidence["args"] == ["north", "2026-11-03T02:30:00Z", "2026-11-03T02:45:00Z"]
    assert isinstance(partial.evidence["duration_ms"], int)
    # The connection string, even with its ${VAR}, is not evidence.
    assert "SINK_DB" not in repr(partial) and "Driver" not in repr(partial)


@pytest.mark.odbc
def test_odbc_injection_in_a_value_changes_nothing(odbc_sink: tuple[str, str]) -> None:
    connection, url = odbc_sink
    hostile = odbc(connection, query=COUNT, args=[INJECTION, "{start}", "{end}"])
    result = hostile.evaluate(COMPLETE)
    assert result.status is CheckStatus.CLEAN, result.reason
    assert result.evidence["args"][0] == INJECTION
    assert table_count(url) == 7
    assert odbc(connection, query=COUNT, args=ARGS, expect=4).evaluate(COMPLETE).status is CheckStatus.COMPLETE


@pytest.mark.odbc
def test_odbc_without_expect_any_row_is_partial_and_a_number_expect(odbc_sink: tuple[str, str]) -> None:
    connection, _ = odbc_sink
    no_expect = odbc(connection, query=COUNT, args=ARGS).evaluate(COMPLETE)
    assert (no_expect.status, no_expect.reason) == (CheckStatus.PARTIAL, "4 rows committed, no expected count")
    assert odbc(connection, query=COUNT, args=ARGS, expect=5).evaluate(COMPLETE).status is CheckStatus.PARTIAL


@pytest.mark.odbc
@pytest.mark.postgres
def test_odbc_hides_connection_values_in_driver_errors(pg_sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_driver("PostgreSQL Unicode")
    monkeypatch.setenv("SINK_USER", "role_nobody_knows")
    monkeypatch.setenv("SINK_PASSWORD", "hunter2-very-secret")
    connection = (
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;UID=${SINK_USER};PWD=${SINK_PASSWORD}"
    )
    result = odbc(connection, query=COUNT, args=ARGS).evaluate(CLEAN)
    assert result.status is CheckStatus.ERROR
    assert result.reason.startswith("count query failed: OperationalError: ")
    assert 'role "***" does not exist' in result.reason
    assert "role_nobody_knows" not in repr(result) and "hunter2" not in repr(result)


@pytest.mark.odbc
@pytest.mark.postgres
def test_odbc_timeout_cancels_the_query(pg_sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_driver("PostgreSQL Unicode")
    monkeypatch.setenv("SINK_DB", pg_sink.rsplit("/", 1)[1])
    connection = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=${SINK_DB};UID=postgres"
    check = odbc(connection, query="SELECT COUNT(*) FROM (SELECT pg_sleep(5)) AS s", timeout=timedelta(seconds=0.5))
    started = time.monotonic()
    result = check.evaluate(CLEAN)
    assert time.monotonic() - started < 2
    assert (result.status, result.reason) == (CheckStatus.ERROR, "count query timed out after 0.5s")
    # The cancelled connection was not pooled: the next evaluation works.
    quick = odbc(connection, query="SELECT COUNT(*) FROM (SELECT 1) AS s", timeout=timedelta(seconds=0.5))
    assert quick.evaluate(CLEAN).status is CheckStatus.PARTIAL


@pytest.mark.odbc
@pytest.mark.postgres
def test_odbc_replaces_a_pooled_connection_the_server_dropped(pg_sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_driver("PostgreSQL Unicode")
    name = pg_sink.rsplit("/", 1)[1]
    monkeypatch.setenv("SINK_DB", name)
    check = odbc(
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=${SINK_DB};UID=postgres",
        query=COUNT,
        args=ARGS,
        expect=4,
    )
    assert check.evaluate(COMPLETE).status is CheckStatus.COMPLETE
    admin = create_engine(pg_sink, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        ).scalar_one()
    admin.dispose()
    assert killed >= 1
    assert check.evaluate(COMPLETE).status is CheckStatus.COMPLETE


@pytest.mark.odbc
def test_odbc_sqlite_errors_are_results(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_driver("SQLite3")
    monkeypatch.setenv("SINK_DB", sqlite_url.removeprefix("sqlite:///"))
    connection = "Driver=SQLite3;Database=${SINK_DB}"
    missing_table = odbc(connection, query="SELECT COUNT(*) FROM nowhere").evaluate(CLEAN)
    assert missing_table.status is CheckStatus.ERROR
    assert "no such table: nowhere" in missing_table.reason
    assert sqlite_url.removeprefix("sqlite:///") not in missing_table.reason
    two_rows = odbc(connection, query="SELECT COUNT(*) FROM meter_readings GROUP BY feeder").evaluate(CLEAN)
    assert (two_rows.status, two_rows.reason) == (
        CheckStatus.ERROR,
        "count query failed: ValueError: the query returned more than one row",
    )
    not_a_count = odbc(connection, query="SELECT 'many'").evaluate(CLEAN)
    assert not_a_count.reason == "count query failed: ValueError: 'many' is not a count"
    monkeypatch.delenv("SINK_DB")
    unset = odbc(connection, query=COUNT, args=ARGS).evaluate(CLEAN)
    assert (
        unset.reason
        == "count query failed: ConfigError: environment variable SINK_DB is not set (needed by ${SINK_DB})"
    )


@pytest.mark.odbc
def test_odbc_sqlite_endless_query_times_out(sqlite_url: str) -> None:
    require_driver("SQLite3")
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    path = sqlite_url.removeprefix("sqlite:///")
    result = odbc(f"Driver=SQLite3;Database={path}", query=endless, timeout=timedelta(seconds=0.3)).evaluate(CLEAN)
    assert (result.status, result.reason) == (CheckStatus.ERROR, "count query timed out after 0.3s")


@pytest.mark.odbc
def test_odbc_query_file_relative_to_the_plan(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example file in checks/ as a plan in plans/ names it."""
    require_driver("SQLite3")
    monkeypatch.setenv("SINK_DB", sqlite_url.removeprefix("sqlite:///"))
    spec = CheckSpec(
        "readings",
        "odbc",
        {
            "connection": "Driver=SQLite3;Database=${SINK_DB}",
            "query_file": "../checks/meter_readings_count.sql",
            "args": ARGS,
            "expect": {"query_file": "../checks/meter_readings_source_count.sql", "args": ARGS},
        },
        base_dir=ROOT / "plans",
    )
    result = build_check(spec).evaluate(PARTIAL)
    assert (result.status, result.reason) == (CheckStatus.PARTIAL, "2 of 4 rows committed")
    assert result.evidence["statement_file"] == "../checks/meter_readings_count.sql"
    assert result.evidence["statement"].startswith("-- Readings of one feeder")


def sql(url: str, **options: Any) -> Any:
    timeout = options.pop("timeout", timedelta(seconds=10))
    return build_check(CheckSpec("readings", "sql", {"url": url, **options}, timeout))


NAMED = "SELECT COUNT(*) FROM meter_readings WHERE feeder = :feeder AND reading_ts >= :start AND reading_ts < :end"
NAMED_ARGS = {"feeder": "north", "start": "{start}", "end": "{end}"}


@pytest.fixture(params=["sqlite", "postgres"])
def sql_sink(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ${SINK_URL} template of a filled sink."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("pg_sink")
    monkeypatch.setenv("SINK_URL", url)
    return "${SINK_URL}"


def test_sql_clean_complete_partial(sql_sink: str) -> None:
    source = NAMED.replace("meter_readings", "source_readings")
    check = sql(sql_sink, query=NAMED, args=NAMED_ARGS, expect={"query": source, "args": NAMED_ARGS})
    assert [check.evaluate(w).status for w in (CLEAN, COMPLETE, PARTIAL)] == [
        CheckStatus.CLEAN,
        CheckStatus.COMPLETE,
        CheckStatus.PARTIAL,
    ]
    result = check.evaluate(PARTIAL)
    assert result.evidence["args"] == {
        "feeder": "north",
        "start": "2026-11-03T02:30:00Z",
        "end": "2026-11-03T02:45:00Z",
    }
    assert "SINK_URL" not in repr(result)
    # Both queries of every window went through one engine (one connection pool) for the URL.
    assert len(sql_module._ENGINES) == 1


def test_sql_injection_in_a_value_changes_nothing(sql_sink: str) -> None:
    hostile = sql(sql_sink, query=NAMED, args={**NAMED_ARGS, "feeder": INJECTION})
    assert hostile.evaluate(COMPLETE).status is CheckStatus.CLEAN
    assert sql(sql_sink, query=NAMED, args=NAMED_ARGS, expect=4).evaluate(COMPLETE).status is CheckStatus.COMPLETE


def test_sql_query_file_from_checks_folder(sqlite_url: str) -> None:
    spec = CheckSpec(
        "readings",
        "sql",
        {"url": sqlite_url, "query_file": "../checks/meter_readings_count_named.sql", "args": NAMED_ARGS, "expect": 4},
        base_dir=ROOT / "plans",
    )
    assert build_check(spec).evaluate(COMPLETE).status is CheckStatus.COMPLETE


@pytest.mark.postgres
def test_sql_hides_url_secrets_and_reports_the_driver_error(pg_sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINK_USER", "role_nobody_knows")
    monkeypatch.setenv("SINK_PASSWORD", "hunter2-very-secret")
    result = sql(
        "postgresql+psycopg://${SINK_USER}:${SINK_PASSWORD}@127.0.0.1:5432/test", query=NAMED, args=NAMED_ARGS
    ).evaluate(CLEAN)
    assert result.status is CheckStatus.ERROR
    assert result.reason.startswith("count query failed: OperationalError: ")
    assert "***" in result.reason
    assert "role_nobody_knows" not in repr(result) and "hunter2" not in repr(result)
    assert "sqlalche.me" not in result.reason


@pytest.mark.postgres
def test_sql_timeout_cancels_on_postgres(pg_sink: str) -> None:
    check = sql(pg_sink, query="SELECT COUNT(*) FROM (SELECT pg_sleep(5)) AS s", timeout=timedelta(seconds=0.5))
    started = time.monotonic()
    result = check.evaluate(CLEAN)
    assert time.monotonic() - started < 2
    assert (result.status, result.reason) == (CheckStatus.ERROR, "count query timed out after 0.5s")


def test_sql_timeout_interrupts_sqlite(sqlite_url: str) -> None:
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    result = sql(sqlite_url, query=endless, timeout=timedelta(seconds=0.3)).evaluate(CLEAN)
    assert (result.status, result.reason) == (CheckStatus.ERROR, "count query timed out after 0.3s")
    assert sql(sqlite_url, query=NAMED, args=NAMED_ARGS).evaluate(COMPLETE).status is CheckStatus.PARTIAL


def test_sql_placeholders_and_args_must_match(sqlite_url: str) -> None:
    with pytest.raises(CheckError) as missing_arg:
        sql(sqlite_url, query=NAMED, args={"feeder": "north", "start": "{start}"})
    assert str(missing_arg.value) == "check 'readings': option 'args': no value for the placeholder :end"
    with pytest.raises(CheckError) as extra:
        sql(sqlite_url, query=NAMED, args={**NAMED_ARGS, "region": "x"})
    assert str(extra.value) == "check 'readings': option 'args': 'region' matches no :region placeholder in the query"
    with pytest.raises(CheckError) as bad_url:
        sql("not a url", query=NAMED, args=NAMED_ARGS)
    assert str(bad_url.value) == (
        "check 'readings': option 'url': is not a SQLAlchemy URL (e.g. postgresql+psycopg://host/db)"
    )


@pytest.mark.odbc
# What a real parameter can hold: any text a driver can encode (lone surrogates cannot be sent as
# UTF-8 or UTF-16, and NUL ends a C string). No example database: nothing is written to the repo.
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(feeder=st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40))
def test_odbc_any_value_is_bound_never_spliced(feeder: str, sqlite_url: str) -> None:
    """Whatever a value holds (quotes, semicolons, comments), it is compared, not executed."""
    require_driver("SQLite3")
    import sqlite3

    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meter_readings WHERE reading_ts >= '2026-11-03T03'")
        conn.execute("INSERT INTO meter_readings VALUES (?, '2026-11-03T03:01:00Z')", (feeder,))
    window = Window(T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=15))
    literal = feeder.replace("{", "{{").replace("}", "}}")
    check = odbc(f"Driver=SQLite3;Database={path}", query=COUNT, args=[literal, "{start}", "{end}"], expect=1)
    result = check.evaluate(window)
    assert (result.status, result.evidence["args"][0]) == (CheckStatus.COMPLETE, feeder), result.reason
    assert table_count(sqlite_url) == 8
