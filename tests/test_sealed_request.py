"""The request sealed in the chain (spec §15; issue 8, attacks 4 and 5b; issue 9 #10).

Each test is an attack that succeeded before the seal: the ``backfills`` row edited with sqlite3
after approval, a check program or a ``${VAR}`` changed between approval and run.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
from runner_support import base_time, cli, emulator, events, plan_text, request, scenario, write_plan

from backfill import events as ev
from backfill.plan.loader import load_plan
from backfill.store.database import Database

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


def tamper(statement: str, *args: object) -> None:
    """What an attacker with the SQLite file does: drop the insert-only trigger, edit the row."""
    url = os.environ["BACKFILL_LEDGER"]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TRIGGER IF EXISTS backfills_no_update")
        conn.execute(statement, args)


def test_a_row_pointing_at_another_plan_is_refused(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    other = tmp_path / "other.toml"
    other.write_text(plan_text(base_time(), 4).replace('feederRegion = "north"', 'feederRegion = "south"'))
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        tamper(
            "UPDATE backfills SET plan_path = ?, plan_hash = ? WHERE id = ?",
            str(other.resolve()),
            load_plan(other).hash,
            bid,
        )
        assert cli(monkeypatch, "carol", "run", bid) == 5
        assert emu.create_run_calls() == []
    assert capsys.readouterr().err == (
        f"error: {bid}: the backfills row's plan_path differs from its sealed request event; "
        "the ledger was tampered with\n"
    )
    assert [e.kind for e in events(bid)] == [ev.REQUESTED, ev.APPROVED]


def test_a_row_with_another_requester_keeps_four_eyes(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch):
        bid = request(plan, monkeypatch, capsys, approve=False)
        tamper("UPDATE backfills SET requester = 'mallory' WHERE id = ?", bid)
        assert cli(monkeypatch, "alice", "approve", bid) == 5
    assert "requester differs from its sealed request event" in capsys.readouterr().err
    assert [e.kind for e in events(bid)] == [ev.REQUESTED]


def test_the_event_names_the_requester_even_when_the_row_agrees(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    # The row changed consistently with a forged payload is impossible (the event is in the chain);
    # here the row says mallory and so would the payload's old form: the event's actor decides.
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch):
        bid = request(plan, monkeypatch, capsys, approve=False)
        (event,) = events(bid)
        assert event.payload["requester"] == {"name": "alice", "source": "declared"}
        assert event.payload["runnable"] and event.payload["plan_hash"] == load_plan(plan).hash
        assert cli(monkeypatch, "alice", "approve", bid) == 1
    assert capsys.readouterr().err == (
        f"error: {bid}: alice requested this backfill and cannot approve it (four eyes)\n"
    )


def test_editing_the_approved_windows_in_the_row_is_refused(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        tamper("UPDATE backfills SET decisions = '{}' WHERE id = ?", bid)
        assert cli(monkeypatch, "carol", "run", bid) == 5
        assert emu.create_run_calls() == []
    assert "runnable windows differ from its sealed request event" in capsys.readouterr().err


CHECK = """
[[checks]]
name = "sink"
kind = "command"
command = ["./sink-check.sh"]
"""


def test_a_check_program_replaced_after_approval_is_refused(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    program = tmp_path / "sink-check.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    plan = write_plan(tmp_path, 2, checks=CHECK)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        # Says "clean" whatever the sink holds, and could do anything else with the runner's rights.
        program.write_text("#!/bin/sh\necho replaced >&2\nexit 0\n")
        assert cli(monkeypatch, "carol", "run", bid) == 1
        assert emu.create_run_calls() == []
    assert capsys.readouterr().err == (
        f"error: {bid}: check sink: program ./sink-check.sh changed since the request was approved; "
        "make a new request\n"
    )
    assert [e.kind for e in events(bid)] == [ev.REQUESTED, ev.APPROVED]


def test_a_parameter_variable_changed_after_approval_is_refused(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        monkeypatch.setenv("SOURCE_API_KEY", "another-key")
        assert cli(monkeypatch, "carol", "run", bid) == 1
        assert emu.create_run_calls() == []
    assert capsys.readouterr().err == (
        f"error: {bid}: ${{SOURCE_API_KEY}} used by parameters changed since the request was approved; "
        "make a new request\n"
    )
    (requested, _) = events(bid)
    assert "hunter2" not in str(requested.payload)
    seal = requested.payload["seal"]
    assert [i["input"] for i in seal["inputs"]] == ["${SOURCE_API_KEY} used by parameters"]


def test_the_same_inputs_run(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    program = tmp_path / "sink-check.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    plan = write_plan(tmp_path, 2, checks=CHECK)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0, capsys.readouterr()
        assert len(emu.create_run_calls()) == 2


def test_a_missing_variable_is_refused_at_request(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch):
        monkeypatch.delenv("SOURCE_API_KEY")
        assert cli(monkeypatch, "alice", "request", str(plan)) == 1
    assert capsys.readouterr().err == (
        f"error: {plan}: cannot request: environment variable not set: SOURCE_API_KEY (used by parameters.sourceKey)\n"
    )
    db = Database()
    try:
        assert db.engine.connect().exec_driver_sql("SELECT COUNT(*) FROM backfills").scalar() == 0
    finally:
        db.dispose()


def test_a_backfill_that_cannot_start_stays_approved(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        monkeypatch.delenv("SOURCE_API_KEY")
        assert cli(monkeypatch, "carol", "run", bid) == 1
        assert emu.create_run_calls() == []
        assert capsys.readouterr().err == (
            f"error: {plan}: cannot start: environment variable not set: SOURCE_API_KEY (used by "
            "parameters.sourceKey)\n"
        )
        assert [e.kind for e in events(bid)] == [ev.REQUESTED, ev.APPROVED]
        assert cli(monkeypatch, "carol", "status", bid) == 0
        assert "approved" in capsys.readouterr().out
        monkeypatch.setenv("SOURCE_API_KEY", "hunter2")
        assert cli(monkeypatch, "carol", "run", bid) == 0, capsys.readouterr()


def test_ledger_verify_holds_the_rows_to_their_request_events(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    # Issue 8, attack 4: after the row was edited, `verify` exited 0.
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch):
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "ledger", "verify") == 0
        capsys.readouterr()
        tamper("UPDATE backfills SET plan_hash = ? WHERE id = ?", "0" * 64, bid)
        assert cli(monkeypatch, "carol", "ledger", "verify") == 5
        assert capsys.readouterr().err == (
            f"error: {bid}: the backfills row's plan_hash differs from its sealed request event; "
            "the ledger was tampered with\n"
        )
        assert cli(monkeypatch, "carol", "report", bid) == 5


def test_a_script_named_by_an_argument_is_sealed_too(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    script = tmp_path / "sink_check.py"
    script.write_text("raise SystemExit(0)\n")
    plan = tmp_path / "p.toml"
    check = CHECK.replace('["./sink-check.sh"]', f'["{sys.executable}", "sink_check.py"]')
    plan.write_text(plan_text(base_time(), 2, checks=check))
    monkeypatch.chdir(tmp_path)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        script.write_text("print('replaced')\nraise SystemExit(0)\n")
        assert cli(monkeypatch, "carol", "run", bid) == 1
        assert emu.create_run_calls() == []
    assert capsys.readouterr().err == (
        f"error: {bid}: check sink: file sink_check.py changed since the request was approved; make a new request\n"
    )
