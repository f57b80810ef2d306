"""One transaction API (issue 11): on SQLite reads take no lock, writes take it up front.

A ``status`` read once waited 1.8 s behind the runner because every transaction, reads included,
began with ``BEGIN IMMEDIATE``. Here a second, real SQLite connection holds the write lock (with
an uncommitted row, as a runner mid-append does) and the reads must complete; the lock is held
for the whole read, so a read that waited for it would fail with "database is locked" after the
busy timeout instead of completing.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.cli import main
from backfill.identity import Actor, IdentitySource
from backfill.store.backfills import list_backfills
from backfill.store.database import Database
from backfill.store.ledger import Ledger

ALICE = Actor("alice", IdentitySource.OS)


@pytest.fixture
def db(isolated: Path) -> Iterator[Database]:
    database = Database()  # the SQLite file the autouse fixture points BACKFILL_LEDGER at
    Ledger(database).append("request", {"note": "before the writer"}, actor=ALICE, backfill_id="bf-1")
    yield database
    database.dispose()


def other_process_writing(path: Path) -> sqlite3.Connection:
    """What a runner mid-append holds: SQLite's write lock and a row nobody else sees yet."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO ledger_meta (name, value) VALUES ('probe', 'uncommitted')")
    return conn


def test_reads_complete_while_another_connection_holds_the_write_lock(
    db: Database, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = other_process_writing(isolated / "ledger.db")
    try:
        ledger = Ledger(db)
        assert [e.kind for e in ledger.events()] == ["request"]
        head = ledger.head()
        assert head is not None and head.seq == 1
        assert ledger.verify().ok
        assert list_backfills(db) == []
        with db.reading() as conn:
            assert conn.exec_driver_sql("SELECT value FROM ledger_meta WHERE name = 'probe'").first() is None
        assert main.run(["status"]) == 0
        assert "no backfills yet" in capsys.readouterr().out
        assert main.run(["ledger", "verify"]) == 0
    finally:
        writer.rollback()
        writer.close()


def test_a_write_takes_the_lock_when_it_begins_and_a_read_never_does(db: Database, isolated: Path) -> None:
    probe = sqlite3.connect(isolated / "ledger.db", isolation_level=None, timeout=0)
    try:
        with db.reading():
            probe.execute("BEGIN IMMEDIATE")  # free: the open read holds no lock
            probe.rollback()
        with db.writing(), pytest.raises(sqlite3.OperationalError, match="locked"):
            probe.execute("BEGIN IMMEDIATE")  # taken before the write transaction ran a statement
    finally:
        probe.close()


def test_the_package_opens_ledger_transactions_only_through_reading_and_writing() -> None:
    # One place decides deferred or immediate: a transaction opened on the engine directly would
    # take the write lock (the safe default) and bring back reads waiting behind the runner.
    package = Path(__file__).resolve().parent.parent / "backfill"
    direct = re.compile(r"\.engine\.(begin|connect)\(|\bSession\(\s*(self\.)?(db\.)?engine")
    found = [
        f"{path.relative_to(package.parent)}:{number}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "database.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if direct.search(line)
    ]
    assert found == []
