"""Reconciliation: which runs may stem from an intent (pure), and the runner's settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.errors import ConfigError
from backfill.factory.run import Run, RunStatus
from backfill.runner.machine import RunnerOptions
from backfill.runner.reconcile import DEFAULT_SKEW, candidates
from backfill.windows import Window

START = datetime(2026, 11, 3, 2, tzinfo=UTC)
INTENT = datetime(2026, 11, 3, 9, tzinfo=UTC)
WINDOW = Window(
    START, START + timedelta(minutes=15), {"windowStart": "2026-11-03T02:00:00Z", "feederRegion": "north", "attempt": 1}
)
FIELDS = ("windowStart", "feederRegion")

# The same window written the ways ADF may send it back, and other windows.
SAME = ["2026-11-03T02:00:00Z", "2026-11-03T02:00:00.0000000Z", "2026-11-03T02:00:00+00:00"]
OTHER = ["2026-11-03T02:15:00Z", "2026-11-03T03:00:00Z"]

runs = st.lists(
    st.builds(
        lambda i, start, region, offset: Run(
            run_id=f"r{i}",
            pipeline="p",
            status=RunStatus.IN_PROGRESS,
            parameters={"windowStart": start, "feederRegion": region},
            start=None if offset is None else INTENT + timedelta(seconds=offset),
        ),
        st.integers(0, 10_000),
        st.sampled_from(SAME + OTHER),
        st.sampled_from(["north", "south"]),
        st.one_of(st.none(), st.integers(-600, 600)),
    ),
    max_size=12,
    unique_by=lambda r: r.run_id,
)


@given(runs, st.sets(st.sampled_from([f"r{i}" for i in range(20)]), max_size=3))
def test_candidates_are_the_windows_runs_started_after_the_intent(found: list[Run], exclude: set[str]) -> None:
    chosen = candidates(found, WINDOW, FIELDS, INTENT, exclude=frozenset(exclude))
    expected = {
        r.run_id
        for r in found
        if r.parameters["windowStart"] in SAME
        and r.parameters["feederRegion"] == "north"
        and r.run_id not in exclude
        and (r.start is None or r.start >= INTENT - DEFAULT_SKEW)
    }
    assert {r.run_id for r in chosen} == expected
    started = [r.start for r in chosen if r.start is not None]
    assert started == sorted(started)
    assert all(r.start is not None for r in chosen[: len(started)])  # queued runs (no start) last


def test_a_window_without_the_matched_parameter_matches_nothing() -> None:
    run = Run("r1", "p", RunStatus.QUEUED, {"windowStart": SAME[0], "feederRegion": "north"}, start=INTENT)
    assert candidates([run], Window(START, START, {}), FIELDS, INTENT) == []


def test_runner_settings_from_the_environment() -> None:
    options = RunnerOptions.from_env({"BACKFILL_RECONCILE_SETTLE": "2s", "BACKFILL_CLAIM_LEASE": "5m"})
    assert (options.settle, options.lease) == (timedelta(seconds=2), timedelta(minutes=5))
    assert RunnerOptions.from_env({}) == RunnerOptions()
    with pytest.raises(ConfigError, match="BACKFILL_RECONCILE_SETTLE 'soon' is not a duration"):
        RunnerOptions.from_env({"BACKFILL_RECONCILE_SETTLE": "soon"})
