"""Points in time written relative to now: ``now``, ``-5h``, ``yesterday 02:00Z``, ``-2d 00:00Z``.

Scenario files and example plans use them so that they meet each other on any day. Two kinds:

- an *offset* from the instant ``now`` (``now``, ``-5h``, ``+30m``, ``-1d``): ``now`` plus it;
- a *day* form (``today``, ``yesterday``, ``tomorrow`` or ``-Nd``/``+Nd``, then a UTC time of day
  ``HH:MM[:SS]Z``): midnight UTC of that day plus the time. A bare ``yesterday`` is not one: it
  does not say which hour.
  ``-2d`` alone is an offset; ``-2d 00:00Z`` is a day form.

The time of day must say ``Z``: a local time of day is refused like any naive timestamp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from backfill.timeutil import parse_duration, require_utc

_OFFSET = re.compile(r"^([+-])\s*(\d+\s*(?:ms|s|m|h|d|w))$")
_DAY = re.compile(r"^(today|yesterday|tomorrow|[+-]\d+d)\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(Z|\+00:00)?$")
_DAY_WORDS = {"today": 0, "yesterday": -1, "tomorrow": 1}

EXAMPLES = "now, -5h, +30m, yesterday 02:00Z, today 00:00Z, -2d 06:00Z"
# The day forms as a JSON Schema pattern (ECMA-262 and Python alike), for `plan schema`: an editor
# then accepts what the loader accepts. ASCII digits only, and hours and minutes in range.
DAY_FORM_PATTERN = (
    r"^\s*(today|yesterday|tomorrow|[+-][0-9]+d)\s+([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?(Z|\+00:00)\s*$"
)


class RelativeTimeError(ValueError):
    """Text that looks relative but is not a valid relative time (the message says why)."""


@dataclass(frozen=True)
class RelativeTime:
    """A point in time relative to a reference instant; ``text`` is how it was written."""

    text: str
    offset: timedelta  # from now (``day`` None) or from midnight UTC of the day ``day`` days away
    day: int | None = None

    @property
    def day_aligned(self) -> bool:
        return self.day is not None

    def resolve(self, now: datetime) -> datetime:
        now = require_utc(now, "now")
        if self.day is None:
            return now + self.offset
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + timedelta(days=self.day) + self.offset


def parse_relative(text: str) -> RelativeTime | None:
    """The relative time ``text`` writes; None when it is not written as one (an absolute time,
    say); RelativeTimeError when it is one but malformed (a local time of day, 25:00)."""
    value = " ".join(text.strip().split())
    if value == "now":
        return RelativeTime(value, timedelta(0))
    offset = _OFFSET.match(value)
    if offset:
        amount = parse_duration(offset.group(2).replace(" ", ""))
        return RelativeTime(value, -amount if offset.group(1) == "-" else amount)
    day = _DAY.match(value)
    if day is None:
        return None  # the caller says what it expects (a bare "yesterday" names no time of day)
    word, hours, minutes, seconds, zone = day.groups()
    days = _DAY_WORDS[word] if word in _DAY_WORDS else int(word[:-1])
    if zone is None:
        raise RelativeTimeError(
            f"{text!r}: the time of day has no UTC offset; write it with Z, like {word} {int(hours):02d}:{minutes}Z"
        )
    if int(hours) > 23 or int(minutes) > 59 or int(seconds or 0) > 59:
        raise RelativeTimeError(f"{text!r}: {hours}:{minutes} is not a time of day")
    return RelativeTime(value, timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds or 0)), days)
