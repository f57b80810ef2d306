"""The hash-chained ledger, pure: canonical encoding, SHA-256 chaining, verification.

Every event's ``hash`` is the SHA-256 hex digest of the canonical JSON encoding of all its other
fields, ``prev_hash`` included, so each event commits to the whole chain before it. Canonical
JSON: ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded as UTF-8,
with ``at`` written as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six fractional digits). The object
hashed is exactly an exported JSON line without its ``hash`` key, so an auditor can recompute the
chain from an export with nothing but a JSON library and SHA-256.

No database, no click: the store adapter (``backfill.store.ledger``) feeds events in here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from backfill.secrets import redact_payload
from backfill.timeutil import require_utc

GENESIS_HASH = "0" * 64
HASHED_FIELDS = ("seq", "at", "actor", "identity_source", "backfill_id", "window_key", "kind", "payload")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_AT_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


class PayloadError(ValueError):
    """A payload cannot be encoded canonically (NaN, a non-JSON value, a lone surrogate)."""


def format_at(value: datetime) -> str:
    """The canonical form of an event time: UTC, microseconds, ``Z``."""
    return require_utc(value, "ledger time").strftime(_AT_FORMAT)


def parse_at(text: str) -> datetime:
    """Parse the canonical form of an event time (and nothing looser)."""
    if not _AT_TEXT.match(text):
        raise ValueError(f"ledger time {text!r} is not in the canonical form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return datetime.strptime(text, _AT_FORMAT).replace(tzinfo=UTC)


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value`` that hashing and storage use."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"not canonical JSON: {exc}") from None


def canonical_encoding(value: Any) -> bytes:
    try:
        return canonical_json(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"not encodable as UTF-8: {exc.reason}") from None


def compute_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 hex over the canonical encoding of ``fields`` plus ``prev_hash``.

    ``fields`` are the event's other hashed fields in their JSON form (``at`` as its canonical
    string); a ``hash`` key, if present, is ignored.
    """
    body = {k: v for k, v in fields.items() if k != "hash"}
    body["prev_hash"] = prev_hash
    return hashlib.sha256(canonical_encoding(body)).hexdigest()


