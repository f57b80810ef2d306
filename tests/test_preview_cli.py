"""``backfill preview`` end to end: the emulator over HTTPS, a real SQLite sink and sql check,
every decision of SPEC §4, the table, the JSON form, exit codes and the cost of a warm preview."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from plan_samples import plan_toml

from backfill.cli import main
from backfill.emulator import Emulator, PastRun, Pipeline, Scenario, Sink
from backfill.timeutil import format_utc, utcnow

PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)
ROWS = 10

# Everything but the windows, which each plan appends.
HEADER = plan_toml(None)


def at(base: datetime, index: int) -> datetime:
    return base + index * EVERY


def past(
    pipeline: str,
    base: datetime,
    index: int,
    status: str,
    *,
    delay: int = 5,
    spelling: str = "%Y-%m-%dT%H:%M:%SZ",
    **options: object,
) -> PastRun:
    start, end = at(base, index), at(base, index + 1)
    parameters = {"windowStart": start.strftime(spelling), "windowEnd": format_utc(end), "feederRegion": "north"}
    return PastRun(pipeline, end + timedelta(minutes=delay), parameters, status=status, **options)  # type: ignore[arg-type]


def build(base: datetime, sink: Path) -> Scenario:
    scen = Scenario(speed=6000.0)
    scen.add_pipeline(
        Pipeline(
            PIPELINE,
            parameters={
                "windowStart": "String",
                "windowEnd": "String",
                "feederRegion": "String",
                "sourceKey": "SecureString",
            },
            rows=ROWS,
            sink=Sink(f"sqlite:///{sink}", "meter_readings", columns={"feeder": "{feederRegion}"}),
        )
    )
    scen.add_history(
        [
            # ADF's own spelling of a timestamp (seven fractional digits) matches the plan's.
            past(PIPELINE, base, 0, "Succeeded", spelling="%Y-%m-%dT%H:%M:%S.0000000Z"),
            past(PIPELINE, base, 1, "InProgress"),
            past(PIPELINE, base, 2, "Failed"),  # wrote nothing: rerun
            past(PIPELINE, base, 3, "Failed", rows_before_failure=ROWS),  # wrote everything, then failed
            past(PIPELINE, base, 4, "Cancelled", rows_before_failure=4),
            # 5: no run, sink clean. 6: no run, the sink cannot answer.
            past(PIPELINE, base, 7, "Failed", run_group_id="group-7", run_id="original-7"),
            past(PIPELINE, base, 7, "Succeeded", run_group_id="group-7", run_id="recovery-7", delay=30),
        ]
    )
    # Fifty days ago: older than ADF's retention, so the service no longer shows this run.
    scen.add_history(past(PIPELINE, base - timedelta(days=50), 0, "Succeeded"))
    return scen


def checked_plan(base: datetime, sink: Path) -> str:
    broken = format_utc(at(base, 6))
    return (
        HEADER
        + f"""
[windows]
start = {format_utc(base)}
end = {format_utc(at(base, 8))}
every = "15m"

