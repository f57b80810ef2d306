"""``backfill run`` end to end: the emulator over HTTPS, a real plan, the SQLite ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_support import (
    EVERY,
    PIPELINE,
    base_time,
    cli,
    creates_per_window,
    emulator,
    events,
    fail_in_copy,
    keys,
    request,
    run_in_background,
    scenario,
    window_kinds,
    write_plan,
)

from backfill import events as ev
from backfill.emulator.scenario import OutcomeRule
from backfill.timeutil import format_utc

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch
FULL = ["intent", "created", "finished"]


def test_run_creates_one_run_per_window_and_completes(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(write_plan(tmp_path, 4, execution={"concurrency": 2}), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0
        out, err = capsys.readouterr()
        assert out == f"{bid} completed: 4 succeeded\n"
        assert creates_per_window(emu) == {format_utc(base + i * EVERY): 1 for i in range(4)}
    lines = err.splitlines()
    assert len(lines) >= 12 and all(" | done " in line for line in lines)  # intent, created, finished: 4 times
    assert lines[-1].endswith("| done 4/4, running 0, left 0")
    per = window_kinds(bid)
    assert per == {key: FULL for key in keys(base, 4)}
    recorded = events(bid)
    assert [e.kind for e in recorded if not e.window_key][-2:] == [ev.STARTED, ev.COMPLETED]
    intent = next(e for e in recorded if e.kind == ev.WINDOW_INTENT)
    assert intent.payload["parameters"]["sourceKey"] == "***"
    assert intent.payload["parameters"]["feederRegion"] == "north"
    assert intent.payload["mode"] == "new-run" and intent.actor == "carol"
    finished = [e.payload for e in recorded if e.kind == ev.WINDOW_FINISHED]
    assert all(p["status"] == "Succeeded" and p["duration_ms"] > 0 for p in finished)
    assert cli(monkeypatch, "carol", "ledger", "verify") == 0
    capsys.readouterr()
    assert cli(monkeypatch, "carol", "run", bid) == 1
    assert capsys.readouterr().err == f"error: {bid} is completed; nothing to run\n"


def test_a_failure_stops_the_backfill_and_names_the_activity(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    fail_in_copy(scen, base + EVERY, "Sink table locked")
    with emulator(scen, monkeypatch) as emu:
        bid = request(write_plan(tmp_path, 4), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 1
        err = capsys.readouterr().err.splitlines()[-1]
        assert len(emu.create_run_calls()) == 2
    second = keys(base, 4)[1]
    assert err.startswith(f"error: {bid} failed: window {second} run ")
    assert err.endswith(" Failed in activity CopyReadings: Sink table locked; on_failure = stop")
    finished = next(e.payload for e in events(bid) if e.kind == ev.WINDOW_FINISHED and e.window_key == second)
    assert (finished["failed_activity"], finished["error_code"], finished["activity_type"]) == (
        "CopyReadings",
        "2200",
        "Copy",
    )
    assert events(bid)[-1].kind == ev.FAILED


def test_on_failure_continue_runs_every_window(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("fail", match={"windowStart": format_utc(base)}))
    with emulator(scen, monkeypatch) as emu:
        bid = request(write_plan(tmp_path, 3, execution={"on_failure": "continue"}), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 1
        err = capsys.readouterr().err.splitlines()[-1]
        assert len(emu.create_run_calls()) == 3
    assert err.startswith(f"error: {bid} failed: 1 of 3 windows failed; first: window {keys(base, 1)[0]} run ")


def test_newest_first_order(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    with emulator(scenario(base), monkeypatch):
        bid = request(write_plan(tmp_path, 3, execution={"order": "newest-first"}), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0
    intents = [e.window_key for e in events(bid) if e.kind == ev.WINDOW_INTENT]
    assert intents == list(reversed(keys(base, 3)))


def test_recover_mode_reruns_the_failed_run_from_its_failure(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    from backfill.emulator.scenario import PastRun

    base = base_time()
    scen = scenario(base)
    params = {"windowStart": format_utc(base), "windowEnd": format_utc(base + EVERY), "feederRegion": "north"}
    scen.add_history(
        PastRun(PIPELINE, base + EVERY, params, status="Failed", run_id="failed-run-1", activity="CopyReadings")
    )
    with emulator(scen, monkeypatch) as emu:
        bid = request(write_plan(tmp_path, 2, execution={"mode": "recover"}), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0
        calls = emu.create_run_calls()
    recovery = [c.query for c in calls if c.query.get("referencePipelineRunId")]
    assert len(calls) == 2 and len(recovery) == 1
    assert recovery[0]["referencePipelineRunId"] == "failed-run-1"
    assert recovery[0]["isRecovery"].lower() == recovery[0]["startFromFailure"].lower() == "true"
    intent = next(e for e in events(bid) if e.kind == ev.WINDOW_INTENT and e.window_key == keys(base, 1)[0])
    assert (intent.payload["mode"], intent.payload["reference_run_id"]) == ("recover", "failed-run-1")


def test_a_timed_out_run_is_reported_and_left_running(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("hang", match={"windowStart": format_utc(base)}))
    with emulator(scen, monkeypatch) as emu:
        # 20 emulated minutes: 0.2 s at the emulator's speed... but run_timeout is our real clock.
        bid = request(
            write_plan(tmp_path, 2, execution={"run_timeout": "1s", "on_failure": "continue"}), monkeypatch, capsys
        )
        assert cli(monkeypatch, "carol", "run", bid) == 4
        err = capsys.readouterr().err.splitlines()[-1]
        hung = [e for e in events(bid) if e.kind == ev.WINDOW_NEEDS_OPERATOR]
        assert len(hung) == 1 and emu.run(hung[0].payload["run_id"])["status"] == "InProgress"
        # The backfill has ended, yet its hung run is still going: stop --cancel-run reaches it.
        assert cli(monkeypatch, "carol", "stop", bid, "--cancel-run") == 0
        assert len(emu.requests("cancelPipelineRun")) == 1
        assert emu.run(hung[0].payload["run_id"])["status"] in ("Canceling", "Cancelled")
    first = keys(base, 1)[0]
    assert err == (
        f"error: {bid}: 1 window is blocked or needs an operator; first {first}: run still "
        f"InProgress after run_timeout 1.0s; left running (backfill status {bid})"
    )
    assert window_kinds(bid)[keys(base, 2)[1]][-1] == "finished"
    assert window_kinds(bid)[first][-1] == "cancel-requested"


def test_a_timed_out_run_is_cancelled_when_the_plan_says_so(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("hang", match={"windowStart": format_utc(base)}))
    with emulator(scen, monkeypatch) as emu:
        plan = write_plan(tmp_path, 1, execution={"run_timeout": "1s", "on_timeout": "cancel"})
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 1
        assert len(emu.requests("cancelPipelineRun")) == 1
    assert window_kinds(bid)[keys(base, 1)[0]] == ["intent", "created", "cancel-requested", "finished"]
    finished = next(e.payload for e in events(bid) if e.kind == ev.WINDOW_FINISHED)
    assert finished["status"] == "Cancelled"


def test_canary_pauses_until_approved(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(
            write_plan(tmp_path, 3, approval={"canary": 1}, execution={"concurrency": 3}), monkeypatch, capsys
        )
        assert cli(monkeypatch, "carol", "run", bid) == 3
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"{bid} paused after its first canary window succeeded, as the plan asks; check it, then: "
            f"backfill approve {bid} and backfill run {bid}"
        )
        assert len(emu.create_run_calls()) == 1
        assert cli(monkeypatch, "carol", "run", bid) == 3
        assert capsys.readouterr().err == f"error: {bid} is paused after its canary windows: backfill approve {bid}\n"
        assert cli(monkeypatch, "bob", "approve", bid) == 0
        assert cli(monkeypatch, "carol", "run", bid) == 0
        assert creates_per_window(emu) == {format_utc(base + i * EVERY): 1 for i in range(3)}
    assert [e.kind for e in events(bid) if e.kind.startswith("gate.")] == [ev.CANARY_PAUSED, ev.CANARY_APPROVED]


def test_stop_with_cancel_run_stops_after_the_window_in_flight(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("hang", match={"windowStart": format_utc(base)}))
    with emulator(scen, monkeypatch) as emu:
        bid = request(write_plan(tmp_path, 3), monkeypatch, capsys)
        runner, codes, _ = run_in_background(monkeypatch, bid, until=ev.WINDOW_CREATED)
        assert cli(monkeypatch, "carol", "stop", bid, "--cancel-run") == 0
        runner.join(30)
        assert codes == [1]
        assert len(emu.create_run_calls()) == 1
    out, err = capsys.readouterr()
    assert f"stop requested for {bid}: the runner stops after the windows in flight" in out
    assert "cancel requested for run " in out
    assert err.splitlines()[-1] == (
        f"error: {bid} stopped after the windows in flight (2 pending, 1 cancelled); "
        f"resume with: backfill run {bid} --resume"
    )
    assert [e.kind for e in events(bid)][-1] == ev.STOPPED


def test_stop_refuses_a_backfill_that_does_not_run(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    with emulator(scenario(base_time()), monkeypatch):
        bid = request(write_plan(tmp_path, 1), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "stop", bid) == 1
    assert capsys.readouterr().err == f"error: {bid} is approved; nothing to stop\n"
