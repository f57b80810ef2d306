"""Preview of a year of 15-minute windows (35,040) against 200,000 runs: one JSON line per figure.

    python bench/preview.py [--runs 200000] [--ledger URL]

ADF keeps 45 days of runs, so the 200,000 runs are seeded in the emulator within the last 45 days
(the last ~4,200 windows of the plan, one "north" run each that the plan matches, the rest for
other feeder regions that it does not); older windows have no run and no check, so they come out
``blocked-unknown``. The emulator runs in its own process (``backfill emulator serve``,
bench/history_emulator.py); each preview runs in a fresh interpreter (spawn), so its peak RSS is
the preview's own, and the cold one starts from an empty ledger. The warm figure is the median of
three previews after the cold one; each figure breaks the time down (SDK import, plan, ledger
open, sync, history load, matching and decisions), and ``matching_seconds`` repeats the matching
alone. ``sdk_loop_seconds``: the plain SDK loop a user would write, against the same emulator,
and the cold preview's speed-up over it. ``--warm-cli``: also the warm ``backfill preview`` as a
command (start-up and output included).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# The test suite's plan writer (tests/plan_samples.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)
YEAR_WINDOWS = 35_040
SEEDED_DAYS = 44  # inside the 45-day retention, with room for the clock to move during the bench
WARM_REPEATS = 3  # the warm figure is the median of this many previews


def emit(figure: str, value: Any, unit: str = "", **extra: Any) -> None:
    extra["load"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"bench": "preview", "figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def plan_text(end: datetime) -> str:
    from plan_samples import plan_toml

    return plan_toml(
        {"start": end - YEAR_WINDOWS * EVERY, "end": end, "every": "15m"},
        title="Benchmark: a year of 15-minute windows",
        ticket="BENCH",
        parameters={"windowStart": "{start}", "windowEnd": "{end}", "feederRegion": "north"},
    )


def peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM belongs to the address space, so unlike
    ru_maxrss it does not inherit the parent's peak across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(plan: str, ledger: str, env: dict[str, str]) -> dict[str, float]:
    """One ``backfill preview`` (sync, load, match, decide) in this process; its figures."""
    os.environ.update(env)
    from history_emulator import emulator_cpu, process_cpu

    from backfill.checks.registry import build_checks
    from backfill.factory.client import connect
    from backfill.history import sync_history
    from backfill.plan.loader import load_plan
    from backfill.preview import compute_preview
    from backfill.store.database import Database
    from backfill.store.history import load_history

    baseline = peak_rss_mb()
    started, cpu, served_cpu = time.perf_counter(), process_cpu(), emulator_cpu(env)
    # Part of every command that talks to a factory, shown apart because it is not ours: the SDK,
    # and the HTTP transport (requests) it loads when its first client is built.
    import azure.mgmt.datafactory  # noqa: F401
    from azure.core.pipeline.transport import RequestsTransport  # noqa: F401

    marks = {"sdk_import": time.perf_counter()}
    loaded = load_plan(plan)
    marks["plan"] = time.perf_counter()
    db = Database(ledger)
    marks["ledger_open"] = time.perf_counter()
    from backfill.matching import match_fields

    fields = match_fields(loaded.windows, loaded.match_on)
    sync_cpu, sync_served_cpu = process_cpu(), emulator_cpu(env)
    synced = sync_history(db, connect(loaded.ref), loaded.pipeline, key_fields=fields)
    marks["sync"] = time.perf_counter()
    sync_cpu, sync_served_cpu = process_cpu() - sync_cpu, emulator_cpu(env) - sync_served_cpu
    history = load_history(db, loaded.ref, loaded.pipeline)
    marks["load"] = time.perf_counter()
    preview = compute_preview(loaded, history, build_checks(loaded.check_specs))
    marks["decide"] = done = time.perf_counter()
    cpu, served_cpu = process_cpu() - cpu, emulator_cpu(env) - served_cpu
    peak = peak_rss_mb()
    # Matching alone, as the preview does it: the windows' keys looked up in the cache's key
    # index (filled by now), each window's latest run decoded.
    match_started = time.perf_counter()
    history.latest_runs(loaded.windows, loaded.match_on)
    match_seconds = time.perf_counter() - match_started
    db.dispose()
    steps: dict[str, float] = {}
    previous = started
    for step, moment in marks.items():
        steps[f"{step}_seconds"] = moment - previous
        previous = moment
    return {
        "seconds": done - started,
        "cpu_seconds": cpu,
        "emulator_cpu_seconds": served_cpu,
        "sync_cpu_seconds": sync_cpu,
        "sync_emulator_cpu_seconds": sync_served_cpu,
        **steps,
        "match_seconds": match_seconds,
        "api_calls": synced.api_calls,
        "fetched": synced.fetched,
        "cached_runs": len(history),
        "windows": len(preview.decisions),
        "summary": preview.summary(),  # type: ignore[dict-item]
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
    }


def breakdown(figures: dict[str, float]) -> dict[str, float]:
    steps = ("sdk_import", "plan", "ledger_open", "sync", "load", "decide")
    return {f"{step}_seconds": round(figures[f"{step}_seconds"], 2) for step in steps}


def in_fresh_process(plan: str, ledger: str, env: dict[str, str]) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure, (plan, ledger, env))


def in_fresh_process_call(function: Any, *args: Any) -> Any:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--ledger", help="SQLAlchemy URL of an empty ledger (default: SQLite in a temp folder)")
    parser.add_argument("--no-sdk-loop", action="store_true", help="skip the plain SDK loop")
    parser.add_argument("--warm-cli", action="store_true", help="also time the warm `backfill preview` command")
    args = parser.parse_args()

    from history_emulator import served

    from backfill.timeutil import utcnow

    folder = Path(tempfile.mkdtemp(prefix="backfill-bench-preview-"))
    end = utcnow().replace(second=0, microsecond=0)
    end -= timedelta(minutes=end.minute % 15)
    plan = folder / "year.toml"
    plan.write_text(plan_text(end), encoding="utf-8")
    ledger = args.ledger or f"sqlite:///{folder / 'ledger.db'}"
    emit(
        "note",
        f"ADF keeps 45 days of runs: the {args.runs} runs are seeded within the last {SEEDED_DAYS} "
        f"days; the plan's {YEAR_WINDOWS} windows span a year, older windows have no run",
    )
    try:
        seeding = time.perf_counter()
        with served(folder, end, args.runs) as env:
            emit("emulator_start_seconds", round(time.perf_counter() - seeding, 2), "s", runs=args.runs)
            run_bench(str(plan), ledger, args.runs, env, sdk_loop=not args.no_sdk_loop, warm_cli=args.warm_cli)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_cli(plan: str, ledger: str, env: dict[str, str]) -> dict[str, Any]:
    """The warm ``backfill preview PLAN`` as a user runs it: a new interpreter, start-up and output.

    With Python's bytecode cache as an installed copy has it: the first call runs the command once
    untimed, writing the ``.pyc`` files into a temporary ``PYTHONPYCACHEPREFIX`` (the environment
    may set ``PYTHONDONTWRITEBYTECODE``, which made every timed run compile backfill again)."""
    import subprocess

    command = [sys.executable, "-m", "backfill", "preview", plan]
    settings = {**os.environ, **env, "BACKFILL_LEDGER": ledger, "PYTHONPYCACHEPREFIX": _pycache_prefix()}
    settings.pop("PYTHONDONTWRITEBYTECODE", None)
    if not _CLI_WARMED:
        subprocess.run(command, env=settings, capture_output=True, check=False)
        _CLI_WARMED.append(True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=settings, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu, "exit": done.returncode, "lines": done.stdout.count(b"\n")}


_CLI_WARMED: list[bool] = []


def _pycache_prefix() -> str:
    folder = Path(tempfile.gettempdir()) / f"backfill-bench-pycache-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    return str(folder)


def run_bench(plan: str, ledger: str, runs: int, env: dict[str, str], *, sdk_loop: bool, warm_cli: bool) -> None:
    from history_emulator import sdk_loop as plain_sdk_loop

    cold = in_fresh_process(plan, ledger, env)
    pages = math.ceil(runs / 100)
    emit(
        "cold_preview_seconds",
        round(cold["seconds"], 2),
        "s",
        windows=cold["windows"],
        runs=cold["fetched"],
        cpu_seconds=round(cold["cpu_seconds"], 2),
        emulator_cpu_seconds=round(cold["emulator_cpu_seconds"], 2),
        sync_cpu_seconds=round(cold["sync_cpu_seconds"], 2),
        sync_emulator_cpu_seconds=round(cold["sync_emulator_cpu_seconds"], 2),
        target_seconds=8.0,
        **breakdown(cold),
    )
    if sdk_loop:
        loop = in_fresh_process_call(plain_sdk_loop, env)
        emit(
            "sdk_loop_seconds",
            round(loop["seconds"], 2),
            "s",
            runs=loop["runs"],
            pages=loop["pages"],
            cpu_seconds=round(loop["cpu_seconds"], 2),
            emulator_cpu_seconds=round(loop["emulator_cpu_seconds"], 2),
            cold_preview_speedup=round(loop["seconds"] / cold["seconds"], 2),
            cold_sync_speedup=round(loop["seconds"] / cold["sync_seconds"], 2),
        )
    emit("cold_preview_api_calls", cold["api_calls"], "calls", pages_needed=pages)
    emit(
        "cold_preview_peak_rss_mb",
        round(cold["peak_rss_mb"], 1),
        "MB",
        interpreter_baseline_mb=round(cold["baseline_rss_mb"], 1),
    )
    warm_runs = [in_fresh_process(plan, ledger, env) for _ in range(WARM_REPEATS)]
    warm = sorted(warm_runs, key=lambda figures: figures["seconds"])[WARM_REPEATS // 2]
    emit(
        "warm_preview_seconds",
        round(warm["seconds"], 2),
        "s",
        median_of=WARM_REPEATS,
        all_runs=[round(figures["seconds"], 2) for figures in warm_runs],
        without_sdk_import=round(warm["seconds"] - warm["sdk_import_seconds"], 2),
        cached_runs=warm["cached_runs"],
        **breakdown(warm),
    )
    emit("warm_preview_api_calls", warm["api_calls"], "calls")
    emit("warm_preview_peak_rss_mb", round(max(figures["peak_rss_mb"] for figures in warm_runs), 1), "MB")
    emit(
        "matching_seconds",
        round(warm["match_seconds"], 2),
        "s",
        windows=warm["windows"],
        runs=warm["cached_runs"],
        share_of_warm_preview=round(warm["match_seconds"] / warm["seconds"], 2),
    )
    emit("decisions", warm["summary"])
    if warm_cli:
        commands = sorted((run_cli(plan, ledger, env) for _ in range(WARM_REPEATS)), key=lambda f: f["seconds"])
        emit(
            "warm_cli_preview_seconds",
            round(commands[WARM_REPEATS // 2]["seconds"], 2),
            "s",
            median_of=WARM_REPEATS,
            all_runs=[round(f["seconds"], 2) for f in commands],
            cpu_seconds=round(commands[WARM_REPEATS // 2]["cpu_seconds"], 2),
            target=1.2,
            exit=commands[0]["exit"],
            output_lines=commands[0]["lines"],
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
