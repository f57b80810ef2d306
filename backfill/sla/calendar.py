"""Business dates and their deadlines in UTC, each computed in its own offset (spec §13).

A 06:00 deadline in New York is 11:00Z in winter and 10:00Z in summer: the offset is the zone's
on that date, never one offset for the whole range. A deadline in the hour a spring change skips
(02:30 on the day clocks jump from 02:00 to 03:00) means the instant the clock would have shown
it, i.e. 03:30 after the jump; in the hour an autumn change repeats, the first of the two: the
earlier, stricter reading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from backfill.sla.model import WEEKDAYS

_DATE = re.compile(r"^\s*(\d{4})-?(\d{2})-?(\d{2})(?:$|[T\s])")


def at_local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of ``clock`` on ``day`` in ``zone`` (fold 0: see the module's note)."""
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def deadline_utc(day: date, deadline: time, zone: ZoneInfo) -> datetime:
    return at_local(day, deadline, zone)


def midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    return at_local(day, time(0), zone)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def dates_in(since: datetime, until: datetime, zone: ZoneInfo) -> Iterator[date]:
    """Calendar dates whose local midnight falls in ``[since, until)``."""
    day = local_date(since, zone)
    if midnight_utc(day, zone) < since:
        day += timedelta(days=1)
    while midnight_utc(day, zone) < until:
        yield day
        day += timedelta(days=1)


def is_business_day(day: date, days: frozenset[str]) -> bool:
    return WEEKDAYS[day.weekday()] in days


def business_dates_before(until: datetime, zone: ZoneInfo, days: frozenset[str], count: int) -> list[date]:
    """The ``count`` business dates whose local midnight is before ``until``, oldest first."""
    found: list[date] = []
    day = local_date(until, zone)
    if midnight_utc(day, zone) >= until:
        day -= timedelta(days=1)
    while len(found) < count:
        if is_business_day(day, days):
            found.append(day)
        day -= timedelta(days=1)
    return found[::-1]


def business_date_of(value: Any) -> date | None:
    """The business date a run's parameter carries: ``2026-11-03``, ``20261103`` or a timestamp
    whose date part is the business date (``2026-11-03T00:00:00Z``); None for anything else."""
    if not isinstance(value, str):
        return None
    match = _DATE.match(value)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def local_text(instant: datetime | None, zone: ZoneInfo, day: date | None = None) -> str:
    """``05:12 EST`` (with the date when it is not ``day``): how a reader in the zone says it."""
    if instant is None:
        return ""
    local = instant.astimezone(zone)
    clock = local.strftime("%H:%M %Z")
    return clock if day is not None and local.date() == day else local.strftime("%Y-%m-%d ") + clock
