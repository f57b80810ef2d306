"""The story ``backfill demo`` tells: the real commands run in-process through
``backfill.cli.main.run`` against the demo's emulated factory (``backfill.demo``), each printed as
the command a user would type followed by its own output. Nothing is faked: the story only checks
that every step ended the way it expects, and says so when one did not.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from backfill.decisions import Decision
from backfill.demo import (
    COMPLETE,
    ENGINEER,
    EVERY,
    FAST_SPEED,
    HUNG,
    LEDGER_FILE,
    LOCKED,
    NEVER,
    PARTIAL,
    PIPELINE,
    PLAN_FILE,
    ROWS,
    SINK_FILE,
    SPEED,
    STEPS,
    SUPERVISOR,
    WINDOW_COUNT,
    create_runs_per_window,
    demo_plan_text,
    demo_scenario,
    expected_decisions,
    shifted_plan,
    yesterday,
)
from backfill.emulator import Emulator
from backfill.errors import BackfillError, ExitCode, UsageError
from backfill.timeutil import format_utc


@dataclass(frozen=True)
class DemoOptions:
    keep: Path | None = None  # keep the folder here instead of a temporary one
    fast: bool = False
    stop_after: str = "all"  # "preview": the preview alone


# Writes through to the transcript and, when recording, keeps a copy (the demo reads IDs from it).
class _Tee(io.TextIOBase):
    def __init__(self, target: TextIO, record: list[str] | None = None) -> None:
        self._target = target
        self._record = record

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            # click probes streams with bytes to find a binary one; this is a text stream.
            raise TypeError("write() argument must be str")
        self._target.write(text)
        if self._record is not None:
            self._record.append(text)
        return len(text)

    def flush(self) -> None:
        self._target.flush()


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*values, "BACKFILL_ACTOR")}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Story:
    """Prints the story and runs its commands in-process, checking each one's exit code."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def command(self, args: list[str], *, expect: int, why: str, actor: str | None = None) -> str:
        """Run ``backfill ARGS`` as ``actor``; its stdout, or BackfillError on another exit code."""
        from backfill.cli.main import run

        shown = ("BACKFILL_ACTOR=" + actor + " " if actor else "") + "backfill " + shlex.join(args)
        self.say()
        self.say(f"$ {shown}")
        if actor is None:
            os.environ.pop("BACKFILL_ACTOR", None)
        else:
            os.environ["BACKFILL_ACTOR"] = actor
        captured: list[str] = []
        # stderr (sync notes, progress lines) joins the transcript, as on a terminal.
        with contextlib.redirect_stdout(_Tee(self.out, captured)), contextlib.redirect_stderr(_Tee(self.out)):
            code = run(args)
        if code == ExitCode.INTERRUPTED and expect != code:
            raise KeyboardInterrupt  # Ctrl-C inside a step ends the demo as it ends any command
        if code != expect:
            raise BackfillError(f"demo: `{shown}` exited {code}, expected {expect} ({why})")
        if code:
            self.say(f"(exit {code}: {why}, as expected)")
        return "".join(captured)


def _prepare_folder(keep: Path | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="backfill-demo-"))
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise UsageError(f"--keep {keep}: must be a new or empty folder")
    keep.mkdir(parents=True, exist_ok=True)
    return keep.resolve()


def run_demo(options: DemoOptions, out: TextIO | None = None) -> None:
    """Tell the whole story; raises BackfillError (exit 1) when a step ends unexpectedly."""
    if options.stop_after not in STEPS:
        raise UsageError(f"--step must be one of {', '.join(STEPS)}")
    story = Story(out if out is not None else sys.stdout)
    folder = _prepare_folder(options.keep)
    cwd = Path.cwd()
    try:
        os.chdir(folder)
        _tell(story, folder, options)
    finally:
        os.chdir(cwd)
        _release_sinks()
        if options.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def _release_sinks() -> None:
    from backfill.checks import sql

    sql.dispose_engines()


