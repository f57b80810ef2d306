"""``stop`` sticks: a stopped backfill runs again only with ``run --resume``, recorded with who."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_support import base_time, cli, emulator, events, request, run_in_background, scenario, write_plan

from backfill import events as ev
from backfill.emulator.scenario import OutcomeRule
from backfill.timeutil import format_utc

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


def test_after_stop_cancel_run_run_refuses_until_resume(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("hang", match={"windowStart": format_utc(base)}))
    with emulator(scen, monkeypatch) as emu:
        bid = request(write_plan(tmp_path, 3, execution={"on_failure": "continue"}), monkeypatch, capsys)
        runner, codes, _ = run_in_background(monkeypatch, bid, until=ev.WINDOW_CREATED)
        assert cli(monkeypatch, "carol", "stop", bid, "--cancel-run") == 0
        runner.join(30)
        assert codes == [1] and len(emu.create_run_calls()) == 1
        capsys.readouterr()
        for _ in range(2):  # the story: a second plain run went on; neither may
            assert cli(monkeypatch, "carol", "run", bid) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith(f"error: {bid} was stopped by carol at ")
            assert err.endswith(f"; to go on: backfill run {bid} --resume\n")
        assert len(emu.create_run_calls()) == 1, "a stopped backfill created no run"
        # It goes on: the two windows left run; the cancelled one counts as failed (exit 1).
        assert cli(monkeypatch, "dave", "run", bid, "--resume") == 1
        assert len(emu.create_run_calls()) == 3
    resumed = [e for e in events(bid) if e.kind == ev.RESUMED]
    assert len(resumed) == 1 and resumed[0].actor == "dave" and resumed[0].payload["stopped_by"].startswith("carol")
    assert cli(monkeypatch, "dave", "ledger", "verify") == 0


def test_a_backfill_stopped_at_its_canary_pause_needs_resume(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(write_plan(tmp_path, 2, approval={"canary": 1}), monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 3
        assert cli(monkeypatch, "carol", "stop", bid) == 0
        assert cli(monkeypatch, "bob", "approve", bid) in (0, 1)
        capsys.readouterr()
        assert cli(monkeypatch, "carol", "run", bid) == 1
        assert "--resume" in capsys.readouterr().err
        assert len(emu.create_run_calls()) == 1
        code = cli(monkeypatch, "carol", "run", bid, "--resume")
        assert code in (0, 3), "resumed: it goes on to the gate it was stopped at"
    assert [e.actor for e in events(bid) if e.kind == ev.RESUMED] == ["carol"]


def test_runs_cancel_of_a_backfills_run_is_linked_to_its_window(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    import json

    base = base_time()
    scen = scenario(base)
    scen.add_outcome(OutcomeRule("hang", match={"windowStart": format_utc(base)}))
    with emulator(scen, monkeypatch):
        bid = request(write_plan(tmp_path, 1), monkeypatch, capsys)
        runner, codes, created = run_in_background(monkeypatch, bid, until=ev.WINDOW_CREATED)
        run_id = created[0].payload["run_id"]
        assert (
            cli(
                monkeypatch,
                "erin",
                "runs",
                "cancel",
                run_id,
                "--reason",
                "INC-9: stuck",
                "--no-check",
                "--force",
                "--yes",
            )
            == 0
        )
        runner.join(30)
        assert codes == [1]
    kinds = ("run.cancel-requested", ev.WINDOW_CANCELLED, "run.cancelled")
    linked = [(e.kind, e.window_key, e.actor) for e in events(bid) if e.kind in kinds]
    assert linked == [(kind, created[0].window_key, "erin") for kind in kinds]
    capsys.readouterr()
    assert cli(monkeypatch, "erin", "report", bid, "--json") == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["run_id"], r["status"], r["cancelled_by"], r["cancel_reason"]) for r in runs] == [
        (run_id, "Cancelled", "erin", "INC-9: stuck")
    ]
