"""Window claims on real databases: SQLite, PostgreSQL (SKIP LOCKED) and MariaDB."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from backfill.store.claims import Claims, WindowClaim
from backfill.store.database import Database

KEYS = [f"2026-11-03T{h:02d}:00:00Z/2026-11-03T{h:02d}:15:00Z" for h in range(8)]


@pytest.fixture
def db() -> Database:
    return Database()  # the test's own SQLite ledger (conftest)


@pytest.fixture
def any_db(ledger_url: str) -> Database:
    return Database(ledger_url)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_claim_takes_the_first_free_window_in_order(db: Database) -> None:
    claims = Claims(db, worker="host-a:1:x")
    claims.seed("bf1", KEYS)
    claims.seed("bf1", KEYS)  # idempotent
    first = claims.claim("bf1", KEYS)
    second = claims.claim("bf1", KEYS)
    assert first is not None and second is not None
    assert (first.window_key, first.attempt) == (KEYS[0], 1)
    assert second.window_key == KEYS[1]


def test_another_worker_skips_a_held_window_and_takes_it_once_released(any_db: Database) -> None:
    db = any_db
    a, b = Claims(db, worker="host-a:1:a"), Claims(db, worker="host-b:2:b")
    a.seed("bf1", KEYS[:2])
    held = a.claim("bf1", KEYS[:1])
    assert held is not None
    assert b.claim("bf1", KEYS[:1]) is None
    assert b.held_by_others("bf1") == {KEYS[0]: "host-a:1:a"}
    a.release(held)
    again = b.claim("bf1", KEYS[:1])
    assert again is not None and again.attempt == 2 and again.worker == "host-b:2:b"
    assert not a.renew(held)  # a released claim is not renewed


def test_an_expired_lease_frees_the_window_and_the_old_holder_loses_it(db: Database) -> None:
    a = Claims(db, worker="far-away-host:1:a", lease=timedelta(milliseconds=50))
    b = Claims(db, worker="host-b:2:b")
    a.seed("bf1", KEYS[:1])
    held = a.claim("bf1", KEYS[:1])
    assert held is not None and a.renew(held)
    assert b.claim("bf1", KEYS[:1]) is None
    time.sleep(0.12)
    taken = b.claim("bf1", KEYS[:1])
    assert taken is not None and taken.attempt == 2
    assert not a.renew(held)


def test_a_claim_of_a_dead_process_on_this_host_is_free_at_once(db: Database) -> None:
    dead = Claims(db, worker=f"{socket.gethostname()}:{_dead_pid()}:dead", lease=timedelta(hours=1))
    alive = Claims(db)
    dead.seed("bf1", KEYS[:1])
    assert dead.claim("bf1", KEYS[:1]) is not None
    taken = alive.claim("bf1", KEYS[:1])
    assert taken is not None and taken.attempt == 2


def test_a_live_process_on_this_host_keeps_its_claim(db: Database) -> None:
    mine = Claims(db, lease=timedelta(hours=1))  # this very process: alive
    other = Claims(db, worker=f"{socket.gethostname()}:1:init")  # pid 1 exists
    mine.seed("bf1", KEYS[:1])
    assert mine.claim("bf1", KEYS[:1]) is not None
    assert other.claim("bf1", KEYS[:1]) is None


def test_the_unique_constraint_is_the_last_guard(db: Database) -> None:
    Claims(db).seed("bf1", KEYS[:1])
    with pytest.raises(IntegrityError), db.writing() as conn, Session(bind=conn) as session:
        session.add(WindowClaim(backfill_id="bf1", window_key=KEYS[0], attempt=0, worker="intruder"))
        session.flush()


def _race(db: Database, workers: int) -> Counter[str]:
    claimers = [Claims(Database(db.url), worker=f"host-{i}:{i}:w") for i in range(workers)]
    claimers[0].seed("race", KEYS)
    won: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def work(claims: Claims) -> None:
        barrier.wait()
        while (claim := claims.claim("race", KEYS)) is not None:
            with lock:
                won.append(claim.window_key)

    threads = [threading.Thread(target=work, args=(c,)) for c in claimers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for claims in claimers:
        claims.db.dispose()
    return Counter(won)


def test_racing_workers_claim_every_window_exactly_once(any_db: Database) -> None:
    db = any_db
    assert _race(db, 4) == Counter(KEYS)
    with db.reading() as conn, Session(bind=conn) as session:
        rows = session.exec(select(WindowClaim).where(WindowClaim.backfill_id == "race")).all()
        attempts = sorted((r.window_key, r.attempt) for r in rows if r.attempt)
    assert attempts == [(k, 1) for k in KEYS]


@pytest.mark.mariadb
def test_racing_workers_on_mariadb(mariadb_url: str) -> None:
    # MariaDB is no longer a ledger (no append-only triggers, issue 9 #2): refused before any
    # claim could be raced on it (tests/test_ledger_database.py covers the line).
    from backfill.errors import ConfigError

    with pytest.raises(ConfigError, match="MariaDB/MySQL cannot be a ledger"):
        Database(mariadb_url)
