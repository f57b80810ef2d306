"""Playing a runbook: its ```sh blocks, one bash script of them, and the folder it runs in.

A block runs in the script's own shell, so the variables it sets carry on to the next; a block
right after ``<!-- exit: N -->`` must end with exit code N (it runs in a subshell). The script
echoes each block, as a transcript would, after a marker naming the runbook line it came from.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backfill.cli import main

BIN = Path(sys.executable).parent
MARK = "#### runbook "
LEDGER_FILE = "backfill-ledger.db"  # what the runbooks export as BACKFILL_LEDGER
SINK_FILE = "telemetry-sink.db"  # the scenario's sink, in the folder the emulator runs in

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^`]*)$")
EXIT_COMMENT = re.compile(r"^\s*<!--\s*exit:\s*(\d+)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # the opening fence's, 1-based
    code: str
    expect: int = 0


def _stray(line: int) -> ValueError:
    return ValueError(f"line {line}: the exit comment is not right before a ```sh block")


def sh_blocks(markdown: str) -> list[Block]:
    """The ```sh blocks of a Markdown text; ValueError for an unclosed one or a stray exit comment."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    expect: tuple[int, int] | None = None  # (code, line) of an exit comment awaiting its block
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            if expect is not None and lines[i].strip():
                raise _stray(expect[1])
            comment = EXIT_COMMENT.match(lines[i])
            if comment is not None:
                expect = (int(comment.group(1)), i + 1)
            i += 1
            continue
        fence, is_sh = opening.group(1), opening.group(2).split()[:1] == ["sh"]
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            if is_sh:
                raise ValueError(f"line {i + 1}: the ```sh block is never closed")
            end = len(lines)  # CommonMark: an unclosed fence runs to the end of the document
        if is_sh:
            blocks.append(Block(i + 1, "\n".join(lines[i + 1 : end]), expect[0] if expect else 0))
        elif expect is not None:
            raise _stray(expect[1])
        expect = None
        i = end + 1
    if expect is not None:
        raise _stray(expect[1])
    return blocks


def bash_script(blocks: list[Block], source: str) -> str:
    """One script for ``bash -e``: each block echoed after a marker, then run; a last marker."""
    parts = ["set -e"]
    for block in blocks:
        where = f"{source}:{block.line}"
        shown = "\n".join("$ " + line for line in block.code.splitlines())
        parts.append(f"printf '%s\\n%s\\n' {shlex.quote(MARK + where)} {shlex.quote(shown)}")
        if block.expect == 0:
            parts.append(block.code)
            continue
        # Not `( ... ) || rc=$?`: bash ignores -e inside a tested command, even in a subshell.
        parts += [
            "set +e",
            "(",
            "set -e",
            block.code,
            ")",
            "rc=$?",
            "set -e",
            f'if [ "$rc" -ne {block.expect} ]; then',
            f'  echo "{MARK}{where}: exit $rc, expected {block.expect}"; exit 1',
            "fi",
        ]
    parts.append(f"echo {shlex.quote(MARK + 'done')}")
    return "\n".join(parts) + "\n"


def failed_at(transcript: str) -> str:
    """Where the script stopped: the last marker (``done`` when every block ran)."""
    found = re.findall(rf"^{re.escape(MARK)}(\S+)", transcript, re.MULTILINE)
    return found[-1] if found else "its first block"


