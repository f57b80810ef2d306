"""Spec §14's decision rule and the run parser's promises, tried with generated data.

- Of several runs of a window, one still queued, in progress, cancelling or in a status we do not
  know makes the window ``skip-in-progress``, whatever the newest one says.
- Any JSON object the service sends as a run parses to a ``Run`` or fails with ``MalformedRun``
  (one line), never another exception; unknown statuses parse as in progress.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from backfill.checks.base import CheckResult, CheckStatus
from backfill.decisions import Decision, active_of, decide
from backfill.factory.run import MalformedRun, Run, RunStatus
from backfill.matching import latest_of
from backfill.store.history import HistoryView
from backfill.windows import Window

T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(minutes=15), {"windowStart": "2026-11-03T02:00:00Z"})
ACTIVE = (RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.CANCELING, RunStatus.UNKNOWN)

runs = st.lists(
    st.builds(
        lambda i, status, minutes: Run(
            run_id=f"r{i}",
            pipeline="P",
            status=status,
            parameters={"windowStart": "2026-11-03T02:00:00Z"},
            start=None if minutes is None else T0 + timedelta(minutes=minutes),
            status_text="Waiting" if status is RunStatus.UNKNOWN else "",
        ),
        st.integers(0, 1000),
        st.sampled_from(list(RunStatus)),
        st.one_of(st.none(), st.integers(0, 10_000)),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda r: r.run_id,
)
checks = st.lists(st.sampled_from(list(CheckStatus)).map(lambda s: CheckResult("sink", s, "why")), max_size=2)


@given(runs, checks)
def test_a_run_in_flight_means_skip_in_progress_whatever_the_newest_says(
    found: list[Run], results: list[CheckResult]
) -> None:
    latest, active = latest_of(found), active_of(found)
    decision, reason = decide(WINDOW, latest, results, horizon=T0 - timedelta(days=1), active=active)
    if any(run.status in ACTIVE for run in found):
        assert decision is Decision.SKIP_IN_PROGRESS, (found, reason)
        assert "never start a second run" in reason
    else:
        assert decision is not Decision.SKIP_IN_PROGRESS


@given(runs)
def test_the_history_view_finds_the_run_in_flight_behind_the_latest(found: list[Run]) -> None:
    [(latest, active)] = HistoryView(found).window_runs([WINDOW], ["windowStart"])
    assert latest == latest_of(found)
    flying = active_of(found)
    assert active == (None if flying is None or latest is None or flying.run_id == latest.run_id else flying)


def test_an_in_progress_run_older_than_a_failed_one_blocks_the_rerun() -> None:
    old = Run("r-old", "P", RunStatus.IN_PROGRESS, start=T0 + timedelta(minutes=20))
    new = Run("r-new", "P", RunStatus.FAILED, start=T0 + timedelta(minutes=40))
    decision, reason = decide(WINDOW, new, [], horizon=T0 - timedelta(days=1), active=old)
    assert decision is Decision.SKIP_IN_PROGRESS
    assert reason == (
        "run r-old InProgress (started 2026-11-03T02:20:00Z) is still in flight; the latest is run "
        "r-new Failed (started 2026-11-03T02:40:00Z); never start a second run"
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "runId": st.one_of(st.text(max_size=12), json_values),
        "status": st.one_of(st.sampled_from(["Succeeded", "InProgress", "Waiting", "NotStarted", ""]), json_values),
        "parameters": st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3), json_values),
        "runStart": st.one_of(st.just("2026-11-03T02:00:00.1234567Z"), st.text(max_size=20), json_values),
        "runEnd": json_values,
        "durationInMs": st.one_of(json_values, st.integers(), st.floats()),
        "runGroupId": json_values,
        "invokedBy": json_values,
        "isLatest": json_values,
    },
)


@given(records)
def test_any_run_record_parses_or_is_one_malformed_line(body: dict[str, Any]) -> None:
    try:
        run = Run.from_json(body)
    except MalformedRun as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    if run.status is RunStatus.UNKNOWN:
        assert run.status.is_active and run.status_label
    assert Run.from_cache(run.to_json()).status_label == run.status_label


def test_unknown_statuses_parse_as_in_progress() -> None:
    for word in ("Waiting", "NotStarted", "Paused"):
        run = Run.from_json({"runId": "r1", "status": word})
        assert run.status is RunStatus.UNKNOWN and run.status.is_active and not run.status.is_final
        assert run.status_label == word
    assert Run.from_json({"runId": "r1", "status": "Canceled"}).status is RunStatus.CANCELLED
