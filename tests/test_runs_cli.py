"""``backfill runs list|show|cancel`` against the emulator over HTTPS, through the real SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from backfill.cli.main import run
from backfill.emulator import Activity, Emulator, PastRun, Pipeline, Scenario

PIPELINE = "LoadMeterTelemetry"


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    scenario = Scenario(speed=60.0)
    scenario.add_pipeline(
        Pipeline(
            name=PIPELINE,
            activities=(Activity("LookupWatermark", "Lookup"), Activity("CopyReadings", "Copy")),
            parameters={"windowStart": "String", "feederRegion": "String"},
        )
    )
    scenario.add_pipeline(Pipeline(name="LoadRoutes"))
    scenario.add_history(
        [
            PastRun(
                PIPELINE,
                start=timedelta(hours=-3),
                run_id="ok-1",
                parameters={"windowStart": "2026-11-03T00:00:00Z", "feederRegion": "north"},
            ),
            PastRun(
                PIPELINE,
                start=timedelta(hours=-2),
                run_id="failed-1",
                status="Failed",
                activity="CopyReadings",
                error_code="2200",
                message="sink lock timeout",
                parameters={"windowStart": "2026-11-03T00:15:00Z", "feederRegion": "north"},
            ),
            PastRun("LoadRoutes", start=timedelta(hours=-1), run_id="routes-1"),
            PastRun(PIPELINE, start=timedelta(days=-3), run_id="old-1"),
        ]
    )
    with Emulator(scenario) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        yield emu


def test_list_prints_a_table_with_utc_times(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "list", "--pipeline", PIPELINE]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["run", "ID", "pipeline", "status", "start", "duration", "usual", "parameters"]
    assert "failed-1" in out and "ok-1" in out
    assert "routes-1" not in out and "old-1" not in out  # other pipeline; started before --since
    assert out.index("failed-1") < out.index("ok-1")  # newest first
    assert "Z " in lines[2]
    assert lines[-1] == "2 runs"


def test_list_filters_status_and_since_as_json(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "list", "--status", "Failed", "--since", "2000-01-01T00:00:00Z", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in data["runs"]] == ["failed-1"]
    failed = data["runs"][0]
    assert failed["status"] == "Failed" and failed["start"].endswith("Z")
    assert failed["parameters"] == {"windowStart": "2026-11-03T00:15:00Z", "feederRegion": "north"}


def test_list_since_includes_older_runs(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "list", "--since", "2000-01-01T00:00:00Z", "--json"]) == 0
    ids = {r["run_id"] for r in json.loads(capsys.readouterr().out)["runs"]}
    assert ids == {"ok-1", "failed-1", "routes-1", "old-1"}


def test_show_gives_activities_and_the_failing_error(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "show", "failed-1"]) == 0
    out = capsys.readouterr().out
    assert "LookupWatermark" in out and "CopyReadings" in out
    assert "failed in CopyReadings: 2200" in out and "sink lock timeout" in out
    assert "windowStart" in out and "2026-11-03T00:15:00Z" in out
    assert "usual duration: none (fewer than 5 succeeded runs in the last 30 days)" in out


def test_show_json(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "show", "ok-1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run"]["status"] == "Succeeded"
    assert data["failing_activity"] is None
    assert [a["name"] for a in data["activities"]] == ["LookupWatermark", "CopyReadings"]
    assert data["usual_duration_ms"] is None and data["outlier"] is False  # one succeeded run is no usual
    assert data["dominant_activity"]["name"] in ("LookupWatermark", "CopyReadings")
    assert data["in_progress_activity"] is None


def test_show_unknown_run_is_one_line(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "show", "no-such-run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: factory: 404") and err.count("\n") == 1


def test_wrong_token_is_one_line(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKFILL_ADF_TOKEN", "wrong")
    assert run(["runs", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: factory: 401") and err.count("\n") == 1


def test_cancel_is_recorded_in_the_ledger(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = emulator.client().create_run(PIPELINE, {"windowStart": "2026-11-03T01:00:00Z"})
    monkeypatch.setenv("BACKFILL_ACTOR", "carol@contoso.com")
    assert run(["runs", "cancel", run_id, "--reason", "stuck on sink lock", "--no-check", "--force", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "usual duration:" in out and f"cancel requested for {run_id}" in out
    assert f"cancelled {run_id}: ADF confirmed Cancelled after" in out
    assert run(["ledger", "show", "--json"]) == 0
    shown = capsys.readouterr().out
    assert "run.cancel-requested" in shown and "stuck on sink lock" in shown and "carol@contoso.com" in shown
    assert "run.cancelled" in shown
    assert emulator.client().get_run(run_id).status.value == "Cancelled"


def test_cancel_not_confirmed_cancels_nothing(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    run_id = emulator.client().create_run(PIPELINE, {"windowStart": "2026-11-03T01:00:00Z"})
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert run(["runs", "cancel", run_id, "--reason", "wrong window", "--no-check", "--force"]) == 1
    assert capsys.readouterr().err == f"error: run {run_id} not cancelled: not confirmed\n"
    assert emulator.requests("cancelPipelineRun") == []
