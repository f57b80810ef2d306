"""Duration drift on synthetic series (spec §13): flat with noise is no drift, a step is, a ramp
has its Theil–Sen slope and a projected miss, and too few dates never raise an alarm."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backfill.sla.calendar import business_dates_before, deadline_utc, is_business_day
from backfill.sla.drift import Drift, Point, assess, theil_sen

ZONE = ZoneInfo("America/New_York")
DAYS = frozenset({"Mon", "Tue", "Wed", "Thu", "Fri"})
UNTIL = datetime(2026, 12, 1, 16, tzinfo=UTC)
DATES = business_dates_before(UNTIL, ZONE, DAYS, 30)
BASELINE, RECENT = DATES[:20], DATES[20:]
START = timedelta(hours=3)  # runs start at 03:00 New York; the 06:00 deadline leaves three hours
MINUTE = 60_000.0
NOISE = st.floats(min_value=-0.05, max_value=0.05)


def drift(durations: dict[date, float], *, threshold: float = 0.15) -> Drift:
    points = [Point(day, ms, START) for day, ms in durations.items()]
    return assess(RECENT, BASELINE, points, threshold=threshold, until=UNTIL, deadline=time(6), zone=ZONE, days=DAYS)


@settings(max_examples=150)
@given(st.floats(min_value=5, max_value=90), st.lists(NOISE, min_size=30, max_size=30))
def test_flat_with_noise_is_no_drift_and_no_miss(base_minutes: float, noise: list[float]) -> None:
    series = {day: base_minutes * MINUTE * (1 + n) for day, n in zip(DATES, noise, strict=True)}
    found = drift(series)
    assert not found.detected
    assert found.reason is None and found.projected_miss is None
    assert abs(found.slope_ms_per_day or 0) < base_minutes * MINUTE * 0.1 / 7


@settings(max_examples=150)
@given(
    st.floats(min_value=5, max_value=60),
    st.floats(min_value=0.3, max_value=1.5),
    st.lists(NOISE, min_size=30, max_size=30),
)
def test_a_step_up_is_drift(base_minutes: float, step: float, noise: list[float]) -> None:
    series = {
        day: base_minutes * MINUTE * (1 + (step if day in RECENT else 0)) * (1 + n)
        for day, n in zip(DATES, noise, strict=True)
    }
    found = drift(series)
    assert found.detected
    assert found.change is not None and found.change > 0.15


@settings(max_examples=150)
@given(st.floats(min_value=20, max_value=60), st.floats(min_value=0.5, max_value=6))
def test_a_ramp_has_its_slope_and_the_first_date_past_the_deadline(base_minutes: float, per_day: float) -> None:
    origin = DATES[0]
    series = {day: (base_minutes + per_day * (day - origin).days) * MINUTE for day in DATES}
    last = series[DATES[-1]]
    assume(last < 170 * MINUTE)  # still meeting the deadline (180 minutes from the start) today
    found = drift(series)
    assert found.slope_ms_per_day is not None
    assert abs(found.slope_ms_per_day - per_day * MINUTE) < 1e-6 * MINUTE
    miss = found.projected_miss
    if miss is None:
        # Not within the horizon: the trend still fits the deadline 92 days on.
        assert (found.trend_ms(DATES[-1] + timedelta(days=92)) or 0) <= 180 * MINUTE + 1
        return
    assert miss > DATES[-1] and is_business_day(miss, DAYS)
    assert _ends(found, miss) > deadline_utc(miss, time(6), ZONE)
    day = DATES[-1] + timedelta(days=1)
    while day < miss:
        if is_business_day(day, DAYS):
            assert _ends(found, day) <= deadline_utc(day, time(6), ZONE), f"{day} would already miss"
        day += timedelta(days=1)


def _ends(found: Drift, day: date) -> datetime:
    start = datetime.combine(day, time(0), tzinfo=ZONE).replace(hour=3).astimezone(UTC)
    return start + timedelta(milliseconds=found.trend_ms(day) or 0)


@given(
    st.integers(min_value=0, max_value=4), st.integers(min_value=0, max_value=30), st.floats(min_value=1, max_value=10)
)
def test_too_few_dates_is_not_enough_history_never_an_alarm(recent: int, baseline: int, jump: float) -> None:
    series = {day: 30 * MINUTE for day in BASELINE[-baseline:]} if baseline else {}
    series |= {day: 30 * MINUTE * jump for day in RECENT[:recent]}
    assume(recent < 5 or baseline < 10)
    found = drift(series)
    assert not found.detected and found.projected_miss is None
    assert found.reason is not None and found.reason.startswith("not enough history: ")
    assert (found.baseline_median_ms, found.recent_median_ms, found.slope_ms_per_day) == (None, None, None)


def test_theil_sen_ignores_one_wild_point() -> None:
    points = [(float(x), 100.0 + 2 * x) for x in range(10)]
    points[4] = (4.0, 10_000.0)
    slope, intercept = theil_sen(points)
    assert slope == 2.0 and intercept == 100.0


def test_the_drift_json_keys() -> None:
    found = drift({day: 40 * MINUTE for day in DATES})
    assert found.to_json() | {"recent_dates": [], "baseline_dates": []} == {
        "detected": False,
        "baseline_median_ms": 2_400_000,
        "recent_median_ms": 2_400_000,
        "slope_ms_per_day": 0.0,
        "projected_miss": None,
        "reason": None,
        "change": 0.0,
        "recent_dates": [],
        "baseline_dates": [],
    }
