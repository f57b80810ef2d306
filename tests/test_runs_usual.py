"""The usual duration and the outlier rule (SPEC §12), and the --since/--until spellings, on plain data."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.errors import UsageError
from backfill.factory.run import RunStatus
from backfill.spans import parse_point, parse_range
from backfill.usual import (
    LOOKBACK,
    MIN_SCOPED,
    MIN_USUAL,
    UsualIndex,
    elapsed_ms,
    is_outlier,
    is_window_bound,
    scope_fields,
    usual_of,
)

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
DURATIONS = st.lists(st.integers(1, 10_000_000), max_size=60)


@dataclass(frozen=True)
class FakeRun:
    run_id: str
    duration: timedelta | None
    start: datetime | None = NOW - timedelta(days=1)
    end: datetime | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.SUCCEEDED
    last_updated: datetime | None = None


def _reference(durations: list[int], elapsed: int) -> bool:
    """The rule as the spec writes it, computed the plain way."""
    if len(durations) < MIN_USUAL:
        return False
    median = statistics.median(durations)
    mad = max(statistics.median([abs(d - median) for d in durations]), 0.1 * median)
    return elapsed > median + 5 * mad and elapsed > max(durations)


@given(DURATIONS, st.integers(0, 100_000_000))
def test_the_rule_is_the_spec_s(durations: list[int], elapsed: int) -> None:
    usual = usual_of(durations)
    assert (usual is None) == (len(durations) < MIN_USUAL)
    assert is_outlier(elapsed, usual) == _reference(durations, elapsed)


@given(st.lists(st.integers(1, 10_000_000), max_size=MIN_USUAL - 1), st.integers(0, 10**12))
def test_fewer_than_five_usual_runs_is_no_usual_duration_and_never_an_outlier(
    durations: list[int], elapsed: int
) -> None:
    assert usual_of(durations) is None
    assert not is_outlier(elapsed, None)


@given(st.integers(1, 10_000_000), st.integers(MIN_USUAL, 50), st.integers(0, 10**9))
def test_all_equal_runs_mad_zero_is_floored_at_a_tenth_of_the_median(value: int, count: int, elapsed: int) -> None:
    usual = usual_of([value] * count)
    assert usual is not None and usual.mad_ms == pytest.approx(0.1 * value)
    # Just over the longest is not enough: it must pass median + 5 × (10 % of the median).
    if abs(elapsed - 1.5 * value) > 1e-6:
        assert is_outlier(elapsed, usual) == (elapsed > 1.5 * value)


@given(st.lists(st.integers(60_000, 120_000), min_size=MIN_USUAL, max_size=40), st.integers(10, 1000))
def test_a_single_huge_usual_run_raises_the_bar_to_itself(durations: list[int], factor: int) -> None:
    huge = max(durations) * factor
    usual = usual_of([*durations, huge])
    assert usual is not None and usual.longest_ms == huge
    assert not is_outlier(huge, usual)  # not longer than the longest usual run
    assert is_outlier(huge + 1, usual) == (huge + 1 > usual.limit_ms)


@given(st.lists(st.integers(60_000, 120_000), min_size=MIN_USUAL, max_size=40), st.integers(1, 5000))
def test_an_in_progress_run_is_judged_by_the_time_since_it_started(durations: list[int], minutes: int) -> None:
    runs = [FakeRun(f"r{i}", timedelta(milliseconds=d)) for i, d in enumerate(durations)]
    index = UsualIndex(runs, NOW)
    running = FakeRun("stuck", None, start=NOW - timedelta(minutes=minutes), status=RunStatus.IN_PROGRESS)
    verdict = index.judge(running)
    assert verdict.elapsed_ms == minutes * 60_000
    assert verdict.outlier == _reference(durations, minutes * 60_000)


def test_a_run_is_never_its_own_usual_run() -> None:
    runs = [FakeRun(f"r{i}", timedelta(minutes=10)) for i in range(20)]
    runs.append(FakeRun("long", timedelta(hours=5)))
    verdict = UsualIndex(runs, NOW).judge(runs[-1])
    assert verdict.outlier and verdict.usual is not None and verdict.usual.runs == 20
    assert verdict.usual_ms == 600_000


@given(st.lists(st.integers(1, 1_000_000), min_size=MIN_USUAL + 1, max_size=40), st.data())
def test_leaving_the_judged_run_out_is_exact(durations: list[int], data: st.DataObject) -> None:
    runs = [FakeRun(f"r{i}", timedelta(milliseconds=d)) for i, d in enumerate(durations)]
    judged = data.draw(st.sampled_from(runs))
    others = [d for r, d in zip(runs, durations, strict=True) if r is not judged]
    verdict = UsualIndex(runs, NOW).judge(judged)
    expected = usual_of(others)
    assert verdict.usual is not None and expected is not None
    assert verdict.usual_ms == round(expected.median_ms) and verdict.usual.runs == expected.runs
    assert verdict.outlier == is_outlier(verdict.elapsed_ms, expected)


def test_old_failed_and_unfinished_runs_are_not_usual() -> None:
    runs = [FakeRun(f"r{i}", timedelta(minutes=10)) for i in range(6)]
    runs.append(FakeRun("old", timedelta(minutes=1), start=NOW - LOOKBACK - timedelta(minutes=1)))
    runs.append(FakeRun("future", timedelta(minutes=1), start=NOW + timedelta(minutes=1)))
    runs.append(FakeRun("no-duration", None))
    index = UsualIndex(runs, NOW)
    assert len(index) == 6


def test_the_scope_is_the_matched_parameters_minus_the_window_bounds_when_it_holds_ten() -> None:
    def run(i: int, region: str, minutes: int) -> FakeRun:
        start = f"2026-11-0{1 + i % 2}T00:{i % 60:02d}:00Z"
        return FakeRun(
            f"{region}{i}", timedelta(minutes=minutes), parameters={"windowStart": start, "feederRegion": region}
        )

    north = [run(i, "north", 10) for i in range(MIN_SCOPED)]
    south = [run(i, "south", 60) for i in range(MIN_SCOPED - 1)]
    index = UsualIndex([*north, *south], NOW, match_on=["windowStart", "feederRegion"])
    probe_north = FakeRun(
        "p1",
        None,
        start=NOW - timedelta(minutes=40),
        parameters={"windowStart": "2026-11-03T00:00:00Z", "feederRegion": "north"},
    )
    verdict = index.judge(probe_north)
    assert verdict.usual is not None and verdict.usual.scope == {"feederRegion": "north"}
    assert verdict.outlier  # 40 minutes against north's 10
    # South has nine: not enough, the whole pipeline's usual applies.
    probe_south = FakeRun(
        "p2",
        None,
        start=NOW - timedelta(minutes=40),
        parameters={"windowStart": "2026-11-03T00:00:00Z", "feederRegion": "south"},
    )
    whole = index.judge(probe_south)
    assert whole.usual is not None and whole.usual.scope == {} and whole.usual.runs == 19


def test_window_bounds_and_scope_fields() -> None:
    assert is_window_bound("2026-11-03T00:00:00.1234567Z") and is_window_bound("2026-11-03")
    assert not is_window_bound("north") and not is_window_bound("2026")
    params = {"windowStart": "2026-11-03T00:00:00Z", "businessDate": "2026-11-03", "feederRegion": "north", "n": "5"}
    assert scope_fields(params, None) == ("feederRegion", "n")
    assert scope_fields(params, ["windowStart", "feederRegion"]) == ("feederRegion",)


def test_elapsed_of_a_cancelled_run_stops_at_its_last_transition() -> None:
    cancelled = FakeRun(
        "c", None, start=NOW - timedelta(hours=2), status=RunStatus.CANCELLED, last_updated=NOW - timedelta(hours=1)
    )
    assert elapsed_ms(cancelled, NOW) == 3_600_000
    assert elapsed_ms(FakeRun("q", None, start=None), NOW) is None


# --- --since / --until ------------------------------------------------------------------------------


@given(st.integers(1, 10_000), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_spans_count_back_from_now(amount: int, unit: str) -> None:
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_point(f"{amount}{unit}", "--since", NOW) == NOW - timedelta(seconds=amount * size)


@given(st.dates())
def test_a_date_is_its_midnight_utc(day: Any) -> None:
    assert parse_point(day.isoformat(), "--since", NOW) == datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_timestamps_and_relative_forms() -> None:
    assert parse_point("2026-11-03T02:00:00Z", "--since", NOW) == datetime(2026, 11, 3, 2, tzinfo=UTC)
    assert parse_point("2026-11-03T03:00:00+01:00", "--since", NOW) == datetime(2026, 11, 3, 2, tzinfo=UTC)
    assert parse_point("yesterday 02:00Z", "--since", NOW) == datetime(2026, 11, 2, 2, tzinfo=UTC)
    assert parse_point("-90m", "--since", NOW) == NOW - timedelta(minutes=90)


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2026-11-03T02:00:00", None, "--since '2026-11-03T02:00:00' has no UTC offset; write it with Z or +00:00"),
        (
            "6 hours",
            None,
            "--since '6 hours' is not a time: write one like 2026-11-03T02:00:00Z, 2026-11-03, 90m, 6h, 2d",
        ),
        ("0m", None, "--since '0m' must be positive"),
        ("2026-13-03", None, "--since '2026-13-03' is not a date (e.g. 2026-11-03)"),
        ("2h", "6h", "--until must be later than --since"),
        (None, "yesterday 02:00", "--until 'yesterday 02:00': the time of day has no UTC offset"),
    ],
)
def test_bad_times_are_one_usage_line(since: str | None, until: str | None, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_range(since, until, NOW)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_default_since() -> None:
    assert parse_range(None, None, NOW, default_since=timedelta(days=1)).since == NOW - timedelta(days=1)
    assert parse_range(None, "1h", NOW).since is None