def _tell(story: Story, folder: Path, options: DemoOptions) -> None:
    day = yesterday()
    sink_url = f"sqlite:///{folder / SINK_FILE}"
    ledger_url = f"sqlite:///{folder / LEDGER_FILE}"
    plan = folder / PLAN_FILE
    plan.write_text(shifted_plan(demo_plan_text(), day, day + WINDOW_COUNT * EVERY), encoding="utf-8")
    scenario = demo_scenario(day, sink_url, speed=FAST_SPEED if options.fast else SPEED)
    story.say(f"# backfill demo, in {folder}")
    story.say(
        f"# {PLAN_FILE}: plans/demo.toml ({WINDOW_COUNT} windows of 15 minutes of {PIPELINE}), dates shifted "
        f"to yesterday ({format_utc(day)}) so the history is within ADF's 45-day retention"
    )
    story.say(f"# {LEDGER_FILE}: the ledger; {SINK_FILE}: the sink, table meter_readings (both SQLite)")
    with Emulator(scenario) as emulator:
        story.say(f"# an emulated Data Factory at {emulator.endpoint}, in this process, with yesterday's history:")
        story.say(
            f"#   the sink was locked at {_at(PARTIAL)}: that run failed after writing {ROWS // 3} of its {ROWS} "
            f"rows, {_at(LOCKED[0])} and {_at(LOCKED[1])} failed before writing any,"
        )
        story.say(
            f"#   {_at(COMPLETE)} wrote all {ROWS} and then failed; {_at(NEVER[0])} and {_at(NEVER[1])} never "
            f"ran; the {_at(HUNG)} run is still in progress;"
        )
        story.say("#   every other window succeeded. New runs will succeed.")
        settings = {**emulator.env(), "BACKFILL_LEDGER": ledger_url, "TELEMETRY_SINK_URL": sink_url}
        with _environment(settings):
            _commands(story, emulator, day, options)
    story.say()
    if options.keep is not None:
        _keep_lines(story, folder, ledger_url, sink_url)


def _at(index: int) -> str:
    return f"{index * 15 // 60:02d}:{index * 15 % 60:02d}"


def _commands(story: Story, emulator: Emulator, day: datetime, options: DemoOptions) -> None:
    story.say()
    story.say("# 1. What would a backfill do? One decision per window, each with its reason.")
    story.command(["preview", PLAN_FILE], expect=4, why="a blocked window remains: the partial one at 02:00")
    if options.stop_after == "preview":
        story.say()
        story.say("# Stopped after the preview (--step preview). Run `backfill demo` for the whole story.")
        return
    story.say()
    story.say("# 2. The engineer asks for the backfill; the plan's hash and this preview are frozen.")
    requested = story.command(
        ["request", PLAN_FILE, "--note", "INC-4821: replay the windows lost to the sink lock"],
        expect=0,
        why="request recorded",
        actor=ENGINEER,
    )
    backfill_id = requested.splitlines()[0].strip()
    _check_frozen(backfill_id, expected_decisions(day))
    if options.stop_after == "request":
        # Left for a supervisor to approve in the console (issue 15), as bob: alice requested it.
        story.say()
        story.say(f"# Stopped after the request (--step request): {backfill_id} awaits approval. In the console:")
        story.say("#   backfill serve --auth dev --dev-users alice,bob   then sign in as bob and approve it")
        return
    story.say()
    story.say("# 3. A supervisor approves: four eyes, the requester cannot approve her own request.")
    story.command(["approve", backfill_id], expect=0, why="approved", actor=SUPERVISOR)
    story.say()
    story.say("# 4. The engineer runs it: the first window is the canary, then the runner pauses.")
    story.command(["run", backfill_id], expect=3, why="paused after the canary window", actor=ENGINEER)
    story.say()
    story.say("# 5. The supervisor looks at the canary window and lets the rest run.")
    story.command(["approve", backfill_id], expect=0, why="canary approved", actor=SUPERVISOR)
    story.command(["run", backfill_id], expect=0, why="completed", actor=ENGINEER)
    story.say()
    story.say("# 6. Where it stands, and proof the ledger was not altered.")
    story.command(["status", backfill_id], expect=0, why="status")
    story.command(["ledger", "verify"], expect=0, why="the hash chain is intact")
    story.command(["ledger", "checkpoint"], expect=0, why="a checkpoint for auditors")
    _summary(story, emulator, backfill_id, expected_decisions(day))


