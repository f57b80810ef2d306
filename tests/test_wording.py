"""Wording: plural forms agree with their numbers, and the canary pause is no error."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_support import base_time, cli, emulator, request, scenario, write_plan

from backfill.errors import AwaitingApproval, CanaryPause, ExitCode

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


def test_canary_pause_is_exit_3_without_error(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    assert issubclass(CanaryPause, AwaitingApproval) and CanaryPause.exit_code is ExitCode.AWAITING_APPROVAL
    plan = write_plan(tmp_path, 4, name="north.toml", approval={"canary": 2})
    with emulator(scenario(base_time()), monkeypatch):
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 3
        last = capsys.readouterr().err.splitlines()[-1]
        assert last == (
            f"{bid} paused after its first 2 canary windows succeeded, as the plan asks; check them, "
            f"then: backfill approve {bid} and backfill run {bid}"
        )
        assert cli(monkeypatch, "carol", "run", bid) == 3  # a refusal to run a paused backfill is still one
        assert capsys.readouterr().err.startswith("error: ")
