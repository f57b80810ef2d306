"""The backfills table and state derivation over the real ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from backfill_samples import K1, K2, sample_record
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from backfill import events as ev
from backfill.backfills import ApprovalPolicy, BackfillRecord, BackfillStatus
from backfill.errors import BackfillError
from backfill.identity import Actor, IdentitySource
from backfill.store.backfills import create_backfill, get_backfill, list_backfills, load_backfill, new_backfill_id
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.timeutil import utcnow

ALICE = Actor("alice", IdentitySource.DECLARED)
BOB = Actor("bob", IdentitySource.OS)


def draft(requested_at: datetime | None = None) -> BackfillRecord:
    return sample_record(
        plan_hash="c0ffee" * 10 + "abcd",
        requester=ALICE.name,
        requester_source=ALICE.source.value,
        requested_at=requested_at or utcnow(),
        note="sink lock incident",
        policy=ApprovalPolicy(required=2, approvers=("bob", "carol"), expires=timedelta(hours=2), canary=1),
        decisions={K1: "rerun", K2: "blocked-partial"},
        preview={"version": 1, "decisions": [{"key": K1}, {"key": K2}]},
    )


def test_new_ids_are_short_and_readable() -> None:
    at = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)
    ids = {new_backfill_id(at) for _ in range(50)}
    assert all(re.fullmatch(r"bf-20261125-[0-9a-f]{6}", i) for i in ids)
    assert len(ids) > 45


def test_request_round_trip_with_its_event(ledger_url: str) -> None:
    db = Database(ledger_url)
    try:
        payload = {"plan_hash": draft().plan_hash, "runnable": [K1], "note": "sink lock incident"}
        record = create_backfill(db, draft(), payload, ALICE)
        assert re.fullmatch(r"bf-\d{8}-[0-9a-f]{6}", record.id)
        assert get_backfill(db, record.id) == record
        assert get_backfill(db, record.id).requested_at.tzinfo is not None
        listed = list_backfills(db)
        assert [r.id for r in listed] == [record.id]
        assert listed[0].preview == {} and listed[0].decisions == record.decisions
        (event,) = Ledger(db).events(backfill_id=record.id)
        assert (event.kind, event.actor, event.identity_source) == (ev.REQUESTED, "alice", "declared")
        assert event.payload == payload
    finally:
        db.dispose()


def test_rows_are_insert_only(ledger_url: str) -> None:
    db = Database(ledger_url)
    try:
        record = create_backfill(db, draft(), {}, ALICE)
        for statement in ("UPDATE backfills SET requester = 'mallory'", "DELETE FROM backfills"):
            with pytest.raises(DBAPIError, match="backfills are insert-only"), db.writing() as conn:
                conn.execute(text(statement))
        assert get_backfill(db, record.id).requester == "alice"
    finally:
        db.dispose()


def test_state_derives_from_ledger_events(ledger_url: str) -> None:
    db = Database(ledger_url)
    try:
        record = create_backfill(db, draft(), {}, ALICE)
        ledger = Ledger(db)
        ledger.append(ev.APPROVED, {"note": "ok"}, actor=BOB, backfill_id=record.id)
        _, state = load_backfill(db, record.id)
        assert (state.status, state.approvals) == (BackfillStatus.REQUESTED, ["bob"])
        ledger.append(ev.APPROVED, {}, actor=Actor("carol", IdentitySource.AZURE_AD), backfill_id=record.id)
        ledger.append(ev.WINDOW_ACCEPTED, {"note": "merge"}, actor=BOB, backfill_id=record.id, window_key=K2)
        # Another backfill's events never leak into this one's state.
        other = create_backfill(db, draft(), {}, ALICE)
        ledger.append(ev.REJECTED, {"reason": "no"}, actor=BOB, backfill_id=other.id)
        _, state = load_backfill(db, record.id)
        assert state.status is BackfillStatus.APPROVED
        assert state.approval_events[1].source == "azure-ad"
        assert state.accepted_windows == {K2}
        assert load_backfill(db, other.id)[1].status is BackfillStatus.REJECTED
        assert load_backfill(db, record.id, utcnow() + timedelta(hours=3))[1].status is BackfillStatus.EXPIRED
    finally:
        db.dispose()


def test_unknown_backfill_is_one_clear_line() -> None:
    db = Database()
    try:
        with pytest.raises(BackfillError, match=r"^no backfill bf-nope in the ledger \(backfill status lists them\)$"):
            get_backfill(db, "bf-nope")
        create_backfill(db, replace(draft(), note=None), {}, ALICE)
        assert get_backfill(db, list_backfills(db)[0].id).note is None
    finally:
        db.dispose()