def _check_frozen(backfill_id: str, expected: Mapping[str, str]) -> None:
    frozen, _ = _backfill(backfill_id)
    wrong = [
        f"{key} {frozen.get(key, 'missing')} (expected {want})"
        for key, want in expected.items()
        if frozen.get(key) != want
    ]
    if wrong:
        raise BackfillError(f"demo: the preview decided {len(wrong)} windows unexpectedly; first: {wrong[0]}")


def _backfill(backfill_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """The frozen decision and the current state of each window."""
    from backfill.services.status import backfill_status

    view = backfill_status(backfill_id)
    record, state = view.record, view.state
    decisions = {key: str(decision) for key, decision in record.decisions.items()}
    return decisions, {key: str(window["state"]) for key, window in state.windows.items()}


def _summary(story: Story, emulator: Emulator, backfill_id: str, expected: Mapping[str, str]) -> None:
    runnable = sorted(k for k, d in expected.items() if Decision(d).runnable)
    creates = create_runs_per_window(emulator)
    _, states = _backfill(backfill_id)
    unfinished = [k for k in runnable if states.get(k) != "succeeded"]
    if unfinished:
        raise BackfillError(f"demo: window {unfinished[0]} ended {states.get(unfinished[0])}, expected succeeded")
    if creates != Counter(runnable):
        extra = sorted(set(creates) - set(runnable)) or [k for k in runnable if creates[k] != 1]
        raise BackfillError(
            f"demo: expected one createRun per run window, got {sum(creates.values())} "
            f"for {len(runnable)} windows (first odd one: {extra[0]})"
        )
    decided = Counter(expected.values())
    blocked = sum(n for d, n in decided.items() if Decision(d).blocked)
    skipped = len(expected) - len(runnable) - blocked
    story.say()
    story.say("# The story in numbers")
    story.say(
        f"{len(expected)} windows: {len(runnable)} run ({decided[Decision.RERUN]} reruns of failed runs, "
        f"{decided[Decision.RUN]} never run), {skipped} skipped ({decided[Decision.SKIP_SUCCEEDED]} succeeded, "
        f"{decided[Decision.SKIP_COMPLETE_IN_SINK]} complete in the sink, "
        f"{decided[Decision.SKIP_IN_PROGRESS]} in progress), {blocked} blocked (partial in the sink: left alone)"
    )
    story.say(f"createRun calls seen by the emulator: {sum(creates.values())}, exactly one per run window")
    story.say()
    story.say("# What to try next (the README walks through each)")
    story.say("backfill demo --keep ./backfill-demo   keep the plan, ledger and sink, and look around")
    story.say("backfill emulator serve                an emulated factory for your own plans")
    story.say("backfill plan schema                   every plan key, for your editor")


def _keep_lines(story: Story, folder: Path, ledger_url: str, sink_url: str) -> None:
    story.say(f"# Kept in {folder}. The emulator stopped with the demo; the ledger, the history cache and")
    story.say("# the sink remain. To look around:")
    story.say(f"cd {shlex.quote(str(folder))}")
    story.say(f"export BACKFILL_LEDGER={shlex.quote(ledger_url)}")
    story.say(f"export TELEMETRY_SINK_URL={shlex.quote(sink_url)}")
    story.say("backfill status; backfill ledger show; backfill preview plan.toml --no-sync")
