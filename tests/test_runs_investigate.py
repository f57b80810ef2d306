"""Run investigation (SPEC §12) against the emulator over HTTPS: one stuck run among a hundred
15-minute loads of two feeder regions; list its outliers, show it, cancel it guarded, export."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backfill.cli.main import run
from backfill.emulator import Activity, Emulator, HistorySeries, PastRun, Pipeline, Scenario, Sink

PIPELINE = "LoadMeterTelemetry"
QUARTER = timedelta(minutes=15)
STUCK = "stuck-south-1"


def _floor(value: datetime) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return value - (value - epoch) % QUARTER


def _z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Factory:
    emu: Emulator
    sink: Path
    stuck_window: tuple[datetime, datetime]
    folder: Path

    def plan(self, name: str = "plan.toml", *, factory: str = "adf-grid-telemetry", region: str = "south") -> str:
        start, end = self.stuck_window
        text = f"""\
title = "Replay the stuck south window"
[target]
subscription_id = "00000000-0000-0000-0000-000000000000"
resource_group = "rg-energy-analytics"
factory = "{factory}"
pipeline = "{PIPELINE}"
[windows]
start = {_z(start)}
end = {_z(end)}
every = "15m"
[parameters]
windowStart = "{{start}}"
windowEnd = "{{end}}"
feederRegion = "{region}"
[match]
on = ["windowStart", "feederRegion"]
[[checks]]
name = "readings-in-sink"
kind = "sql"
url = "sqlite:///{self.sink}"
query = "SELECT COUNT(*) FROM meter_readings WHERE feeder = :feeder AND reading_ts >= :start AND reading_ts < :end"
args = {{ feeder = "{region}", start = "{{start}}", end = "{{end}}" }}
expect = 10
"""
        path = self.folder / name
        path.write_text(text, encoding="utf-8")
        return str(path)


def _scenario(folder: Path, cancel_time: timedelta) -> tuple[Scenario, tuple[datetime, datetime]]:
    now = datetime.now(UTC)
    first, last = _floor(now - timedelta(hours=12)), _floor(now) - 2 * QUARTER
    scenario = Scenario(speed=60.0, cancel_time=cancel_time)
    scenario.add_pipeline(
        Pipeline(
            name=PIPELINE,
            activities=(
                Activity("LookupWatermark", "Lookup"),
                Activity("CopyReadings", "Copy"),
                Activity("AdvanceWatermark", "SqlServerStoredProcedure"),
            ),
            parameters={"windowStart": "String", "windowEnd": "String", "feederRegion": "String"},
            duration=timedelta(minutes=11),
            rows=10,
            sink=Sink(
                url=f"sqlite:///{folder / 'sink.db'}", table="meter_readings", columns={"feeder": "{feederRegion}"}
            ),
        )
    )
    for region in ("north", "south"):
        scenario.series.append(
            HistorySeries(
                PIPELINE,
                start=first,
                end=last,
                every=QUARTER,
                parameters={"windowStart": "{start}", "windowEnd": "{end}", "feederRegion": region},
                delay=timedelta(minutes=2),
            )
        )
    # The window before the series began: its run started on time and never finished copying.
    window = (first - QUARTER, first)
    scenario.add_history(
        PastRun(
            PIPELINE,
            start=first + timedelta(minutes=2),
            run_id=STUCK,
            status="InProgress",
            activity="CopyReadings",
            parameters={"windowStart": _z(window[0]), "windowEnd": _z(window[1]), "feederRegion": "south"},
        )
    )
    return scenario, window


@contextlib.contextmanager
def _factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancel_time: timedelta) -> Iterator[Factory]:
    scenario, window = _scenario(tmp_path, cancel_time)
    with Emulator(scenario) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("BACKFILL_ACTOR", "carol@contoso.com")
        yield Factory(emu, tmp_path / "sink.db", window, tmp_path)


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Factory]:
    # Canceling lasts 60 emulated seconds: one real second at speed 60.
    with _factory(tmp_path, monkeypatch, timedelta(seconds=60)) as made:
        yield made


def _json(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 0) -> dict[str, Any]:
    assert run(args) == code
    return dict(json.loads(capsys.readouterr().out))


def _events(capsys: pytest.CaptureFixture[str], kind: str) -> list[dict[str, Any]]:
    assert run(["ledger", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    return [e for e in shown["events"] if e["kind"] == kind]


def test_outliers_finds_the_one_stuck_run_among_hundreds(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    every = _json(["runs", "list", "--since", "1d", "--json"], capsys)["runs"]
    assert isinstance(every, list) and len(every) > 90
    assert all("usual_ms" in r and "outlier" in r for r in every)
    data = _json(["runs", "list", "--since", "1d", "--outliers", "--json"], capsys)
    assert [r["run_id"] for r in data["runs"]] == [STUCK]
    stuck = data["runs"][0]
    assert stuck["outlier"] is True and 10_000 <= stuck["usual_ms"] <= 12_000  # 11 emulated minutes / 60
    assert run(["runs", "list", "--since", "1d", "--outliers"]) == 0
    out = capsys.readouterr().out
    assert "InProgress" in out and "+ !" in out and out.splitlines()[-1] == "1 runs"


def test_param_filters_like_window_matching(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    south = _json(["runs", "list", "--since", "6h", "--param", "feederRegion=south", "--json"], capsys)["runs"]
    assert south and all(r["parameters"]["feederRegion"] == "south" for r in south)
    start = factory.stuck_window[0]
    # The same instant written with fractional digits and an offset: the same window.
    written = start.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00")
    one = _json(["runs", "list", "--since", "1d", "--param", f"windowStart={written}", "--json"], capsys)["runs"]
    assert [r["run_id"] for r in one] == [STUCK]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--param", "feederRegion"], 2, "error: --param 'feederRegion': write it NAME=VALUE"),
        (["--since", "2h", "--until", "6h"], 2, "error: --until must be later than --since"),
        (["--since", "2026-11-03T02:00:00"], 2, "error: --since '2026-11-03T02:00:00' has no UTC offset"),
    ],
)
def test_bad_list_input_is_one_line(
    factory: Factory, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    assert run(["runs", "list", *args]) == code
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_show_names_the_stuck_activity_and_since_when(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    data = _json(["runs", "show", STUCK, "--json"], capsys)
    running = data["in_progress_activity"]
    assert isinstance(running, dict) and running["name"] == "CopyReadings" and running["start"].endswith("Z")
    assert data["dominant_activity"]["name"] == "CopyReadings"
    assert data["outlier"] is True and data["usual_ms"]
    assert run(["runs", "show", STUCK]) == 0
    out = capsys.readouterr().out
    assert "in progress: CopyReadings since " in out
    assert "usual duration: median 11.0s" in out and "feederRegion=south" in out and "far outside it" in out


def test_cancel_needs_plan_or_no_check(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "cancel", STUCK, "--reason", "stuck", "--yes"]) == 2
    assert "needs --plan PLAN" in capsys.readouterr().err
    assert factory.emu.requests("cancelPipelineRun") == []


def test_cancel_refuses_a_run_within_its_usual_duration(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    start, _ = factory.stuck_window
    fresh = factory.emu.client().create_run(
        PIPELINE, {"windowStart": _z(start - QUARTER), "windowEnd": _z(start), "feederRegion": "south"}
    )
    assert run(["runs", "cancel", fresh, "--reason", "impatient", "--no-check", "--yes"]) == 1
    err = capsys.readouterr().err
    assert f"run {fresh} not cancelled: running for" in err and "within its usual duration" in err and "--force" in err
    assert err.count("\n") == 1
    assert factory.emu.requests("cancelPipelineRun") == [] and _events(capsys, "run.cancel-requested") == []


def test_cancel_refuses_a_finished_run(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    done = _json(["runs", "list", "--since", "6h", "--status", "Succeeded", "--json"], capsys)["runs"][0]
    assert run(["runs", "cancel", done["run_id"], "--reason", "x", "--no-check", "--force", "--yes"]) == 1
    assert "it is Succeeded, not queued or in progress" in capsys.readouterr().err


def test_cancel_refuses_the_wrong_plan(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    other = factory.plan("other.toml", factory="adf-other")
    assert run(["runs", "cancel", STUCK, "--reason", "x", "--plan", other, "--yes"]) == 1
    assert "other.toml targets factory rg-energy-analytics/adf-other, not rg-energy-analytics/adf-grid-telemetry" in (
        capsys.readouterr().err
    )
    north = factory.plan("north.toml", region="north")
    assert run(["runs", "cancel", STUCK, "--reason", "x", "--plan", north, "--yes"]) == 1
    assert "match no window of north.toml" in capsys.readouterr().err
    assert factory.emu.requests("cancelPipelineRun") == []


def test_cancel_refuses_a_window_with_rows_in_the_sink_unless_forced(
    factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    start, _ = factory.stuck_window
    with contextlib.closing(sqlite3.connect(factory.sink)) as sink:
        sink.execute("INSERT INTO meter_readings (reading_ts, feeder) VALUES (?, 'south')", (_z(start),))
        sink.commit()
    plan = factory.plan()
    assert run(["runs", "cancel", STUCK, "--reason", "stuck", "--plan", plan, "--yes"]) == 1
    err = capsys.readouterr().err
    assert "the sink holds rows of window" in err and "readings-in-sink partial" in err
    assert factory.emu.requests("cancelPipelineRun") == []
    assert run(["runs", "cancel", STUCK, "--reason", "stuck, rows checked", "--plan", plan, "--force", "--yes"]) == 0
    assert "forced: the sink holds rows of window" in capsys.readouterr().out
    (requested,) = _events(capsys, "run.cancel-requested")
    payload = requested["payload"]
    assert payload["force"] is True and payload["forced"] and payload["checks"][0]["status"] == "partial"


def test_guarded_cancel_records_evidence_and_waits_for_cancelled(
    factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = factory.plan()
    assert run(["runs", "cancel", STUCK, "--reason", "stuck in CopyReadings for 12h", "--plan", plan, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "readings-in-sink clean" in out and f"cancelled {STUCK}: ADF confirmed Cancelled after" in out
    assert factory.emu.run(STUCK)["status"] == "Cancelled"
    (requested,) = _events(capsys, "run.cancel-requested")
    payload = requested["payload"]
    assert isinstance(payload, dict) and requested["actor"] == "carol@contoso.com"
    assert payload["reason"] == "stuck in CopyReadings for 12h" and payload["force"] is False
    assert payload["parameters"]["feederRegion"] == "south" and payload["usual_ms"] and payload["elapsed_ms"]
    assert payload["checks"][0]["status"] == "clean" and payload["checks"][0]["evidence"]["committed"] == 0
    assert payload["window"] == f"{_z(factory.stuck_window[0])}/{_z(factory.stuck_window[1])}"
    (cancelled,) = _events(capsys, "run.cancelled")
    assert cancelled["payload"]["status"] == "Cancelled"
    # The emulator keeps it Canceling for 60 emulated seconds, one real second at speed 60: waited out.
    assert cancelled["payload"]["waited_ms"] >= 500
    assert len(factory.emu.requests("cancelPipelineRun")) == 1
    # The ledger's --since takes the same spellings: a span back from now and a date.
    for since in ("10m", "2000-01-01"):
        shown = _json(["ledger", "show", "--since", since, "--json"], capsys)["events"]
        assert [e["kind"] for e in shown] == ["run.cancel-requested", "run.cancelled"]
    assert _json(["ledger", "show", "--until", "1h", "--json"], capsys)["events"] == []


def test_a_cancel_never_confirmed_says_so_and_records_no_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with _factory(tmp_path, monkeypatch, timedelta(days=1)):
        monkeypatch.setenv("BACKFILL_CANCEL_WAIT", "2s")
        assert run(["runs", "cancel", STUCK, "--reason", "stuck", "--no-check", "--yes"]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"error: run {STUCK}: cancel sent, ADF still says Canceling after 2.0s; not confirmed (the ledger "
            f"records the request without an outcome); look again: backfill runs show {STUCK}\n"
        )
        assert len(_events(capsys, "run.cancel-requested")) == 1 and _events(capsys, "run.cancelled") == []


def test_export_streams_every_run_and_the_ledger_records_the_range(
    factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = _json(["runs", "list", "--since", "1d", "--json"], capsys)["runs"]
    assert run(["runs", "export", "--since", "1d", "--output", "runs.jsonl"]) == 0
    err = capsys.readouterr().err
    assert f"exported {len(listed):,} runs to runs.jsonl (0 from the history cache, {len(listed):,} from ADF)" in err
    rows = [json.loads(line) for line in Path("runs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["run_id"] for r in rows) == sorted(r["run_id"] for r in listed)
    assert {r["run_id"]: r for r in rows}[STUCK]["outlier"] is True
    (exported,) = _events(capsys, "runs.exported")
    payload = exported["payload"]
    assert isinstance(payload, dict) and payload["runs"] == len(listed) and payload["since"].endswith("Z")
    assert "parameters" not in json.dumps(payload) or payload["params"] == {}
    assert STUCK not in json.dumps(exported)  # who exported what range, never the data


def test_export_csv_with_activities(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(["runs", "export", "--since", "1d", "--param", "feederRegion=south", "--format", "csv", "--activities"])
        == 0
    )
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and "activities" in rows[0] and "usual_ms" in rows[0]
    stuck = next(r for r in rows if r["run_id"] == STUCK)
    assert json.loads(stuck["parameters"])["feederRegion"] == "south"
    assert [a["status"] for a in json.loads(stuck["activities"])] == ["Succeeded", "InProgress"]


def test_export_to_an_unwritable_path_is_one_line_and_records_nothing(
    factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["runs", "export", "--since", "1d", "--output", "/nonexistent-folder/runs.jsonl"]) == 1
    err = capsys.readouterr().err
    assert err == "error: cannot write /nonexistent-folder/runs.jsonl: No such file or directory\n"
    assert factory.emu.requests("queryPipelineRuns") == []


def test_export_reaches_past_45_days_through_the_history_cache(
    factory: Factory, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from backfill.factory.run import Run
    from backfill.history import sync_history
    from backfill.store import history_writes as store
    from backfill.store.database import Database

    db = Database()
    try:
        sync_history(db, factory.emu.client(), PIPELINE)
        old = datetime.now(UTC) - timedelta(days=50)
        gone = [
            Run.from_json(
                {
                    "runId": f"old-{i}",
                    "pipelineName": PIPELINE,
                    "status": "Succeeded",
                    "parameters": {"windowStart": _z(old + i * QUARTER), "feederRegion": "north"},
                    "runStart": _z(old + i * QUARTER),
                    "runEnd": _z(old + i * QUARTER + timedelta(seconds=11)),
                    "lastUpdated": _z(old + i * QUARTER + timedelta(seconds=11)),
                    "durationInMs": 11_000,
                }
            )
            for i in range(7)
        ]
        with db.writing() as conn:
            store.upsert_runs(conn, factory.emu.client().ref.key, PIPELINE, gone)
    finally:
        db.dispose()
    assert run(["runs", "export", "--since", "60d", "--pipeline", PIPELINE]) == 0
    captured = capsys.readouterr()
    ids = [json.loads(line)["run_id"] for line in captured.out.splitlines()]
    assert ids[:7] == [f"old-{i}" for i in range(7)] and STUCK in ids
    assert "(ADF keeps 45 days): from the history cache (LoadMeterTelemetry)" in captured.err
    assert "7 from the history cache" in captured.err


def test_a_synced_pipeline_s_usual_durations_come_from_the_history_cache(
    factory: Factory, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = factory.plan()
    assert run(["history", "sync", plan]) == 0
    capsys.readouterr()
    before = len(factory.emu.requests("queryPipelineRuns"))
    data = _json(["runs", "show", STUCK, "--json"], capsys)
    assert data["outlier"] is True and data["usual_ms"]
    # No query for the usual runs: they were read from the cache (its [match] on scoped them).
    assert len(factory.emu.requests("queryPipelineRuns")) == before
    assert run(["runs", "show", STUCK]) == 0
    assert "with feederRegion=south" in capsys.readouterr().out


def test_a_run_that_ended_before_the_cancel_reached_it(factory: Factory) -> None:
    import time

    from backfill.cancel import CancelRequest, cancel_run, guard
    from backfill.errors import BackfillError
    from backfill.identity import resolve_actor
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger
    from backfill.timeutil import utcnow

    start, _ = factory.stuck_window
    client = factory.emu.client()
    fresh = client.create_run(
        PIPELINE, {"windowStart": _z(start - QUARTER), "windowEnd": _z(start), "feederRegion": "north"}
    )
    request = CancelRequest(fresh, "impatient", no_check=True, force=True)
    guarded = guard(client, request, utcnow(), lambda r: r)
    deadline = time.monotonic() + 60
    while client.get_run(fresh).status.value != "Succeeded":  # it ends meanwhile (11 s)
        assert time.monotonic() < deadline
        time.sleep(0.3)
    db = Database()
    try:
        with pytest.raises(BackfillError) as caught:
            cancel_run(client, Ledger(db), guarded, request, resolve_actor())
        kinds = [e.kind for e in Ledger(db).events()]
    finally:
        db.dispose()
    assert str(caught.value) == (
        f"run {fresh} not cancelled: it ended (Succeeded) before the cancel reached it; "
        "the ledger records the request without an outcome"
    )
    assert kinds == ["run.cancel-requested"]
