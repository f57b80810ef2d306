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

from backfill import demo
from backfill.cli import main
from backfill.emulator import Emulator

BIN = Path(sys.executable).parent
MARK = "#### runbook "

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
        parts += ["set +e", "(", "set -e", block.code, ")", "rc=$?", "set -e",
                  f'if [ "$rc" -ne {block.expect} ]; then',
                  f'  echo "{MARK}{where}: exit $rc, expected {block.expect}"; exit 1', "fi"]
    parts.append(f"echo {shlex.quote(MARK + 'done')}")
    return "\n".join(parts) + "\n"


def failed_at(transcript: str) -> str:
    """Where the script stopped: the last marker (``done`` when every block ran)."""
    found = re.findall(rf"^{re.escape(MARK)}(\S+)", transcript, re.MULTILINE)
    return found[-1] if found else "its first block"


@dataclass
class Play:
    """One runbook being played: its folder, emulator, bash process and transcript."""

    name: str
    blocks: list[Block] = field(repr=False)
    base: Path
    emulator: Emulator | None = field(default=None, repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started: float = 0.0  # time.monotonic() when its shell started
    factory_in_shell: bool = True  # False: the shell gets no emulator settings (no factory access)
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def transcript(self) -> Path:
        return self.base / "transcript.txt"

    def env(self, *, shell: bool = False) -> dict[str, str]:
        """The environment: the console script first on PATH, the emulator's settings."""
        values = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(self.base),
            "TMPDIR": str(self.base / "tmp"),
            "LANG": "C.UTF-8",
            "TZ": "Pacific/Auckland",  # far from UTC: nothing may depend on the local time zone
            "BACKFILL_LEDGER": f"sqlite:///{self.work / demo.LEDGER_FILE}",
            # Without the emulator a forgotten setting fails fast instead of reaching Azure.
            "BACKFILL_ADF_ENDPOINT": "https://127.0.0.1:9",
        }
        if self.emulator is not None and (self.factory_in_shell or not shell):
            values.update(self.emulator.env())
            values["TELEMETRY_SINK_URL"] = f"sqlite:///{self.work / demo.SINK_FILE}"
        values.update(self.facts.get("env", {}))  # a stage's own settings (team-ledger: its database)
        return values

    def cli(self, args: list[str], *, actor: str | None = None, expect: Collection[int] = (0,)) -> str:
        """``backfill ARGS`` in-process, for set-ups (nothing else may use os.environ meanwhile)."""
        values = self.env() | ({"BACKFILL_ACTOR": actor} if actor else {})
        out, err = io.StringIO(), io.StringIO()
        with _environment(values), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main.run(args)
        if code not in expect:
            raise AssertionError(f"set-up: backfill {shlex.join(args)} exited {code}: {err.getvalue()[-800:]}")
        return out.getvalue()

    def start(self, script: str) -> None:
        """Run ``script`` with bash -e in the work folder, in a process group of its own."""
        path = self.base / "runbook.sh"
        path.write_text(script, encoding="utf-8")
        with self.transcript.open("wb") as transcript:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(["bash", "-e", str(path)], cwd=self.work, env=self.env(shell=True),
                                         stdin=subprocess.DEVNULL, stdout=transcript, stderr=subprocess.STDOUT,
                                         start_new_session=True)

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
