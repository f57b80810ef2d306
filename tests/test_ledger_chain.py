"""The pure hash chain: canonical encoding, verification, checkpoints and redaction."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backfill.chain import (
    GENESIS_HASH,
    LedgerEvent,
    PayloadError,
    canonical_json,
    compute_hash,
    format_at,
    format_checkpoint,
    make_event,
    new_event,
    normalise_payload,
    parse_at,
    parse_checkpoint,
    verify_chain,
)
from backfill.secrets import Secret, is_denied_key, redact_payload, scrub_text
from backfill.timeutil import NaiveTimestamp

T0 = datetime(2026, 11, 3, 2, 0, 0, 123456, tzinfo=UTC)
KINDS = ["request", "approval", "intent", "run-created", "window-done"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Keys that cannot trip the credential rules, so the payload survives unchanged.
plain_keys = st.text(alphabet="abcdefghijklm", min_size=1, max_size=6).filter(lambda k: not is_denied_key(k))
plain_payloads = st.dictionaries(plain_keys, st.integers() | st.booleans() | st.none(), max_size=5)


def chain(n: int, payloads: list[dict[str, Any]] | None = None) -> list[LedgerEvent]:
    events: list[LedgerEvent] = []
    prev = GENESIS_HASH
    for i in range(n):
        event = make_event(
            seq=i + 1,
            at=T0 + timedelta(seconds=i),
            actor="alice",
            identity_source="os",
            backfill_id="bf-1",
            window_key=f"2026-11-03T0{i % 10}:00:00Z/2026-11-03T0{i % 10}:15:00Z",
            kind=KINDS[i % len(KINDS)],
            payload=payloads[i] if payloads else {"i": i},
            prev_hash=prev,
        )
        events.append(event)
        prev = event.hash
    return events


def test_an_auditor_recomputes_a_hash_from_the_exported_line_alone() -> None:
    event = chain(2)[1]
    line = json.loads(canonical_json(event.to_json()))
    body = {k: v for k, v in line.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == line["hash"]
    assert line["at"] == "2026-11-03T02:00:01.123456Z"
    assert line["prev_hash"] == chain(1)[0].hash


def test_the_first_event_chains_onto_the_genesis_hash() -> None:
    first = chain(1)[0]
    assert first.prev_hash == "0" * 64
    assert first.hash == compute_hash(GENESIS_HASH, first.fields())


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.randoms())
def test_the_hash_ignores_key_order_and_survives_a_storage_round_trip(payload: dict[str, Any], rnd: Any) -> None:
    event = chain(1, [payload])[0]
    stored = json.loads(canonical_json(event.payload))
    assert replace(event, payload=stored).expected_hash() == event.hash
    items = list(event.fields().items())
    rnd.shuffle(items)
    assert compute_hash(event.prev_hash, dict(items)) == event.hash
    assert verify_chain([event]).ok


@settings(max_examples=40, deadline=None)
@given(st.lists(plain_payloads, min_size=1, max_size=8))
def test_an_untouched_chain_verifies(payloads: list[dict[str, Any]]) -> None:
    events = chain(len(payloads), payloads)
    report = verify_chain(events)
    assert report.ok and report.count == len(events)
    assert (report.head_seq, report.head_hash) == (events[-1].seq, events[-1].hash)
    assert [e.payload for e in events] == payloads


EDITS: dict[str, Any] = {
    "at": lambda e: replace(e, at=e.at + timedelta(microseconds=1)),
    "actor": lambda e: replace(e, actor="mallory"),
    "identity_source": lambda e: replace(e, identity_source="declared"),
    "backfill_id": lambda e: replace(e, backfill_id=None),
    "window_key": lambda e: replace(e, window_key="2026-11-03T09:00:00Z/2026-11-03T09:15:00Z"),
    "kind": lambda e: replace(e, kind="approve"),
    "payload": lambda e: replace(e, payload={**e.payload, "i": -1}),
    "prev_hash": lambda e: replace(e, prev_hash="f" * 64),
    "hash": lambda e: replace(e, hash="e" * 64),
}


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.data())
def test_any_edited_field_is_the_first_bad_event(n: int, data: st.DataObject) -> None:
    events = chain(n)
    victim = data.draw(st.integers(0, n - 1))
    field = data.draw(st.sampled_from(sorted(EDITS)))
    events[victim] = EDITS[field](events[victim])
    report = verify_chain(events)
    assert not report.ok
    assert report.first_bad_seq == victim + 1
    assert report.reason == "hash mismatch"
    assert report.count == victim


def test_the_message_names_the_event_its_kind_and_why() -> None:
    events = chain(3)
    events[1] = replace(events[1], actor="mallory")
    assert verify_chain(events).message == "ledger: event 2 (approval) hash mismatch"


def test_an_edit_with_its_hash_recomputed_is_caught_by_the_next_event() -> None:
    events = chain(4)
    forged = replace(events[1], payload={"i": 99})
    events[1] = replace(forged, hash=forged.expected_hash())
    report = verify_chain(events)
    assert report.first_bad_seq == 3
    assert report.message == "ledger: event 3 (intent) chain broken: prev_hash does not match the hash of event 2"


def test_a_first_event_not_on_the_genesis_hash_is_refused() -> None:
    forged = replace(chain(1)[0], prev_hash="a" * 64)
    forged = replace(forged, hash=forged.expected_hash())
    report = verify_chain([forged])
    assert report.first_bad_seq == 1
    assert report.reason == "chain broken: the first event's prev_hash is not the genesis hash (64 zeros)"


@pytest.mark.parametrize(
    ("deleted", "message"),
    [
        ([0], "ledger: event 1 missing: the sequence jumps from 0 to 2 (events 1 deleted)"),
        ([2], "ledger: event 3 missing: the sequence jumps from 2 to 4 (events 3 deleted)"),
        ([2, 3], "ledger: event 3 missing: the sequence jumps from 2 to 5 (events 3-4 deleted)"),
    ],
)
def test_a_deleted_event_leaves_a_gap_that_is_named(deleted: list[int], message: str) -> None:
    events = [e for i, e in enumerate(chain(5)) if i not in deleted]
    assert verify_chain(events).message == message


def test_reordered_events_are_refused() -> None:
    events = chain(5)
    events[2], events[3] = events[3], events[2]
    assert verify_chain(events).first_bad_seq == 3
    events = chain(5)
    events.append(events[1])
    assert verify_chain(events).message == "ledger: event 2 (approval) out of order: found after event 5"


def test_a_checkpoint_proves_the_ledger_still_extends_it() -> None:
    events = chain(6)
    mark = (4, events[3].hash)
    assert verify_chain(events, mark).ok
    assert verify_chain(events[:4], mark).ok
    truncated = verify_chain(events[:3], mark)
    assert truncated.message == (
        "ledger: event 4 missing: the ledger ends at event 3 but the checkpoint is event 4 (truncated)"
    )
    assert not verify_chain([], mark).ok
    rewritten = chain(6, [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 333}, {"i": 4}, {"i": 5}])
    assert verify_chain(rewritten, mark).message == (
        "ledger: event 4 (run-created) does not match the checkpoint hash (history rewritten)"
    )
    assert verify_chain(events, (0, GENESIS_HASH)).ok
    assert not verify_chain(events, (0, "1" * 64)).ok


@given(st.integers(0, 10**12), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_checkpoints_round_trip(seq: int, digest: str) -> None:
    assert parse_checkpoint(format_checkpoint((seq, digest))) == (seq, digest)
    assert parse_checkpoint(f" {seq}:{digest.upper()}\n") == (seq, digest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12",
        "12:",
        ":" + "a" * 64,
        "-1:" + "a" * 64,
        "x:" + "a" * 64,
        "3:" + "a" * 63,
        "3:" + "g" * 64,
        "3:" + "a" * 65,
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not SEQ:HASH"):
        parse_checkpoint(text)


def test_event_times_are_utc_with_microseconds() -> None:
    assert format_at(datetime(2026, 11, 3, 3, 0, tzinfo=UTC)) == "2026-11-03T03:00:00.000000Z"
    plus_one = datetime(2026, 11, 3, 4, 0, 0, 5, tzinfo=UTC).astimezone(UTC)
    assert parse_at(format_at(plus_one)) == plus_one
    with pytest.raises(NaiveTimestamp):
        make_event(
            seq=1,
            at=datetime(2026, 11, 3),
            actor="a",
            identity_source="os",
            kind="k",
            payload={},
            prev_hash=GENESIS_HASH,
        )
    with pytest.raises(ValueError, match="canonical form"):
        parse_at("2026-11-03T03:00:00Z")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"x": float("nan")}, "payload.x is nan, which JSON cannot carry"),
        ({"x": [1, {"y": object()}]}, "payload.x[1].y is of type object, which JSON cannot carry"),
        ({"x": "\ud800"}, "not encodable as UTF-8"),
    ],
)
def test_payloads_that_cannot_be_canonical_are_refused(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(message)):
        make_event(seq=1, at=T0, actor="a", identity_source="os", kind="k", payload=payload, prev_hash=GENESIS_HASH)


def test_datetimes_and_tuples_in_payloads_are_normalised() -> None:
    event = chain(1, [{"when": datetime(2026, 11, 3, 2, tzinfo=UTC), "pair": (1, 2)}])[0]
    assert event.payload == {"when": "2026-11-03T02:00:00.000000Z", "pair": [1, 2]}


# --- redaction -----------------------------------------------------------------------------------


def test_the_redaction_rule() -> None:
    payload = {
        "parameters": {"windowStart": "2026-11-03T02:00:00Z", "sourceKey": Secret("${SOURCE_API_KEY}")},
        "connection": "${TELEMETRY_SINK_ODBC}",
        "connection_string": "Driver=PostgreSQL Unicode;Server=db;Uid=etl;Pwd=hunter2",
        "sinkPassword": "hunter2",
        "api-token": 12345,
        "url": "https://user:${PW}@example.net/x",
        "secret": None,
        "Url": ["${A}", "expanded-value"],
        "checks": [{"name": "rows", "dsn": {"host": "db", "password": "${DB_PW}"}}],
        "message": "login failed: Server=db;Password=hunter2;Database=x",
        "endpoint_note": "see postgresql://etl:hunter2@db:5432/telemetry",
        "header": "Authorization: Bearer eyJ0eXAi.abc-def",
        "window_key": "2026-11-03T02:00:00Z/2026-11-03T02:15:00Z",
        "template_pwd": "Server=db;Pwd=${PW}",
    }
    assert redact_payload(payload) == {
        "parameters": {"windowStart": "2026-11-03T02:00:00Z", "sourceKey": "***"},
        "connection": "${TELEMETRY_SINK_ODBC}",
        "connection_string": "***",
        "sinkPassword": "***",
        "api-token": "***",
        "url": "https://user:${PW}@example.net/x",
        "secret": None,
        "Url": ["${A}", "***"],
        "checks": [{"name": "rows", "dsn": {"host": "***", "password": "${DB_PW}"}}],
        "message": "login failed: Server=db;Password=***;Database=x",
        "endpoint_note": "see postgresql://etl:***@db:5432/telemetry",
        "header": "Authorization: Bearer ***",
        "window_key": "2026-11-03T02:00:00Z/2026-11-03T02:15:00Z",
        "template_pwd": "Server=db;Pwd=${PW}",
    }


def test_a_template_does_not_shelter_a_literal_password_next_to_it() -> None:
    value = redact_payload({"connection": "Server=${HOST};Password=hunter2"})["connection"]
    assert value == "Server=${HOST};Password=***"


@pytest.mark.parametrize(
    ("key", "denied"),
    [
        ("connection", True),
        ("connectionString", True),
        ("sink-connection-string", True),
        ("PASSWORD", True),
        ("db_pwd", True),
        ("clientSecret", True),
        ("access_token", True),
        ("callbackUrl", True),
        ("api_key", True),
        ("apiKey", True),
        ("credentials", True),
        ("window_key", False),
        ("pipeline", False),
        ("tokenizer_count", False),
        ("urlencoded_rows", False),
        ("secretary", False),
        ("connections_open", False),
        ("connection_timeout", False),
        ("secret_name", False),
        ("source_connection_string_ref", True),
        ("", False),
    ],
)
def test_credential_key_names(key: str, denied: bool) -> None:
    assert is_denied_key(key) is denied


secret_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789!#%", min_size=8, max_size=24)


@given(secret_text, st.sampled_from(["connection", "password", "token", "secret", "url", "connection_string"]))
def test_an_expanded_value_under_a_credential_key_never_survives(value: str, key: str) -> None:
    # A value that is part of the key names ("connecti") is found in any output: not a leak.
    assume(value not in canonical_json({"outer": {key: "***"}, "list": [{key: ["***"]}]}))
    out = canonical_json(redact_payload({"outer": {key: value}, "list": [{key: [value]}]}))
    assert value not in out


@given(secret_text, st.sampled_from(["Password", "pwd", "AccountKey", "SharedAccessKey", "sig", "token"]))
def test_embedded_credentials_are_masked_anywhere(value: str, name: str) -> None:
    assume(value not in "error: Server=db;Database=x")
    text = f"error: Server=db;{name}={value};Database=x"
    assert value not in scrub_text(text)
    assert value not in canonical_json(redact_payload({"message": text}))


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=12))
def test_secrets_become_stars_and_templates_stay(var: str) -> None:
    payload = {"p": [Secret(f"${{{var}}}")], "connection": f"${{{var}}}"}
    assert redact_payload(payload) == {"p": ["***"], "connection": f"${{{var}}}"}


# --- the append's encoder (issue 14) ---------------------------------------------------------------

any_text = st.text(st.characters(codec=None), max_size=10)  # lone surrogates included
payload_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
    | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(1, 2**63),
    actor=any_text,
    kind=any_text,
    backfill_id=st.none() | any_text,
    window_key=st.none() | any_text,
    payload=st.dictionaries(any_text | st.sampled_from(["password", "url", "note"]), payload_values, max_size=4),
    prev_hash=st.sampled_from([GENESIS_HASH, "ab" * 32]),
)
def test_new_event_is_the_reference_event_encoded_once(
    seq: int,
    actor: str,
    kind: str,
    backfill_id: str | None,
    window_key: str | None,
    payload: dict[str, Any],
    prev_hash: str,
) -> None:
    """The append encodes a payload once and hashes the text built directly: the same event,
    hash and stored text as the reference (normalise, then hash the fields), and the same
    refusal where the reference refuses."""
    fields: dict[str, Any] = {
        "seq": seq,
        "at": T0,
        "actor": actor,
        "identity_source": "os",
        "kind": kind,
        "payload": payload,
        "prev_hash": prev_hash,
        "backfill_id": backfill_id,
        "window_key": window_key,
    }
    try:
        normalised = normalise_payload(payload)
        reference = replace(
            LedgerEvent(seq, T0, actor, "os", backfill_id, window_key, kind, normalised, prev_hash, ""), hash=""
        )
        reference = replace(reference, hash=reference.expected_hash())
    except PayloadError as exc:
        with pytest.raises(PayloadError, match=re.escape(str(exc))):
            new_event(**fields)
        return
    event, text = new_event(**fields)
    assert event == reference
    assert event.hash == reference.hash
    assert text == canonical_json(event.payload)
    assert event == make_event(**fields)


# Pieces of what the three patterns look for, joined at random: they match now and then.
scrub_pieces = st.sampled_from(
    [
        *("=", "@", ":", "/", ";", "&", ".", " ", "a", "B", "e", "r", "\t", "é", "K"),
        *("bearer ", "BEARER ", "Bearer\t", "Pwd", "password", "sig", "token", "://", "x:y@", "${V}", "abc", "XYZ"),
    ]
)
scrub_samples = st.lists(scrub_pieces, max_size=10).map("".join)


def _scrub_reference(text: str) -> str:
    """scrub_text without its shortcut: the three substitutions, always."""
    from backfill import secrets

    def assignment(match: re.Match[str]) -> str:
        if secrets._TEMPLATE.fullmatch(match.group(3)):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}***"

    def userinfo(match: re.Match[str]) -> str:
        if secrets._TEMPLATE.fullmatch(match.group(2)):
            return match.group(0)
        return f"{match.group(1)}:***@"

    text = secrets._ASSIGNMENT.sub(assignment, text)
    text = secrets._USERINFO.sub(userinfo, text)
    return secrets._BEARER.sub(lambda m: f"{m.group(1)}***", text)


@settings(max_examples=400, deadline=None)
@given(scrub_samples | st.text(max_size=24))
def test_scrubbing_shortcut_changes_nothing(text: str) -> None:
    """scrub_text returns plain ASCII text without "=", "@" or "bearer" untouched: no pattern can
    match it. Proven against the substitutions themselves."""
    assert scrub_text(text) == _scrub_reference(text)


def test_credential_key_answers_are_remembered_not_changed() -> None:
    is_denied_key.cache_clear()
    assert [is_denied_key(k) for k in ("sinkPassword", "window_key", "sinkPassword")] == [True, False, True]
    assert is_denied_key.cache_info().hits == 1
