"""The ``command`` kind: a program answers for one window.

Option ``command``: a list ``[program, arg, ...]`` or a string split with ``shlex`` (never a
shell); every part is a template (``{start}``, ``{end:%Y%m%d}``). A relative program path with a
slash resolves against the plan's folder. Option ``env``: a list of the environment variables the
program needs (``env = ["TELEMETRY_SINK_SQLITE"]``).

The program never inherits the runner's environment, which holds its secrets (the ADF token, the
ledger URL, every plan's ``${VAR}`` values; issue 8, attack 5a). It gets a minimal one: ``PATH``,
``HOME``, ``USER``/``LOGNAME``, ``LANG``/``LC_*``, ``TZ``, the temporary folder variables (and
Windows' ``SYSTEMROOT``, ``COMSPEC``, ``PATHEXT``), the variables ``env`` names, plus:

- ``BACKFILL_WINDOW_START``, ``BACKFILL_WINDOW_END`` (``2026-11-03T02:00:00Z``),
  ``BACKFILL_WINDOW_KEY``, ``BACKFILL_CHECK_NAME``;
- ``BACKFILL_PARAM_<NAME>`` for every public window parameter, the name upper-cased with anything
  but letters and digits turned into ``_`` (``windowStart`` → ``BACKFILL_PARAM_WINDOWSTART``);
  secure parameters are never passed.

It answers in one of two ways, and must log to stderr, not stdout:

- stdout holds one JSON object ``{"status": "clean|complete|partial|error", "committed": N,
  "expected": N, "reason": "..."}``; ``status`` may be left out when ``committed`` is given (the
  counting rule then decides); other keys are kept as evidence;
- stdout is empty and the exit code answers: 0 clean, 10 complete, 11 partial.

Any other exit code, any other output on stdout, or an answer that contradicts itself is
``error``. At the timeout the program and its process group are killed and the answer is
``error``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backfill.checks._support import (
    as_count,
    check_options,
    check_timeout,
    elapsed_ms,
    error_result,
    fail,
    resolve_path,
    template,
)
from backfill.checks.base import CheckResult, CheckSpec, CheckStatus, classify
from backfill.secrets import Secret
from backfill.timeutil import format_duration, format_utc
from backfill.windows import Window, render, template_fields

EXIT_STATUS: Mapping[int, CheckStatus] = {
    0: CheckStatus.CLEAN,
    10: CheckStatus.COMPLETE,
    11: CheckStatus.PARTIAL,
}
_ANSWER_KEYS = ("status", "committed", "expected", "reason")
_ENV_PREFIXES = ("BACKFILL_WINDOW_", "BACKFILL_PARAM_")
_MAX_TEXT = 200


_BASICS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "SYSTEMROOT",
        "COMSPEC",
        "PATHEXT",
    }
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def window_environment(
    window: Window, check: str, base: Mapping[str, str] | None = None, declared: Sequence[str] = ()
) -> dict[str, str]:
    """The program's environment: the basics and the ``declared`` names of ``base`` (default:
    ours), plus the window's variables."""
    source = os.environ if base is None else base
    wanted = set(declared)
    env = {
        k: v
        for k, v in source.items()
        if (k in _BASICS or k.startswith("LC_") or k in wanted) and not k.startswith(_ENV_PREFIXES)
    }
    env["BACKFILL_WINDOW_START"] = format_utc(window.start)
    env["BACKFILL_WINDOW_END"] = format_utc(window.end)
    env["BACKFILL_WINDOW_KEY"] = window.key
    env["BACKFILL_CHECK_NAME"] = check
    for name, value in window.parameters.items():
        if isinstance(value, Secret):
            continue
        variable = "BACKFILL_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        env[variable] = value if isinstance(value, str) else json.dumps(value)
    return env


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_TEXT else line[: _MAX_TEXT - 3] + "..."


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return _short(lines[-1]) if lines else ""


def answer(check: str, exit_code: int, stdout: str, stderr: str, evidence: Mapping[str, Any]) -> CheckResult:
    """Turn what the program did into a result; never raises."""
    details: dict[str, Any] = {**evidence, "exit_code": exit_code}
    if exit_code not in EXIT_STATUS:
        tail = _last_line(stderr)
        return error_result(check, f"exited with code {exit_code}" + (f": {tail}" if tail else ""), details)
    text = stdout.strip()
    if not text:
        status = EXIT_STATUS[exit_code]
        return CheckResult(check, status, f"exit code {exit_code} ({status.value})", details)
    try:
        data = json.loads(text)
    except ValueError:
        return error_result(check, f"stdout is not a JSON answer: {_short(text)!r}", details)
    if not isinstance(data, dict):
        return error_result(check, f"stdout is JSON but not an object: {_short(text)!r}", details)
    result = _json_answer(check, data, details)
    by_exit = EXIT_STATUS[exit_code]
    if exit_code and result.status is not CheckStatus.ERROR and result.status is not by_exit:
        reason = f"answer says {result.status.value} but exit code {exit_code} says {by_exit.value}"
        return error_result(check, reason, result.evidence)
    return result


