"""At most one run per window across backfills, paused runners, late effects and bad answers
(spec §14, issue 7). Real runners (subprocesses where processes matter), the real emulator over
HTTPS, SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from crash_hook import crash_command
from runner_support import (
    EVERY,
    FAST_ENV,
    PIPELINE,
    base_time,
    cli,
    creates_per_window,
    emulator,
    events,
    keys,
    request,
    scenario,
    window_kinds,
    write_plan,
)

from backfill import events as ev
from backfill.emulator import Emulator
from backfill.emulator.scenario import OutcomeRule, PastRun
from backfill.timeutil import format_utc

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


def _env(emu: Emulator, ledger: str, **more: str) -> dict[str, str]:
    env = {**os.environ, **emu.env(), **FAST_ENV, "BACKFILL_LEDGER": ledger, "BACKFILL_ACTOR": "carol"}
    env.pop("BACKFILL_CRASH_AT", None)
    return {**env, **more}


def _start(bid: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        crash_command("run", bid), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def _skips(bid: str, ledger: str) -> dict[str, str]:
    return {
        e.window_key or "": str(e.payload.get("decision")) for e in events(bid, ledger) if e.kind == ev.WINDOW_SKIPPED
    }


def _plans(tmp_path: Path, base: datetime, concurrency_a: int = 2) -> tuple[Path, Path]:
    """Plan A: windows 0-5; plan B: windows 3-8; windows 3, 4 and 5 are shared."""
    a = write_plan(tmp_path, 6, base=base, name="a.toml", execution={"concurrency": concurrency_a})
    return a, write_plan(tmp_path, 6, base=base + 3 * EVERY, name="b.toml", execution={"concurrency": 2})


def _assert_once(emu: Emulator, windows: int) -> None:
    created = creates_per_window(emu)
    assert len(created) == windows and set(created.values()) == {1}, created
    sent = Counter(str((e.body or {}).get("windowStart")) for e in emu.create_run_calls() if e.effect)
    assert len(sent) == windows and set(sent.values()) == {1}, sent


# --- 1. two backfills over shared windows ------------------------------------------------------


def test_two_backfills_started_together_run_each_shared_window_once(
    ledger_url: str, tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan_a, plan_b = _plans(tmp_path, base)
    with emulator(scenario(base), monkeypatch) as emu:
        a, b = request(plan_a, monkeypatch, capsys), request(plan_b, monkeypatch, capsys)
        env = _env(emu, ledger_url)
        runners = [_start(a, env, tmp_path), _start(b, env, tmp_path)]
        results = [_finish(r) for r in runners]
        assert [code for code, _ in results] == [0, 0], results
        _assert_once(emu, 9)
    skipped = {**_skips(a, ledger_url), **_skips(b, ledger_url)}
    shared = set(keys(base, 6)[3:])
    assert set(skipped) <= shared
    # Each shared window ran in exactly one of the two backfills; the other skipped it with a reason.
    for key in shared:
        ran = [bid for bid in (a, b) if "created" in window_kinds(bid, ledger_url).get(key, [])]
        assert len(ran) == 1, key
        assert skipped.get(key) in ("skip-in-progress", "skip-succeeded"), (key, skipped)


def test_a_backfill_requested_while_another_runs_skips_what_that_one_ran(
    ledger_url: str, tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    # A works one window at a time and its first three runs take 2.4 s each: B, requested once A
    # has started, reaches the shared windows first, while A's preview still says "run" for them.
    plan_a, plan_b = _plans(tmp_path, base, concurrency_a=1)
    scen = scenario(base)
    scen.add_outcome(
        OutcomeRule(
            duration=timedelta(hours=4), match={"windowStart": [format_utc(base + i * EVERY) for i in range(3)]}
        )
    )
    with emulator(scen, monkeypatch) as emu:
        a = request(plan_a, monkeypatch, capsys)
        first = _start(a, _env(emu, ledger_url), tmp_path)
        deadline = time.monotonic() + 60
        while not any(e.kind == ev.WINDOW_CREATED for e in events(a, ledger_url)) and time.monotonic() < deadline:
            time.sleep(0.05)
        b = request(plan_b, monkeypatch, capsys)
        second = _start(b, _env(emu, ledger_url), tmp_path)
        assert _finish(first)[0] == 0 and _finish(second)[0] == 0
        _assert_once(emu, 9)
    skipped = _skips(b, ledger_url) | _skips(a, ledger_url)
    assert set(skipped) == set(keys(base, 6)[3:])
    assert set(skipped.values()) <= {"skip-in-progress", "skip-succeeded"}


# --- 2. a createRun that takes effect late ------------------------------------------------------


@pytest.mark.parametrize("settle", ["20s", None], ids=["plan-settle", "default-settle"])
def test_a_late_effect_is_adopted_within_settle(
    settle: str | None, tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 2, base=base, execution={"settle": settle} if settle else None)
    with emulator(scenario(base), monkeypatch) as emu:
        monkeypatch.delenv("BACKFILL_RECONCILE_SETTLE")
        bid = request(plan, monkeypatch, capsys)
        monkeypatch.setenv("BACKFILL_ADF_TIMEOUT", "0.5")
        # The service holds the answer past the client's timeout, then applies it 1.5 s later.
        emu.faults.add("hang", "createRun", when="after", latency=0.8, effect_delay=1.5)
        began = time.monotonic()
        assert cli(monkeypatch, "carol", "run", bid) == 0, capsys.readouterr().err
        assert time.monotonic() - began < 15  # adopted as soon as it appeared, not after settle
        assert len(emu.create_run_calls()) == 2
        assert set(creates_per_window(emu).values()) == {1}
    assert window_kinds(bid)[keys(base, 1)[0]] == ["intent", "adopted", "finished"]


def test_settle_defaults_to_ten_minutes_and_the_plan_can_set_it() -> None:
    from backfill.runner.machine import RunnerOptions

    assert RunnerOptions.from_env({}).settle == timedelta(minutes=10)
    assert RunnerOptions.from_env({}, settle=timedelta(minutes=3)).settle == timedelta(minutes=3)
    assert RunnerOptions.from_env({"BACKFILL_RECONCILE_SETTLE": "2s"}, settle=timedelta(minutes=3)).settle == timedelta(
        seconds=2
    )


# --- 3. a runner paused past its lease between intent and createRun -----------------------------


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def test_a_runner_paused_past_its_lease_does_not_send_its_stale_create(
    ledger_url: str, tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 1, base=base)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        lease = {"BACKFILL_CLAIM_LEASE": "1s"}
        paused = _start(
            bid,
            _env(emu, ledger_url, BACKFILL_CRASH_AT="after:window.intent:1", BACKFILL_CRASH_SIGNAL="STOP", **lease),
            tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            while not _stopped(paused.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _stopped(paused.pid):
                paused.kill()
                raise AssertionError(f"the runner never reached its pause: {paused.communicate()}")
            time.sleep(1.5)  # past the lease
            second = _start(bid, _env(emu, ledger_url, **lease), tmp_path)
            code, err = _finish(second)
            assert code == 0, err
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        code, err = _finish(paused)
        assert code == 0, err
        assert len(emu.create_run_calls()) == 1  # the woken runner did not send its stale createRun
        assert set(creates_per_window(emu).values()) == {1}
    kinds = window_kinds(bid, ledger_url)[keys(base, 1)[0]]
    assert kinds == ["intent", "intent", "created", "finished"]


# --- 4. malformed createRun answers -------------------------------------------------------------


MALFORMED = {
    "truncated JSON on 200": dict(kind="malformed", status=200, body='{"runId": "6f1e'),
    "HTML on 200": dict(kind="malformed", status=200, body="<html><body>Bad gateway</body></html>"),
    "empty object": dict(kind="malformed", status=200, body="{}"),
    "integer runId": dict(kind="malformed", status=200, body='{"runId": 12345}'),
    "400 after effect": dict(kind="error", status=400, code="BadRequest", message="gateway said no"),
}


@pytest.mark.parametrize("fault", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_create_answer_is_doubt_and_the_run_is_adopted(
    fault: dict[str, Any], tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 2, base=base)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        emu.faults.add(operation="createRun", when="after", **fault)
        assert cli(monkeypatch, "carol", "run", bid) == 0, capsys.readouterr().err
        assert len(emu.create_run_calls()) == 2
        assert set(creates_per_window(emu).values()) == {1}
    first = keys(base, 1)[0]
    assert window_kinds(bid)[first] == ["intent", "adopted", "finished"]
    adopted = next(e.payload for e in events(bid) if e.kind == ev.WINDOW_ADOPTED)
    assert "\n" not in adopted["reason"] and adopted["reason"].startswith("createRun ")
    finished = [e.payload for e in events(bid) if e.kind == ev.WINDOW_FINISHED and e.window_key == first]
    assert finished[0]["status"] == "Succeeded"


def test_a_hung_create_connection_without_effect_is_reconciled_then_created(
    tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 1, base=base)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        monkeypatch.setenv("BACKFILL_ADF_TIMEOUT", "0.5")
        emu.faults.add("hang", "createRun", latency=1.0)
        assert cli(monkeypatch, "carol", "run", bid) == 0, capsys.readouterr().err
        assert set(creates_per_window(emu).values()) == {1}
    assert window_kinds(bid)[keys(base, 1)[0]] == ["intent", "intent", "created", "finished"]


# --- 5. an older run still in flight with a newer failed one -------------------------------------


def test_an_older_run_in_flight_makes_the_window_skip_in_progress(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    params = {"windowStart": format_utc(base), "windowEnd": format_utc(base + EVERY), "feederRegion": "north"}
    scen.history += [
        PastRun(PIPELINE, base + EVERY, params, status="InProgress"),
        PastRun(PIPELINE, base + 2 * EVERY, params, status="Failed"),
    ]
    plan = write_plan(tmp_path, 2, base=base)
    with emulator(scen, monkeypatch) as emu:
        capsys.readouterr()
        assert cli(monkeypatch, "alice", "preview", str(plan), "--json") == 0
        preview = json.loads(capsys.readouterr().out)
        first = preview["windows"][0]
        assert first["decision"] == "skip-in-progress"
        assert "is still in flight; the latest is run " in first["reason"]
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0
        assert len(emu.create_run_calls()) == 1  # only the second window


# --- 6. malformed history ---------------------------------------------------------------------


def test_a_repeating_continuation_token_is_stopped_with_one_line(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 1, base=base)
    with emulator(scenario(base), monkeypatch) as emu:
        emu.faults.add("repeat-token", "queryPipelineRuns", count=None)
        capsys.readouterr()
        assert cli(monkeypatch, "alice", "preview", str(plan)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "repeated a continuationToken" in err and "unexpected" not in err
        assert len(emu.requests("queryPipelineRuns")) < 10


def test_an_unknown_status_counts_as_in_progress_and_is_reported(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    scen = scenario(base)
    params = {"windowStart": format_utc(base), "windowEnd": format_utc(base + EVERY), "feederRegion": "north"}
    scen.history.append(PastRun(PIPELINE, base + EVERY, params, status="InProgress"))
    # The run we create stays in progress 1.2 s (real), long enough to be polled in it.
    scen.add_outcome(OutcomeRule(duration=timedelta(hours=2)))
    plan = write_plan(tmp_path, 2, base=base)
    with emulator(scen, monkeypatch) as emu:
        # Every run the service shows in progress, the old one and the one we create, says Waiting.
        emu.faults.add("status", "*", count=None, status_text="Waiting", of_status="InProgress")
        capsys.readouterr()
        assert cli(monkeypatch, "alice", "preview", str(plan), "--json") == 0
        first = json.loads(capsys.readouterr().out)["windows"][0]
        assert first["decision"] == "skip-in-progress"
        assert "Waiting (a status this tool does not know, counted as in progress)" in first["reason"]
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0, capsys.readouterr().err
        assert len(emu.create_run_calls()) == 1  # the second window only
    statuses = [e.payload["status"] for e in events(bid) if e.kind == ev.WINDOW_STATUS]
    assert "Waiting" in statuses  # followed through the unknown status to its end
    assert [e.payload["status"] for e in events(bid) if e.kind == ev.WINDOW_FINISHED] == ["Succeeded"]


def test_malformed_run_records_are_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: MP, capsys: Cap, caplog: pytest.LogCaptureFixture
) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 1, base=base)
    bad = [
        {"runId": "r-list", "status": "Succeeded", "parameters": ["windowStart"]},
        {"status": "Succeeded", "parameters": {}},
        {"runId": "r-time", "status": "Succeeded", "runStart": "yesterday", "parameters": {}},
    ]
    with emulator(scenario(base), monkeypatch) as emu:
        emu.faults.add("records", "queryPipelineRuns", count=None, records=bad)
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "carol", "run", bid) == 0
        assert "unexpected" not in capsys.readouterr().err
        # Printed by logging's last-resort handler on stderr: one line per bad record.
        warned = [r.getMessage() for r in caplog.records if r.name == "backfill.factory"]
        # Once per command (request, run) however often each reads history.
        assert len(set(warned)) == 3 and all(count <= 2 for count in Counter(warned).values()), warned
        assert any("run r-list: parameters is a list, not an object" in w for w in warned)
        assert any("run record without a runId" in w for w in warned)
        assert any("run r-time: runStart 'yesterday' is not a time" in w for w in warned)
        assert set(creates_per_window(emu).values()) == {1}


# --- 7. a 429 on createRun ----------------------------------------------------------------------


def test_a_throttled_create_is_sent_again_after_retry_after(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 2, base=base)
    with emulator(scenario(base), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        emu.faults.add("throttle", "createRun", count=2, retry_after=0.2)
        assert cli(monkeypatch, "carol", "run", bid) == 0, capsys.readouterr().err
        calls = emu.create_run_calls()
        assert [c.status for c in calls] == [429, 429, 200, 200]
        assert (calls[2].at - calls[1].at).total_seconds() >= 0.2
        assert set(creates_per_window(emu).values()) == {1}
    assert window_kinds(bid)[keys(base, 1)[0]] == ["intent", "created", "finished"]
    created = next(e.payload for e in events(bid) if e.kind == ev.WINDOW_CREATED)
    assert created["throttled"] == 2


def test_a_backfill_killed_with_a_create_in_doubt_stops_another_from_creating(
    ledger_url: str, tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan_a = write_plan(tmp_path, 1, base=base, name="a.toml")
    plan_b = write_plan(tmp_path, 1, base=base, name="b.toml", approval={"expires": "2h"})  # the same window
    with emulator(scenario(base), monkeypatch) as emu:
        a, b = request(plan_a, monkeypatch, capsys), request(plan_b, monkeypatch, capsys)
        # A's createRun is answered at once but applied 12 s later; A dies before it records it.
        # 12 s: B must meet A's doubt before the run appears, and a loaded CI machine took more
        # than 5 s to start B and sync its history (B then saw the run itself, not the doubt).
        emu.faults.add("latency", "createRun", when="after", latency=0.01, effect_delay=12.0)
        killed = _start(a, _env(emu, ledger_url, BACKFILL_CRASH_AT="before:window.created:1"), tmp_path)
        assert _finish(killed)[0] == -signal.SIGKILL
        assert emu.runs()[-1]["parameters"]["windowStart"] != format_utc(base)  # not applied yet
        other = _start(b, _env(emu, ledger_url, BACKFILL_RECONCILE_SETTLE="60s"), tmp_path)
        code, err = _finish(other)
        assert code == 0, err
        resumed = _start(a, _env(emu, ledger_url), tmp_path)
        assert _finish(resumed)[0] == 0
        assert len(emu.create_run_calls()) == 1
        assert set(creates_per_window(emu).values()) == {1}
    skipped = next(e.payload for e in events(b, ledger_url) if e.kind == ev.WINDOW_SKIPPED)
    assert skipped["decision"] in ("skip-in-progress", "skip-succeeded")
    assert skipped["reason"].startswith(f"backfill {a} left a createRun in doubt for this window: ")
    assert window_kinds(a, ledger_url)[keys(base, 1)[0]] == ["intent", "adopted", "finished"]
