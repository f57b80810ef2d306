"""The emulator answers like the service: the published examples and the recorded live exchanges
(../shared/adf-rest-examples) give the keys and value types; and our Run values read them right."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from emulator_support import call, factory_url, shape_differences

from backfill.emulator import Activity, Emulator, PastRun, Pipeline, Scenario
from backfill.factory.run import ActivityRun, PipelineInfo, Run, RunStatus
from backfill.timeutil import format_utc, utcnow

EXAMPLES = Path("/work/shared/adf-rest-examples")
RUN_ID = "2f7fdb90-5df1-4b8e-ac2f-064cfa58202b"
CANCELLED_ID = "16ac5348-ff82-4f95-a80d-638c1d47b721"
BLOBS = ["exampleoutput.csv"]


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


def recorded(path_end: str, method: str, status: int = 200) -> list[dict[str, Any]]:
    entries = json.loads((EXAMPLES / "recorded" / "pipeline-runs.json").read_text())
    return [e for e in entries if e["method"] == method and e["path"].endswith(path_end) and e["status"] == status]


def live_run_body() -> dict[str, Any]:
    """A run read by ID from the live service, finished (recorded)."""
    for entry in recorded("", "GET"):
        body = entry["response_body"]
        if "/pipelineruns/" in entry["path"] and body["status"] == "Succeeded":
            return dict(body)
    raise AssertionError("no recorded Succeeded run")


# Keys the live service sends beyond the published examples (README, recorded exchanges).
LIVE_RUN_EXTRAS = set(live_run_body()) | {"invokedByType"}
LIVE_ACTIVITY_EXTRAS = set(recorded("/queryActivityruns", "POST")[0]["response_body"]["value"][0]) | {"details"}


def scenario_for(parameters: dict[str, Any]) -> Scenario:
    """The factory an example talks to, holding the runs the example shows."""
    scen = Scenario(
        subscription_id=parameters["subscriptionId"],
        resource_group=parameters["resourceGroupName"],
        factory=parameters["factoryName"],
        speed=600.0,
        cancel_time=timedelta(hours=2),
    )
    for name in ("myPipeline", "examplePipeline"):
        scen.add_pipeline(
            Pipeline(
                name,
                activities=(Activity("ExampleForeachActivity", "ForEach"), Activity("ExampleCopyActivity", "Copy")),
                parameters={"OutputBlobNameList": "Array"},
                description="Example description",
            )
        )
    pipeline = "examplePipeline" if "example" in parameters["factoryName"] else "myPipeline"
    scen.add_history(PastRun(pipeline, timedelta(minutes=-30), {"OutputBlobNameList": BLOBS}, run_id=RUN_ID))
    scen.add_history(
        PastRun(
            pipeline,
            timedelta(minutes=-20),
            {"OutputBlobNameList": BLOBS},
            status="Cancelled",
            run_id=f"{CANCELLED_ID[:-1]}0",
        )
    )
    scen.add_history(
        PastRun(
            pipeline, timedelta(minutes=-10), {"OutputBlobNameList": BLOBS}, status="InProgress", run_id=CANCELLED_ID
        )
    )
    return scen


@pytest.fixture
def window() -> dict[str, str]:
    """The examples' filter window moved to now (their 2018 window is past the retention)."""
    now = utcnow()
    return {
        "lastUpdatedAfter": format_utc(now - timedelta(hours=1), precise=True),
        "lastUpdatedBefore": format_utc(now + timedelta(minutes=1), precise=True),
    }


