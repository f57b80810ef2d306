"""Clear lines where there were weak ones (issue 9): connection settings, ``runs cancel`` without
a terminal, and the debug log of unexpected errors."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from backfill.cli.main import COMMANDS, run
from backfill.emulator import Emulator, Pipeline, Scenario
from backfill.errors import ExitCode

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch
FACTORY = ["--subscription", "s", "--resource-group", "g", "--factory", "f"]


@pytest.mark.parametrize("value", ["0", "-5", "0.0", "nan", "inf", "soon"])
def test_a_timeout_that_cannot_work_names_the_setting(value: str, monkeypatch: MP, capsys: Cap) -> None:
    monkeypatch.setenv("BACKFILL_ADF_TIMEOUT", value)
    assert run(["runs", "list", *FACTORY]) == 1
    assert capsys.readouterr().err == (
        f"error: BACKFILL_ADF_TIMEOUT must be a positive number of seconds (e.g. 60), got {value!r}\n"
    )


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_is_one_line_not_azure_credential_probing(value: str, monkeypatch: MP, capsys: Cap) -> None:
    monkeypatch.setenv("BACKFILL_ADF_TOKEN", value)
    assert run(["runs", "list", *FACTORY]) == 1
    assert capsys.readouterr().err == (
        "error: BACKFILL_ADF_TOKEN is set but empty: give the token, or unset it to sign in with Azure credentials\n"
    )


@pytest.fixture
def emulator(monkeypatch: MP) -> Iterator[Emulator]:
    scenario = Scenario(speed=60.0)
    scenario.add_pipeline(Pipeline(name="P", parameters={"windowStart": "String"}))
    with Emulator(scenario) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        yield emu


def test_cancel_without_a_terminal_names_yes(emulator: Emulator, tmp_path: Path) -> None:
    """A script with no terminal (stdin at its end) gets a refusal it can fix, exit 1, nothing sent."""
    run_id = emulator.client().create_run("P", {"windowStart": "2026-11-03T01:00:00Z"})
    result = subprocess.run(
        [sys.executable, "-m", "backfill", "runs", "cancel", run_id, "--reason", "stuck", "--no-check", "--force"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: run {run_id} not cancelled: no terminal to confirm on; pass --yes to cancel without asking"
    )
    assert "interrupted" not in result.stderr
    assert emulator.requests("cancelPipelineRun") == []


@click.command("boom")
@click.option("--flag", is_flag=True)
def boom(flag: bool) -> None:
    """A command with a bug."""
    raise RuntimeError("kaboom\nsecond line")


@pytest.fixture
def buggy(monkeypatch: MP) -> None:
    monkeypatch.setitem(COMMANDS, "boom", (__name__, "boom", "A command with a bug."))


@pytest.mark.usefixtures("buggy")
def test_an_unexpected_error_is_one_line_and_a_per_user_log_entry(tmp_path: Path, capsys: Cap) -> None:
    log = tmp_path / "state" / "backfill" / "debug.log"  # XDG_STATE_HOME is the test's (conftest)
    # A bug, told apart from a refusal (1). mypy reads an IntEnum member and its int as disjoint.
    assert run(["boom", "--flag"]) == ExitCode.BUG == 70  # type: ignore[comparison-overlap]
    assert run(["boom"]) == ExitCode.BUG
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: unexpected RuntimeError: kaboom second line (traceback in {log})"] * 2
    text = log.read_text(encoding="utf-8")
    entries = re.findall(r"^--- (\S+) backfill (\S+): (.*)$", text, flags=re.MULTILINE)
    assert [e[2] for e in entries] == ["backfill boom --flag", "backfill boom"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e[0]) for e in entries)
    from importlib.metadata import version

    assert {e[1] for e in entries} == {version("backfill")}
    assert text.count("RuntimeError: kaboom") == 2 and "Traceback (most recent call last)" in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


@pytest.mark.usefixtures("buggy")
def test_a_log_that_cannot_be_written_still_gives_one_line(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    target = blocker / "debug.log"  # a folder that is a file: fails for root too
    monkeypatch.setenv("BACKFILL_DEBUG_LOG", str(target))
    assert run(["boom"]) == ExitCode.BUG
    err = capsys.readouterr().err
    prefix = f"error: unexpected RuntimeError: kaboom second line (traceback not written: cannot write {target}: "
    assert err.startswith(prefix) and err.endswith("; set BACKFILL_DEBUG_LOG)\n") and err.count("\n") == 1, err


@pytest.mark.usefixtures("buggy")
def test_the_default_log_is_under_the_home_state_folder(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert run(["boom"]) == ExitCode.BUG
    expected = tmp_path / "home" / ".local" / "state" / "backfill" / "debug.log"
    assert f"(traceback in {expected})" in capsys.readouterr().err
    assert expected.is_file()
    assert os.access(expected, os.R_OK)


def test_reading_runs_creates_no_ledger(emulator: Emulator, tmp_path: Path, capsys: Cap) -> None:
    """Masking reads the secret names plans recorded, but a missing SQLite ledger stays missing."""
    emulator.client().create_run("P", {"windowStart": "2026-11-03T01:00:00Z"})
    assert run(["runs", "list"]) == 0
    assert "1 runs" in capsys.readouterr().out
    assert not (tmp_path / "ledger.db").exists()
