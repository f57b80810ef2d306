"""The append path (issue 14) on real SQLite and PostgreSQL: the guarded insert after this
process's own head, the locked path it falls back to, and concurrent writers of both kinds.

Whatever path an append takes, the chain must stay one unbroken line with every event in it,
each writer's events in the order it wrote them, and no writer may fail because another wrote
at the same moment.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from ledger_worker import append_batches, append_events
from sqlalchemy import event

from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Draft, Ledger

ALICE = Actor("alice", IdentitySource.OS)
BOB = Actor("bob", IdentitySource.OS)


@contextmanager
def statements(db: Database, autocommit: list[bool] | None = None) -> Iterator[list[str]]:
    """The statements ``db`` sends while the block runs, as the driver receives them (and in
    ``autocommit``, whether each was sent as a transaction of its own)."""
    seen: list[str] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))
        if autocommit is not None:
            autocommit.append(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def assert_one_chain(db: Database, count: int) -> list[Any]:
    ledger = Ledger(db)
    report = ledger.verify()
    assert (report.ok, report.count, report.head_seq) == (True, count, count), report.message
    events = ledger.events()
    assert [e.seq for e in events] == list(range(1, count + 1))
    return events


def test_an_append_after_our_own_is_one_guarded_insert(db: Database) -> None:
    ledger = Ledger(db)
    first = ledger.append("request", {"i": 0}, actor=ALICE, backfill_id="bf-1")
    assert db.appended == (1, first.hash)
    alone: list[bool] = []
    with statements(db, alone) as sent:
        second = ledger.append("approval", {"i": 1}, actor=ALICE, backfill_id="bf-1")
        batch = ledger.append_many([Draft("tick", {"i": i}, "bf-1") for i in range(2, 7)], actor=ALICE)
    # No head read and no lock statement of its own: the insert checks the head (and on
    # PostgreSQL takes the lock) itself. SQLite's BEGIN IMMEDIATE is the write lock.
    inserts = [s for s in sent if s.startswith(("INSERT", "WITH"))]
    assert len(inserts) == 2 and all("ORDER BY seq DESC LIMIT 1" in s for s in inserts)
    assert len(sent) == (4 if db.dialect == "sqlite" else 2)
    if db.dialect == "postgresql":
        # One event: the statement is its own transaction (no BEGIN, no COMMIT round trip); the
        # batch is one transaction (a part written must be rolled back).
        assert alone == [True, False]
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert [e.seq for e in batch] == [3, 4, 5, 6, 7] and batch[0].prev_hash == second.hash
    assert db.appended == (7, batch[-1].hash)
    events = assert_one_chain(db, 7)
    assert [e.hash for e in events] == [first.hash, second.hash, *(e.hash for e in batch)]


def test_a_head_another_writer_moved_costs_the_locked_path_not_a_fork(db: Database, ledger_url: str) -> None:
    """Two Database objects on one ledger: each one's guess goes stale at every turn."""
    other = Database(ledger_url)
    try:
        mine, theirs = Ledger(db), Ledger(other)
        mine.append("a", {"i": 0}, actor=ALICE)
        theirs.append("b", {"i": 0}, actor=BOB)  # no guess yet: the head is read first
        with statements(db) as sent:
            stale = mine.append("a", {"i": 1}, actor=ALICE)
        # The guarded insert wrote nothing; the same transaction read the head and inserted.
        assert stale.seq == 3
        assert sum(s.startswith(("INSERT", "WITH")) for s in sent) == 2
        assert any(s.startswith("SELECT ledger_events.seq, ledger_events.hash") for s in sent)
        for i in range(2, 8):
            mine.append_many([Draft("a", {"i": i, "j": j}) for j in range(3)], actor=ALICE)
            theirs.append("b", {"i": i}, actor=BOB)
    finally:
        other.dispose()
    events = assert_one_chain(db, 3 + 6 * 4)
    assert [e.payload["i"] for e in events if e.kind == "b"] == [0, *range(2, 8)]


def test_a_guess_that_is_not_the_head_writes_nothing(db: Database) -> None:
    """A wrong guess (an event that was never committed, say) cannot link a new event to it."""
    ledger = Ledger(db)
    real = ledger.append("a", {"i": 0}, actor=ALICE)
    db.appended = (1, "f" * 64)
    second = ledger.append("a", {"i": 1}, actor=ALICE)
    assert (second.seq, second.prev_hash) == (2, real.hash)
    db.appended = (7, second.hash)
    third = ledger.append_many([Draft("a", {"i": 2}), Draft("a", {"i": 3})], actor=ALICE)
    assert [(e.seq, e.prev_hash) for e in third] == [(3, second.hash), (4, third[0].hash)]
    assert_one_chain(db, 4)


def test_a_large_batch_after_our_own_head(db: Database) -> None:
    """More events than one guarded statement carries: the rest follow it under the lock."""
    ledger = Ledger(db)
    ledger.append("a", {"i": -1}, actor=ALICE)
    batch = ledger.append_many([Draft("a", {"i": i}) for i in range(75)], actor=ALICE)
    assert [e.seq for e in batch] == list(range(2, 77))
    events = assert_one_chain(db, 76)
    assert [e.payload["i"] for e in events] == list(range(-1, 75))


