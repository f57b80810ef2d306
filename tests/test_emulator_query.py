"""queryPipelineRuns against a plain model: any filters, order and page size give exactly the runs
the filters select, each once, in the asked order (no HTTP: the query engine itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.emulator import PastRun, Pipeline, Scenario
from backfill.emulator.query import RunQueries
from backfill.emulator.state import FactoryState
from backfill.emulator.wire import adf_time
from backfill.timeutil import format_utc

NOW = datetime.now(UTC).replace(microsecond=0)
STATUSES = ["Succeeded", "Failed", "Cancelled", "InProgress"]

runs_strategy = st.lists(
    st.tuples(st.sampled_from(["A", "B"]), st.sampled_from(STATUSES), st.integers(min_value=1, max_value=600)),
    max_size=25,
)
filter_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("PipelineName"), st.sampled_from(["Equals", "NotEquals"]), st.sampled_from([["A"], ["B"]])),
        st.tuples(
            st.just("Status"),
            st.sampled_from(["In", "NotIn"]),
            st.lists(st.sampled_from([*STATUSES, "Canceled"]), min_size=1, max_size=3),
        ),
    ),
    max_size=2,
)


def build(runs: list[tuple[str, str, int]], page_size: int) -> FactoryState:
    scen = Scenario(speed=60.0, page_size=page_size, pipelines=[Pipeline("A"), Pipeline("B")])
    for index, (pipeline, status, minutes) in enumerate(runs):
        scen.add_history(
            PastRun(
                pipeline, NOW - timedelta(minutes=minutes), {"i": str(index)}, status=status, run_id=f"run-{index:03d}"
            )
        )
    state = FactoryState(scen)
    state.load()
    return state


def expected(state: FactoryState, filters: list[tuple[str, str, list[str]]], after: datetime) -> list[Any]:
    chosen = []
    for run in state.runs.values():
        keep = after <= run.last_updated <= NOW
        for operand, operator, values in filters:
            actual = run.pipeline.name if operand == "PipelineName" else run.status
            wanted = {"Cancelled" if v == "Canceled" else v for v in values}
            keep = keep and ((actual in wanted) != (operator in ("NotEquals", "NotIn")))
        if keep:
            chosen.append(run)
    return chosen


@settings(max_examples=60, deadline=None)
@given(
    runs_strategy,
    filter_strategy,
    st.integers(min_value=1, max_value=7),
    st.sampled_from(["ASC", "DESC", None]),
    st.integers(min_value=0, max_value=600),
)
def test_pages_give_exactly_the_selected_runs(
    runs: list[tuple[str, str, int]],
    filters: list[tuple[str, str, list[str]]],
    page_size: int,
    order: str | None,
    after_minutes: int,
) -> None:
    state = build(runs, page_size)
    after = NOW - timedelta(minutes=after_minutes)
    body: dict[str, Any] = {
        "lastUpdatedAfter": format_utc(after, precise=True),
        "lastUpdatedBefore": format_utc(NOW, precise=True),
        "filters": [{"operand": o, "operator": op, "values": v} for o, op, v in filters],
    }
    if order:
        body["orderBy"] = [{"orderBy": "RunStart", "order": order}]
    queries = RunQueries(state)
    seen: list[dict[str, Any]] = []
    page = queries.query(body, NOW)
    while True:
        assert len(page["value"]) <= page_size
        seen.extend(page["value"])
        if "continuationToken" not in page:
            break
        assert len(page["value"]) == page_size
        page = queries.query({**body, "continuationToken": page["continuationToken"]}, NOW)
    wanted = expected(state, filters, after)
    assert sorted(r["runId"] for r in seen) == sorted(r.run_id for r in wanted)
    assert len({r["runId"] for r in seen}) == len(seen)
    if order:
        starts = [r["runStart"] for r in seen]
        assert starts == sorted(starts, reverse=order == "DESC")
    else:
        updated = [r["lastUpdated"] for r in seen]
        assert updated == sorted(updated)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["Succeeded", "InProgress"]), min_size=1, max_size=30),
    st.integers(min_value=1, max_value=5),
    st.sampled_from(["ASC", "DESC", None]),
)
def test_a_run_updated_between_pages_hides_no_unchanged_run(
    statuses: list[str], page_size: int, order: str | None
) -> None:
    # The last run of each page is cancelled before the next page is asked for: its lastUpdated
    # (and status) move it further down the selection. Continuing after where it went, rather
    # than where it was, skipped the unchanged runs in between (found by sliced history fetch).
    state = build([("A", status, 10 + index) for index, status in enumerate(statuses)], page_size)
    until = NOW + timedelta(hours=1)
    body: dict[str, Any] = {
        "lastUpdatedAfter": format_utc(NOW - timedelta(days=1), precise=True),
        "lastUpdatedBefore": format_utc(until, precise=True),
    }
    if order:
        body["orderBy"] = [{"orderBy": "Status", "order": order}]
    queries = RunQueries(state)
    seen: list[str] = []
    touched: set[str] = set()
    clock = NOW
    page = queries.query(body, clock)
    while True:
        seen.extend(run["runId"] for run in page["value"])
        if "continuationToken" not in page:
            break
        last = page["value"][-1]
        if last["status"] == "InProgress":
            clock += timedelta(seconds=1)
            state.cancel_run(last["runId"], clock)
            touched.add(last["runId"])
        page = queries.query({**body, "continuationToken": page["continuationToken"]}, clock)
    unchanged = {run.run_id for run in state.runs.values()} - touched
    assert unchanged <= set(seen)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
    | st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_adf_time_spells_what_strftime_spells(moment: datetime) -> None:
    # adf_time takes isoformat's faster path (issue 14); ADF's seven-digit form must not change.
    assert adf_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
