"""Runs → windows: which run is the latest for each window (SPEC §4).

A run belongs to a window when the parameters named in ``match on`` are equal after normalising:
timestamps in any aware ISO form compare as the same instant, JSON-encoded strings compare by what
they decode to (ADF returns every parameter as a string, arrays and objects JSON-encoded), and a
number equals its string form. Matching builds one index key per window and one per run, so it is
linear in windows + runs.

``key_hash`` folds a key into a signed 64-bit integer through a canonical text form (equal keys,
equal text), so the history cache can index runs by key and a preview reads only the runs whose
key is one of its windows'. A hash can collide, so whoever looks runs up by hash compares the keys
themselves before trusting a match.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from backfill.secrets import Secret
from backfill.windows import Window

# JSON's number grammar: "007" or "1_000" stay strings (identifiers, not quantities).
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
# Cheap pre-check so only strings that look like a date-time reach the ISO parser.
_TIMESTAMP_HINT = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_FRACTION = re.compile(r"(\.\d{6})\d+")

Key = tuple[Hashable, ...]
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISSING = object()
_MICROSECOND = timedelta(microseconds=1)


class Matchable(Protocol):
    """What matching reads from a run: our ``Run`` and the history cache's light records."""

    @property
    def run_id(self) -> str: ...

    @property
    def parameters(self) -> Mapping[str, Any]: ...

    @property
    def start(self) -> datetime | None: ...

    @property
    def run_group_id(self) -> str | None: ...

    @property
    def is_latest(self) -> bool: ...


R = TypeVar("R", bound=Matchable)