def _holding_the_lock_then(db: Database, other: Database, after_ours: Any) -> Any:
    """``other`` appends one event in a transaction held open until ``db``'s append (run by
    ``after_ours``) waits for the append lock, then commits; ``after_ours``' result."""
    result: dict[str, Any] = {}

    def ours() -> None:
        try:
            result["value"] = after_ours()
        except BaseException as exc:
            result["error"] = exc

    with other.writing() as conn:
        Ledger(other).append("b", {"held": True}, actor=BOB, conn=conn)
        thread = threading.Thread(target=ours)
        thread.start()
        deadline = time.monotonic() + 20
        while not _someone_waits_for_an_advisory_lock(other):
            assert time.monotonic() < deadline, "our append never waited for the lock"
            time.sleep(0.01)
    thread.join(timeout=30)
    assert "error" not in result, result.get("error")
    return result["value"]


def _someone_waits_for_an_advisory_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        waiting = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).scalar_one()
        conn.rollback()
    return bool(waiting)


@pytest.mark.postgres
@pytest.mark.parametrize("count", [1, 3])
def test_a_writer_that_commits_while_the_guarded_insert_waits_for_the_lock(postgres_url: str, count: int) -> None:
    """PostgreSQL's guard reads the snapshot taken before the lock was granted, so it still sees
    our head; the primary key catches the other writer's event. One event: nothing written, it
    is tried again after the head read anew. A batch: the rows past the other's event went in,
    so the transaction is rolled back and the batch appended after it."""
    db, other = Database(postgres_url), Database(postgres_url)
    try:
        ledger = Ledger(db)
        ledger.append("a", {"i": 0}, actor=ALICE)
        ledger.append("a", {"i": 1}, actor=ALICE)
        assert db.appended is not None and db.appended[0] == 2
        drafts = [Draft("a", {"i": 2 + j}) for j in range(count)]
        rollbacks: list[object] = []

        def rolled_back(conn: object) -> None:
            rollbacks.append(conn)

        event.listen(db.engine, "rollback", rolled_back)
        alone: list[bool] = []
        with statements(db, alone) as sent:
            events = _holding_the_lock_then(db, other, lambda: ledger.append_many(drafts, actor=ALICE))
        event.remove(db.engine, "rollback", rolled_back)
        if count == 1:
            # The guarded insert wrote nothing: the head read again and the insert tried again,
            # each statement a transaction of its own.
            assert [s.split()[0] for s in sent] == ["WITH", "SELECT", "WITH"]
            assert alone == [True, True, True]
        else:
            # The batch went in partly: rolled back, then the locked path in a transaction (the
            # lock, the head, the insert).
            assert [s.split()[0] for s in sent] == ["WITH", "SELECT", "SELECT", "INSERT"]
            assert alone == [False, False, False, False] and len(rollbacks) == 1
        assert [e.seq for e in events] == list(range(4, 4 + count))
        stored = assert_one_chain(db, 3 + count)
        assert stored[2].kind == "b" and events[0].prev_hash == stored[2].hash
        assert [e.payload["i"] for e in stored if e.kind == "a"] == list(range(2 + count))
    finally:
        db.dispose()
        other.dispose()


def test_concurrent_threads_of_both_paths_never_fork_the_chain(db: Database, ledger_url: str) -> None:
    """Threads with their own Database each (fast path, their guesses going stale) and threads
    appending in their own transaction (the locked path, as a release before this one did)."""
    errors: list[BaseException] = []
    databases = [Database(ledger_url) for _ in range(4)]

    def work(worker: int) -> None:
        ledger = Ledger(databases[worker])
        try:
            for i in range(12):
                payload = {"worker": worker, "i": i}
                if worker == 3:
                    with databases[worker].writing() as conn:
                        ledger.append("tick", payload, actor=ALICE, conn=conn)
                elif worker == 2:
                    ledger.append_many([Draft("tick", {**payload, "j": j}) for j in range(3)], actor=ALICE)
                else:
                    ledger.append("tick", payload, actor=ALICE)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for database in databases:
        database.dispose()
    assert errors == []
    events = assert_one_chain(db, 12 * 3 + 12 * 3)
    for worker in range(4):
        mine = [(e.payload["i"], e.payload.get("j", 0)) for e in events if e.payload["worker"] == worker]
        assert mine == sorted(mine) and len(mine) == (36 if worker == 2 else 12)


