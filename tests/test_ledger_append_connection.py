"""SQLite appends of their own keep one connection checked out (``Database.appending``): what
they rely on is that it is the same durable BEGIN IMMEDIATE transaction, that a failed append
never leaves a broken connection in use, and that a second thread appending meanwhile is not
refused or serialised onto it but takes ``writing()``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backfill.errors import LedgerError
from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger

ALICE = Actor("alice", IdentitySource.OS)


def test_appends_reuse_one_connection_and_a_failure_drops_it(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        ledger = Ledger(db)
        ledger.append("a", {"i": 0}, actor=ALICE)
        held = db._held
        assert held is not None
        ledger.append("a", {"i": 1}, actor=ALICE)
        assert db._held is held
        with db.appending() as conn:
            assert conn is held and conn.in_transaction()
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: durable
        with pytest.raises(RuntimeError), db.appending() as conn:
            conn.exec_driver_sql("INSERT INTO ledger_meta (name, value) VALUES ('probe', 'x')")
            raise RuntimeError("the append fails after its insert")
        assert db._held is None and held.closed
        with db.reading() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM ledger_meta WHERE name = 'probe'").scalar() == 0
        with pytest.raises(LedgerError):
            ledger.append("", {}, actor=ALICE)
        ledger.append("a", {"i": 2}, actor=ALICE)
        assert db._held is not None and db._held is not held
        report = ledger.verify()
        assert (report.ok, report.count) == (True, 3)
    finally:
        db.dispose()
    assert db._held is None


def test_another_thread_appending_meanwhile_takes_writing(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        ledger = Ledger(db)
        ledger.append("a", {"i": 0}, actor=ALICE)
        seen: list[object] = []
        with db.appending() as mine:
            # The write lock is ours: the other thread's append waits for it on another connection.
            worker = threading.Thread(target=lambda: seen.append(ledger.append("b", {}, actor=ALICE)))
            worker.start()
            worker.join(0.3)
            assert worker.is_alive()
            assert mine is db._held
        worker.join(10)
        assert len(seen) == 1
        report = ledger.verify()
        assert (report.ok, report.count) == (True, 2)
    finally:
        db.dispose()