[[checks]]
name = "readings-in-sink"
kind = "sql"
url = "sqlite:///{sink}"
# json('...') fails at run time: the sink "cannot answer" for window 6 only.
query = \"\"\"SELECT COUNT(*) + CASE WHEN :start = '{broken}' THEN json('sink unreadable') ELSE 0 END
FROM meter_readings WHERE feeder = :feeder AND reading_ts >= :start AND reading_ts < :end\"\"\"
args = {{ feeder = "north", start = "{{start}}", end = "{{end}}" }}
expect = {ROWS}
"""
    )


def unchecked_plan(base: datetime) -> str:
    old = base - timedelta(days=50)
    windows = [(old, at(old, 1)), (at(base, 2), at(base, 3)), (at(base, 5), at(base, 6))]
    listed = ", ".join(f"[{format_utc(s)}, {format_utc(e)}]" for s, e in windows)
    return HEADER + f"\n[windows]\nlist = [{listed}]\n"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Emulator, Path, Path, datetime]]:
    base = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    sink = tmp_path / "sink.db"
    checked, unchecked = tmp_path / "checked.toml", tmp_path / "unchecked.toml"
    checked.write_text(checked_plan(base, sink), encoding="utf-8")
    unchecked.write_text(unchecked_plan(base), encoding="utf-8")
    with Emulator(build(base, sink)) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SOURCE_API_KEY", "hunter2")
        yield emu, checked, unchecked, base


def test_every_decision_in_the_table(
    setup: tuple[Emulator, Path, Path, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    emu, checked, _, base = setup
    assert main.run(["preview", str(checked)]) == 4
    captured = capsys.readouterr()
    assert captured.err.startswith(f"history of {PIPELINE}: first sync, 7 runs fetched in 1 API call")
    lines = captured.out.splitlines()
    assert lines[0].split() == ["window", "latest", "run", "status", "checks", "decision"]  # --wide: reason
    rows = {line.split()[0]: line for line in lines[2:-1]}
    expected = [
        "skip-succeeded",
        "skip-in-progress",
        "rerun",
        "skip-complete-in-sink",
        "blocked-partial",
        "run",
        "blocked-check-error",
        "skip-succeeded",
    ]
    for index, decision in enumerate(expected):
        key = f"{format_utc(at(base, index))}/{format_utc(at(base, index + 1))}"
        assert rows[key].split()[-1] == decision, rows[key]
    assert "recovery-7" in rows[f"{format_utc(at(base, 7))}/{format_utc(at(base, 8))}"]
    assert "readings-in-sink: partial" in rows[f"{format_utc(at(base, 4))}/{format_utc(at(base, 5))}"]
    assert lines[-1] == (
        "8 windows: 2 skip-succeeded, 1 run, 1 rerun, 1 skip-in-progress, "
        "1 skip-complete-in-sink, 1 blocked-partial, 1 blocked-check-error"
    )
    assert "hunter2" not in captured.out + captured.err
    assert not emu.create_run_calls()


def test_json_and_warm_preview_cost(
    setup: tuple[Emulator, Path, Path, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    emu, checked, _, base = setup
    assert main.run(["history", "sync", str(checked)]) == 0
    capsys.readouterr()
    emu.clear_log()
    assert main.run(["preview", str(checked), "--json"]) == 4
    assert len(emu.request_log) <= 3
    data = json.loads(capsys.readouterr().out)
    assert data["pipeline"] == PIPELINE
    assert data["factory"]["factory"] == "adf-grid-telemetry"
    assert data["history"]["runs"] == 7
    assert data["history"]["horizon"].endswith("Z")
    assert data["summary"]["blocked-check-error"] == 1
    windows = {w["key"]: w for w in data["windows"]}
    partial = windows[f"{format_utc(at(base, 4))}/{format_utc(at(base, 5))}"]
    assert partial["decision"] == "blocked-partial"
    assert partial["latest_run"]["status"] == "Cancelled"
    assert partial["checks"][0]["status"] == "partial"
    assert partial["checks"][0]["evidence"]["committed"] == 4
    assert partial["parameters"]["sourceKey"] == "***"
    broken = windows[f"{format_utc(at(base, 6))}/{format_utc(at(base, 7))}"]
    assert broken["decision"] == "blocked-check-error"
    assert broken["latest_run"] is None
    assert "malformed JSON" in broken["checks"][0]["reason"]
    succeeded = windows[f"{format_utc(at(base, 0))}/{format_utc(at(base, 1))}"]
    assert succeeded["checks"] == []  # history decided: no check ran


def test_unknown_windows_without_checks(
    setup: tuple[Emulator, Path, Path, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, unchecked, _ = setup
    # Never synced and told not to: nothing is known, so every window without a run is blocked.
    assert main.run(["preview", str(unchecked), "--no-sync"]) == 4
    captured = capsys.readouterr()
    assert captured.err == (f"note: the history of {PIPELINE} was never synced; run without --no-sync\n")
    assert captured.out.splitlines()[-1] == "3 windows: 3 blocked-unknown"

    assert main.run(["preview", str(unchecked), "--json"]) == 4
    data = json.loads(capsys.readouterr().out)
    assert [w["decision"] for w in data["windows"]] == ["blocked-unknown", "rerun", "run"]
    # The old window did succeed, 50 days ago, but ADF no longer shows that run.
    assert data["windows"][0]["reason"].startswith("no run in history, but the window starts before the history")


def test_exit_zero_when_nothing_is_blocked(
    setup: tuple[Emulator, Path, Path, datetime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, unchecked, base = setup
    plan = tmp_path / "recent.toml"
    plan.write_text(
        unchecked.read_text(encoding="utf-8")
        .replace(format_utc(base - timedelta(days=50)), format_utc(at(base, 0)))
        .replace(format_utc(at(base - timedelta(days=50), 1)), format_utc(at(base, 1))),
        encoding="utf-8",
    )
    assert main.run(["preview", str(plan)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 windows: 1 run, 1 rerun, 1 skip-succeeded"


def test_bad_plan_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        HEADER + '\n[windows]\nstart = 2026-11-03T00:00:00\nend = 2026-11-03T01:00:00Z\nevery = "15m"\n',
        encoding="utf-8",
    )
    assert main.run(["preview", str(plan)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {plan}: windows.start")
    assert len(captured.err.splitlines()) == 1
    assert main.run(["preview", str(tmp_path / "missing.toml")]) == 1
    assert "missing.toml" in capsys.readouterr().err
