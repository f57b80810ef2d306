"""Opening the ledger database: Alembic migrations, refused dialects and URLs, clear lines.

Issue 8 (migrations from now on, a vanished ledger is tampering) and issue 9 #2, #4 and the
ledger-URL lines. Every case goes through the CLI's single error handler where a user meets it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from backfill.cli.main import run
from backfill.identity import Actor, IdentitySource
from backfill.migrations import HEAD, REVISIONS
from backfill.store.database import Database
from backfill.store.ledger import Ledger

DATA = Path(__file__).parent / "data"
ALICE = Actor("alice", IdentitySource.DECLARED)
# Heads of the three events in the dumps made by main 9984a76 (tests/data).
LEGACY_SQLITE_HEAD = "3:787cb739c5f1cf05bab377f3c300c204c12e3713449dbfc5af26d102ea91baa1"
LEGACY_POSTGRES_HEAD = "3:f9792bc02064b61916f1116be95a4ad84cdb41cbb2f83a2eaf37958005dec9f6"


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "unexpected" not in lines[0] and "Traceback" not in captured.err
    return lines[0]


# --- item 1: Alembic ------------------------------------------------------------------------------


def test_head_tables_name_every_table_of_the_models() -> None:
    # An up-to-date database is recognised from HEAD_TABLES without importing the table modules.
    from backfill.store.database import load_tables
    from backfill.store.schema import HEAD_TABLES, METADATA

    load_tables()
    assert set(METADATA.tables) == HEAD_TABLES


def test_head_constant_is_the_script_directory_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "backfill:migrations")
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [HEAD]
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(REVISIONS)


def _schema_diff(url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from backfill.store.database import load_tables
    from backfill.store.schema import METADATA

    load_tables()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), METADATA)
    finally:
        engine.dispose()
    # schema_version is the old releases' table, kept (not the models' business).
    return [d for d in diff if "schema_version" not in repr(d)]


def test_revisions_build_exactly_the_models(ledger_url: str) -> None:
    Database(ledger_url).dispose()
    assert _schema_diff(ledger_url) == []
    assert {"alembic_version", "ledger_meta", "ledger_events", "backfills"} <= tables(ledger_url)
    assert "schema_version" not in tables(ledger_url)


def _check_upgraded(url: str, head: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_LEDGER", url)
    db = Database(url)
    with db.reading() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    assert db.meta()["origin"].startswith("backfill-ledger-")
    ledger = Ledger(db)
    assert f"{ledger.verify().head_seq}:{ledger.verify().head_hash}" == head
    event = ledger.append("note", {"text": "after the upgrade"}, actor=ALICE)
    assert event.seq == 4 and ledger.verify().ok
    with pytest.raises(Exception, match="append-only"), db.writing() as conn:
        conn.execute(text("UPDATE ledger_events SET actor = 'mallory'"))
    db.dispose()
    assert _schema_diff(url) == []
    assert run(["ledger", "verify"]) == 0
    assert "5 events verified" not in capsys.readouterr().out


def test_a_sqlite_ledger_of_main_upgrades(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((DATA / "ledger-main-9984a76.sqlite.sql").read_text(encoding="utf-8"))
    _check_upgraded(f"sqlite:///{path}", LEGACY_SQLITE_HEAD, capsys, monkeypatch)


@pytest.mark.postgres
def test_a_postgres_ledger_of_main_upgrades(
    postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute((DATA / "ledger-main-9984a76.postgres.sql").read_text(encoding="utf-8"))
    _check_upgraded(postgres_url, LEGACY_POSTGRES_HEAD, capsys, monkeypatch)


def test_opening_an_up_to_date_ledger_never_imports_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fast.db'}"
    Database(url).dispose()
    probe = (
        "import sys; from backfill.store.database import Database; Database(sys.argv[1]).dispose(); "
        "print('alembic' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_migrations_ship_in_the_package() -> None:
    from importlib.resources import files

    migrations = files("backfill.migrations")
    assert migrations.joinpath("env.py").is_file()
    assert migrations.joinpath("script.py.mako").is_file()
    assert migrations.joinpath("versions", "r0001_baseline.py").is_file()
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert "migrations/script.py.mako" in pyproject


# --- item 2: only dialects with our triggers; a read-only command creates nothing ---------------


@pytest.mark.mariadb
@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"], ["ledger", "show"], ["history", "sync"]])
def test_mariadb_is_refused_as_a_ledger(
    mariadb_url: str, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_LEDGER", mariadb_url)
    assert run(args) in (1, 2)
    err = capsys.readouterr().err
    if args == ["history", "sync"]:
        return  # needs a plan first; the Database refusal is covered just below
    assert err.splitlines() == [
        f"error: ledger {mariadb_url}: MariaDB/MySQL cannot be a ledger (no append-only triggers); "
        "use SQLite or PostgreSQL"
    ]
    assert tables(mariadb_url) == set()


@pytest.mark.mariadb
def test_no_database_object_opens_on_mariadb(mariadb_url: str) -> None:
    from backfill.errors import ConfigError

    with pytest.raises(ConfigError, match="MariaDB/MySQL cannot be a ledger"):
        Database(mariadb_url)
    assert tables(mariadb_url) == set()


@pytest.mark.postgres
@pytest.mark.parametrize("foreign", [False, True])
@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"], ["ledger", "show"], ["ledger", "checkpoint"]])
def test_a_read_only_command_finds_no_ledger_and_creates_nothing(
    postgres_url: str,
    foreign: bool,
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if foreign:
        engine = create_engine(postgres_url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE invoices (id integer)"))
        engine.dispose()
    before = tables(postgres_url)
    monkeypatch.setenv("BACKFILL_LEDGER", postgres_url)
    assert run(args) == 1
    assert one_line(capsys) == (
        f"error: no ledger here: {postgres_url} holds none of backfill's tables (nothing was created); "
        "point BACKFILL_LEDGER at your ledger"
    )
    assert tables(postgres_url) == before


def test_a_read_only_command_on_a_sqlite_file_of_another_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id integer)")
    monkeypatch.setenv("BACKFILL_LEDGER", f"sqlite:///{path}")
    assert run(["status"]) == 1
    assert one_line(capsys).startswith("error: no ledger here: ")
    assert tables(f"sqlite:///{path}") == {"invoices"}


def test_status_in_a_new_folder_creates_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status"]) == 0
    assert capsys.readouterr().out == "no backfills yet (backfill request PLAN creates one)\n"
    assert not (tmp_path / "ledger.db").exists()


# --- item 3: URLs that cannot be a ledger, one line each ----------------------------------------


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:mem?mode=memory&uri=true", "sqlite+pysqlite://"]
)
@pytest.mark.parametrize("args", [["status"], ["ledger", "checkpoint"]])
def test_an_in_memory_ledger_is_refused(
    url: str, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_LEDGER", url)
    assert run(args) == 1
    line = one_line(capsys)
    assert line.startswith(f"error: ledger {url} is an in-memory database that the next command would not see")
    assert line.endswith("use a file, e.g. sqlite:///backfill-ledger.db")


def test_an_in_memory_ledger_is_refused_for_writing_too() -> None:
    from backfill.errors import ConfigError

    with pytest.raises(ConfigError, match="in-memory"):
        Database("sqlite://")


def test_a_ledger_in_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'nope' / 'ledger.db'}"
    monkeypatch.setenv("BACKFILL_LEDGER", url)
    assert run(["ledger", "verify"]) == 1
    assert one_line(capsys) == (
        f"error: ledger {url}: folder {tmp_path / 'nope'} does not exist; create it or set BACKFILL_LEDGER "
        "to a file in an existing folder"
    )
    assert not (tmp_path / "nope").exists()


def test_a_folder_as_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}"
    monkeypatch.setenv("BACKFILL_LEDGER", url)
    assert run(["status"]) == 1
    assert one_line(capsys) == (
        f"error: ledger {url}: {tmp_path} is a folder, not a database file; name a file in it, "
        f"e.g. sqlite:///{tmp_path / 'backfill-ledger.db'}"
    )


@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"]])
def test_a_corrupted_sqlite_file(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    assert run(args) == 1
    assert one_line(capsys) == (
        f"error: ledger sqlite:///{path} is not a SQLite database (corrupted, or another kind of file); "
        "restore it from a backup or point BACKFILL_LEDGER elsewhere"
    )
    assert path.read_bytes().startswith(b"this is not a database")


def test_an_unreachable_postgres_names_the_url_with_the_password_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_LEDGER", "postgresql+psycopg://alice:hunter2@127.0.0.1:1/ledger")
    assert run(["status"]) == 1
    line = one_line(capsys)
    assert line.startswith("error: ledger postgresql+psycopg://alice:***@127.0.0.1:1/ledger unreachable (")
    assert line.endswith("); check that the server runs and the URL, user and password")
    assert "hunter2" not in line


def test_a_missing_psycopg_names_the_extra(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setenv("BACKFILL_LEDGER", "postgresql+psycopg://alice:hunter2@127.0.0.1:5432/ledger")
    assert run(["ledger", "show"]) == 1
    assert one_line(capsys) == (
        "error: ledger postgresql+psycopg://alice:***@127.0.0.1:5432/ledger needs the PostgreSQL driver: "
        "pip install 'backfill[postgres]'"
    )


def test_a_url_that_is_not_one(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_LEDGER", "my ledger please")
    assert run(["status"]) == 1
    assert one_line(capsys).startswith("error: ledger 'my ledger please' is not a database URL; use e.g. ")
