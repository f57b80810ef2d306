"""Attempts to run past the gates: no approval, a changed plan, windows the approval never covered."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest
from plan_samples import SINK_CHECK
from runner_support import (
    EVERY,
    PIPELINE,
    base_time,
    cli,
    creates_per_window,
    emulator,
    events,
    keys,
    request,
    scenario,
    window_kinds,
    write_plan,
)

from backfill import events as ev
from backfill.emulator import Emulator
from backfill.emulator.scenario import OutcomeRule, PastRun
from backfill.timeutil import format_utc

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


def _params(start: datetime) -> dict[str, str]:
    return {"windowStart": format_utc(start), "windowEnd": format_utc(start + EVERY), "feederRegion": "north"}


def _run_by_hand(emu: Emulator, start: datetime) -> None:
    """Someone else runs a window after the approval; wait until ADF says it ended."""
    client = emu.client()
    run_id = client.create_run(PIPELINE, _params(start))
    deadline = time.monotonic() + 10
    while not client.get_run(run_id).status.is_final and time.monotonic() < deadline:
        time.sleep(0.02)


def test_run_without_approval_waits_for_it(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys, approve=False)
        assert cli(monkeypatch, "alice", "run", bid) == 3
        assert emu.create_run_calls() == []
    assert capsys.readouterr().err == f"error: {bid} awaits approval (0 of 1): backfill approve {bid}\n"


def test_a_plan_edited_after_approval_is_refused(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        plan.write_text(plan.read_text().replace('feederRegion = "north"', 'feederRegion = "south"'))
        assert cli(monkeypatch, "carol", "run", bid) == 1
        assert emu.create_run_calls() == []
    assert capsys.readouterr().err == "error: plan changed since request; make a new request\n"
    assert [e.kind for e in events(bid)] == [ev.REQUESTED, ev.APPROVED]


def test_rejected_and_expired_backfills_do_not_run(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    # 3 s: the request and its approval must both fit in it on a loaded machine.
    plan = write_plan(tmp_path, 1, approval={"expires": "3s"})
    with emulator(scenario(base_time()), monkeypatch) as emu:
        rejected = request(plan, monkeypatch, capsys, approve=False)
        assert cli(monkeypatch, "bob", "reject", rejected, "--reason", "wrong ticket") == 0
        expired = request(plan, monkeypatch, capsys)
        time.sleep(3.1)
        capsys.readouterr()
        assert cli(monkeypatch, "carol", "run", rejected) == 1
        assert capsys.readouterr().err == f"error: {rejected} was rejected by bob: wrong ticket\n"
        assert cli(monkeypatch, "carol", "run", expired) == 1
        assert capsys.readouterr().err.startswith(f"error: {expired} expired at ")
        assert emu.create_run_calls() == []


def test_a_window_the_approval_did_not_cover_is_not_run(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_history(PastRun(PIPELINE, base + EVERY, _params(base), status="Succeeded"))
    # The next run of the first window fails: after it, history says "rerun".
    scen.add_outcome(OutcomeRule("fail", match={"windowStart": format_utc(base)}))
    plan = write_plan(tmp_path, 3, base=base)
    first, second, third = keys(base, 3)
    with emulator(scen, monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        _run_by_hand(emu, base)  # the first window, skip-succeeded when approved, is now a rerun
        _run_by_hand(emu, base + EVERY)  # the second succeeded meanwhile: it drops out
        assert cli(monkeypatch, "carol", "run", bid) == 0
        assert capsys.readouterr().out == f"{bid} completed: 1 skipped, 1 succeeded\n"
        assert creates_per_window(emu) == {
            format_utc(base): 1,
            format_utc(base + EVERY): 1,
            format_utc(base + 2 * EVERY): 1,
        }
    recorded = {e.window_key: e.payload for e in events(bid) if e.kind == ev.WINDOW_SKIPPED}
    assert recorded[first]["decision"] == "not-approved"
    assert recorded[first]["reason"].startswith(
        "now rerun, but it was skip-succeeded when approved: the approval does not cover it (latest run "
    )
    assert recorded[second]["decision"] == "skip-succeeded"
    assert recorded[second]["reason"].startswith("since the request: latest run ")
    assert window_kinds(bid)[third][0] == "intent"


def test_checks_are_rerun_and_gate_each_window(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    sink = tmp_path / "sink.db"
    with sqlite3.connect(sink) as conn:
        conn.execute("CREATE TABLE readings (ts TEXT)")
        conn.executemany("INSERT INTO readings VALUES (?)", [(format_utc(base + 2 * EVERY),)] * 3)
    monkeypatch.setenv("SINK_URL", f"sqlite:///{sink}")
    plan = write_plan(tmp_path, 3, base=base, checks=SINK_CHECK)
    first, second, third = keys(base, 3)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        assert (
            cli(
                monkeypatch,
                "bob",
                "approve",
                bid,
                "--window",
                third,
                "--accept",
                "partial",
                "--note",
                "rows are idempotent upserts",
            )
            == 0
        )
        with sqlite3.connect(sink) as conn:  # the second window got partial rows after approval
            conn.execute("INSERT INTO readings VALUES (?)", (format_utc(base + EVERY),))
        capsys.readouterr()
        assert cli(monkeypatch, "carol", "run", bid) == 4
        err = capsys.readouterr().err.splitlines()[-1]
        assert sorted(creates_per_window(emu)) == [format_utc(base), format_utc(base + 2 * EVERY)]
    assert err.startswith(f"error: {bid}: 1 window is blocked or needs an operator; first {second}: ")
    per = window_kinds(bid)
    assert per[first][:2] == ["checked", "intent"]
    assert per[second] == ["checked"]
    assert per[third][:2] == ["checked", "intent"]  # accepted partial: it runs
    checked = [e.payload for e in events(bid) if e.kind == ev.WINDOW_CHECKED]
    assert [c["decision"] for c in checked] == ["blocked-partial", "run", "blocked-partial"]
    assert checked[1]["checks"][0]["status"] == "clean"


def test_blocked_windows_outside_the_approval_are_left_alone(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    sink = tmp_path / "sink.db"
    with sqlite3.connect(sink) as conn:
        conn.execute("CREATE TABLE readings (ts TEXT)")
        conn.execute("INSERT INTO readings VALUES (?)", (format_utc(base + EVERY),))
    monkeypatch.setenv("SINK_URL", f"sqlite:///{sink}")
    plan = write_plan(tmp_path, 2, base=base, checks=SINK_CHECK)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0
        assert sorted(creates_per_window(emu)) == [format_utc(base)]
    assert capsys.readouterr().out == (
        f"{bid} completed: 1 succeeded\n"
        f"1 blocked window was left alone (outside the approval): {keys(base, 2)[1]}: blocked-partial\n"
    )
    assert events(bid)[-1].kind == ev.COMPLETED
    assert events(bid)[-1].payload["blocked_outside_approval"] == [keys(base, 2)[1]]


def test_bad_command_lines_and_unknown_backfills(monkeypatch: MP, capsys: Cap) -> None:
    assert cli(monkeypatch, "carol", "run") == 2
    assert "Missing argument 'ID'" in capsys.readouterr().err
    assert cli(monkeypatch, "carol", "stop", "bf-nope", "--cancel") == 2
    capsys.readouterr()
    assert cli(monkeypatch, "carol", "run", "bf-nope") == 1
    assert capsys.readouterr().err.startswith("error: no backfill bf-nope")
    assert cli(monkeypatch, "carol", "stop", "bf-nope") == 1
    assert capsys.readouterr().err.startswith("error: no backfill bf-nope")


def test_an_unreachable_factory_is_one_line(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 1)
    with emulator(scenario(base_time()), monkeypatch):
        bid = request(plan, monkeypatch, capsys)
    monkeypatch.setenv("BACKFILL_ADF_ENDPOINT", "https://127.0.0.1:9")  # the emulator is gone
    monkeypatch.delenv("BACKFILL_ADF_CA_BUNDLE")
    assert cli(monkeypatch, "carol", "run", bid) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: factory: cannot reach the factory endpoint") and err.count("\n") == 1
    assert [e.kind for e in events(bid)] == [ev.REQUESTED, ev.APPROVED]
