"""The stored payload hashed as it is (issue 14): a learnt shape accepts a text only if it is the
canonical text of its own parse, and verify's verdict on any tampering is the reference's."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from test_ledger_fast_verify import _reference_report, json_values, payloads, texts

from backfill.chain import LEARN_AFTER, PayloadError, PayloadShapes, canonical_json, format_at, hashed_text
from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Draft, Ledger, _fast_at_text, _to_event, _Unreadable

ALICE = Actor("alice", IdentitySource.DECLARED)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts


def _same_shape(data: st.DataObject, value: Any) -> Any:
    """``value`` with every scalar replaced by a drawn one (the keys and structure kept)."""
    if isinstance(value, dict):
        return {k: _same_shape(data, v) for k, v in value.items()}
    if isinstance(value, list):
        if data.draw(st.booleans()):
            return data.draw(st.lists(scalars, max_size=4))
        return [_same_shape(data, v) for v in value]
    return data.draw(scalars)


NUMBERS = ["1.50", "-0", "1e5", "1E5", "1.0e0", "NaN", "Infinity", "-Infinity", "01", "1" * 30, "1e400", "-0.0", "2"]


def _mutate(data: st.DataObject, textual: str) -> str:
    """One of the ways a forger could store a text other than the canonical one."""
    how = data.draw(st.sampled_from(["insert", "replace", "delete", "escape", "number", "duplicate", "none"]))
    pos = data.draw(st.integers(min_value=0, max_value=len(textual)))
    if how == "insert":
        return (
            textual[:pos] + data.draw(st.sampled_from([" ", "\n", "\t", "\\", '"', ",", "\ud800", "0"])) + textual[pos:]
        )
    if how == "replace" and pos < len(textual):
        return textual[:pos] + data.draw(st.characters(codec=None)) + textual[pos + 1 :]
    if how == "delete" and pos < len(textual):
        return textual[:pos] + textual[pos + 1 :]
    if how == "escape":
        char = data.draw(st.characters(codec=None))
        return textual[:pos] + f"\\u{ord(char) if ord(char) < 0x10000 else 0xD83D:04x}" + textual[pos:]
    if how == "number":
        digits = [i for i, c in enumerate(textual) if c.isdigit()]
        if digits:
            at = data.draw(st.sampled_from(digits))
            return textual[:at] + data.draw(st.sampled_from(NUMBERS)) + textual[at + 1 :]
    if how == "duplicate" and textual.startswith("{") and ":" in textual:
        first = textual[1 : textual.index(":")]
        return "{" + first + ":null," + textual[1:]
    return textual


def _reference_canonical(textual: str) -> str | None:
    """What the reference makes of a stored payload: its canonical text, None where it refuses."""
    try:
        value = json.loads(textual)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    try:
        return canonical_json(value)
    except PayloadError:
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.data())
def test_a_learnt_shape_accepts_only_canonical_texts(first: dict[str, Any], data: st.DataObject) -> None:
    shapes = PayloadShapes(learn_after=1)
    learnt = canonical_json(first)
    assert shapes.canonical("k", learnt) == learnt
    candidate = _mutate(data, canonical_json(_same_shape(data, first)))
    check = shapes.current.get("k")
    if check is not None and check(candidate):
        # Accepted as it is: it is exactly the canonical text of what it parses to.
        assert _reference_canonical(candidate) == candidate
    # Otherwise the re-encoded text, or None: the reference decides (declining is always safe).
    result = shapes.canonical("k", candidate)
    if result is not None:
        assert result == canonical_json(json.loads(candidate))


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=3), st.data())
def test_shapes_learnt_from_other_payloads_accept_only_canonical_texts(learnt: list[Any], data: st.DataObject) -> None:
    shapes = PayloadShapes(learn_after=1)
    for i, value in enumerate(learnt):
        shapes.canonical("k", canonical_json({"v": value, "i": i}))
    candidate = _mutate(data, canonical_json({"v": data.draw(json_values), "i": data.draw(scalars)}))
    if shapes.canonical("k", candidate) == candidate:
        assert _reference_canonical(candidate) == candidate


def test_a_shape_learns_a_few_payloads_per_kind_and_generalises_values() -> None:
    shapes = PayloadShapes(learn_after=1)
    shapes.canonical("k", canonical_json({"n": 1, "s": "x", "f": 1.5, "l": [1, "a"], "d": {"e": None}}))
    check = shapes.current["k"]
    assert check(canonical_json({"n": -42, "s": "é\u2028", "f": 2.5e-07, "l": [], "d": {"e": True}}))
    assert not check('{"d":{"e":true},"f":2.50,"l":[],"n":1,"s":""}')
    assert not check('{"d":{"e":true},"f":2.5,"l":[],"n":1,"s":"\\n"}')
    # "-0" parses to the integer 0 (written "0"); "-0.0" is the float's own text.
    assert not check('{"d":{"e":true},"f":2.5,"l":[],"n":-0,"s":""}')
    assert not check('{"d":{"e":true},"f":2.5,"l":[-0],"n":0,"s":""}')
    assert not check('{"d":{"e":true},"f":-0,"l":[],"n":0,"s":""}')
    assert check('{"d":{"e":true},"f":-0.0,"l":[0],"n":0,"s":""}')
    assert not check(canonical_json({"n": 1, "s": "x", "f": 1.5, "l": [1], "d": {"e": None}, "z": 0}))


def test_iso_week_dates_are_not_taken_for_the_stored_form() -> None:
    # fromisoformat reads 2026-W01-1 as 2025-12-29: the canonical text is another one.
    assert _fast_at_text("2026-W01-1 19:17:27.464732") is None
    assert _fast_at_text("2026-12-01 19:17:27.464732") == "2026-12-01T19:17:27.464732Z"
    assert _fast_at_text("２026-12-01 19:17:27.464732") is None


# --- the whole verify against the reference, on tampered SQLite ledgers ------------------------

EVENTS = 6


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shapes") / "ledger.db"
    db = Database(f"sqlite:///{path}")
    ledger = Ledger(db)
    ledger.append_many(
        [
            Draft("window.status", {"n": i, "text": "é", "f": 1.5 + i, "l": [i, "x"]}, "bf", f"w{i}")
            for i in range(EVENTS)
        ],
        actor=ALICE,
    )
    db.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER IF EXISTS ledger_events_no_update")
    return path


COLUMNS = ["at", "actor", "identity_source", "backfill_id", "window_key", "kind", "payload", "prev_hash", "hash"]
odd_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.none(),
    texts,
    st.sampled_from(["2026-W01-1 19:17:27.464732", "0999-11-03 02:00:00.000000", "2026-02-30 00:00:00.000000"]),
)


def _forged_hash(row: dict[str, Any]) -> str | None:
    """The hash a forger computes over the row's values as stored (the fast path's formula), so
    only the canonical-text guard can tell such a row from a real one."""
    try:
        at_text = f"{row['at'][:10]}T{row['at'][11:]}Z"
        textual = hashed_text(
            row["seq"],
            at_text,
            row["actor"],
            row["identity_source"],
            row["backfill_id"],
            row["window_key"],
            row["kind"],
            row["payload"],
            row["prev_hash"],
        )
        return hashlib.sha256(textual.encode()).hexdigest()
    except (TypeError, ValueError, KeyError):
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verify_gives_the_reference_report_on_any_tampering(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("tampered") / "ledger.db"
    shutil.copy(pristine, path)
    names = ["seq", *COLUMNS]
    with sqlite3.connect(path) as conn:
        rows = [dict(zip(names, r, strict=True)) for r in conn.execute(f"SELECT {', '.join(names)} FROM ledger_events")]
        seq = data.draw(st.integers(min_value=1, max_value=EVENTS))
        row = rows[seq - 1]
        column = data.draw(st.sampled_from(COLUMNS))
        if column == "payload" and data.draw(st.booleans()):
            value: Any = _mutate(data, row["payload"])
        elif column == "at" and data.draw(st.booleans()):
            value = data.draw(st.sampled_from(["2026-W01-1 19:17:27.464732", "2026-12-01T19:17:27.464732"]))
        else:
            value = data.draw(odd_values)
        row[column] = value
        try:
            conn.execute(f"UPDATE ledger_events SET {column} = ? WHERE seq = ?", (value, seq))
        except (sqlite3.IntegrityError, UnicodeEncodeError):
            return  # NULL in a NOT NULL column, or a lone surrogate: not storable

        if column != "hash" and data.draw(st.booleans()):
            forged = _forged_hash(row)
            if forged is not None:
                conn.execute("UPDATE ledger_events SET hash = ? WHERE seq = ?", (forged, seq))
                if seq < EVENTS and data.draw(st.booleans()):
                    conn.execute("UPDATE ledger_events SET prev_hash = ? WHERE seq = ?", (forged, seq + 1))
    db = Database(f"sqlite:///{path}")
    try:
        assert Ledger(db).verify().message == _reference_report(db)
    finally:
        db.dispose()


# --- PostgreSQL: the server's canonical time and the reference's datetime ----------------------


def _pg_reference_report(db: Database) -> str:
    from backfill.chain import ChainVerifier
    from backfill.store.ledger import TABLE

    with db.reading() as conn:
        rows = [dict(r) for r in conn.execute(TABLE.select().order_by(TABLE.c.seq)).mappings()]
    verifier = ChainVerifier()
    for row in rows:
        try:
            event = _to_event(row)
        except _Unreadable as exc:
            return verifier.fail(exc.seq, exc.kind, exc.reason).message
        if verifier.feed(event) is not None:
            break
    return verifier.finish().message


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("statement", "intact"),
    [
        ("UPDATE ledger_events SET at = '0999-11-03 02:00:00+00' WHERE seq = 3", False),
        ("UPDATE ledger_events SET at = at + interval '1 microsecond' WHERE seq = 3", False),
        ("UPDATE ledger_events SET payload = '{\"n\": 7}' WHERE seq = 3", False),
        # The same payload, not canonical: the hash covers its canonical text, which is intact.
        ("UPDATE ledger_events SET payload = '{\"n\": 2}' WHERE seq = 3", True),
        ("UPDATE ledger_events SET kind = 'other' WHERE seq = 5", False),
        (None, True),
    ],
)
def test_postgresql_verify_gives_the_reference_report(postgres_url: str, statement: str | None, intact: bool) -> None:
    db = Database(postgres_url)
    ledger = Ledger(db)
    ledger.append_many([Draft("window.status", {"n": i}, "bf", f"w{i}") for i in range(6)], actor=ALICE)
    if statement is not None:
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE ledger_events DISABLE TRIGGER USER"))
            conn.execute(text(statement))
    report = ledger.verify()
    assert report.ok is intact
    assert report.message == _pg_reference_report(db)
    db.dispose()


@pytest.mark.postgres
def test_an_old_time_goes_to_the_reference_with_its_datetime(postgres_url: str) -> None:
    db = Database(postgres_url)
    ledger = Ledger(db)
    event = ledger.append("window.status", {"n": 1}, actor=ALICE)
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger_events DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE ledger_events SET at = '0999-11-03 02:00:00+00'"))
        fields = {**event.fields(), "at": "999-11-03T02:00:00.000000Z"}
        forged = hashlib.sha256(canonical_json({**fields, "prev_hash": event.prev_hash}).encode()).hexdigest()
        conn.execute(text("UPDATE ledger_events SET hash = :h"), {"h": forged})
    # glibc's strftime writes year 999 unpadded: the reference hashes that text, and so verify
    # agrees with it (the server's to_char would pad it; the row goes to the reference).
    assert format_at(ledger.events()[0].at).startswith("999-")
    assert ledger.verify().ok
    db.dispose()


@pytest.mark.postgres
def test_a_stream_left_early_ends_its_transaction(postgres_url: str) -> None:
    # More rows than one chunk of the stream: verify stops at event 3 and cancels the rest.
    db = Database(postgres_url)
    ledger = Ledger(db)
    ledger.append_many([Draft("window.status", {"n": i}, "bf", f"w{i}") for i in range(2500)], actor=ALICE)
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger_events DISABLE TRIGGER USER"))
        conn.exec_driver_sql("UPDATE ledger_events SET payload = '{\"n\": 7}' WHERE seq = 3")
    for _ in range(3):  # the pooled connection is fit for the next verify
        assert ledger.verify().message == "ledger: event 3 (window.status) hash mismatch"
    assert ledger.verify((2, ledger.hashes_at({2})[2])).message == "ledger: event 3 (window.status) hash mismatch"
    db.dispose()


def test_a_kind_met_a_few_times_is_parsed_and_learnt_only_once_it_repeats() -> None:
    shapes = PayloadShapes()
    texts = [canonical_json({"n": i, "s": "x"}) for i in range(LEARN_AFTER)]
    for payload in texts[:-1]:
        assert shapes.canonical("k", payload) == payload  # the same answer, by the reference parse
    assert "k" not in shapes.current
    assert shapes.canonical("k", texts[-1]) == texts[-1]
    assert shapes.current["k"](canonical_json({"n": 99, "s": "y"}))
    assert shapes.canonical("k", '{"s":"x", "n":1}') == '{"n":1,"s":"x"}'  # re-encoded, never learnt
