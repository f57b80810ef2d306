"""UTC parsing and formatting, and durations like ``15m``.

Time is UTC everywhere. A timestamp without an offset is refused, never guessed (the spec, §3).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from backfill.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# ADF sends 7 fractional digits (2018-06-16T00:37:44.6257014Z); Python parses at most 6.
_FRACTION = re.compile(r"(\.\d{6})\d+")


class NaiveTimestamp(ValueError):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


def require_utc(value: datetime, what: str | None = None) -> datetime:
    """Return ``value`` converted to UTC; refuse a naive datetime."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        label = what or f"timestamp {value.isoformat()}"
        raise NaiveTimestamp(f"{label} has no UTC offset; write it with Z or +00:00")
    return value.astimezone(UTC)


def parse_utc(text: str, what: str = "timestamp") -> datetime:
    """Parse an ISO 8601 timestamp that carries an offset; raise NaiveTimestamp or ValueError."""
    try:
        # Python 3.11 reads Z and any number of fractional digits (truncated to 6, as below):
        # the common, clean spelling needs no regex. Anything else takes the careful path.
        value = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        pass
    else:
        if value.tzinfo is UTC:
            return value
        if value.tzinfo is not None and value.utcoffset() is not None:
            return value.astimezone(UTC)
    raw = text.strip()
    cleaned = _FRACTION.sub(r"\1", raw)
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{what} {raw!r} is not an ISO 8601 timestamp (e.g. 2026-11-03T02:00:00Z)") from None
    return require_utc(value, f"{what} {raw!r}")


def parse_utc_option(text: str, option: str) -> datetime:
    """Parse a command-line timestamp; bad input is a usage error (exit 2)."""
    try:
        return parse_utc(text, option)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_adf_time(text: str | None) -> datetime | None:
    """ADF's timestamps: always UTC with Z, up to 7 fractional digits; None stays None."""
    if text is None or text == "":
        return None
    return parse_utc(text, "ADF timestamp")


def format_utc(value: datetime | None, *, precise: bool = False) -> str:
    """``2026-11-03T02:00:00Z``; with ``precise``, microseconds when there are any."""
    if value is None:
        return ""
    if value.tzinfo is not UTC:
        value = require_utc(value)
    if value.year < 1000:
        # strftime does not zero-pad such years; keep its spelling for them.
        if precise and value.microsecond:
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    # isoformat is several times faster than strftime; an aware UTC value ends with "+00:00" and
    # shows microseconds exactly when there are any.
    if value.microsecond and not precise:
        value = value.replace(microsecond=0)
    return value.isoformat()[:-6] + "Z"


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``15m``, ``1h``, ``90s``, ``2d``, ``500ms``; a positive whole number and one unit."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{what} {text!r} is not a duration like 15m, 1h, 90s or 2d")
    amount, unit = match.groups()
    value = int(amount) * _UNITS[unit]
    if value <= timedelta(0):
        raise ValueError(f"{what} {text!r} must be positive")
    return value


def format_duration(value: timedelta | None) -> str:
    """A short human form: ``45m``, ``1h05m``, ``12.3s``."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
