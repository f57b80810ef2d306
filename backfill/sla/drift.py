"""Duration drift: is a pipeline slowing down towards a miss before one happens? (spec §13)

Over the last ``recent`` business dates before ``until`` (their completing runs), against the
``baseline`` business dates before those:

- drift is **detected** when the recent median duration exceeds the baseline median by more than
  ``threshold``;
- the **slope** is the Theil–Sen estimator over the recent dates (the median of the pairwise
  slopes, in ms per calendar day): one slow outlier cannot tilt it, unlike least squares;
- when the slope is positive, the **projected miss** is the first business date after ``until``
  on which the trend's duration, started at the recent runs' median start time, would end after
  that date's deadline; looked for over ``HORIZON`` only, so that a flat series with a hair of
  positive slope does not predict a miss in three years.

Too few dates with a completing run (fewer than half of either window, or fewer than 3) is "not
enough history": nothing is detected and nothing projected, never a false alarm.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from backfill.sla.calendar import at_local, deadline_utc, is_business_day, local_date, midnight_utc

HORIZON = timedelta(days=92)  # a quarter ahead: far enough to plan, near enough to trust a line
MIN_POINTS = 3


@dataclass(frozen=True)
class Point:
    """A business date with a completing run: its duration and its start after local midnight."""

    day: date
    duration_ms: float
    start_offset: timedelta | None = None


@dataclass(frozen=True)
class Drift:
    detected: bool
    baseline_median_ms: int | None
    recent_median_ms: int | None
    slope_ms_per_day: float | None
    projected_miss: date | None
    reason: str | None  # why nothing could be said ("not enough history: ..."), else None
    recent_dates: tuple[date, ...] = ()
    baseline_dates: tuple[date, ...] = ()
    intercept_ms: float | None = None  # the line's duration at day ordinal 0: trend_ms(day) reads it
    points: tuple[Point, ...] = ()  # the windows' dates with a completing run (for the chart)
    usual_start: timedelta | None = None  # the recent runs' median start after local midnight

    @property
    def change(self) -> float | None:
        """Recent median against the baseline's, as a fraction (0.34: 34 % longer)."""
        if self.baseline_median_ms in (None, 0) or self.recent_median_ms is None:
            return None
        return self.recent_median_ms / self.baseline_median_ms - 1

    def trend_ms(self, day: date) -> float | None:
        """The Theil–Sen line's duration on ``day``."""
        if self.slope_ms_per_day is None or self.intercept_ms is None:
            return None
        return self.intercept_ms + self.slope_ms_per_day * day.toordinal()

    def to_json(self) -> dict[str, object]:
        return {
            "detected": self.detected,
            "baseline_median_ms": self.baseline_median_ms,
            "recent_median_ms": self.recent_median_ms,
            "slope_ms_per_day": None if self.slope_ms_per_day is None else round(self.slope_ms_per_day, 1),
            "projected_miss": self.projected_miss.isoformat() if self.projected_miss else None,
            "reason": self.reason,
            "change": None if self.change is None else round(self.change, 4),
            "recent_dates": [d.isoformat() for d in self.recent_dates],
            "baseline_dates": [d.isoformat() for d in self.baseline_dates],
        }


def theil_sen(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Slope and intercept: the median of pairwise slopes, the median of ``y - slope * x``."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1 :] if x2 != x1]
    if not slopes:
        raise ValueError("Theil–Sen needs two points with different x")
    slope = statistics.median(slopes)
    return slope, statistics.median(y - slope * x for x, y in points)


def assess(
    recent_dates: Sequence[date],
    baseline_dates: Sequence[date],
    points: Sequence[Point],
    *,
    threshold: float,
    until: datetime,
    deadline: time,
    zone: ZoneInfo,
    days: frozenset[str],
) -> Drift:
    """Drift over the given windows of business dates; ``points`` are the dates with a completing run."""
    by_day = {p.day: p for p in points}
    recent = [by_day[d] for d in recent_dates if d in by_day]
    baseline = [by_day[d] for d in baseline_dates if d in by_day]
    need_recent = max(MIN_POINTS, math.ceil(len(recent_dates) / 2))
    need_baseline = max(MIN_POINTS, math.ceil(len(baseline_dates) / 2))
    used = tuple(sorted([*baseline, *recent], key=lambda p: p.day))
    if len(recent) < need_recent or len(baseline) < need_baseline:
        reason = (
            f"not enough history: {len(recent)} of the {len(recent_dates)} recent and {len(baseline)} of the "
            f"{len(baseline_dates)} baseline business dates have a completing run (at least {need_recent} and "
            f"{need_baseline} needed)"
        )
        return Drift(
            False,
            None,
            None,
            None,
            None,
            reason,
            recent_dates=tuple(recent_dates),
            baseline_dates=tuple(baseline_dates),
            points=used,
        )
    baseline_median = statistics.median(p.duration_ms for p in baseline)
    recent_median = statistics.median(p.duration_ms for p in recent)
    detected = recent_median > baseline_median * (1 + threshold)
    slope, intercept = theil_sen([(p.day.toordinal(), p.duration_ms) for p in recent])
    projected = None
    offsets = [p.start_offset for p in recent if p.start_offset is not None]
    start = timedelta(seconds=statistics.median(o.total_seconds() for o in offsets)) if offsets else None
    if slope > 0 and start is not None:
        projected = _first_miss(slope, intercept, start, until, deadline, zone, days)
    return Drift(
        detected,
        round(baseline_median),
        round(recent_median),
        slope,
        projected,
        None,
        intercept_ms=intercept,
        points=used,
        usual_start=start,
        recent_dates=tuple(recent_dates),
        baseline_dates=tuple(baseline_dates),
    )


def _first_miss(
    slope: float,
    intercept: float,
    start: timedelta,
    until: datetime,
    deadline: time,
    zone: ZoneInfo,
    days: frozenset[str],
) -> date | None:
    day = local_date(until, zone)
    if midnight_utc(day, zone) < until:
        day += timedelta(days=1)
    last = day + HORIZON
    while day <= last:
        if is_business_day(day, days):
            # The start as the wall clock shows it on that date (DST moves the UTC instant).
            local_start = datetime.combine(day, time(0)) + start
            began = at_local(local_start.date(), local_start.time(), zone)
            ends = began + timedelta(milliseconds=max(0.0, intercept + slope * day.toordinal()))
            if ends > deadline_utc(day, deadline, zone):
                return day
        day += timedelta(days=1)
    return None
