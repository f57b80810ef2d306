"""Points in time as ``--since``/``--until`` take them (SPEC §12): every command, one parser.

Three spellings, all UTC:

- a timestamp with an offset, ``2026-11-03T02:00:00Z`` (a naive one is refused, as everywhere);
- a date, ``2026-11-03``, meaning its 00:00Z;
- a span back from now, ``90m``, ``6h``, ``2d`` (``s``, ``m``, ``h``, ``d``, ``w``), and the
  relative forms scenarios and plans already use (``-5h``, ``yesterday 02:00Z``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from backfill.errors import UsageError
from backfill.relative_time import RelativeTimeError, parse_relative
from backfill.timeutil import parse_duration, parse_utc, require_utc

_SPAN = re.compile(r"^\s*\d+\s*(?:s|m|h|d|w)\s*$")
_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
EXAMPLES = "2026-11-03T02:00:00Z, 2026-11-03, 90m, 6h, 2d"


def parse_point(text: str, what: str, now: datetime) -> datetime:
    """The instant ``text`` names, spans counted back from ``now``; ValueError saying what is
    expected (a naive timestamp says it has no offset)."""
    now = require_utc(now, "now")
    if _SPAN.match(text):
        return now - parse_duration(text.strip(), what)
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"{what} {text.strip()!r} is not a date (e.g. 2026-11-03)") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        relative = parse_relative(text)
    except RelativeTimeError as exc:
        raise ValueError(f"{what} {exc}") from None
    if relative is not None:
        return relative.resolve(now)
    try:
        return parse_utc(text, what)
    except ValueError as exc:
        if "no UTC offset" in str(exc):
            raise
        raise ValueError(f"{what} {text.strip()!r} is not a time: write one like {EXAMPLES}") from None


@dataclass(frozen=True)
class TimeRange:
    """``[since, until)``; ``until`` None is open (up to now and beyond)."""

    since: datetime | None
    until: datetime | None

    def holds(self, value: datetime | None) -> bool:
        if value is None:
            return False
        return (self.since is None or value >= self.since) and (self.until is None or value < self.until)


def parse_range(
    since: str | None, until: str | None, now: datetime, *, default_since: timedelta | None = None
) -> TimeRange:
    """The command line's ``--since``/``--until``: bad input is a usage error (exit 2), and so is
    an ``--until`` that is not later than ``--since``."""
    try:
        start = parse_point(since, "--since", now) if since else None
        end = parse_point(until, "--until", now) if until else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if start is None and default_since is not None:
        start = now - default_since
    if start is not None and end is not None and end <= start:
        raise UsageError("--until must be later than --since")
    return TimeRange(start, end)
