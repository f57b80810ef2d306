"""Team mode on PostgreSQL (issue 8, spec §15) against two real login roles, alice and bob.

Roles are cluster-wide and shared with other test runs: every name here has a random suffix and
is dropped afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from backfill_samples import sample_record
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backfill import events as ev
from backfill.chain import make_event
from backfill.cli.main import run
from backfill.errors import LedgerError
from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Team:
    admin_url: str
    prefix: str
    alice: str
    bob: str

    def url(self, role: str) -> str:
        return make_url(self.admin_url).set(username=role).render_as_string(hide_password=False)


@pytest.fixture
def team(postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Team]:
    suffix = uuid.uuid4().hex[:8]
    prefix = f"bft_{suffix}"
    alice, bob = f"alice_{suffix}", f"bob_{suffix}"
    monkeypatch.setenv("BACKFILL_LEDGER", postgres_url)
    assert run(["ledger", "init", "--role-prefix", prefix]) == 0, capsys.readouterr()
    assert f"grant {prefix}_user to each person's role" in capsys.readouterr().out
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for person in (alice, bob):
            conn.execute(text(f'CREATE ROLE "{person}" LOGIN IN ROLE "{prefix}_user"'))
    try:
        yield Team(postgres_url, prefix, alice, bob)
    finally:
        with admin.connect() as conn:
            for role in (alice, bob, f"{prefix}_user", f"{prefix}_admin"):
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def _request(team: Team, as_role: str, declared: str = "alice") -> str:
    """A request through the store, as the CLI's ``request`` makes it."""
    from backfill.store.backfills import create_backfill
    from backfill.timeutil import utcnow

    record = sample_record(requester=declared, requested_at=utcnow())
    db = Database(team.url(as_role))
    try:
        return create_backfill(db, record, {"runnable": []}, Actor(declared, IdentitySource.DECLARED)).id
    finally:
        db.dispose()


def _raw_insert(team: Team, role: str, kind: str, backfill_id: str, actor: str, source: str = "database") -> None:
    """What alice can do by hand: a correctly chained event, inserted with plain SQL."""
    db = Database(team.url(role))
    head = Ledger(db).head()
    assert head is not None
    event = make_event(
        seq=head.seq + 1,
        at=head.at,
        actor=actor,
        identity_source=source,
        kind=kind,
        payload={"note": "lgtm"},
        prev_hash=head.hash,
        backfill_id=backfill_id,
    )
    try:
        with db.writing() as conn:
            conn.execute(
                text(
                    "INSERT INTO ledger_events (seq, at, actor, identity_source, backfill_id, window_key, kind, "
                    "payload, prev_hash, hash) VALUES (:seq, :at, :actor, :src, :bid, NULL, :kind, :payload, "
                    ":prev, :hash)"
                ),
                {
                    "seq": event.seq,
                    "at": event.at,
                    "actor": event.actor,
                    "src": event.identity_source,
                    "bid": backfill_id,
                    "kind": kind,
                    "payload": json.dumps(event.payload),
                    "prev": event.prev_hash,
                    "hash": event.hash,
                },
            )
    finally:
        db.dispose()


def test_every_event_is_stamped_with_the_connected_role(team: Team) -> None:
    bid = _request(team, team.alice, declared="bob")  # BACKFILL_ACTOR=bob, connected as alice
    db = Database(team.url(team.alice))
    events = Ledger(db).events(backfill_id=bid)
    assert [(e.kind, e.actor, e.identity_source) for e in events] == [(ev.REQUESTED, team.alice, "database")]
    assert events[0].payload["client_actor"] == "bob (declared)"  # the claim, kept as a note only
    with db.reading() as conn:
        assert conn.execute(text("SELECT requester, requester_source FROM backfills")).one() == (team.alice, "database")
    assert Ledger(db).verify().ok
    db.dispose()


@pytest.mark.parametrize("kind", [ev.APPROVED, ev.REJECTED, ev.CANARY_APPROVED])
def test_alice_cannot_review_her_own_request_even_by_raw_sql(team: Team, kind: str) -> None:
    bid = _request(team, team.alice)
    with pytest.raises(Exception, match=f"team ledger: {team.alice} requested {bid}; another role must review it"):
        _raw_insert(team, team.alice, kind, bid, team.alice)
    # Claiming to be bob does not help: the row must carry her own role.
    with pytest.raises(Exception, match=f"must be stamped {team.alice} \\(database\\), not {team.bob} \\(database\\)"):
        _raw_insert(team, team.alice, kind, bid, team.bob)
    with pytest.raises(Exception, match="must be stamped"):
        _raw_insert(team, team.alice, kind, bid, team.alice, source="declared")
    # Through the store (BACKFILL_ACTOR=bob): one line, nothing appended.
    db = Database(team.url(team.alice))
    with pytest.raises(LedgerError, match=f"^team ledger: {team.alice} requested {bid}; another role"):
        Ledger(db).append(kind, {}, actor=Actor("bob", IdentitySource.DECLARED), backfill_id=bid)
    assert [e.kind for e in Ledger(db).events(backfill_id=bid)] == [ev.REQUESTED]
    db.dispose()


def test_bob_can_approve_and_the_chain_verifies(team: Team) -> None:
    bid = _request(team, team.alice)
    db = Database(team.url(team.bob))
    Ledger(db).append(ev.APPROVED, {"note": "ok"}, actor=Actor("bob", IdentitySource.DECLARED), backfill_id=bid)
    events = Ledger(db).events(backfill_id=bid)
    assert [(e.kind, e.actor) for e in events] == [(ev.REQUESTED, team.alice), (ev.APPROVED, team.bob)]
    assert Ledger(db).verify_for_action(bid).ok
    db.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_events SET payload = '{}'",
        "DELETE FROM ledger_events",
        "TRUNCATE ledger_events",
        "UPDATE backfills SET plan_hash = 'x'",
        "DELETE FROM ledger_meta",
        "DROP TABLE ledger_events",
        "DROP TRIGGER ledger_events_stamp ON ledger_events",
        "INSERT INTO ledger_meta (name, value) VALUES ('mode2', 'solo')",
    ],
)
def test_a_member_can_neither_change_nor_remove_anything(team: Team, statement: str) -> None:
    _request(team, team.alice)
    engine = create_engine(team.url(team.alice))
    try:
        with (
            pytest.raises(Exception, match=r"permission denied|must be owner|append-only|insert-only"),
            engine.begin() as conn,
        ):
            conn.execute(text(statement))
    finally:
        engine.dispose()
    db = Database(team.admin_url)
    assert Ledger(db).verify().count == 1
    db.dispose()


def test_init_twice_is_harmless(team: Team, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "init", "--role-prefix", team.prefix]) == 0
    capsys.readouterr()
    db = Database(team.url(team.alice))
    assert db.team_mode and db.meta()["team_roles"] == f"{team.prefix}_user,{team.prefix}_admin"
    db.dispose()


def test_init_refuses_sqlite_and_bad_prefixes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "init"]) == 1
    assert "team mode (ledger init) needs PostgreSQL" in capsys.readouterr().err
    assert run(["ledger", "init", "--role-prefix", "Robert'); DROP"]) == 2
    assert "--role-prefix" in capsys.readouterr().err
