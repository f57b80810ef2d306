"""Without pool_pre_ping, a pooled PostgreSQL connection idle long enough is tested before use,
so a server restart or an idle timeout costs a reconnect, not a failed command (issue 14)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from backfill.identity import Actor, IdentitySource
from backfill.store import database
from backfill.store.database import Database
from backfill.store.ledger import Ledger


def test_a_connection_closed_by_the_server_is_replaced(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(postgres_url)
    ledger = Ledger(db)
    ledger.append("note", {"n": 1}, actor=Actor("alice", IdentitySource.DECLARED))
    with db.reading() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    admin = create_engine(postgres_url)
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()
    admin.dispose()
    monkeypatch.setattr(database, "_IDLE_PING_SECONDS", 0.0)
    event = ledger.append("note", {"n": 2}, actor=Actor("alice", IdentitySource.DECLARED))
    assert event.seq == 2
    assert ledger.verify().ok
    db.dispose()
