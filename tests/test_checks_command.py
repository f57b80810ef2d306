"""The command kind with real programs: JSON answers, exit-code answers, timeouts, garbage."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.checks.base import CheckSpec, CheckStatus
from backfill.checks.command import answer
from backfill.checks.registry import build_check
from backfill.errors import CheckError
from backfill.secrets import Secret
from backfill.windows import Window

ROOT = Path(__file__).resolve().parents[1]
WINDOW = Window(
    datetime(2026, 11, 3, 2, 0, tzinfo=UTC),
    datetime(2026, 11, 3, 2, 15, tzinfo=UTC),
    {"windowStart": "2026-11-03T02:00:00Z", "feeder-region": "north", "batch": 7, "sourceKey": Secret("${KEY}")},
)


def script(tmp_path: Path, body: str, name: str = "check.py") -> Path:
    path = tmp_path / name
    path.write_text("import json, os, sys, time, subprocess\n" + body, encoding="utf-8")
    return path


def command(argv: Any, timeout: float = 10, base_dir: Path | None = None, env: list[str] | None = None) -> Any:
    options: dict[str, Any] = {"command": argv} if env is None else {"command": argv, "env": env}
    return build_check(CheckSpec("sink-program", "command", options, timedelta(seconds=timeout), base_dir))


def test_json_answer_with_the_window_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY", "super-secret-key")
    monkeypatch.setenv("BACKFILL_PARAM_STALE", "left over from a parent")
    body = (
        "mine = ('BACKFILL_WINDOW', 'BACKFILL_PARAM', 'BACKFILL_CHECK')\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith(mine)}\n"
        "print(json.dumps({'status': 'complete', 'committed': 900, 'expected': 900, 'env': env,\n"
        "                  'argv': sys.argv[1:], 'secret_seen': 'super-secret-key' in str(env)}))\n"
    )
    result = command([sys.executable, str(script(tmp_path, body)), "{start:%Y%m%d%H%M}", "{end}"]).evaluate(WINDOW)
    assert (result.status, result.reason) == (CheckStatus.COMPLETE, "program answered complete")
    evidence = result.evidence
    assert evidence["committed"] == 900 and evidence["expected"] == 900 and evidence["exit_code"] == 0
    assert evidence["argv"] == ["202611030200", "2026-11-03T02:15:00Z"]
    assert evidence["command"][2:] == ["202611030200", "2026-11-03T02:15:00Z"]
    assert evidence["env"] == {
        "BACKFILL_WINDOW_START": "2026-11-03T02:00:00Z",
        "BACKFILL_WINDOW_END": "2026-11-03T02:15:00Z",
        "BACKFILL_WINDOW_KEY": "2026-11-03T02:00:00Z/2026-11-03T02:15:00Z",
        "BACKFILL_CHECK_NAME": "sink-program",
        "BACKFILL_PARAM_WINDOWSTART": "2026-11-03T02:00:00Z",
        "BACKFILL_PARAM_FEEDER_REGION": "north",
        "BACKFILL_PARAM_BATCH": "7",
    }
    assert evidence["secret_seen"] is False
    assert isinstance(evidence["duration_ms"], int)


def test_json_counts_without_status_follow_the_counting_rule(tmp_path: Path) -> None:
    body = 'print(\'{"committed": 3, "expected": 10, "reason": "3 files of 10"}\')\n'
    result = command([sys.executable, str(script(tmp_path, body))]).evaluate(WINDOW)
    assert (result.status, result.reason) == (CheckStatus.PARTIAL, "3 files of 10")


@pytest.mark.parametrize(
    ("code", "status"), [(0, CheckStatus.CLEAN), (10, CheckStatus.COMPLETE), (11, CheckStatus.PARTIAL)]
)
def test_exit_code_answers(tmp_path: Path, code: int, status: CheckStatus) -> None:
    body = f"print('counting', file=sys.stderr)\nsys.exit({code})\n"
    result = command([sys.executable, str(script(tmp_path, body))]).evaluate(WINDOW)
    assert (result.status, result.reason) == (status, f"exit code {code} ({status.value})")


def test_other_exit_code_is_an_error_with_the_last_stderr_line(tmp_path: Path) -> None:
    body = "print('connecting', file=sys.stderr)\nprint('sink unreachable: timeout', file=sys.stderr)\nsys.exit(3)\n"
    result = command([sys.executable, str(script(tmp_path, body))]).evaluate(WINDOW)
    assert (result.status, result.reason) == (CheckStatus.ERROR, "exited with code 3: sink unreachable: timeout")


@pytest.mark.parametrize(
    ("stdout", "code", "reason"),
    [
        ("all good", 0, "stdout is not a JSON answer: 'all good'"),
        ("[1, 2]", 0, "stdout is JSON but not an object: '[1, 2]'"),
        ('{"status": "banana"}', 0, "answer's status 'banana' is not one of clean, complete, partial, error"),
        ('{"status": "clean", "committed": 5}', 0, "answer says clean with 5 rows committed"),
        ('{"committed": "lots"}', 0, "answer's committed: 'lots' is not a count"),
        ('{"committed": -1}', 0, "answer's committed: -1 is not a count (negative)"),
        ('{"note": "nothing"}', 0, "answer has neither status nor committed"),
        ('{"status": "partial", "committed": 2}', 10, "answer says partial but exit code 10 says complete"),
    ],
)
def test_garbage_is_an_error(tmp_path: Path, stdout: str, code: int, reason: str) -> None:
    body = f"sys.stdout.write({stdout!r})\nsys.exit({code})\n"
    result = command([sys.executable, str(script(tmp_path, body))]).evaluate(WINDOW)
    assert (result.status, result.reason) == (CheckStatus.ERROR, reason)


def test_timeout_kills_the_program_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    body = (
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = command([sys.executable, str(script(tmp_path, body))], timeout=0.5).evaluate(WINDOW)
    assert time.monotonic() - started < 4
    assert (result.status, result.reason) == (CheckStatus.ERROR, "timed out after 0.5s; killed")
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    # A killed child reparented to init may linger as a zombie until it is reaped.
    return not (status.exists() and status.read_text().split(") ")[1].startswith("Z"))


def test_a_string_command_is_split_never_given_to_a_shell(tmp_path: Path) -> None:
    body = "print(json.dumps({'status': 'clean', 'argv': sys.argv[1:]}))\n"
    path = script(tmp_path, body)
    result = command(f"{sys.executable} {path} 'two words' '$HOME;' \"{{start}}\"").evaluate(WINDOW)
    assert result.status is CheckStatus.CLEAN
    assert result.evidence["argv"] == ["two words", "$HOME;", "2026-11-03T02:00:00Z"]


def test_example_command_check_relative_to_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = tmp_path / "sink.db"
    with sqlite3.connect(sink) as conn:
        conn.execute("CREATE TABLE meter_readings (feeder TEXT, reading_ts TEXT)")
        conn.executemany(
            "INSERT INTO meter_readings VALUES ('north', ?)",
            [("2026-11-03T02:00:00Z",), ("2026-11-03T02:14:59Z",), ("2026-11-03T02:15:00Z",)],
        )
    monkeypatch.setenv("TELEMETRY_SINK_SQLITE", str(sink))
    argv = ["../checks/meter_readings_command.py", "--feeder", "north", "--expect", "2"]
    result = command(argv, base_dir=ROOT / "plans", env=["TELEMETRY_SINK_SQLITE"]).evaluate(WINDOW)
    assert (result.status, result.reason) == (CheckStatus.COMPLETE, "2 of 2 rows committed"), result.reason
    assert result.evidence["sink_table"] == "meter_readings"
    assert str(sink) not in json.dumps(result.evidence)
    monkeypatch.delenv("TELEMETRY_SINK_SQLITE")
    unset = command(argv, base_dir=ROOT / "plans", env=["TELEMETRY_SINK_SQLITE"]).evaluate(WINDOW)
    assert (unset.status, unset.reason) == (CheckStatus.ERROR, "exited with code 2: TELEMETRY_SINK_SQLITE is not set")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "option 'command': is empty"),
        (42, "option 'command': must be a list [program, arg, ...] or a string"),
        ("prog 'unclosed", "option 'command': cannot be split into arguments: No closing quotation"),
        (["no-such-program-xyz"], "option 'command': program 'no-such-program-xyz' is not on PATH"),
        (
            ["echo", "${TOKEN}"],
            "option 'command[1]': may not use ${VAR}: only the connection is expanded "
            "(queries, args and commands are recorded as evidence)",
        ),
        (
            ["echo", "{region}"],
            "option 'command[1]': unknown field {region} (only {start} and {end} exist; "
            "write {{ and }} for literal braces)",
        ),
    ],
)
def test_bad_definitions_are_refused(argv: Any, message: str) -> None:
    with pytest.raises(CheckError) as refused:
        command(argv)
    assert str(refused.value) == f"check 'sink-program': {message}"


def test_relative_program_must_be_an_executable_file(tmp_path: Path) -> None:
    (tmp_path / "plain.sh").write_text("exit 0\n")
    with pytest.raises(CheckError) as refused:
        command(["./plain.sh"], base_dir=tmp_path)
    assert (
        str(refused.value)
        == f"check 'sink-program': option 'command': {tmp_path / 'plain.sh'} is not an executable file"
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
answers = st.dictionaries(
    st.sampled_from(["status", "committed", "expected", "reason", "extra"]),
    st.sampled_from(["clean", "complete", "partial", "error", "bogus"]) | json_values,
)


@given(data=answers, code=st.sampled_from([0, 10, 11, 1, -9]), noise=st.booleans())
def test_any_output_gives_a_result_that_agrees_with_the_exit_code(data: dict[str, Any], code: int, noise: bool) -> None:
    stdout = json.dumps(data) + ("\ntrailing log line" if noise else "")
    result = answer("p", code, stdout, "", {"command": ["p"]})
    assert result.check == "p" and result.evidence["exit_code"] == code
    if noise or code not in (0, 10, 11):
        assert result.status is CheckStatus.ERROR
    if code in (10, 11) and result.status is not CheckStatus.ERROR:
        assert result.status is (CheckStatus.COMPLETE if code == 10 else CheckStatus.PARTIAL)
    if result.status is CheckStatus.CLEAN:
        assert not result.evidence.get("committed")


def test_the_program_never_sees_the_runners_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 8, attack 5a: the runner's environment holds the ADF token, the ledger URL and every
    # ${VAR} value; a check program gets the basics, the window and what it declares, nothing else.
    monkeypatch.setenv("BACKFILL_ADF_TOKEN", "adf-token-hunter2")
    monkeypatch.setenv("SOURCE_API_KEY", "api-key-hunter2")
    monkeypatch.setenv("BACKFILL_LEDGER", "postgresql://ops:pw-hunter2@127.0.0.1/ledger")
    monkeypatch.setenv("SINK_PATH", "/data/sink.db")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    body = "print(json.dumps({'status': 'clean', 'env': dict(os.environ)}))\n"
    result = command([sys.executable, str(script(tmp_path, body))], env=["SINK_PATH"]).evaluate(WINDOW)
    env = result.evidence["env"]
    assert "hunter2" not in json.dumps(env)
    assert env["SINK_PATH"] == "/data/sink.db" and env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"] and env["BACKFILL_WINDOW_KEY"] == WINDOW.key
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "SINK_PATH"}
    assert {
        k for k in env if not k.startswith(("BACKFILL_WINDOW_", "BACKFILL_PARAM_", "BACKFILL_CHECK_", "LC_"))
    } <= allowed | {"PWD", "SHLVL", "_"}


def test_env_option_names_variables() -> None:
    with pytest.raises(CheckError, match=r"option 'env': must be a list of environment variable names"):
        command(["true"], env=["NOT A NAME"])