def normalise_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Redact, then round-trip through canonical JSON, so the stored value is the hashed one.

    Datetimes become canonical UTC strings and enums their values; tuples become lists. Anything
    else that is not JSON raises ``PayloadError``.
    """
    result = json.loads(_payload_text(payload))
    assert isinstance(result, dict)
    return result


def _payload_text(payload: Mapping[str, Any]) -> str:
    """The canonical JSON text of the redacted payload: what is stored, and what is hashed."""
    return canonical_json(_jsonable(redact_payload(payload), "payload"))


def _jsonable(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{path} is {value}, which JSON cannot carry")
        return value
    if isinstance(value, Enum):
        return _jsonable(value.value, path)
    if isinstance(value, datetime):
        return format_at(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise PayloadError(f"{path} is of type {type(value).__name__}, which JSON cannot carry")


# --- the fast encoder ----------------------------------------------------------------------------
#
# ``compute_hash`` builds a dict and sorts its keys for every event; verifying a large ledger that
# way costs more than reading it. The text hashed always has the same nine keys in the same
# (sorted) order, so it is assembled directly from the stored values here. It must equal the
# reference byte for byte (tests/test_chain_fast.py compares them with hypothesis); whatever it
# is unsure of (a value not of the expected type, a payload that is not canonical JSON), it
# declines and the caller uses the reference.

# The same settings as canonical_json, built once: json.dumps builds an encoder per call, and
# JSONEncoder.encode a C encoder per call. No circular-reference check (``markers=None``): a value
# parsed from JSON text has no cycles. Without the C accelerator, the pure encoder does.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_STRING: Any = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a str
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE: Any = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(None, _ENCODER.default, _STRING, None, ":", ",", True, False, False)
)
# The C scanner under json.loads, without its Python wrappers: (value, end) or StopIteration.
_SCAN: Any = getattr(json.decoder.JSONDecoder(), "scan_once")  # noqa: B009 (not in the stubs)


def json_string(value: str) -> str:
    """``value`` as ``json.dumps(value, ensure_ascii=False)`` writes it; TypeError if not a str."""
    encoded: str = _STRING(value)
    return encoded


def _encode(value: Any) -> str:
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def canonical_payload_text(text: str) -> tuple[dict[str, Any], str] | None:
    """A stored payload parsed, with its canonical text; None for anything the reference would
    not accept as a JSON object, or that this shortcut does not read as json.loads would (leading
    or trailing whitespace): the caller then asks the reference."""
    try:
        payload, end = _SCAN(text, 0)
    except (StopIteration, TypeError, ValueError):
        return None
    if end != len(text) or type(payload) is not dict:
        return None
    try:
        return payload, _encode(payload)
    except (TypeError, ValueError):
        return None


# --- stored payloads proven canonical without parsing them -------------------------------------
#
# The hash covers the payload's canonical text, and the writer stores exactly that text (a Text
# column, never jsonb). Hashing the stored text as it is therefore gives the reference's verdict
# for every payload that *is* canonical; for one that is not (a forger's whitespace, reordered or
# duplicate keys, ``\u`` escapes, ``1.50``) the reference re-encodes it and reports a mismatch, so
# the stored text may be hashed only once it is proven canonical. Parsing and re-encoding proves
# it but costs most of a verify; instead, the first canonical payload of each shape (its keys and
# structure) is turned into a regular expression that matches exactly the texts of that shape
# whose values need no escaping: strings without ``"``, ``\`` or control characters, canonical
# integers, ``true``/``false``/``null``, and floats written as ``repr`` writes them (checked on the
# captured text). Such a text is the canonical text of its own parse: the keys, their order and
# the structure are the proven payload's, and each value is written as the encoder writes it.

_STRING_HOLE = r'"[^"\\\x00-\x1f]*+"'
# At most 18 digits: json.loads refuses integers past 4,300 digits, and no ledger writes such.
# "-0" is not canonical: it parses to the integer 0, which the encoder writes "0".
_SCALAR_HOLE = rf"(?:{_STRING_HOLE}|0|-?[1-9][0-9]{{0,17}}|true|false|null)"
_FLOAT_HOLE = r"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:e[-+][0-9]+)?)"
_SHAPES_PER_KIND = 8
_SHAPES_LIMIT = 256
_SHAPE_TEXT_LIMIT = 4096
# Compiling a shape costs about what parsing twenty payloads does: a kind met only a few times
# (most kinds of a small ledger, which ``ledger verify`` reads at every start) is parsed instead
# (issue 14: verify of the demo ledger spent 8 of its 9 ms compiling shapes used once).
LEARN_AFTER = 8


def _shape_pattern(value: Any) -> tuple[str, int]:
    """The pattern of texts shaped like ``value`` (parsed from a canonical text), and how many
    float holes (capturing groups) it has."""
    if type(value) is dict:
        parts, floats = [], 0
        for key, item in value.items():
            pattern, count = _shape_pattern(item)
            parts.append(re.escape(_STRING(key)) + ":" + pattern)
            floats += count
        return r"\{" + ",".join(parts) + r"\}", floats
    if type(value) is list:
        if all(type(item) is not float and type(item) not in (dict, list) for item in value):
            return rf"\[(?:{_SCALAR_HOLE}(?:,{_SCALAR_HOLE})*+)?\]", 0
        parts, floats = [], 0
        for item in value:
            pattern, count = _shape_pattern(item)
            parts.append(pattern)
            floats += count
        return r"\[" + ",".join(parts) + r"\]", floats
    if type(value) is float:
        return f"(?:{_SCALAR_HOLE}|{_FLOAT_HOLE})", 1
    return _SCALAR_HOLE, 0


def _float_checked(fullmatch: Any) -> Any:
    def check(text: str) -> bool:
        match = fullmatch(text)
        # A float is canonical when it is what repr writes for the float it parses to (which is
        # what json.loads makes of it: float() of the same text); "inf" never equals its text.
        return match is not None and all(g is None or repr(float(g)) == g for g in match.groups())

    return check


class PayloadShapes:
    """Stored payload texts proven canonical by shape, learnt as they are met (one per verify or
    export: the shapes of one ledger, a few per kind).

    ``current[kind]`` is the last shape that matched a payload of that kind: a callable that is
    truthy for a text proven canonical. ``canonical`` is the slower way for the rest."""

    def __init__(self, learn_after: int = LEARN_AFTER) -> None:
        self.current: dict[Any, Any] = {}
        self._by_kind: dict[Any, list[Any]] = {}
        self._learnt = 0
        self._learn_after = learn_after
        self._misses: dict[Any, int] = {}

    def canonical(self, kind: Any, text: Any) -> str | None:
        """The canonical text of a stored payload: ``text`` itself when it is canonical, the
        re-encoded text when it parses to a JSON object whose encoding differs, None when the
        reference must decide (not a string, not a JSON object, not encodable)."""
        if type(text) is not str:
            return None
        shapes = self._by_kind.get(kind, [])
        for shape in shapes:
            if shape(text):
                self.current[kind] = shape
                return text
        parsed = canonical_payload_text(text)
        if parsed is None:
            return None
        if parsed[1] == text:
            misses = self._misses[kind] = self._misses.get(kind, 0) + 1
            if misses >= self._learn_after:
                self._learn(kind, parsed[0], text, shapes)
        return parsed[1]

    def _learn(self, kind: Any, value: dict[str, Any], text: str, shapes: list[Any]) -> None:
        if len(shapes) >= _SHAPES_PER_KIND or self._learnt >= _SHAPES_LIMIT or len(text) > _SHAPE_TEXT_LIMIT:
            return
        pattern, floats = _shape_pattern(value)
        fullmatch = re.compile(pattern).fullmatch
        shape = _float_checked(fullmatch) if floats else fullmatch
        if not shape(text):  # cannot happen for a canonical text; never trust a shape that would
            return
        shapes.append(shape)
        self._by_kind[kind] = shapes
        self.current[kind] = shape
        self._learnt += 1


def hashed_text(
    seq: int,
    at_text: str,
    actor: str,
    identity_source: str,
    backfill_id: str | None,
    window_key: str | None,
    kind: str,
    payload_text: str,
    prev_hash: str,
) -> str:
    """``canonical_json`` of an event's hashed fields plus ``prev_hash``, built directly.

    ``at_text`` is the canonical time (``format_at``) and ``payload_text`` the payload's canonical
    JSON; the other values are written as ``json.dumps`` writes them (the few distinct actors,
    sources, kinds and backfills of a ledger are encoded once)."""
    memo = _MEMO
    if len(memo) > _MEMO_LIMIT:
        memo.clear()
    a = memo.get(actor) or memo.setdefault(actor, _STRING(actor))
    s = memo.get(identity_source) or memo.setdefault(identity_source, _STRING(identity_source))
    k = memo.get(kind) or memo.setdefault(kind, _STRING(kind))
    b = "null" if backfill_id is None else memo.get(backfill_id) or memo.setdefault(backfill_id, _STRING(backfill_id))
    w = "null" if window_key is None else _STRING(window_key)
    return (
        f'{{"actor":{a},"at":"{at_text}","backfill_id":{b},"identity_source":{s},"kind":{k},'
        f'"payload":{payload_text},"prev_hash":{_STRING(prev_hash)},"seq":{seq},"window_key":{w}}}'
    )


def export_line(
    seq: int,
    at_text: str,
    actor: str,
    identity_source: str,
    backfill_id: str | None,
    window_key: str | None,
    kind: str,
    payload_text: str,
    prev_hash: str,
    digest: str,
) -> str:
    """``canonical_json(event.to_json())`` (an exported JSON line) built directly, like
    ``hashed_text`` (the same arguments, plus the event's own hash)."""
    b = "null" if backfill_id is None else _STRING(backfill_id)
    w = "null" if window_key is None else _STRING(window_key)
    return (
        f'{{"actor":{_STRING(actor)},"at":"{at_text}","backfill_id":{b},"hash":{_STRING(digest)},'
        f'"identity_source":{_STRING(identity_source)},"kind":{_STRING(kind)},"payload":{payload_text},'
        f'"prev_hash":{_STRING(prev_hash)},"seq":{seq},"window_key":{w}}}'
    )


_MEMO: dict[str, str] = {}
_MEMO_LIMIT = 10_000


def fast_hash(text: str) -> str | None:
    """SHA-256 hex of ``hashed_text``; None when it is not UTF-8 (a lone surrogate: the
    reference refuses it, with its own reason)."""
    try:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:
        return None


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """One event to append (``Ledger.append_many``): the ledger adds seq, time, actor, hashes."""

    kind: str
    payload: Mapping[str, Any]
    backfill_id: str | None = None
    window_key: str | None = None


@dataclass(frozen=True)
class LedgerEvent:
    seq: int
    at: datetime
    actor: str
    identity_source: str
    backfill_id: str | None
    window_key: str | None
    kind: str
    payload: dict[str, Any] = field(hash=False)
    prev_hash: str
    hash: str

    def fields(self) -> dict[str, Any]:
        """The hashed fields in their JSON form (everything but ``prev_hash`` and ``hash``)."""
        return {
            "seq": self.seq,
            "at": format_at(self.at),
            "actor": self.actor,
            "identity_source": self.identity_source,
            "backfill_id": self.backfill_id,
            "window_key": self.window_key,
            "kind": self.kind,
            "payload": self.payload,
        }

    def expected_hash(self) -> str:
        return compute_hash(self.prev_hash, self.fields())

    def to_json(self) -> dict[str, Any]:
        """The stable export form; ``hash`` is SHA-256 of the canonical JSON of the rest."""
        return {**self.fields(), "prev_hash": self.prev_hash, "hash": self.hash}


def make_event(
    *,
    seq: int,
    at: datetime,
    actor: str,
    identity_source: str,
    kind: str,
    payload: Mapping[str, Any],
    prev_hash: str,
    backfill_id: str | None = None,
    window_key: str | None = None,
) -> LedgerEvent:
    """A new event chained onto ``prev_hash``: payload redacted and normalised, time truncated to
    microseconds in UTC, hash computed."""
    return new_event(
        seq=seq,
        at=at,
        actor=actor,
        identity_source=identity_source,
        kind=kind,
        payload=payload,
        prev_hash=prev_hash,
        backfill_id=backfill_id,
        window_key=window_key,
    )[0]


def new_event(
    *,
    seq: int,
    at: datetime,
    actor: str,
    identity_source: str,
    kind: str,
    payload: Mapping[str, Any],
    prev_hash: str,
    backfill_id: str | None = None,
    window_key: str | None = None,
) -> tuple[LedgerEvent, str]:
    """``make_event``, and its payload's canonical JSON text (the stored form).

    The payload is encoded once: its text is the normalised payload's canonical JSON (a JSON
    value's canonical text survives ``json.loads`` unchanged), and the hash is taken over
    ``hashed_text``, the reference encoding built directly (tests/test_ledger_chain.py proves the
    two equal). Text that is not UTF-8 goes through ``compute_hash``, which names the reason."""
    if seq < 1:
        raise ValueError(f"ledger seq must start at 1, got {seq}")
    at = require_utc(at, "ledger time")
    value = _jsonable(redact_payload(payload), "payload")  # names what JSON cannot carry
    try:
        # canonical_json's text through the encoder built once (json.dumps builds one per call).
        # No cycle check needed: _jsonable has built a fresh tree of JSON values.
        text = _encode(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"not canonical JSON: {exc}") from None
    normalised = json.loads(text)
    # format_at's text: isoformat is what strftime writes for a four-digit year, at a fifth of
    # the cost ("+00:00" becomes "Z"; timespec keeps the microseconds even when they are 0).
    at_text = at.isoformat(timespec="microseconds")[:-6] + "Z" if at.year >= 1000 else format_at(at)
    digest = fast_hash(
        hashed_text(seq, at_text, actor, identity_source, backfill_id, window_key, kind, text, prev_hash)
    )
    event = LedgerEvent(
        seq=seq,
        at=at,
        actor=actor,
        identity_source=identity_source,
        backfill_id=backfill_id,
        window_key=window_key,
        kind=kind,
        payload=normalised,
        prev_hash=prev_hash,
        hash=digest or "",
    )
    if digest is None:
        event = replace(event, hash=event.expected_hash())  # raises PayloadError
    return event, text


# --- verification --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    first_bad_kind: str | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH

    @property
    def message(self) -> str:
        """One line: ``ledger: event 17 (approval) hash mismatch`` or the count verified."""
        if self.ok:
            return f"ledger: {self.count} events verified, head {self.head_seq}:{self.head_hash}"
        kind = f" ({self.first_bad_kind})" if self.first_bad_kind else ""
        return f"ledger: event {self.first_bad_seq}{kind} {self.reason}"


class ChainVerifier:
    """Checks events one at a time in stored order, so a large ledger streams through."""

    def __init__(self, checkpoint: tuple[int, str] | None = None) -> None:
        self.checkpoint = checkpoint
        self.count = 0
        self.head_seq = 0
        self.head_hash = GENESIS_HASH
        self.failure: VerifyReport | None = None
        self._checkpoint_seen = checkpoint is None or checkpoint[0] == 0

    def fail(self, seq: int | None, kind: str | None, reason: str) -> VerifyReport:
        """Record the first failure (an adapter calls this for a row it cannot even read)."""
        if self.failure is None:
            self.failure = VerifyReport(False, self.count, seq, kind, reason, self.head_seq, self.head_hash)
        return self.failure

    def feed(self, event: LedgerEvent) -> VerifyReport | None:
        """Check the next event; the failure report if it is the first bad one, else None."""
        if self.failure is not None:
            return self.failure
        expected_seq = self.head_seq + 1
        if event.seq > expected_seq:
            missing = f"{expected_seq}" if event.seq == expected_seq + 1 else f"{expected_seq}-{event.seq - 1}"
            return self.fail(
                expected_seq,
                None,
                f"missing: the sequence jumps from {self.head_seq} to {event.seq} (events {missing} deleted)",
            )
        if event.seq < expected_seq:
            return self.fail(event.seq, event.kind, f"out of order: found after event {self.head_seq}")
        problem = _event_problem(event, self.head_seq, self.head_hash)
        if problem:
            return self.fail(event.seq, event.kind, problem)
        if self.checkpoint is not None and event.seq == self.checkpoint[0]:
            if event.hash != self.checkpoint[1]:
                return self.fail(event.seq, event.kind, "does not match the checkpoint hash (history rewritten)")
            self._checkpoint_seen = True
        self.count += 1
        self.head_seq = event.seq
        self.head_hash = event.hash
        return None

    def finish(self) -> VerifyReport:
        if self.failure is not None:
            return self.failure
        if not self._checkpoint_seen and self.checkpoint is not None:
            seq = self.checkpoint[0]
            return self.fail(
                self.head_seq + 1,
                None,
                f"missing: the ledger ends at event {self.head_seq} but the checkpoint is event {seq} (truncated)",
            )
        if self.checkpoint is not None and self.checkpoint[0] == 0 and self.checkpoint[1] != GENESIS_HASH:
            return self.fail(0, None, "checkpoint 0 must carry the genesis hash (64 zeros)")
        return VerifyReport(True, self.count, head_seq=self.head_seq, head_hash=self.head_hash)


def _event_problem(event: LedgerEvent, prev_seq: int, prev_hash: str) -> str | None:
    if not _HEX64.match(event.hash):
        return "hash is not 64 lowercase hex digits"
    try:
        expected = event.expected_hash()
    except (PayloadError, ValueError) as exc:
        return f"unreadable: {exc}"
    if expected != event.hash:
        return "hash mismatch"
    if event.prev_hash != prev_hash:
        if prev_seq == 0:
            return "chain broken: the first event's prev_hash is not the genesis hash (64 zeros)"
        return f"chain broken: prev_hash does not match the hash of event {prev_seq}"
    return None


def verify_chain(events: Iterable[LedgerEvent], checkpoint: tuple[int, str] | None = None) -> VerifyReport:
    """Recompute the chain in the order given; the report names the first bad event and why.

    With ``checkpoint`` (seq, hash) kept by an auditor, also prove the ledger still extends it:
    the event at that seq exists and carries that hash.
    """
    verifier = ChainVerifier(checkpoint)
    for event in events:
        if verifier.feed(event) is not None:
            break
    return verifier.finish()


def parse_checkpoint(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as printed by ``backfill ledger checkpoint``; raise ValueError otherwise."""
    seq_text, sep, digest = text.strip().partition(":")
    if not sep or not seq_text.isdigit() or not _HEX64.match(digest.lower()):
        raise ValueError(f"checkpoint {text!r} is not SEQ:HASH (e.g. 42:{'ab' * 32})")
    return int(seq_text), digest.lower()


def format_checkpoint(checkpoint: tuple[int, str]) -> str:
    return f"{checkpoint[0]}:{checkpoint[1]}"
