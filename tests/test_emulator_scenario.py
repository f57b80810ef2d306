"""Scenario files and values: loading, clear refusals, matching rules, the clock speed-up."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.cli.main import run
from backfill.emulator import Emulator, HistorySeries, OutcomeRule, Pipeline, Scenario, load_scenario
from backfill.emulator.scenario import adf_string, value_matches
from backfill.errors import ScenarioError
from backfill.factory.run import decode_parameter

EXAMPLE = Path(__file__).parent.parent / "plans" / "emulator-scenario.toml"


def test_the_example_scenario_loads() -> None:
    scen = load_scenario(EXAMPLE)
    assert (scen.factory, scen.resource_group, scen.speed) == ("adf-grid-telemetry", "rg-energy-analytics", 600.0)
    pipeline = scen.pipeline("LoadMeterTelemetry")
    assert [a.name for a in pipeline.activities] == ["LookupWatermark", "CopyReadings", "AdvanceWatermark"]
    assert pipeline.defaults == {"feederRegion": "north", "sourceKey": ""} and pipeline.rows == 900
    assert pipeline.sink is not None and pipeline.sink.columns == {"feeder": "{feederRegion}"}
    assert [s.status for s in scen.series] == [
        "Succeeded",
        "Failed",
        "Failed",
        "Failed",
        "Succeeded",
        "InProgress",
        "Succeeded",
        "Cancelled",
    ]
    assert scen.series[1].every == timedelta(minutes=15) and scen.series[-1].end == timedelta(minutes=-105)
    assert [o.result for o in scen.outcomes] == ["fail", "hang", "succeed"] and scen.outcomes[0].times == 1
    assert scen.faults[0].kind == "throttle" and scen.faults[0].skip == 2


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


PIPE = '[[pipelines]]\nname = "P"\nactivities = ["A", "B"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[clock]\nspeed = 'fast'\n", "clock.speed: expected a number, got 'fast'"),
        ("[clock]\nspeed = 0\n", "clock.speed: expected a positive number, got 0"),
        (
            "[clocks]\n",
            "clocks: unknown key (expected one of clock, factory, faults, history, outcomes, "
            "pipelines, series, service)",
        ),
        (
            PIPE + "duraton = '5m'\n",
            "pipelines[0].duraton: unknown key (expected one of activities, annotations, "
            "concurrency, description, duration, name, parameters, rows, sink)",
        ),
        (
            PIPE + "duration = '5 minutes'\n",
            "pipelines[0].duration: expected a duration like 15m, 90s or 2h, got '5 minutes'",
        ),
        (
            PIPE + "[[history]]\nstart = 2026-11-03T02:00:00\n",
            "history[0].start: 2026-11-03T02:00:00 has no UTC offset; write it with Z or +00:00",
        ),
        (
            PIPE + "[[history]]\nstart = 'yesterday'\n",
            "history[0].start: expected a UTC time (2026-11-03T02:00:00Z) "
            "or an offset from now like -5h or now, got 'yesterday'",
        ),
        (
            PIPE + "[[history]]\nstart = '-1h'\nstatus = 'Done'\n",
            "history[0].status: expected one of Succeeded, Failed, Cancelled, InProgress, Queued, got 'Done'",
        ),
        (
            PIPE + "[[history]]\nstart = '-1h'\nrows = -1\n",
            "history[0].rows: expected a whole number of rows, 0 or more",
        ),
        (PIPE + "[[history]]\npipeline = 'Q'\nstart = '-1h'\n", "history[0]: unknown pipeline 'Q'"),
        (PIPE + "[[outcomes]]\nresult = 'fail'\nactivity = 'C'\n", "outcomes[0]: no pipeline has an activity 'C'"),
        (
            PIPE + "[[outcomes]]\nmatch = { w = 5 }\n",
            "outcomes[0].match.w: expected a string (wildcards allowed) or an array of strings",
        ),
        (
            "[[faults]]\nkind = 'explode'\n",
            "faults[0]: unknown fault kind 'explode' (one of throttle, error, latency, drop)",
        ),
        (
            "[[faults]]\nkind = 'error'\noperation = 'deleteEverything'\n",
            "faults[0]: unknown operation "
            "'deleteEverything' (one of *, read, write, createRun, cancelPipelineRun, queryPipelineRuns, "
            "getPipelineRun, queryActivityRuns, getPipeline, listPipelines, getFactory, or an SDK operation id)",
        ),
        (
            "[[pipelines]]\nname = 'P'\n[pipelines.sink]\ntable = 't'\n",
            "pipelines[0].sink.url: is required (a non-empty string)",
        ),
        ("[factory\n", "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)"),
    ],
)
def test_malformed_scenarios_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    assert str(refused.value) == f"{path}: {message}"


def test_serve_refuses_a_bad_scenario_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[clock]\nspeed = 'fast'\n")
    assert run(["emulator", "serve", "--scenario", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: {path}: clock.speed: expected a number, got 'fast'\n"
    assert captured.out == ""
    assert run(["emulator", "serve", "--scenario", str(tmp_path / "missing.toml")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.toml'}: no such file\n"
    assert run(["emulator", "serve", "--port", "70000"]) == 2


def test_a_hand_built_scenario_is_validated() -> None:
    scen = Scenario(speed=-1)
    with pytest.raises(ScenarioError, match=r"^<scenario>: speed must be positive$"):
        Emulator(scen).start()


@given(st.text(min_size=1).filter(lambda s: not any(c in s for c in "*?[")))
def test_a_value_matches_itself(value: str) -> None:
    assert value_matches(value, value)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_the_same_instant_matches_however_written(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    assert value_matches(moment.strftime("%Y-%m-%dT%H:%M:%SZ"), moment.isoformat())
    assert not value_matches(moment.strftime("%Y-%m-%dT%H:%M:%SZ"), (moment + timedelta(seconds=1)).isoformat())


@given(
    st.recursive(
        st.text() | st.integers(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8
    ).filter(lambda v: isinstance(v, list | dict))
)
def test_arrays_and_objects_travel_as_json_strings(value: object) -> None:
    wire = adf_string(value)
    assert isinstance(wire, str) and json.loads(wire) == value
    assert decode_parameter(wire) == value


def test_wildcards_and_alternatives() -> None:
    rule = OutcomeRule("fail", match={"windowStart": "2026-11-03T02:*", "feederRegion": ["north", "south"]})
    assert rule.matches("P", {"windowStart": "2026-11-03T02:15:00Z", "feederRegion": "south"})
    assert not rule.matches("P", {"windowStart": "2026-11-03T03:15:00Z", "feederRegion": "south"})
    assert not rule.matches("P", {"windowStart": "2026-11-03T02:15:00Z", "feederRegion": "east"})
    assert not rule.matches("P", {"feederRegion": "north"})
    assert adf_string(True) == "True" and adf_string(5) == "5" and adf_string("x") == "x"


def test_relative_series_line_up_with_the_grid() -> None:
    origin = datetime(2026, 11, 25, 10, 7, 31, tzinfo=UTC)
    series = HistorySeries(
        "P",
        timedelta(hours=-2),
        timedelta(hours=-1),
        timedelta(minutes=15),
        {"windowStart": "{start}", "day": "{start:%Y-%m-%d}"},
        delay=timedelta(minutes=2),
    )
    runs = list(series.runs(origin))
    assert [r.parameters["windowStart"] for r in runs] == [
        "2026-11-25T08:00:00Z",
        "2026-11-25T08:15:00Z",
        "2026-11-25T08:30:00Z",
        "2026-11-25T08:45:00Z",
    ]
    assert runs[0].start == datetime(2026, 11, 25, 8, 17, tzinfo=UTC) and runs[0].parameters["day"] == "2026-11-25"


def test_durations_are_compressed_by_the_speed() -> None:
    scen = Scenario(speed=1800.0, queue_time=timedelta(minutes=3))
    scen.add_pipeline(Pipeline("P", duration=timedelta(minutes=15)))
    with Emulator(scen) as emu:
        run_id = emu.client().create_run("P")
        assert emu.run(run_id)["status"] == "Queued"
        seen = set()
        deadline = time.monotonic() + 5
        # One read per turn: reading the status twice raced the clock under load (InProgress in
        # the loop test, Succeeded in the set).
        while (status := emu.run(run_id)["status"]) != "Succeeded" and time.monotonic() < deadline:
            seen.add(status)
            time.sleep(0.01)
        final = emu.run(run_id)
        assert seen == {"Queued", "InProgress"}
        assert final["durationInMs"] == 500 and final["lastUpdated"] == final["runEnd"]
        assert final["invokedBy"]["invokedByType"] == "Manual"