@dataclass
class Play:
    """One runbook being played: its folder, emulator process, bash process and transcript."""

    name: str
    blocks: list[Block] = field(repr=False)
    base: Path
    emulator: subprocess.Popen[bytes] | None = field(default=None, repr=False)  # ``backfill emulator serve``
    factory: dict[str, str] = field(default_factory=dict)  # the six settings it printed
    emulator_started: str = ""  # format_utc of its start: runs created later are this story's
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started: float = 0.0  # time.monotonic() when its shell started
    factory_in_shell: bool = True  # False: the shell is kept from the factory (a closed port)
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def transcript(self) -> Path:
        return self.base / "transcript.txt"

    def shell_env(self) -> dict[str, str]:
        """What the runbook's shell starts with: a bare login's variables and the console script
        first on PATH. Everything else (the ledger, the factory, the sink) the runbook must set."""
        values = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(self.base),
            "TMPDIR": str(self.base / "tmp"),
            "LANG": "C.UTF-8",
            "TZ": "Pacific/Auckland",  # far from UTC: nothing may depend on the local time zone
        }
        if not self.factory_in_shell:
            # The runbook says it needs no factory: a command that reached for one anyway must fail
            # at once on a closed local port, never wander off to Azure.
            values["BACKFILL_ADF_ENDPOINT"] = "https://127.0.0.1:9"
        values.update(self.facts.get("env", {}))  # a stage's own settings (team-ledger: its database)
        return values

    def env(self) -> dict[str, str]:
        """The set-ups' environment: the shell's, the ledger and sink of the folder, the factory."""
        return (
            self.shell_env()
            | {
                "BACKFILL_LEDGER": f"sqlite:///{self.work / LEDGER_FILE}",
                "TELEMETRY_SINK_URL": f"sqlite:///{self.work / SINK_FILE}",
            }
            | self.factory
        )

    def serve(self, scenario: Path, timeout: float) -> None:
        """Start ``backfill emulator serve --scenario SCENARIO`` in the work folder, as a user would,
        with its ``export`` lines in ``emulator.env``; return once it printed all of them."""
        from backfill.timeutil import format_utc, utcnow

        self.emulator_started = format_utc(utcnow())
        with (self.work / "emulator.env").open("wb") as out, (self.base / "emulator.log").open("wb") as err:
            self.emulator = subprocess.Popen(
                [str(BIN / "backfill"), "emulator", "serve", "--scenario", str(scenario)],
                cwd=self.work,
                env=self.shell_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            text = (self.work / "emulator.env").read_text(encoding="utf-8")
            exports = dict(re.findall(r"^export (\w+)=(.*)$", text, re.MULTILINE))
            if "BACKFILL_FACTORY" in exports:
                self.factory = {name: shlex.split(value)[0] for name, value in exports.items()}
                return
            if self.emulator.poll() is not None or time.monotonic() > deadline:
                log = (self.base / "emulator.log").read_text(encoding="utf-8", errors="replace")
                raise AssertionError(f"set-up: backfill emulator serve did not start: {log[-800:]}")
            time.sleep(0.1)

    def cli(
        self,
        args: list[str],
        *,
        actor: str | None = None,
        expect: Collection[int] = (0,),
        env: Mapping[str, str] | None = None,
    ) -> str:
        """``backfill ARGS`` in-process, for set-ups (nothing else may use os.environ meanwhile)."""
        values = self.env() | ({"BACKFILL_ACTOR": actor} if actor else {}) | dict(env or {})
        out, err = io.StringIO(), io.StringIO()
        cwd = Path.cwd()
        with _environment(values), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.chdir(self.work)
            try:
                code = main.run(args)
            finally:
                os.chdir(cwd)
        if code not in expect:
            raise AssertionError(f"set-up: backfill {shlex.join(args)} exited {code}: {err.getvalue()[-800:]}")
        return out.getvalue()

    def start(self, script: str) -> None:
        """Run ``script`` with bash -e in the work folder, in a process group of its own."""
        path = self.base / "runbook.sh"
        path.write_text(script, encoding="utf-8")
        with self.transcript.open("wb") as transcript:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                ["bash", "-e", str(path)],
                cwd=self.work,
                env=self.shell_env(),
                stdin=subprocess.DEVNULL,
                stdout=transcript,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def finish(self, limit: float) -> int | None:
        """Wait for the shell until ``limit`` seconds after its start (None: still running), then
        terminate whatever it left in its process group (an emulator, after a failed block)."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            return self.proc.returncode
        pid, deadline = self.proc.pid, self.started + limit
        # WNOWAIT leaves the shell unreaped: while it is a zombie its process group ID cannot be
        # given to anyone else, so the killpg below reaches this runbook's processes only.
        while not (finished := _exited(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        return code if finished else None

    def stop_emulator(self) -> None:
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.terminate()
            self.emulator.wait(timeout=30)

    def tail(self, chars: int = 6000) -> str:
        text = self.transcript.read_text(encoding="utf-8", errors="replace") if self.transcript.exists() else ""
        return text[-chars:]


def _exited(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
