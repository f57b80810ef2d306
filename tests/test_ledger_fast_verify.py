"""The fast verify path (issue 14) against the reference encoding: byte for byte, and the same
report on tampering."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.chain import (
    ChainVerifier,
    LedgerEvent,
    PayloadError,
    canonical_json,
    canonical_payload_text,
    compute_hash,
    export_line,
    fast_hash,
    format_at,
    hashed_text,
)
from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import EXPORT_COLUMNS, Draft, Ledger, _fast_at, _fast_at_text, _to_event, _Unreadable

ALICE = Actor("alice", IdentitySource.DECLARED)

# Any text, lone surrogates included (the reference refuses those; the fast path must too).
texts = st.text(st.characters(codec=None), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(texts, json_values, max_size=5)
times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))


@settings(max_examples=400, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=2**63),
    at=times,
    actor=texts,
    source=texts,
    backfill_id=st.none() | texts,
    window_key=st.none() | texts,
    kind=texts,
    payload=payloads,
    prev_hash=texts,
)
def test_the_fast_encoder_writes_the_reference_text(
    seq: int,
    at: datetime,
    actor: str,
    source: str,
    backfill_id: str | None,
    window_key: str | None,
    kind: str,
    payload: dict[str, Any],
    prev_hash: str,
) -> None:
    at_text = format_at(at)
    fields = {
        "seq": seq,
        "at": at_text,
        "actor": actor,
        "identity_source": source,
        "backfill_id": backfill_id,
        "window_key": window_key,
        "kind": kind,
        "payload": payload,
    }
    stored = canonical_json(payload)
    parsed = canonical_payload_text(stored)
    assert parsed is not None and parsed[1] == stored
    text = hashed_text(seq, at_text, actor, source, backfill_id, window_key, kind, parsed[1], prev_hash)
    assert text == canonical_json({**fields, "prev_hash": prev_hash})
    try:
        expected: str | None = compute_hash(prev_hash, fields)
    except PayloadError:
        expected = None  # not UTF-8: the reference refuses it, so must the fast path
    assert fast_hash(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values.map(lambda v: json.dumps(v, indent=1)), payloads.map(json.dumps), texts))
def test_a_stored_payload_is_canonicalised_as_the_reference_does(text: str) -> None:
    parsed = canonical_payload_text(text)
    if parsed is None:
        return
    assert isinstance(json.loads(text), dict)
    assert parsed[1] == canonical_json(json.loads(text))


def _reference_at(value: Any) -> str | None:
    """What ``_to_event`` + ``format_at`` make of a stored time; None where the reference refuses."""
    try:
        event = _to_event(
            {
                "seq": 1,
                "at": value,
                "actor": "a",
                "identity_source": "os",
                "backfill_id": None,
                "window_key": None,
                "kind": "k",
                "payload": "{}",
                "prev_hash": "0",
                "hash": "0",
            }
        )
        return format_at(event.at)
    except Exception:
        return None


sqlite_texts = st.one_of(
    times.map(lambda d: d.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")),
    times.map(lambda d: d.isoformat(sep=" ", timespec="microseconds")),
    times.map(lambda d: d.replace(tzinfo=None).isoformat(timespec="microseconds")),
    st.from_regex(r"\A\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\Z"),
    st.text(max_size=30),
)


@settings(max_examples=500, deadline=None)
@given(sqlite_texts)
def test_a_sqlite_time_is_made_canonical_as_the_reference_does(text: str) -> None:
    fast = _fast_at_text(text)
    if fast is not None:
        assert fast == _reference_at(text)


@settings(max_examples=500, deadline=None)
@given(
    times,
    st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
def test_a_postgresql_time_is_made_canonical_as_the_reference_does(at: datetime, zone: timezone) -> None:
    try:
        value = at.astimezone(zone)
    except OverflowError:
        return
    fast = _fast_at(value)
    if fast is not None:
        assert fast == _reference_at(value)


def _tamper(path: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER IF EXISTS ledger_events_no_update")
        conn.execute(statement, args)


def _reference_report(db: Database) -> str:
    names = [
        "seq",
        "at",
        "actor",
        "identity_source",
        "backfill_id",
        "window_key",
        "kind",
        "payload",
        "prev_hash",
        "hash",
    ]
    with sqlite3.connect(db.engine.url.database or "") as conn:
        rows = conn.execute(f"SELECT {', '.join(names)} FROM ledger_events ORDER BY seq").fetchall()
    # The loop Ledger.verify ran before the fast path: every row through the reference.
    verifier = ChainVerifier()
    for row in rows:
        try:
            event = _to_event(dict(zip(names, row, strict=True)))
        except _Unreadable as exc:
            return verifier.fail(exc.seq, exc.kind, exc.reason).message
        if verifier.feed(event) is not None:
            break
    return verifier.finish().message


@pytest.mark.parametrize(
    "statement",
    [
        # Not canonical, with its hash recomputed over the text as stored: only the reference's
        # re-encoding tells it from the real thing.
        "UPDATE ledger_events SET payload = ?, hash = ? WHERE seq = 3",
        "UPDATE ledger_events SET at = '2026-11-03T02:00:00.000000+02:00' WHERE seq = 3",
        "UPDATE ledger_events SET at = '0999-11-03 02:00:00.000000' WHERE seq = 3",
        "UPDATE ledger_events SET kind = 7 WHERE seq = 3",
        "UPDATE ledger_events SET payload = '[1]' WHERE seq = 3",
        """UPDATE ledger_events SET payload = '{"n": NaN}' WHERE seq = 3""",
        "UPDATE ledger_events SET payload = ' {}' WHERE seq = 3",
    ],
)
def test_tampering_gets_the_reference_report(tmp_path: Path, statement: str) -> None:
    path = tmp_path / "fast.db"
    db = Database(f"sqlite:///{path}")
    ledger = Ledger(db)
    for i in range(6):
        ledger.append("window.status", {"n": i, "text": "é"}, actor=ALICE, backfill_id="bf", window_key=f"w{i}")
    args: tuple[object, ...] = ()
    if "payload = ?" in statement:
        event = ledger.events()[2]
        loose = json.dumps(event.payload, indent=2)
        fields = {**event.fields(), "payload": loose}
        text = canonical_json({**fields, "prev_hash": event.prev_hash})
        args = (loose, hashlib.sha256(text.encode()).hexdigest())
    _tamper(path, statement, *args)
    report = ledger.verify()
    assert not report.ok
    assert report.message == _reference_report(db)
    db.dispose()


def test_an_intact_ledger_verifies_through_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(f"sqlite:///{tmp_path / 'fast.db'}")
    ledger = Ledger(db)
    for i in range(5):
        ledger.append("window.status", {"n": i, "at": "é\u2028"}, actor=ALICE, backfill_id=None if i % 2 else "bf")
    with monkeypatch.context() as patch:
        # No row of an intact ledger needs the reference.
        patch.setattr("backfill.store.ledger._to_event", None)
        report = ledger.verify()
    assert report.ok and report.count == 5
    assert report.message == _reference_report(db)
    checkpoint = (3, ledger.events()[2].hash)
    assert ledger.verify(checkpoint).ok
    assert not ledger.verify((3, "f" * 64)).ok
    db.dispose()


def test_every_backend_verifies_an_intact_ledger_through_the_fast_path(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(ledger_url)
    ledger = Ledger(db)
    ledger.append_many(
        [Draft("window.status", {"n": i, "when": datetime(2026, 11, 3, tzinfo=UTC)}, "bf", f"w{i}") for i in range(4)],
        actor=ALICE,
    )
    with monkeypatch.context() as patch:
        patch.setattr("backfill.store.ledger._to_event", None)
        report = ledger.verify()
    assert report.ok and report.count == 4
    db.dispose()


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=2**63),
    at=times,
    actor=texts,
    backfill_id=st.none() | texts,
    window_key=st.none() | texts,
    payload=payloads,
    prev_hash=texts,
    digest=texts,
)
def test_an_export_line_is_the_reference_line(
    seq: int,
    at: datetime,
    actor: str,
    backfill_id: str | None,
    window_key: str | None,
    payload: dict[str, Any],
    prev_hash: str,
    digest: str,
) -> None:
    event = LedgerEvent(seq, at, actor, "os", backfill_id, window_key, "window.status", payload, prev_hash, digest)
    line = export_line(
        seq,
        format_at(at),
        actor,
        "os",
        backfill_id,
        window_key,
        "window.status",
        canonical_json(payload),
        prev_hash,
        digest,
    )
    assert line == canonical_json(event.to_json())


def test_export_writes_what_the_reference_wrote(ledger_url: str) -> None:
    db = Database(ledger_url)
    ledger = Ledger(db)
    ledger.append_many(
        [
            Draft("window.status", {"n": i, "é": [1.5, None, "\u2028"]}, None if i % 2 else "bf", f"w{i}")
            for i in range(5)
        ],
        actor=ALICE,
    )
    out = io.StringIO()
    assert ledger.export("jsonl", out) == 5
    assert out.getvalue() == "".join(canonical_json(e.to_json()) + "\n" for e in ledger.events())
    out = io.StringIO()
    ledger.export("csv", out, backfill_id="bf")
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(EXPORT_COLUMNS)
    expected = [e for e in ledger.events() if e.backfill_id == "bf"]
    assert [r[0] for r in rows[1:]] == [str(e.seq) for e in expected]
    assert [r[7] for r in rows[1:]] == [canonical_json(e.payload) for e in expected]
    assert [r[5] for r in rows[1:]] == [e.window_key for e in expected]
    db.dispose()
