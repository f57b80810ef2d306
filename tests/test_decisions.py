"""The decision table of SPEC §4, row by row, and the precedence between several checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.checks.base import CheckResult, CheckStatus
from backfill.decisions import Decision, decide, describe_run, needs_checks
from backfill.factory.run import Run, RunStatus
from backfill.windows import Window

T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(minutes=15), {"windowStart": "2026-11-03T02:00:00Z"})
BEFORE = T0 - timedelta(days=1)  # a horizon older than the window
AFTER = T0 + timedelta(days=1)  # a horizon newer than the window


def latest(status: RunStatus, message: str = "") -> Run:
    return Run(run_id="run-1", pipeline="P", status=status, start=T0 + timedelta(minutes=20), message=message)


def result(status: CheckStatus, name: str = "sink") -> CheckResult:
    return CheckResult(name, status, f"{status.value} reason")


@pytest.mark.parametrize(
    ("status", "check", "expected"),
    [
        (RunStatus.SUCCEEDED, None, Decision.SKIP_SUCCEEDED),
        (RunStatus.QUEUED, None, Decision.SKIP_IN_PROGRESS),
        (RunStatus.IN_PROGRESS, None, Decision.SKIP_IN_PROGRESS),
        (RunStatus.CANCELING, None, Decision.SKIP_IN_PROGRESS),
        (RunStatus.FAILED, CheckStatus.CLEAN, Decision.RERUN),
        (RunStatus.CANCELLED, CheckStatus.CLEAN, Decision.RERUN),
        (None, CheckStatus.CLEAN, Decision.RUN),
        (RunStatus.FAILED, CheckStatus.COMPLETE, Decision.SKIP_COMPLETE_IN_SINK),
        (None, CheckStatus.COMPLETE, Decision.SKIP_COMPLETE_IN_SINK),
        (RunStatus.CANCELLED, CheckStatus.PARTIAL, Decision.BLOCKED_PARTIAL),
        (None, CheckStatus.PARTIAL, Decision.BLOCKED_PARTIAL),
        (RunStatus.FAILED, CheckStatus.ERROR, Decision.BLOCKED_CHECK_ERROR),
        (None, CheckStatus.ERROR, Decision.BLOCKED_CHECK_ERROR),
        (RunStatus.FAILED, None, Decision.RERUN),
        (RunStatus.CANCELLED, None, Decision.RERUN),
    ],
)
def test_table(status: RunStatus | None, check: CheckStatus | None, expected: Decision) -> None:
    run = latest(status) if status else None
    results = [result(check)] if check else []
    assert decide(WINDOW, run, results, horizon=AFTER if check else BEFORE)[0] == expected


def test_no_run_no_check_inside_history_runs() -> None:
    decision, reason = decide(WINDOW, None, [], horizon=BEFORE)
    assert decision == Decision.RUN
    assert reason == "no run in history; no sink check configured"


def test_no_run_no_check_before_horizon_is_unknown() -> None:
    decision, reason = decide(WINDOW, None, [], horizon=AFTER)
    assert decision == Decision.BLOCKED_UNKNOWN
    assert reason == (
        "no run in history, but the window starts before the history we hold "
        "(history held from 2026-11-04T02:00:00Z) and the plan has no sink check"
    )


def test_never_synced_is_unknown() -> None:
    assert decide(WINDOW, None, [], horizon=None)[0] == Decision.BLOCKED_UNKNOWN


def test_window_starting_at_horizon_is_covered() -> None:
    assert decide(WINDOW, None, [], horizon=T0)[0] == Decision.RUN


def test_check_decides_a_window_older_than_history() -> None:
    assert decide(WINDOW, None, [result(CheckStatus.CLEAN)], horizon=AFTER)[0] == Decision.RUN


def test_checks_only_for_failed_cancelled_or_missing() -> None:
    assert needs_checks(None)
    assert needs_checks(latest(RunStatus.FAILED))
    assert needs_checks(latest(RunStatus.CANCELLED))
    for status in (RunStatus.SUCCEEDED, RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.CANCELING):
        assert not needs_checks(latest(status))


def test_reasons_carry_the_evidence() -> None:
    run = latest(RunStatus.FAILED, "Operation on target Copy failed:\n  sink locked")
    decision, reason = decide(WINDOW, run, [result(CheckStatus.PARTIAL, "readings")], horizon=BEFORE)
    assert decision == Decision.BLOCKED_PARTIAL
    assert reason == (
        "latest run run-1 Failed (started 2026-11-03T02:20:00Z): Operation on target Copy failed: sink "
        "locked; sink partial (readings: partial reason); a supervisor may clear it with approve --window "
        "2026-11-03T02:00:00Z/2026-11-03T02:15:00Z --accept partial"
    )
    assert decide(WINDOW, latest(RunStatus.IN_PROGRESS), [], horizon=BEFORE)[1] == (
        "latest run run-1 InProgress (started 2026-11-03T02:20:00Z); never start a second run"
    )


def test_long_messages_are_cut() -> None:
    text = describe_run(latest(RunStatus.FAILED, "x" * 1000))
    assert text.endswith("x…")
    assert len(text) < 260


def test_disagreeing_checks_block() -> None:
    results = [result(CheckStatus.COMPLETE, "readings"), result(CheckStatus.CLEAN, "aggregates")]
    decision, reason = decide(WINDOW, None, results, horizon=BEFORE)
    assert decision == Decision.BLOCKED_PARTIAL
    assert "checks disagree (complete: readings; clean: aggregates)" in reason


@given(
    st.lists(st.sampled_from(list(CheckStatus)), min_size=1, max_size=5),
    st.sampled_from([None, RunStatus.FAILED, RunStatus.CANCELLED]),
)
def test_precedence_between_checks(statuses: list[CheckStatus], status: RunStatus | None) -> None:
    results = [result(s, f"c{i}") for i, s in enumerate(statuses)]
    run = latest(status) if status else None
    decision = decide(WINDOW, run, results, horizon=BEFORE)[0]
    found = set(statuses)
    if CheckStatus.ERROR in found:
        assert decision == Decision.BLOCKED_CHECK_ERROR
    elif CheckStatus.PARTIAL in found or found == {CheckStatus.COMPLETE, CheckStatus.CLEAN}:
        assert decision == Decision.BLOCKED_PARTIAL
    elif found == {CheckStatus.COMPLETE}:
        assert decision == Decision.SKIP_COMPLETE_IN_SINK
    else:
        assert decision == (Decision.RUN if run is None else Decision.RERUN)


def test_decision_flags() -> None:
    assert [d.value for d in Decision if d.runnable] == ["run", "rerun"]
    assert [d.value for d in Decision if d.blocked] == ["blocked-partial", "blocked-check-error", "blocked-unknown"]
