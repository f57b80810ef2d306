"""The CLI shell: lazy commands, the single error handler, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backfill.cli.main import COMMANDS, run


def test_help_does_not_import_the_sdk_or_pyodbc() -> None:
    code = (
        "import sys\n"
        "from backfill.cli.main import run\n"
        "assert run(['--help']) == 0\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('azure', 'pyodbc', 'sqlalchemy', 'sqlmodel')]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout


def test_every_command_of_the_spec_is_listed() -> None:
    spec = {
        "demo",
        "plan",
        "history",
        "preview",
        "request",
        "approve",
        "reject",
        "run",
        "stop",
        "status",
        "runs",
        "ledger",
        "report",
        "emulator",
    }
    assert spec <= set(COMMANDS)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_naive_since_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            "runs",
            "list",
            "--subscription",
            "s",
            "--resource-group",
            "g",
            "--factory",
            "f",
            "--since",
            "2026-11-03T02:00:00",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: --since '2026-11-03T02:00:00' has no UTC offset; write it with Z or +00:00\n"


def test_missing_factory_names_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["runs", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no factory named: set --subscription / AZURE_SUBSCRIPTION_ID")


def test_unreachable_endpoint_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # conftest points BACKFILL_ADF_ENDPOINT at a closed local port.
    code = run(["runs", "list", "--subscription", "s", "--resource-group", "g", "--factory", "f"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: factory: cannot reach the factory endpoint")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("args", "code"), [(["--version"], 0), (["no-such-command"], 2)])
def test_the_program_exits_with_the_commands_code(args: list[str], code: int) -> None:
    # main() freezes the collector's objects before exiting (issue 14): the exit code and the
    # output written are still the command's.
    done = subprocess.run([sys.executable, "-m", "backfill", *args], capture_output=True, text=True, check=False)
    assert done.returncode == code, done.stderr
    assert (done.stdout if code == 0 else done.stderr).strip()


def test_atexit_work_still_runs_after_the_command() -> None:
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('drained'))\n"
        "sys.argv = ['backfill', '--version']\n"
        "from backfill.cli.main import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "drained"