def _number(value: int | float | Decimal) -> Hashable:
    if isinstance(value, int):
        return ("n", value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return ("f", str(value))
        return ("n", int(value)) if value == value.to_integral_value() else ("n", float(value))
    if not math.isfinite(value):
        # NaN never equals itself; a tagged string keeps it equal to its own kind.
        return ("f", repr(value))
    return ("n", int(value)) if value.is_integer() else ("n", value)


def _parse_time(text: str) -> datetime | None:
    try:
        # Python 3.11 reads Z and any number of fractional digits (ADF sends seven) natively.
        parsed = datetime.fromisoformat(text)
    except ValueError:
        cleaned = _FRACTION.sub(r"\1", text.strip())
        if cleaned[-1:] in ("Z", "z"):
            cleaned = cleaned[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(cleaned)
        except ValueError:
            return None
    # Naive values are not instants: they stay plain strings and only equal themselves.
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed


@lru_cache(maxsize=16384)
def _normalise_text(text: str) -> Hashable:
    first = text[:1]
    if first in ("[", "{", '"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return ("s", text)
        return normalise(decoded)
    if first.isdigit() or first == "-":
        # Date-times first: the common case of window parameters, and never a number.
        if text[4:5] == "-" and _TIMESTAMP_HINT.match(text):
            parsed = _parse_time(text)
            # Aware datetimes compare and hash by instant, whatever their offset.
            return ("t", parsed) if parsed is not None else ("s", text)
        if _NUMBER.fullmatch(text):
            return _number(float(text) if any(c in text for c in ".eE") else int(text))
    lowered = text.lower()
    if lowered in ("true", "false"):
        # ADF sends Bool parameters back as strings.
        return ("b", lowered == "true")
    return ("s", text)


def normalise(value: Any) -> Hashable:
    """A hashable form of a parameter value under which equal meanings compare equal."""
    if isinstance(value, str):  # by far the most common: ADF sends every parameter as a string
        return _normalise_text(value)
    if value is None:
        return ("z",)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float | Decimal):
        return _number(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return ("s", value.isoformat())
        return ("t", value)
    if isinstance(value, date):
        return ("s", value.isoformat())
    if isinstance(value, Mapping):
        return ("o", tuple(sorted(((str(k), normalise(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    if isinstance(value, list | tuple):
        return ("l", tuple(normalise(v) for v in value))
    return ("s", str(value))


def canonical(value: Hashable) -> str:
    """A text form of a ``normalise`` result: equal values give equal text, different ones
    different text. Every piece is self-delimiting, so the text of a whole key is unambiguous."""
    tag = value[0] if isinstance(value, tuple) and value else None
    if tag == "s" or tag == "f":
        text = value[1]  # type: ignore[index]
        return f"{tag}{len(text)}:{text}"
    if tag == "t":
        # Equal instants, whatever their offsets, are the same count of microseconds.
        return f"t{(value[1] - _EPOCH) // _MICROSECOND};"  # type: ignore[index]
    if tag == "n":
        # Integral numbers are ints by now, so an int and a float are never equal, and repr is exact.
        text = repr(value[1])  # type: ignore[index]
        return f"n{len(text)}:{text}"
    if tag == "b":
        return "b1" if value[1] else "b0"  # type: ignore[index]
    if tag == "z":
        return "z"
    if tag == "l":
        items = value[1]  # type: ignore[index]
        return f"l{len(items)}:" + "".join(canonical(item) for item in items)
    if tag == "o":
        items = value[1]  # type: ignore[index]
        return f"o{len(items)}:" + "".join(f"{len(name)}:{name}{canonical(item)}" for name, item in items)
    text = repr(value)
    return f"?{len(text)}:{text}"


@lru_cache(maxsize=16384)
def _canonical_text(text: str) -> str:
    """``canonical(normalise(text))``. Runs repeat the same parameter values (a region, a window
    start in several regions); the normaliser's own cache is left to plain matching."""
    if text[4:5] == "-" and text[:1].isdigit() and _TIMESTAMP_HINT.match(text):
        # The timestamp branch of _normalise_text and canonical, inlined: every window of a plan
        # has its own start, so this runs once per window (35,040 for a year of 15 minutes).
        parsed = _parse_time(text)
        if parsed is not None:
            return f"t{(parsed - _EPOCH) // _MICROSECOND};"
        return f"s{len(text)}:{text}"
    return canonical(_normalise_text.__wrapped__(text))


def key_hash(parameters: Mapping[str, Any], fields: Sequence[str]) -> tuple[str, int] | None:
    """The canonical text of a parameter set's match key and a 64-bit hash of it; None when a
    field is missing. Two parameter sets match exactly when their texts are equal.

    The hash is a signed 64-bit integer (a database BIGINT), stable across processes and
    versions; it is an index, not an identity: compare the texts before trusting a match."""
    parts: list[str] = []
    for name in fields:
        try:
            value = parameters[name]
        except KeyError:
            return None
        parts.append(_canonical_text(value) if type(value) is str else canonical(normalise(value)))
    text = "".join(parts)
    data = text.encode("utf-8", "surrogatepass")
    # Two fast checksums make 64 bits; a collision only costs a comparison, never a wrong match.
    return text, ((zlib.crc32(data) << 32) | zlib.adler32(data)) - (1 << 63)


def key_hashes(parameter_sets: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[tuple[str, int] | None]:
    """``key_hash`` of each parameter set, a field at a time: a preview hashes every window of
    its plan (35,040 for a year of 15 minutes), so each step is one pass of a C loop (``map``)
    over a whole column instead of Python code per window."""
    if not fields:
        return [key_hash(parameters, fields) for parameters in parameter_sets]
    missing = _MISSING
    # One memo for the call: a window's end is the next one's start, and a plan's windows have
    # more distinct values than _canonical_text's cache holds.
    memo: dict[str, str] = {}
    columns: list[list[str | None]] = []
    for name in fields:
        values = [parameters.get(name, missing) for parameters in parameter_sets]
        if all(type(value) is str for value in values):
            for value in dict.fromkeys(values).keys() - memo.keys():
                memo[value] = _canonical_text(value)
            columns.append(list(map(memo.__getitem__, values)))
        else:
            columns.append(
                [
                    None
                    if value is missing
                    else (_canonical_text(value) if type(value) is str else canonical(normalise(value)))
                    for value in values
                ]
            )
    rows = list(zip(*columns, strict=True))
    whole = not any(None in column for column in columns)
    texts = list(map("".join, rows if whole else [row for row in rows if None not in row]))
    data = [text.encode("utf-8", "surrogatepass") for text in texts]
    offset = 1 << 63
    # Two fast checksums make 64 bits, as in key_hash.
    keyed = [
        (text, ((high << 32) | low) - offset)
        for text, high, low in zip(texts, map(zlib.crc32, data), map(zlib.adler32, data), strict=True)
    ]
    if whole:
        return keyed  # type: ignore[return-value]
    found = iter(keyed)
    return [None if None in row else next(found) for row in rows]


def match_fields(windows: Sequence[Window], match_on: Sequence[str]) -> tuple[str, ...]:
    """The fields actually compared: secure parameters are left out, because ADF does not give
    their values back and we never hold them in clear."""
    if not windows:
        return tuple(match_on)
    sample = windows[0].parameters
    return tuple(name for name in match_on if not isinstance(sample.get(name), Secret))


def match_key(parameters: Mapping[str, Any], fields: Sequence[str]) -> Key | None:
    """The index key of a parameter set, or None when one of the fields is missing."""
    key: list[Hashable] = []
    for name in fields:
        if name not in parameters:
            return None
        key.append(normalise(parameters[name]))
    return tuple(key)


def _newest_first(run: Matchable) -> tuple[bool, datetime, bool, str]:
    # A run without runStart has not started yet, so it is newer than every started one.
    return (run.start is None, run.start or _EARLIEST, run.is_latest, run.run_id)


def latest_of(runs: Sequence[R]) -> R | None:
    """The window's latest run: the newest runStart, then within its recovery group the run
    ADF marks isLatest (a recovery run and the run it recovers share a runGroupId)."""
    if not runs:
        return None
    newest = max(runs, key=_newest_first)
    if newest.is_latest or newest.run_group_id is None:
        return newest
    group = [r for r in runs if r.run_group_id == newest.run_group_id and r.is_latest]
    return max(group, key=_newest_first) if group else newest


def group_by_window(windows: Sequence[Window], runs: Iterable[R], match_on: Sequence[str]) -> list[list[R]]:
    """For each window (same order), the runs whose matched parameters equal its own."""
    fields = match_fields(windows, match_on)
    slots: dict[Key, list[R]] = {}
    per_window: list[list[R]] = []
    for window in windows:
        key = match_key(window.parameters, fields)
        if key is None:
            per_window.append([])
            continue
        # Windows that share a key (a coarse match_on) share one list of runs.
        per_window.append(slots.setdefault(key, []))
    # The hot loop of a preview (200,000 runs): match_key inlined, strings straight to the cache.
    text, other = _normalise_text, normalise
    for run in runs:
        parameters = run.parameters
        try:
            run_key = tuple([text(v) if type(v) is str else other(v) for v in [parameters[f] for f in fields]])
        except KeyError:
            continue
        bucket = slots.get(run_key)
        if bucket is not None:
            bucket.append(run)
    return per_window


def latest_runs(windows: Sequence[Window], runs: Iterable[R], match_on: Sequence[str]) -> list[R | None]:
    """For each window (same order), its latest run or None."""
    latest: dict[int, R | None] = {}
    result: list[R | None] = []
    for bucket in group_by_window(windows, runs, match_on):
        # Shared buckets are resolved once, which keeps a coarse match_on linear too.
        if id(bucket) not in latest:
            latest[id(bucket)] = latest_of(bucket)
        result.append(latest[id(bucket)])
    return result
