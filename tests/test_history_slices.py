"""History read in last-updated slices (issue 14): no run dropped or doubled at a slice's edge,
runs updated during the fetch included in their newest state; the emulator's ARM throttle; the
fast record-to-row decoding equal to the ``Run`` path."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.emulator import Emulator, PastRun, Pipeline, Scenario
from backfill.emulator.throttle import ServiceLimits
from backfill.emulator.wire import adf_time
from backfill.errors import FactoryError
from backfill.factory.client import FactoryClient
from backfill.factory.run import MalformedRun, Run
from backfill.factory.slicing import TAIL_MARGIN, FetchStats, fetch_slices, slice_bounds
from backfill.history import sync_history
from backfill.store.database import Database
from backfill.store.history import load_history
from backfill.store.history_writes import record_row, run_row
from backfill.timeutil import parse_utc, utcnow

PIPELINE = "LoadMeterTelemetry"
BODY = {"filters": [{"operand": "PipelineName", "operator": "Equals", "values": [PIPELINE]}]}


def scenario(page_size: int = 5, queue: timedelta = timedelta(hours=1)) -> Scenario:
    # A long queue and cancel time: runs change only when the test changes them.
    scen = Scenario(page_size=page_size, queue_time=queue, cancel_time=timedelta(hours=1))
    scen.add_pipeline(Pipeline(PIPELINE, parameters={"windowStart": "String", "feederRegion": "String"}))
    return scen


def fetcher(client: FactoryClient, on_request: Any = None) -> Any:
    """Page reads as query_run_pages makes them: one SDK client per thread."""
    local = threading.local()

    def fetch(request: Mapping[str, Any]) -> Mapping[str, Any]:
        if on_request is not None:
            on_request()
        sdk = getattr(local, "sdk", None)
        if sdk is None:
            sdk = local.sdk = client._new_sdk()
        return client._read_json(
            lambda content: sdk.pipeline_runs.query_by_factory(
                client.ref.resource_group, client.ref.factory, content, stream=True, retry_total=0
            ),
            request,
        )

    return fetch


def newest(pages: Iterator[list[Any]]) -> tuple[dict[str, dict[str, Any]], int]:
    """Run ID -> the newest record received, and how many records came."""
    found: dict[str, dict[str, Any]] = {}
    count = 0
    for page in pages:
        for raw in page:
            count += 1
            seen = found.get(raw["runId"])
            if seen is None or parse_utc(raw["lastUpdated"]) >= parse_utc(seen["lastUpdated"]):
                found[raw["runId"]] = raw
    return found, count


def test_runs_on_slice_edges_come_once_each_after_keeping_the_newest() -> None:
    now = utcnow()
    after, started = now - timedelta(days=10), now
    edges = [low for low, _ in slice_bounds(after, started - TAIL_MARGIN, 6)][1:]
    scen = scenario(queue=timedelta(0))
    # Hanging runs keep lastUpdated = their start (no queue time): one exactly on each inner edge, one a
    # microsecond either side, and others in between.
    moments = [edge + timedelta(microseconds=d) for edge in edges for d in (-1, 0, 1)]
    moments += [after + timedelta(hours=5 * n + 1) for n in range(40)]
    for n, moment in enumerate(moments):
        scen.add_history(
            PastRun(PIPELINE, moment, {"windowStart": f"w{n}", "feederRegion": "north"}, status="InProgress")
        )
    with Emulator(scen) as emu:
        stats = FetchStats()
        pages = fetch_slices(
            fetcher(emu.client()),
            BODY,
            after=after,
            before=now + timedelta(days=1),
            started=started,
            slices=6,
            most_in_flight=3,
            stats=stats,
            probe=False,
        )
        found, count = newest(pages)
        truth = {r["runId"]: r for r in emu.runs()}
    assert stats.slices == 6 and stats.tail_passes >= 1
    assert set(found) == set(truth)
    assert {r["lastUpdated"] for r in found.values()} >= {adf_time(edge) for edge in edges}
    # Both bounds are inclusive: each run on an inner edge came from both of its slices.
    assert count == len(truth) + len(edges)


def test_runs_updated_during_the_fetch_are_read_in_their_newest_state() -> None:
    now = utcnow()
    scen = scenario(page_size=4)
    for n in range(160):
        scen.add_history(
            PastRun(
                PIPELINE,
                now - timedelta(days=40) + timedelta(hours=6 * n),
                {"windowStart": f"w{n}", "feederRegion": "north"},
                status="InProgress" if n % 3 == 0 else "Succeeded",
                duration=timedelta(minutes=5),
            )
        )
    with Emulator(scen) as emu:
        client = emu.client()
        hanging = [r["runId"] for r in emu.runs() if r["status"] == "InProgress"]
        # Old hanging runs first: they move from the earliest slices to the newest moment.
        order = itertools.count()
        created: list[str] = []

        def meanwhile() -> None:
            n = next(order)
            if n % 3 == 0 and hanging:
                client.cancel_run(hanging.pop(0))
            if n % 7 == 0:
                created.append(client.create_run(PIPELINE, {"windowStart": f"new{n}", "feederRegion": "north"}))

        pages = fetch_slices(
            fetcher(client, meanwhile),
            BODY,
            after=now - timedelta(days=45),
            before=now + timedelta(days=1),
            started=utcnow(),
            slices=8,
            most_in_flight=4,
            probe=False,
        )
        found, _ = newest(pages)
        truth = {r["runId"]: r for r in emu.runs()}
        answers = sorted({(r.status, r.fault) for r in emu.requests("queryPipelineRuns")}, key=str)
    assert created and len(hanging) < 54, answers
    missing = [
        (truth[i]["status"], truth[i]["runStart"], truth[i]["lastUpdated"], i in created)
        for i in set(truth) - set(found)
    ]
    assert not missing, answers
    assert set(found) == set(truth)
    for run_id, run in truth.items():
        assert (found[run_id]["status"], found[run_id]["lastUpdated"]) == (run["status"], run["lastUpdated"]), run_id


def test_a_sliced_sync_caches_every_run_once(tmp_path: Any) -> None:
    now = utcnow()
    scen = scenario(page_size=10)
    for n in range(600):
        scen.add_history(
            PastRun(
                PIPELINE, now - timedelta(days=30) + timedelta(hours=n), {"windowStart": f"w{n}", "feederRegion": "x"}
            )
        )
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with Emulator(scen) as emu:
            client = emu.client()
            stats = FetchStats()
            pages = client.query_run_pages(
                updated_after=now - timedelta(days=45), updated_before=now + timedelta(days=1), stats=stats
            )
            assert newest(pages)[0].keys() == {r["runId"] for r in emu.runs()}
            assert stats.slices > 1
            synced = sync_history(db, client, PIPELINE, key_fields=("windowStart",))
            assert synced.fetched >= 600
            history = load_history(db, scen.ref, PIPELINE)
            assert len(history) == 600
    finally:
        db.dispose()


def test_the_throttle_answers_429_with_retry_after_and_the_slicer_waits_it_out() -> None:
    now = utcnow()
    scen = scenario(page_size=10)
    scen.limits = ServiceLimits(read_rate=20.0, read_burst=3)
    for n in range(300):
        scen.add_history(PastRun(PIPELINE, now - timedelta(days=20) + timedelta(hours=n), {"windowStart": f"w{n}"}))
    with Emulator(scen) as emu:
        client = emu.client()
        statuses: list[int | None] = []
        for _ in range(6):
            try:
                client._read_json(
                    lambda content: client.sdk.pipeline_runs.query_by_factory(
                        scen.resource_group, scen.factory, content, stream=True, retry_total=0
                    ),
                    {**BODY, "lastUpdatedAfter": adf_time(now - timedelta(days=1)), "lastUpdatedBefore": adf_time(now)},
                )
                statuses.append(200)
            except FactoryError as exc:
                statuses.append(exc.status)
                assert exc.retry_after == 1.0
        assert statuses[:3] == [200, 200, 200] and 429 in statuses
        stats = FetchStats()
        found, _ = newest(
            client.query_run_pages(
                updated_after=now - timedelta(days=45), updated_before=now + timedelta(days=1), stats=stats
            )
        )
        assert len(found) == 300
        assert stats.throttled > 0 and stats.waited_seconds > 0
        log = emu.requests("queryPipelineRuns")
        assert {r.status for r in log} == {200, 429}


def test_the_throttle_is_configured_in_the_scenario(tmp_path: Any) -> None:
    from backfill.emulator import load_scenario

    path = tmp_path / "s.toml"
    path.write_text(
        '[service]\nthrottle = true\nburst = 40\nlatency = "200ms"\n'
        '[[pipelines]]\nname = "P"\n[[pipelines.activities]]\nname = "A"\ntype = "Copy"\n',
        encoding="utf-8",
    )
    assert load_scenario(path).limits == ServiceLimits(read_rate=25.0, read_burst=40, latency=0.2)


_TIMES = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(adf_time),
    st.sampled_from(["2026-11-03T02:00:00Z", "2026-11-03T02:00:00+01:00", "not a time", "", "0999-01-01T00:00:00Z"]),
    # The fast path cuts ADF's 28-character form: any 7th digit, and look-alikes it must refuse
    # (week dates, another separator, a zero fraction, a year before 1000, a bad digit).
    st.builds(
        lambda moment, digit: str(adf_time(moment))[:-2] + str(digit) + "Z",
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
        st.integers(0, 9),
    ),
    st.sampled_from(
        [
            "2026-11-03T02:00:00.0000000Z",
            "2026-11-03T02:00:00.0000009Z",
            "2026-11-03T02:00:00.9999999Z",
            "2026-11-03 02:00:00.1234567Z",
            "2026-11-03X02:00:00.1234567Z",
            "2026-W45-2T02:00:00.123456Z",
            "2026-11-03T02:00:00.123456xZ",
            "0999-11-03T02:00:00.1234567Z",
            "2026-11-03T02:00:00.1234567z",
            "2026-11-03T24:00:00.0000000Z",
            "2026-02-30T02:00:00.1234567Z",
        ]
    ),
)
_RECORDS = st.fixed_dictionaries(
    {"runId": st.sampled_from(["r1", "", " ", 5, 'r\u00e9"1'])},
    optional={
        "pipelineName": st.sampled_from(["P", "", None, "P\\\u2603"]),
        "status": st.sampled_from(["Succeeded", "Failed", "InProgress", "Canceled", "Waiting", None, 3]),
        "parameters": st.one_of(
            st.none(),
            st.just("x"),
            st.dictionaries(
                st.sampled_from(["a", "b", "secret"]),
                st.one_of(st.text(max_size=5), st.sampled_from(['["x"]', '{"k": 1}', "{bad", "***"])),
            ),
        ),
        "runGroupId": st.sampled_from(["g", None, 7, "gr\u00fcn"]),
        "isLatest": st.sampled_from([True, False, 1, None]),
        "runStart": _TIMES,
        "runEnd": _TIMES,
        "lastUpdated": _TIMES,
        "durationInMs": st.one_of(st.none(), st.integers(-(10**13), 10**13), st.floats(0, 1e6), st.just(True)),
        "message": st.sampled_from(["", "boom", None, 4, 'quote " and \\ and \u00e9 and \U0001f600']),
        "invokedBy": st.one_of(
            st.none(),
            st.just("x"),
            st.fixed_dictionaries(
                {"name": st.sampled_from(["m", 1, "caf\u00e9"])},
                optional={"invokedByType": st.sampled_from(["Manual", 2, "\t"])},
            ),
        ),
    },
)


@settings(max_examples=400)
@given(_RECORDS, st.sampled_from([frozenset(), frozenset({"secret"})]))
def test_a_record_becomes_the_row_the_run_path_writes(raw: dict[str, Any], secret: frozenset[str]) -> None:
    try:
        expected = run_row("f", PIPELINE, Run.from_json(raw), secret)
    except MalformedRun:
        with pytest.raises(MalformedRun):
            record_row("f", PIPELINE, raw, secret)
        return
    assert record_row("f", PIPELINE, raw, secret) == expected


def test_an_ordinary_adf_record_takes_the_fast_path() -> None:
    # Otherwise the equality above would only compare the reference path with itself.
    from backfill.store.history_writes import _fast_row

    raw = {
        "runId": "0b6c1f3e-1a2b-4c3d-a4e5-f6a7b8c9d0e1",
        "runGroupId": "0b6c1f3e-1a2b-4c3d-a4e5-f6a7b8c9d0e1",
        "pipelineName": PIPELINE,
        "parameters": {"windowStart": "2026-11-03T02:00:00Z", "feederRegion": "north", "ids": '["a"]'},
        "invokedBy": {"id": "x", "name": "Manual", "invokedByType": "Manual"},
        "runStart": "2026-11-03T02:17:00.1234567Z",
        "runEnd": "2026-11-03T02:20:00.0000000Z",
        "durationInMs": 179877,
        "status": "Succeeded",
        "message": "",
        "lastUpdated": "2026-11-03T02:20:00.0000001Z",
        "isLatest": True,
    }
    fast = _fast_row("f", PIPELINE, raw, frozenset({"feederRegion"}))
    assert fast is not None
    assert fast == run_row("f", PIPELINE, Run.from_json(raw), frozenset({"feederRegion"}))
