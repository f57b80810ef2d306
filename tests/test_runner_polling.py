"""The adaptive poll schedule, as pure code: no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.factory.run import Run, RunStatus
from backfill.runner.polling import PollPolicy, next_poll, policy_for, schedule, usual_duration

MINUTE = timedelta(minutes=1)


def _run(i: int, status: RunStatus, minutes: float | None) -> Run:
    start = datetime(2026, 11, 3, tzinfo=UTC) + timedelta(hours=i)
    duration = timedelta(minutes=minutes) if minutes is not None else None
    return Run(run_id=f"r{i}", pipeline="p", status=status, start=start, duration=duration)


def test_a_sixty_minute_run_costs_a_handful_of_calls_and_is_seen_within_a_tenth() -> None:
    policy = PollPolicy(usual=60 * MINUTE)
    for minutes, calls in ((60, 2), (62, 3), (75, 5), (90, 7)):
        polls = schedule(policy, minutes * MINUTE)
        lag = polls[-1] - minutes * MINUTE
        assert len(polls) == calls, (minutes, polls)
        assert lag <= minutes * MINUTE / 10


def test_the_schedule_looks_early_then_at_the_usual_duration() -> None:
    polls = schedule(PollPolicy(usual=60 * MINUTE), 61 * MINUTE)
    assert polls == [6 * MINUTE, 60 * MINUTE, 66 * MINUTE]


def test_a_fast_failure_is_seen_at_a_tenth_of_the_usual_duration() -> None:
    assert schedule(PollPolicy(usual=60 * MINUTE), 2 * MINUTE) == [6 * MINUTE]


def test_a_fixed_interval_is_kept() -> None:
    polls = schedule(policy_for(timedelta(seconds=30), usual=60 * MINUTE), 2 * MINUTE)
    assert polls == [timedelta(seconds=30 * n) for n in range(1, 5)]


def test_without_history_polling_starts_at_the_floor_and_grows() -> None:
    polls = schedule(PollPolicy(), 60 * MINUTE)
    assert polls[:3] == [timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=3)]
    assert len(polls) < 45
    assert polls[-1] - 60 * MINUTE <= 15 * MINUTE


def test_the_floor_shrinks_with_compressed_emulator_durations() -> None:
    policy = PollPolicy(usual=timedelta(milliseconds=200))
    assert policy.effective_floor == timedelta(milliseconds=20)
    polls = schedule(policy, timedelta(milliseconds=250))
    assert polls[0] == timedelta(milliseconds=20)
    assert polls[-1] - timedelta(milliseconds=250) <= timedelta(milliseconds=25)


def test_a_resumed_run_falls_into_the_same_schedule() -> None:
    policy = PollPolicy(usual=60 * MINUTE)
    assert next_poll(policy, 30 * MINUTE) == 60 * MINUTE
    assert next_poll(policy, 100 * MINUTE) == 110 * MINUTE


def test_gaps_stop_growing_at_the_ceiling() -> None:
    policy = PollPolicy(usual=10 * 60 * MINUTE)
    assert next_poll(policy, 20 * 60 * MINUTE) - 20 * 60 * MINUTE == policy.ceiling


@given(
    usual_s=st.floats(min_value=0.05, max_value=6 * 3600),
    factor=st.floats(min_value=1.0, max_value=20.0),
)
def test_a_run_at_least_as_long_as_usual_is_seen_within_a_tenth_of_its_duration(usual_s: float, factor: float) -> None:
    policy = PollPolicy(usual=timedelta(seconds=usual_s))
    duration = timedelta(seconds=usual_s * factor)
    polls = schedule(policy, duration)
    assert polls == sorted(polls) and len(set(polls)) == len(polls)
    assert polls[-1] >= duration
    assert polls[-1] - duration <= max(duration / 10, policy.effective_floor) + timedelta(microseconds=1)
    assert len(polls) <= 4 + 40 * factor  # bounded: growth of 10% per poll, then the ceiling


@given(elapsed_s=st.floats(min_value=0, max_value=10 * 86400), usual_s=st.one_of(st.none(), st.floats(0.01, 86400)))
def test_the_next_poll_is_always_in_the_future(elapsed_s: float, usual_s: float | None) -> None:
    usual = timedelta(seconds=usual_s) if usual_s is not None else None
    elapsed = timedelta(seconds=elapsed_s)
    assert next_poll(PollPolicy(usual=usual), elapsed) > elapsed


def test_usual_duration_is_the_median_of_recent_succeeded_runs() -> None:
    runs = [_run(i, RunStatus.SUCCEEDED, m) for i, m in enumerate([10, 30, 20])]
    runs += [_run(10, RunStatus.FAILED, 500), _run(11, RunStatus.SUCCEEDED, None)]
    assert usual_duration(runs) == 20 * MINUTE
    assert usual_duration(runs[:2]) == 20 * MINUTE  # the mean of the two middle ones
    assert usual_duration([_run(0, RunStatus.FAILED, 5)]) is None


def test_usual_duration_follows_the_newest_runs() -> None:
    old = [_run(i, RunStatus.SUCCEEDED, 10) for i in range(30)]
    new = [_run(100 + i, RunStatus.SUCCEEDED, 40) for i in range(20)]
    assert usual_duration(old + new) == 40 * MINUTE


@pytest.mark.parametrize("poll", ["auto", None])
def test_auto_poll_adapts(poll: str | None) -> None:
    assert policy_for(poll, 5 * MINUTE) == PollPolicy(usual=5 * MINUTE)
