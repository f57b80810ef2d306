"""The ledger on real SQLite and PostgreSQL: appends, filters, triggers, tampering, concurrency."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from ledger_worker import append_events
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError

from backfill.chain import GENESIS_HASH, canonical_json
from backfill.errors import LedgerError, LedgerInvalid, UsageError
from backfill.identity import Actor, IdentitySource
from backfill.secrets import Secret
from backfill.store.database import Database
from backfill.store.ledger import TABLE, Draft, Ledger

ALICE = Actor("alice", IdentitySource.OS)
BOB = Actor("bob@contoso.com", IdentitySource.AZURE_AD)
W1 = "2026-11-03T02:00:00Z/2026-11-03T02:15:00Z"


def fill(ledger: Ledger, n: int = 5) -> None:
    kinds = ["request", "approval", "intent", "run-created", "window-done"]
    for i in range(n):
        ledger.append(
            kinds[i % 5],
            {"i": i, "note": f"event {i}"},
            actor=ALICE if i % 2 else BOB,
            backfill_id="bf-1" if i < 3 else "bf-2",
            window_key=W1 if i % 2 else None,
        )


def attack(db: Database, statement: Any) -> None:
    """What someone with write access to the database can do: switch the triggers off, then edit."""
    with db.writing() as conn:
        if db.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS ledger_events_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS ledger_events_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE ledger_events DISABLE TRIGGER USER")
        conn.execute(statement)
        if db.dialect != "sqlite":
            conn.exec_driver_sql("ALTER TABLE ledger_events ENABLE TRIGGER USER")


def test_appends_chain_gap_free_from_one(db: Database) -> None:
    ledger = Ledger(db)
    assert ledger.head() is None
    assert ledger.checkpoint() == (0, GENESIS_HASH)
    fill(ledger)
    events = ledger.events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in events)
    assert [(e.actor, e.identity_source) for e in events[:2]] == [("bob@contoso.com", "azure-ad"), ("alice", "os")]
    head = ledger.head()
    assert head == events[-1]
    assert ledger.checkpoint() == (5, events[-1].hash)
    report = ledger.verify()
    assert (report.ok, report.count, report.head_seq) == (True, 5, 5)


def test_append_returns_exactly_what_is_read_back(db: Database) -> None:
    ledger = Ledger(db)
    written = ledger.append(
        "intent", {"b": [1, 2.5, None], "a": {"ü": "ö"}}, actor=ALICE, backfill_id="bf-9", window_key=W1
    )
    assert ledger.events() == [written]
    many = ledger.append_many([Draft("x", {"n": 1}), Draft("y", {"n": 2}, "bf-9", W1)], actor=BOB)
    assert [e.seq for e in many] == [2, 3] and many[1].prev_hash == many[0].hash
    assert ledger.events(after_seq=1) == many
    assert ledger.append_many([], actor=BOB) == []


def test_filters(db: Database) -> None:
    ledger = Ledger(db)
    fill(ledger)
    events = ledger.events()
    assert [e.seq for e in ledger.events(backfill_id="bf-2")] == [4, 5]
    assert [e.seq for e in ledger.events(kinds=["approval", "window-done"])] == [2, 5]
    assert [e.seq for e in ledger.events(since=events[2].at)] == [3, 4, 5]
    assert [e.seq for e in ledger.events(until=events[2].at)] == [1, 2]
    assert [e.seq for e in ledger.events(since=events[1].at, until=events[3].at, backfill_id="bf-1")] == [2, 3]
    assert ledger.events(kinds=[]) == []


def test_secrets_never_reach_the_database(db: Database) -> None:
    ledger = Ledger(db)
    ledger.append(
        "request",
        {
            "parameters": {"sourceKey": Secret("${SOURCE_API_KEY}")},
            "connection": "Driver=x;Pwd=hunter2",
            "check": {"connection": "${SINK_ODBC}"},
            "error": "Login failed: Password=swordfish;",
        },
        actor=ALICE,
    )
    with db.writing() as conn:
        stored = conn.execute(text("SELECT payload FROM ledger_events")).scalar_one()
    assert "hunter2" not in stored and "swordfish" not in stored
    assert stored == canonical_json(
        {
            "check": {"connection": "${SINK_ODBC}"},
            "connection": "***",
            "error": "Login failed: Password=***;",
            "parameters": {"sourceKey": "***"},
        }
    )


def test_bad_appends_are_refused(db: Database) -> None:
    ledger = Ledger(db)
    with pytest.raises(LedgerError, match=r"^ledger: intent event payload refused: payload.x is nan"):
        ledger.append("intent", {"x": float("nan")}, actor=ALICE)
    with pytest.raises(LedgerError, match=r"^ledger: window_key is longer than 128 characters$"):
        ledger.append("intent", {}, actor=ALICE, window_key="w" * 129)
    with pytest.raises(LedgerError, match=r"^ledger: an event needs a kind$"):
        ledger.append("", {}, actor=ALICE)
    assert ledger.head() is None


@pytest.mark.parametrize("statement", ["UPDATE ledger_events SET actor = 'mallory'", "DELETE FROM ledger_events"])
def test_the_database_refuses_update_and_delete(db: Database, statement: str) -> None:
    fill(Ledger(db), 2)
    with pytest.raises(DBAPIError, match="ledger is append-only"), db.writing() as conn:
        conn.exec_driver_sql(statement)
    assert Ledger(db).verify().count == 2


def test_postgres_refuses_truncate(ledger_url: str, db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    fill(Ledger(db), 1)
    with pytest.raises(DBAPIError, match="ledger is append-only"), db.writing() as conn:
        conn.exec_driver_sql("TRUNCATE ledger_events")


def test_every_edited_field_is_caught_and_named(db: Database) -> None:
    ledger = Ledger(db)
    fill(ledger)
    original = ledger.events()[2]
    edits: dict[str, Any] = {
        "at": original.at + timedelta(seconds=1),
        "actor": "mallory",
        "identity_source": "declared",
        "backfill_id": "bf-2",
        "window_key": W1,
        "kind": "approval",
        "payload": canonical_json({"i": 2, "note": "event 2", "approved": True}),
        "prev_hash": "f" * 64,
        "hash": "e" * 64,
    }
    for column, value in edits.items():
        attack(db, update(TABLE).where(TABLE.c.seq == 3).values({column: value}))
        report = ledger.verify()
        assert (report.ok, report.first_bad_seq, report.reason, report.count) == (False, 3, "hash mismatch", 2), column
        restored = canonical_json(original.payload) if column == "payload" else getattr(original, column)
        attack(db, update(TABLE).where(TABLE.c.seq == 3).values({column: restored}))
        assert ledger.verify().ok, column


def test_a_deleted_event_is_named(db: Database) -> None:
    ledger = Ledger(db)
    fill(ledger)
    attack(db, delete(TABLE).where(TABLE.c.seq == 2))
    assert ledger.verify().message == "ledger: event 2 missing: the sequence jumps from 1 to 3 (events 2 deleted)"
    with pytest.raises(LedgerInvalid, match=r"^ledger: event 2 missing"):
        ledger.checkpoint()


def test_reordered_events_are_caught(db: Database) -> None:
    ledger = Ledger(db)
    fill(ledger)
    attack(db, update(TABLE).where(TABLE.c.seq == 2).values(seq=-2))
    attack(db, update(TABLE).where(TABLE.c.seq == 3).values(seq=2))
    attack(db, update(TABLE).where(TABLE.c.seq == -2).values(seq=3))
    assert ledger.verify().message == "ledger: event 2 (intent) hash mismatch"


def test_a_truncated_tail_passes_alone_but_not_against_a_checkpoint(db: Database) -> None:
    ledger = Ledger(db)
    fill(ledger)
    kept = ledger.checkpoint()
    attack(db, delete(TABLE).where(TABLE.c.seq >= 4))
    assert ledger.verify().ok
    assert ledger.verify(kept).message == (
        "ledger: event 4 missing: the ledger ends at event 3 but the checkpoint is event 5 (truncated)"
    )


def test_a_forged_event_with_its_hash_recomputed_breaks_the_next_link(db: Database) -> None:
    ledger = Ledger(db)
    fill(ledger)
    forged = ledger.events()[1]
    payload = {**forged.payload, "approved_by": "mallory"}
    forged = replace(forged, payload=payload)
    attack(
        db, update(TABLE).where(TABLE.c.seq == 2).values(payload=canonical_json(payload), hash=forged.expected_hash())
    )
    assert ledger.verify().message == (
        "ledger: event 3 (intent) chain broken: prev_hash does not match the hash of event 2"
    )


def test_unreadable_rows_are_reported_not_raised(db: Database) -> None:
    ledger = Ledger(db)
    fill(ledger, 3)
    attack(db, update(TABLE).where(TABLE.c.seq == 2).values(payload="{not json"))
    assert ledger.verify().message == "ledger: event 2 (approval) unreadable: payload is not JSON"
    with pytest.raises(LedgerInvalid, match=r"^ledger: event 2 \(approval\) unreadable: payload is not JSON$"):
        ledger.events()
    if db.dialect == "sqlite":
        attack(db, text("UPDATE ledger_events SET payload = '{}', at = 'yesterday' WHERE seq = 3"))
        assert ledger.verify().message == "ledger: event 2 (approval) unreadable: payload is not JSON"
        with pytest.raises(LedgerInvalid, match=r"event 3 \(intent\) unreadable: time 'yesterday'"):
            ledger.head()


def test_export_refuses_an_unknown_format(db: Database) -> None:
    with pytest.raises(UsageError, match=r"^export format 'xml' is not one of jsonl, csv$"):
        Ledger(db).export("xml", None)  # type: ignore[arg-type]


def test_concurrent_processes_never_fork_the_chain(db: Database, ledger_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=append_events, args=(ledger_url, w, 50)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    ledger = Ledger(db)
    report = ledger.verify()
    assert (report.ok, report.count, report.head_seq) == (True, 200, 200)
    events = ledger.events()
    assert [e.seq for e in events] == list(range(1, 201))
    for w in range(4):
        assert [e.payload["i"] for e in events if e.backfill_id == f"bf-{w}"] == list(range(50))


def test_concurrent_threads_never_fork_the_chain(db: Database) -> None:
    ledger = Ledger(db)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(15):
                ledger.append("tick", {"worker": worker, "i": i}, actor=ALICE)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (ledger.verify().ok, ledger.verify().count) == (True, 60)


def test_an_auditor_with_a_read_only_role_can_verify(postgres_url: str) -> None:
    """Opening an up-to-date ledger writes nothing, so a SELECT-only role can verify it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from backfill.identity import Actor, IdentitySource
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger

    Ledger(Database(postgres_url)).append("note", {"text": "x"}, actor=Actor("alice", IdentitySource.DECLARED))
    role = f"auditor_{make_url(postgres_url).database}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    try:
        auditor_url = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
        database = Database(auditor_url)
        assert Ledger(database).verify().ok
        database.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()