def test_concurrent_processes_appending_batches_never_fork_the_chain(db: Database, ledger_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=append_batches, args=(ledger_url, w, 15, 3)) for w in range(2)]
    workers += [context.Process(target=append_events, args=(ledger_url, w, 30)) for w in range(2, 4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=180)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    events = assert_one_chain(db, 2 * 45 + 2 * 30)
    for worker in range(4):
        mine = [e.payload["i"] for e in events if e.backfill_id == f"bf-{worker}"]
        assert mine == list(range(45 if worker < 2 else 30))


def test_the_stored_row_is_the_one_a_core_insert_writes(db: Database) -> None:
    """The append's hand-written statements send values through the columns' bind processors:
    the row stored is the row ``insert(TABLE)`` stores (the time's text form on SQLite)."""
    from sqlalchemy import MetaData, insert

    from backfill.chain import canonical_json
    from backfill.store.ledger import TABLE

    ledger = Ledger(db)
    ledger.append("a", {"i": 0}, actor=ALICE)
    appended = ledger.append_many([Draft("b", {"é": [1.5, None]}, "bf-1", "w")], actor=BOB)[0]
    copy = TABLE.to_metadata(MetaData(), name="ledger_events_copy")
    with db.writing() as conn:
        copy.create(conn)
        values = {c.name: getattr(appended, c.name) for c in TABLE.c}
        conn.execute(insert(copy), {**values, "payload": canonical_json(appended.payload)})
        ours = conn.exec_driver_sql("SELECT * FROM ledger_events WHERE seq = 2").one()
        core = conn.exec_driver_sql("SELECT * FROM ledger_events_copy").one()
        copy.drop(conn)
    assert tuple(ours) == tuple(core)


def test_sqlite_appends_are_durable(tmp_path: Path) -> None:
    """WAL with synchronous=FULL on every pooled connection: the WAL is synced at each commit,
    so a committed event survives a power cut (NORMAL would not promise that)."""
    database = Database(f"sqlite:///{tmp_path / 'durable.db'}")
    try:
        Ledger(database).append("a", {}, actor=ALICE)
        raw = database.engine.raw_connection()
        try:
            cursor = raw.cursor()
            assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            cursor.close()
        finally:
            raw.close()
    finally:
        database.dispose()


@pytest.mark.postgres
def test_after_a_statement_of_its_own_the_pooled_connection_is_transactional_again(postgres_url: str) -> None:
    """The one-statement append borrows a pooled connection in autocommit: the pool must hand it
    back transactional, or a later writing() (a claim with its event) would not be atomic."""
    db = Database(postgres_url)
    try:
        ledger = Ledger(db)
        ledger.append("a", {"i": 0}, actor=ALICE)
        used: list[Any] = []

        def driver_connection(conn: Any, *_args: Any) -> None:
            used.append((conn.connection.dbapi_connection, conn.connection.dbapi_connection.autocommit))

        event.listen(db.engine, "before_cursor_execute", driver_connection)
        ledger.append("a", {"i": 1}, actor=ALICE)
        event.remove(db.engine, "before_cursor_execute", driver_connection)
        assert [lent for _, lent in used] == [True]
        assert used[0][0].autocommit is False  # back in the pool as it was lent
        with pytest.raises(RuntimeError), db.writing() as conn:
            conn.exec_driver_sql("INSERT INTO ledger_meta (name, value) VALUES ('probe', 'x')")
            raise RuntimeError("the transaction fails after its insert")
        with db.reading() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM ledger_meta WHERE name = 'probe'").scalar() == 0
    finally:
        db.dispose()


def test_single_statement_is_for_postgresql_only(db: Database) -> None:
    if db.dialect == "postgresql":
        with db.single_statement() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        return
    with pytest.raises(ValueError, match="single_statement"), db.single_statement():
        pass


@pytest.mark.postgres
def test_one_event_on_postgresql_reads_the_head_without_a_transaction(postgres_url: str) -> None:
    """A process's first event (no guess yet): the head read and the guarded insert, each a
    transaction of its own: two round trips. The ledger's first event takes the locked path."""
    db, other = Database(postgres_url), Database(postgres_url)
    try:
        assert not db.team_mode and not other.team_mode  # ledger_meta read once, before
        alone: list[bool] = []
        with statements(other, alone) as sent:
            first = Ledger(other).append("a", {"i": 0}, actor=BOB)
        # An empty ledger read: the genesis takes the locked path (lock, head, insert).
        assert [s.split()[0] for s in sent] == ["SELECT", "SELECT", "SELECT", "INSERT"]
        assert alone == [True, False, False, False]
        with statements(db, alone := []) as sent:
            second = Ledger(db).append("a", {"i": 1}, actor=ALICE)
        assert [s.split()[0] for s in sent] == ["SELECT", "WITH"] and alone == [True, True]
        assert (second.seq, second.prev_hash) == (2, first.hash)
    finally:
        db.dispose()
        other.dispose()


@pytest.mark.postgres
def test_one_event_that_keeps_missing_takes_the_locked_path(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(postgres_url)
    try:
        ledger = Ledger(db)
        ledger.append("a", {"i": 0}, actor=ALICE)
        misses: list[int] = []

        def another_writer_was_first(*_args: Any) -> None:
            misses.append(1)

        monkeypatch.setattr(Ledger, "_guarded", another_writer_was_first)
        with statements(db) as sent:
            event_ = ledger.append("a", {"i": 1}, actor=ALICE)
        assert len(misses) == 3  # then the lock, the head, the insert in one transaction
        assert [s.split()[0] for s in sent][-3:] == ["SELECT", "SELECT", "INSERT"]
        assert "pg_advisory_xact_lock" in sent[-3]
        assert event_.seq == 2
        assert_one_chain(db, 2)
    finally:
        db.dispose()