def _json_answer(check: str, data: Mapping[str, Any], details: dict[str, Any]) -> CheckResult:
    extra = {str(k): v for k, v in data.items() if k not in _ANSWER_KEYS and k not in details}
    evidence = {**extra, **details}
    counts: dict[str, int | None] = {}
    for key in ("committed", "expected"):
        value = data.get(key)
        try:
            counts[key] = None if value is None else as_count(value)
        except ValueError as exc:
            return error_result(check, f"answer's {key}: {exc}", evidence)
    committed, expected = counts["committed"], counts["expected"]
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        return error_result(check, "answer's reason is not a string", evidence)
    raw_status = data.get("status")
    if raw_status is None:
        if committed is None:
            return error_result(check, "answer has neither status nor committed", evidence)
        result = classify(check, committed, expected, evidence)
        return CheckResult(check, result.status, _short(reason) if reason else result.reason, result.evidence)
    try:
        status = CheckStatus(raw_status)
    except ValueError:
        allowed = ", ".join(s.value for s in CheckStatus)
        return error_result(check, f"answer's status {_short(str(raw_status))!r} is not one of {allowed}", evidence)
    if committed is not None and (
        (status is CheckStatus.CLEAN and committed > 0)
        or (status in (CheckStatus.COMPLETE, CheckStatus.PARTIAL) and committed == 0)
    ):
        return error_result(check, f"answer says {status.value} with {committed} rows committed", evidence)
    text = _short(reason) if reason else f"program answered {status.value}"
    return CheckResult(check, status, text, {"committed": committed, "expected": expected, **evidence})


class CommandCheck:
    def __init__(self, spec: CheckSpec) -> None:
        self.name = spec.name
        self.timeout = spec.timeout
        check_options(spec, {"command", "env"}, {"command"})
        self._seconds = check_timeout(spec)
        self._argv = self._parse(spec, spec.options["command"])
        self._env = self._names(spec, spec.options.get("env", []))

    @staticmethod
    def _names(spec: CheckSpec, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and _NAME.fullmatch(v) for v in value):
            raise fail(spec, "env", 'must be a list of environment variable names, like ["SINK_PATH"]')
        return tuple(value)

    @staticmethod
    def _parse(spec: CheckSpec, value: Any) -> list[str]:
        if isinstance(value, str):
            try:
                parts: list[Any] = shlex.split(value)
            except ValueError as exc:
                raise fail(spec, "command", f"cannot be split into arguments: {exc}") from None
        elif isinstance(value, list | tuple):
            parts = list(value)
        else:
            raise fail(spec, "command", "must be a list [program, arg, ...] or a string")
        if not parts:
            raise fail(spec, "command", "is empty")
        argv = [str(template(spec, f"command[{i}]", part)) for i, part in enumerate(parts)]
        program = argv[0]
        if template_fields(program):
            return argv
        if os.sep in program or (os.altsep and os.altsep in program):
            path = resolve_path(spec, program)
            if not path.is_file() or not os.access(path, os.X_OK):
                raise fail(spec, "command", f"{path} is not an executable file")
            argv[0] = str(path)
        elif shutil.which(program) is None:
            raise fail(spec, "command", f"program {program!r} is not on PATH")
        return argv

    def evaluate(self, window: Window) -> CheckResult:
        argv = [render(part, window.start, window.end) for part in self._argv]
        evidence: dict[str, Any] = {"command": argv}
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=window_environment(window, self.name, declared=self._env),
                # Its own process group, so a timeout kills whatever it started too.
                start_new_session=True,
            )
        except OSError as exc:
            evidence["duration_ms"] = elapsed_ms(started)
            return error_result(self.name, f"could not start {Path(argv[0]).name}: {exc.strerror or exc}", evidence)
        try:
            stdout, stderr = process.communicate(timeout=self._seconds)
        except subprocess.TimeoutExpired:
            _kill(process)
            evidence["duration_ms"] = elapsed_ms(started)
            return error_result(self.name, f"timed out after {format_duration(self.timeout)}; killed", evidence)
        except BaseException:
            _kill(process)
            raise
        evidence["duration_ms"] = elapsed_ms(started)
        return answer(
            self.name,
            process.returncode,
            stdout.decode("utf-8", errors="replace"),
            stderr.decode("utf-8", errors="replace"),
            evidence,
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    # A grandchild that left the group may still hold the pipes; the process itself is dead.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=2)
