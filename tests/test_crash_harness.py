"""Crash safety: the runner is a real process, killed with SIGKILL at window state transitions.

The emulator lives in the test process (so it outlives every killed runner); each runner is
``python tests/crash_runner.py run ID`` (the real CLI) with ``BACKFILL_CRASH_AT`` (tests/crash_hook.py:
the test-only hook that SIGKILLs the process right before or after it appends its Nth event of a kind). The runner is
killed and resumed until the backfill completes; then the emulator must have received exactly one
createRun per window, and the ledger must hold every window's intent, created|adopted and finished
events and verify.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from crash_hook import REACHED_POINTS, CrashPoint, crash_command
from hypothesis import given
from hypothesis import strategies as st
from runner_support import FAST_ENV, base_time, creates_per_window, emulator, events, scenario, write_plan
from runner_support import request as request_backfill

from backfill import events as ev
from backfill.chain import LedgerEvent
from backfill.cli import main
from backfill.emulator import Emulator

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch
WINDOWS = 12
# The last kill of each seed: everything is done but the backfill's own end is not recorded.
LAST_POINT = "before:backfill.completed:1"
KILLS_PER_SEED = 10
# Figures for docs/proof.md: conftest's pytest_terminal_summary prints them after the run.
FIGURES: dict[str, int] = {"kills": 0, "cycles": 0, "windows": 0, "adopted": 0, "intents_after_doubt": 0}


def _runner(bid: str, emu: Emulator, ledger: str, cwd: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **emu.env(), **FAST_ENV, "BACKFILL_LEDGER": ledger, "BACKFILL_ACTOR": "carol"}
    env.pop("BACKFILL_CRASH_AT", None)
    if crash_at:
        env["BACKFILL_CRASH_AT"] = crash_at
    return subprocess.run(
        crash_command("run", bid), env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _assert_every_window_complete(bid: str, emu: Emulator, ledger: str) -> None:
    base_keys = sorted(creates_per_window(emu))
    assert len(base_keys) == WINDOWS and set(creates_per_window(emu).values()) == {1}
    assert len(emu.create_run_calls()) == WINDOWS  # exactly one createRun per window was ever sent
    recorded = events(bid, ledger)
    per: dict[str, list[str]] = {}
    for event in recorded:
        if event.window_key:
            per.setdefault(event.window_key, []).append(event.kind)
    assert len(per) == WINDOWS
    for key, kinds in per.items():
        first_intent = kinds.index(ev.WINDOW_INTENT)
        started = [i for i, k in enumerate(kinds) if k in (ev.WINDOW_CREATED, ev.WINDOW_ADOPTED)]
        assert len(started) == 1 and started[0] > first_intent, (key, kinds)
        assert kinds.count(ev.WINDOW_FINISHED) == 1 and kinds[-1] == ev.WINDOW_FINISHED, (key, kinds)
    assert recorded[-1].kind == ev.COMPLETED
    assert all(e.payload.get("status") == "Succeeded" for e in recorded if e.kind == ev.WINDOW_FINISHED)


def _reachable(recorded: list[LedgerEvent]) -> list[str]:
    """The kill points the next runner is sure to reach, from what the ledger holds: one it
    never reached would let it run the rest of the backfill unkilled, and how far each killed
    runner got depends on the machine's load. ``:N`` of an intent or a create needs N windows no
    runner has touched (a window with an intent may be adopted, not created); the others, any
    window not finished."""
    touched: set[str | None] = set()
    finished: set[str | None] = set()
    for event in recorded:
        if event.kind in (ev.WINDOW_INTENT, ev.WINDOW_CREATED, ev.WINDOW_ADOPTED):
            touched.add(event.window_key)
        elif event.kind == ev.WINDOW_FINISHED:
            finished.add(event.window_key)
    fresh, unfinished = WINDOWS - len(touched), WINDOWS - len(finished)
    reachable: list[str] = []
    for text in REACHED_POINTS:
        point = CrashPoint.parse(text)
        needs = fresh if point.kind in (ev.WINDOW_INTENT, ev.WINDOW_CREATED) else unfinished
        if needs >= (point.nth if point.kind in (ev.WINDOW_INTENT, ev.WINDOW_CREATED) else 1):
            reachable.append(text)
    return reachable


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "backend"), [(1, "sqlite"), (2, "postgres")])
def test_kill_and_resume_until_completed(
    seed: int, backend: str, tmp_path: Path, monkeypatch: MP, capsys: Cap, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        monkeypatch.setenv("BACKFILL_LEDGER", request.getfixturevalue("postgres_url"))
    ledger = os.environ["BACKFILL_LEDGER"]
    rng = random.Random(seed)
    base = base_time()
    plan = write_plan(tmp_path, WINDOWS, base=base, execution={"concurrency": 2})
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request_backfill(plan, monkeypatch, capsys)
        kills, last_drawn = 0, False
        for _ in range(3 * KILLS_PER_SEED):
            reachable = _reachable(events(bid, ledger))
            point: str | None
            if kills < KILLS_PER_SEED and reachable:
                point = rng.choice(reachable)
            else:
                point, last_drawn = (None, True) if last_drawn else (LAST_POINT, True)
            done = _runner(bid, emu, ledger, tmp_path, point)
            FIGURES["cycles"] += 1
            if done.returncode == -signal.SIGKILL:
                kills += 1
                continue
            assert done.returncode == 0, (point, done.stderr)
            if events(bid, ledger)[-1].kind == ev.COMPLETED:
                break
        FIGURES["kills"] += kills
        assert kills >= KILLS_PER_SEED // 2, kills
        _assert_every_window_complete(bid, emu, ledger)
        recorded = [e.kind for e in events(bid, ledger)]
        FIGURES["windows"] += WINDOWS
        FIGURES["adopted"] += recorded.count(ev.WINDOW_ADOPTED)
        FIGURES["intents_after_doubt"] += recorded.count(ev.WINDOW_INTENT) - WINDOWS
        assert main.run(["ledger", "verify"]) == 0


@pytest.mark.slow
def test_two_workers_share_one_backfill_and_one_dies(
    postgres_url: str, tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    monkeypatch.setenv("BACKFILL_LEDGER", postgres_url)
    base = base_time()
    plan = write_plan(tmp_path, WINDOWS, base=base, execution={"concurrency": 2})
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request_backfill(plan, monkeypatch, capsys)
        env = {**os.environ, **emu.env(), **FAST_ENV, "BACKFILL_ACTOR": "carol"}
        command = crash_command("run", bid)
        doomed = subprocess.Popen(
            command,
            env={**env, "BACKFILL_CRASH_AT": "after:window.created:2"},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        survivor = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert doomed.wait(120) in (0, -signal.SIGKILL)
        _survivor_out, survivor_err = survivor.communicate(timeout=120)
        assert survivor.returncode == 0, survivor_err
        if events(bid)[-1].kind != ev.COMPLETED:
            # The survivor left the windows the doomed worker held while it lived: a last run ends them.
            last = _runner(bid, emu, postgres_url, tmp_path, None)
            assert last.returncode == 0, last.stderr
        _assert_every_window_complete(bid, emu, postgres_url)
        workers = {e.payload["worker"] for e in events(bid) if e.kind == ev.WINDOW_INTENT}
        assert len(workers) >= 2  # both processes ran windows


def test_the_installed_runner_reads_no_kill_switch(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    # A stray BACKFILL_CRASH_AT in an operator's shell: ``backfill run`` (python -m backfill, no
    # test hook) runs to the end; the same variable kills tests/crash_runner.py at its point.
    ledger = os.environ["BACKFILL_LEDGER"]
    base = base_time()
    plan = write_plan(tmp_path, WINDOWS, base=base, execution={"concurrency": 2})
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request_backfill(plan, monkeypatch, capsys)
        env = {
            **os.environ,
            **emu.env(),
            **FAST_ENV,
            "BACKFILL_LEDGER": ledger,
            "BACKFILL_ACTOR": "carol",
            "BACKFILL_CRASH_AT": "after:window.intent:1",
            "BACKFILL_CRASH_SIGNAL": "KILL",
        }
        done = subprocess.run(
            [sys.executable, "-m", "backfill", "run", bid],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        _assert_every_window_complete(bid, emu, ledger)


def test_the_crash_runner_installs_the_hook(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 2, base=base)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request_backfill(plan, monkeypatch, capsys)
        done = _runner(bid, emu, os.environ["BACKFILL_LEDGER"], tmp_path, "after:window.intent:1")
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert [e.kind for e in events(bid)][-1] == ev.WINDOW_INTENT


def test_the_crash_hook_is_inert_without_its_variable() -> None:
    from crash_hook import CrashHook, CrashPoint

    hook = CrashHook.from_env()
    hook.before(ev.WINDOW_INTENT)
    hook.after(ev.WINDOW_INTENT)
    assert hook.point is None
    assert CrashPoint.parse("window.intent:2") == CrashPoint("after", "window.intent", 2)
    assert CrashPoint.parse("before:window.created:1") == CrashPoint("before", "window.created", 1)
    for bad in ("window.intent", "window.intent:0", "sideways:window.intent:1", ":1"):
        with pytest.raises(ValueError, match="expected"):
            CrashPoint.parse(bad)


@given(st.sampled_from(["", "before:", "after:"]), st.sampled_from(ev.ALL_KINDS), st.integers(1, 10_000))
def test_crash_points_parse(when: str, kind: str, nth: int) -> None:
    from crash_hook import CrashPoint

    assert CrashPoint.parse(f"{when}{kind}:{nth}") == CrashPoint(when.rstrip(":") or "after", kind, nth)