@pytest.fixture
def emulated(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    with Emulator(scenario_for(example(request.param)["parameters"])) as emu:
        yield emu


@pytest.mark.parametrize("emulated", ["Pipelines_CreateRun.json"], indirect=True)
def test_create_run(emulated: Emulator) -> None:
    spec = example("Pipelines_CreateRun.json")
    status, headers, body = call(
        emulated, "POST", factory_url(emulated, "pipelines/myPipeline/createRun"), spec["parameters"]["parameters"]
    )
    assert status == 200
    assert shape_differences(spec["responses"]["200"]["body"], body) == []
    assert "date" in headers and "x-ms-request-id" in headers
    assert emulated.run(body["runId"])["parameters"] == {"OutputBlobNameList": '["exampleoutput.csv"]'}


@pytest.mark.parametrize("emulated", ["PipelineRuns_Get.json"], indirect=True)
def test_get_run(emulated: Emulator) -> None:
    spec = example("PipelineRuns_Get.json")
    status, _, body = call(emulated, "GET", factory_url(emulated, f"pipelineruns/{RUN_ID}"))
    assert status == 200
    assert shape_differences(spec["responses"]["200"]["body"], body, LIVE_RUN_EXTRAS) == []
    # Against the recorded live answer, not even an extra key.
    assert shape_differences(live_run_body(), body) == []
    assert body["parameters"] == {"OutputBlobNameList": '["exampleoutput.csv"]'}
    assert body["isLatest"] is True and body["runGroupId"] == RUN_ID


@pytest.mark.parametrize("emulated", ["PipelineRuns_QueryByFactory.json"], indirect=True)
def test_query_by_factory(emulated: Emulator, window: dict[str, str]) -> None:
    spec = example("PipelineRuns_QueryByFactory.json")
    query = {**spec["parameters"]["filterParameters"], **window}
    status, _, body = call(emulated, "POST", factory_url(emulated, "queryPipelineRuns"), query)
    assert status == 200
    expected = spec["responses"]["200"]["body"]["value"]
    finished = [r for r in body["value"] if r["status"] in ("Succeeded", "Cancelled")]
    assert [r["status"] for r in finished] == ["Succeeded", "Cancelled"]
    for wanted, got in zip(expected, finished, strict=True):
        assert shape_differences(wanted, got, LIVE_RUN_EXTRAS) == []
    assert finished[1]["runEnd"] is None and finished[1]["durationInMs"] is None
    assert "continuationToken" not in body


@pytest.mark.parametrize("emulated", ["PipelineRuns_Cancel.json"], indirect=True)
def test_cancel(emulated: Emulator) -> None:
    status, headers, body = call(emulated, "POST", factory_url(emulated, f"pipelineruns/{CANCELLED_ID}/cancel"))
    assert (status, body, headers["content-length"]) == (200, None, "0")
    assert emulated.run(CANCELLED_ID)["status"] == "Canceling"
    again = call(emulated, "POST", factory_url(emulated, f"pipelineruns/{RUN_ID}/cancel"))
    assert again[0] == 400 and again[2]["error"]["code"] == "PipelineRunNotRunning"
    assert set(again[2]["error"]) == {"code", "message", "target", "details"}


@pytest.mark.parametrize("emulated", ["ActivityRuns_QueryByPipelineRun.json"], indirect=True)
def test_activity_runs(emulated: Emulator, window: dict[str, str]) -> None:
    spec = example("ActivityRuns_QueryByPipelineRun.json")
    status, _, body = call(emulated, "POST", factory_url(emulated, f"pipelineruns/{RUN_ID}/queryActivityruns"), window)
    assert status == 200
    expected = spec["responses"]["200"]["body"]["value"]
    assert [a["activityName"] for a in body["value"]] == ["ExampleForeachActivity", "ExampleCopyActivity"]
    for wanted, got in zip(expected, body["value"], strict=True):
        assert shape_differences(wanted, got, LIVE_ACTIVITY_EXTRAS) == []
    live = recorded("/queryActivityruns", "POST")[0]["response_body"]["value"][0]
    assert shape_differences(live, body["value"][0]) == []


@pytest.mark.parametrize("emulated", ["Pipelines_Get.json"], indirect=True)
def test_pipeline_get(emulated: Emulator) -> None:
    spec = example("Pipelines_Get.json")
    status, _, body = call(emulated, "GET", factory_url(emulated, "pipelines/examplePipeline"))
    assert status == 200
    live_properties = {
        k
        for method in ("GET", "PUT")
        for e in recorded("/pipelines/myPipeline", method)
        for k in e["response_body"]["properties"]
    }
    assert shape_differences(spec["responses"]["200"]["body"], body, live_properties) == []
    for activity in body["properties"]["activities"]:
        assert (
            {"name", "type", "typeProperties"}
            <= set(activity)
            <= {"name", "type", "typeProperties", "dependsOn", "userProperties"}
        )
    assert body["properties"]["parameters"] == {"OutputBlobNameList": {"type": "Array"}}
    unchanged = call(
        emulated, "GET", factory_url(emulated, "pipelines/examplePipeline"), headers={"If-None-Match": body["etag"]}
    )
    assert unchanged[0] == 304 and unchanged[2] is None


@pytest.mark.parametrize("emulated", ["PipelineRuns_Get.json"], indirect=True)
def test_recorded_exchanges(emulated: Emulator) -> None:
    # An in-progress run read by ID: the recorded live answer's exact keys and types.
    in_progress = next(
        e["response_body"]
        for e in recorded("", "GET")
        if "/pipelineruns/" in e["path"] and e["response_body"]["status"] == "InProgress"
    )
    _, _, body = call(emulated, "GET", factory_url(emulated, f"pipelineruns/{CANCELLED_ID}"))
    assert body["status"] == "InProgress"
    assert shape_differences(in_progress, body) == []
    # A 2018 window is past the retention: an empty page, no error (recorded queryPipelineRuns).
    old = recorded("/queryPipelineRuns", "POST")[0]
    assert (
        call(emulated, "POST", factory_url(emulated, "queryPipelineRuns"), old["request_body"])[2]
        == old["response_body"]
    )
    # Activity runs of a run the factory does not know: an empty list, as recorded.
    unknown = next(e for e in recorded("/queryActivityruns", "POST") if e["response_body"] == {"value": []})
    run_id = unknown["path"].split("/")[-2]
    assert call(
        emulated, "POST", factory_url(emulated, f"pipelineruns/{run_id}/queryActivityruns"), unknown["request_body"]
    )[2] == {"value": []}
    created = recorded("/createRun", "POST")[0]
    status, _, answer = call(
        emulated, "POST", factory_url(emulated, "pipelines/myPipeline/createRun"), created["request_body"]
    )
    assert status == 200 and shape_differences(created["response_body"], answer) == []
    cancel = recorded("/cancel", "POST")[0]
    assert call(emulated, "POST", factory_url(emulated, f"pipelineruns/{answer['runId']}/cancel"))[::2] == (
        cancel["status"],
        cancel["response_body"],
    )


def test_client_reads_the_published_examples() -> None:
    run = Run.from_json(example("PipelineRuns_Get.json")["responses"]["200"]["body"])
    assert (run.run_id, run.status, run.pipeline) == (RUN_ID, RunStatus.SUCCEEDED, "myPipeline")
    assert run.parameters == {"OutputBlobNameList": ["exampleoutput.csv"]}
    assert run.duration == timedelta(milliseconds=28105) and run.end is not None and run.is_latest
    assert format_utc(run.start, precise=True) == "2018-06-16T00:37:44.625701Z"
    succeeded, cancelled = (
        Run.from_json(r) for r in example("PipelineRuns_QueryByFactory.json")["responses"]["200"]["body"]["value"]
    )
    assert succeeded.status is RunStatus.SUCCEEDED
    assert (cancelled.status, cancelled.end, cancelled.duration) == (RunStatus.CANCELLED, None, None)
    assert cancelled.last_updated is not None and cancelled.parameters == {"OutputBlobNameList": ["exampleoutput.csv"]}
    live = Run.from_json(
        next(
            e["response_body"]
            for e in recorded("", "GET")
            if "/pipelineruns/" in e["path"] and e["response_body"]["status"] == "InProgress"
        )
    )
    assert (live.status, live.invoked_by_type, live.end, live.duration) == (RunStatus.IN_PROGRESS, "Manual", None, None)
    assert live.run_group_id == live.run_id and live.parameters == {}
    activities = [
        ActivityRun.from_json(a)
        for a in example("ActivityRuns_QueryByPipelineRun.json")["responses"]["200"]["body"]["value"]
    ]
    assert [(a.name, a.type, a.status, a.failed) for a in activities] == [
        ("ExampleForeachActivity", "ForEach", "Succeeded", False),
        ("ExampleCopyActivity", "Copy", "Succeeded", False),
    ]
    assert activities[0].duration == timedelta(milliseconds=22064) and activities[0].error_code == ""
    wait = ActivityRun.from_json(recorded("/queryActivityruns", "POST")[0]["response_body"]["value"][0])
    assert (wait.name, wait.type, wait.duration) == ("Wait1", "Wait", timedelta(milliseconds=5385))
    info = PipelineInfo.from_json(example("Pipelines_Get.json")["responses"]["200"]["body"])
    assert (info.name, dict(info.parameters), info.activities) == (
        "examplePipeline",
        {"OutputBlobNameList": "Array"},
        ("ExampleForeachActivity",),
    )


def test_client_reads_the_emulator_like_the_examples() -> None:
    scen = scenario_for(example("Pipelines_CreateRun.json")["parameters"])
    with Emulator(scen) as emu:
        client = emu.client()
        run = client.get_run(RUN_ID)
        assert run.parameters == {"OutputBlobNameList": BLOBS} and run.status is RunStatus.SUCCEEDED
        assert run.duration == timedelta(minutes=15) / 600
        client.cancel_run(CANCELLED_ID)
        assert client.get_run(CANCELLED_ID).status is RunStatus.CANCELING
        info = client.get_pipeline("myPipeline")
        assert info.activities == ("ExampleForeachActivity", "ExampleCopyActivity")
        assert [a.status for a in client.query_activity_runs(RUN_ID)] == ["Succeeded", "Succeeded"]
