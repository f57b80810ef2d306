"""FactoryClient (the real SDK) against the emulator over HTTPS: paging, last-updated filtering,
retention, recovery groups, faults on reads and on createRun, authentication."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from backfill.emulator import Emulator, OutcomeRule, PastRun, Pipeline, Scenario
from backfill.emulator.scenario import Activity
from backfill.errors import FactoryError
from backfill.factory.client import FactoryClient
from backfill.factory.run import RunStatus
from backfill.factory.settings import ConnectionSettings
from backfill.timeutil import format_utc, utcnow

PIPELINE = "LoadMeterTelemetry"


def scenario(**options: object) -> Scenario:
    scen = Scenario(speed=6000.0, **options)  # type: ignore[arg-type]
    scen.add_pipeline(
        Pipeline(
            PIPELINE,
            activities=(Activity("Lookup", "Lookup"), Activity("CopyReadings")),
            parameters={"windowStart": "String", "feederRegion": "String"},
        )
    )
    return scen


def window(index: int) -> dict[str, str]:
    return {"windowStart": f"2026-01-01T00:{index:02d}:00Z", "feederRegion": "north"}


def wait_final(emu: Emulator, run_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run = emu.run(run_id)
        if run["status"] in ("Succeeded", "Failed", "Cancelled"):
            return run
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish")


def test_paging_returns_every_run_once_in_pages_of_100() -> None:
    scen = scenario()
    now = utcnow()
    scen.add_history(
        PastRun(PIPELINE, now - timedelta(minutes=5, seconds=i), {"windowStart": str(i)}) for i in range(1050)
    )
    scen.add_pipeline(Pipeline("Other"))
    scen.add_history(PastRun("Other", timedelta(minutes=-3), {}) for _ in range(30))
    with Emulator(scen) as emu:
        client = emu.client()
        runs = list(
            client.query_runs(updated_after=now - timedelta(hours=1), updated_before=utcnow(), pipeline=PIPELINE)
        )
        assert len(runs) == 1050 and len({r.run_id for r in runs}) == 1050
        assert [r.start for r in runs] == sorted(r.start for r in runs if r.start)  # the client asks RunStart ASC
        pages = emu.requests("queryPipelineRuns")
        assert len(pages) == 11 and all(p.status == 200 for p in pages)
        assert "continuationToken" not in pages[0].body
        tokens = [p.body["continuationToken"] for p in pages[1:]]
        assert len(set(tokens)) == 10
        newest = list(
            client.query_runs(updated_after=now - timedelta(hours=1), updated_before=utcnow(), newest_first=True)
        )
        assert len(newest) == 1080 and newest[0].start == max(r.start for r in newest if r.start)
        assert emu.errors == []


def test_a_token_from_another_query_is_refused() -> None:
    scen = scenario(page_size=2)
    scen.add_history(PastRun(PIPELINE, timedelta(minutes=-5), {}) for _ in range(3))
    with Emulator(scen) as emu:
        from emulator_support import call, factory_url

        bounds = {
            "lastUpdatedAfter": format_utc(utcnow() - timedelta(hours=1)),
            "lastUpdatedBefore": format_utc(utcnow()),
        }
        status, _, first = call(emu, "POST", factory_url(emu, "queryPipelineRuns"), bounds)
        assert status == 200 and len(first["value"]) == 2
        other = {
            **bounds,
            "filters": [{"operand": "Status", "operator": "Equals", "values": ["Failed"]}],
            "continuationToken": first["continuationToken"],
        }
        status, _, body = call(emu, "POST", factory_url(emu, "queryPipelineRuns"), other)
        assert status == 400 and "different query" in body["error"]["message"]
        status, _, body = call(emu, "POST", factory_url(emu, "queryPipelineRuns"), {"lastUpdatedAfter": "x"})
        assert status == 400 and body["error"]["code"] == "BadRequest"


def test_last_updated_filtering_and_retention() -> None:
    scen = scenario()
    now = utcnow()
    # Runs end (are last updated) 15 min / 6000 after they start: at about their start.
    for hours in (1, 3, 5, 24 * 44):
        scen.add_history(PastRun(PIPELINE, now - timedelta(hours=hours), {"age": str(hours)}))
    scen.add_history(PastRun(PIPELINE, now - timedelta(days=50), {"age": "50d"}, run_id="too-old"))
    with Emulator(scen) as emu:
        client = emu.client()
        middle = list(
            client.query_runs(updated_after=now - timedelta(hours=4), updated_before=now - timedelta(hours=2))
        )
        assert [r.parameters["age"] for r in middle] == ["3"]
        everything = list(client.query_runs(updated_after=now - timedelta(days=60), updated_before=utcnow()))
        assert sorted(r.parameters["age"] for r in everything) == ["1", "1056", "3", "5"]
        with pytest.raises(FactoryError) as gone:
            client.get_run("too-old")
        assert (gone.value.status, gone.value.code) == (404, "PipelineRunNotFound")
        statuses = list(
            client.query_runs(updated_after=now - timedelta(days=1), updated_before=utcnow(), statuses=["Failed"])
        )
        assert statuses == []


def test_recovery_groups() -> None:
    scen = scenario()
    scen.add_outcome(
        OutcomeRule(
            "fail",
            match={"windowStart": "2026-01-01T00:01:00Z"},
            activity="CopyReadings",
            error_code="2200",
            message="sink locked",
            times=1,
        )
    )
    with Emulator(scen) as emu:
        client = emu.client()
        failed = client.create_run(PIPELINE, window(1))
        assert wait_final(emu, failed)["status"] == "Failed"
        activities = client.query_activity_runs(failed)
        assert [(a.name, a.status, a.error_code) for a in activities] == [
            ("Lookup", "Succeeded", ""),
            ("CopyReadings", "Failed", "2200"),
        ]
        rerun = client.create_run(
            PIPELINE, {"ignored": "body"}, reference_run_id=failed, is_recovery=True, start_from_failure=True
        )
        assert wait_final(emu, rerun)["status"] == "Succeeded"
        old, new = client.get_run(failed), client.get_run(rerun)
        assert (old.is_latest, new.is_latest) == (False, True)
        assert old.run_group_id == new.run_group_id == failed
        assert new.parameters == window(1)  # the referenced run's parameters, not the body
        assert [a.name for a in client.query_activity_runs(rerun)] == ["CopyReadings"]
        group = list(
            client.query_runs(
                updated_after=utcnow() - timedelta(hours=1),
                updated_before=utcnow(),
                run_group_id=failed,
                latest_only=True,
            )
        )
        assert [r.run_id for r in group] == [rerun]
        with pytest.raises(FactoryError) as invalid:
            client.create_run(PIPELINE, reference_run_id="no-such-run", is_recovery=True)
        assert (invalid.value.status, invalid.value.code) == (400, "ReferencedPipelineRunNotValid")
        assert invalid.value.effect_unknown is False
        assert emu.errors == []


def test_hang_then_cancel() -> None:
    scen = scenario(cancel_time=timedelta(minutes=5))  # 50 ms at speed 6000
    scen.add_outcome(OutcomeRule("hang", activity="CopyReadings"))
    with Emulator(scen) as emu:
        client = emu.client()
        run_id = client.create_run(PIPELINE, window(2))
        time.sleep(0.3)
        assert client.get_run(run_id).status is RunStatus.IN_PROGRESS
        client.cancel_run(run_id, recursive=True)
        assert emu.requests("cancelPipelineRun")[0].query["isRecursive"] == "true"
        assert client.get_run(run_id).status is RunStatus.CANCELING
        final = wait_final(emu, run_id)
        assert (final["status"], final["runEnd"], final["durationInMs"]) == ("Cancelled", None, None)
        assert [a.status for a in client.query_activity_runs(run_id)] == ["Succeeded", "Cancelled"]
        with pytest.raises(FactoryError) as finished:
            client.cancel_run(run_id)
        assert (finished.value.status, finished.value.code) == (400, "PipelineRunNotRunning")


def test_throttled_read_is_retried() -> None:
    scen = scenario()
    scen.add_history(PastRun(PIPELINE, timedelta(minutes=-5), {}))
    with Emulator(scen) as emu:
        emu.faults.add("throttle", "queryPipelineRuns", count=2, retry_after=0.2)
        runs = list(emu.client().query_runs(updated_after=utcnow() - timedelta(hours=1), updated_before=utcnow()))
        assert len(runs) == 1
        log = emu.requests("queryPipelineRuns")
        assert [(e.status, e.fault) for e in log] == [(429, "throttle"), (429, "throttle"), (200, None)]
        assert (log[2].at - log[0].at) >= timedelta(seconds=0.35)


@pytest.mark.parametrize(
    ("kind", "when", "runs"), [("error", "after", 1), ("error", "before", 0), ("drop", "after", 1)]
)
def test_create_run_fault_is_not_retried(kind: str, when: str, runs: int) -> None:
    with Emulator(scenario()) as emu:
        emu.faults.add(kind, "createRun", when=when)  # type: ignore[arg-type]
        with pytest.raises(FactoryError) as failed:
            emu.client().create_run(PIPELINE, window(3))
        assert failed.value.effect_unknown is True
        calls = emu.create_run_calls()
        assert len(calls) == 1 and calls[0].fault == kind and calls[0].effect is (runs == 1)
        assert calls[0].status == (None if kind == "drop" else 500)
        assert len(emu.runs()) == runs
        if runs:
            assert calls[0].run_id == emu.runs()[0]["runId"]


def test_latency_after_effect_exceeds_the_client_timeout() -> None:
    with Emulator(scenario()) as emu:
        emu.faults.add("latency", "createRun", when="after", latency=1.5)
        client = FactoryClient(
            emu.ref, ConnectionSettings(endpoint=emu.endpoint, ca_bundle=emu.ca_file, token=emu.token, read_timeout=0.5)
        )
        with pytest.raises(FactoryError) as late:
            client.create_run(PIPELINE, window(4))
        assert late.value.effect_unknown is True
        assert len(emu.runs()) == 1


def test_wrong_token_and_unknown_names() -> None:
    with Emulator(scenario()) as emu:
        intruder = FactoryClient(
            emu.ref, ConnectionSettings(endpoint=emu.endpoint, ca_bundle=emu.ca_file, token="not-the-token")
        )
        with pytest.raises(FactoryError) as denied:
            intruder.get_pipeline(PIPELINE)
        assert denied.value.status == 401
        assert str(denied.value) == "factory: 401 InvalidAuthenticationToken: The access token is invalid."
        assert emu.request_log[0].status == 401
        client = emu.client()
        with pytest.raises(FactoryError) as pipeline:
            client.create_run("NoSuchPipeline")
        assert (pipeline.value.status, pipeline.value.code) == (404, "EntityNotFound")
        elsewhere = FactoryClient(
            emu.ref.__class__(emu.ref.subscription_id, emu.ref.resource_group, "adf-other"),
            ConnectionSettings(endpoint=emu.endpoint, ca_bundle=emu.ca_file, token=emu.token),
        )
        with pytest.raises(FactoryError) as factory:
            elsewhere.get_run("x")
        assert (factory.value.status, factory.value.code) == (404, "ResourceNotFound")
        assert client.get_pipeline(PIPELINE).parameters == {"windowStart": "String", "feederRegion": "String"}
