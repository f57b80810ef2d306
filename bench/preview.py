"""Preview of a year of 15-minute windows (35,040) against 200,000 runs: one JSON line per figure.

    python bench/preview.py [--runs 200000] [--ledger URL]

ADF keeps 45 days of runs, so the 200,000 runs are seeded in the emulator within the last 45 days
(the last ~4,300 windows of the plan, one "north" run each that the plan matches, the rest for
other feeder regions that it does not); older windows have no run and no check, so they come out
``blocked-unknown``. The emulator runs in this process; each preview runs in a fresh interpreter
(spawn), so its peak RSS is the preview's own, and the cold one starts from an empty ledger.
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
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)
YEAR_WINDOWS = 35_040
SEEDED_DAYS = 44  # inside the 45-day retention, with room for the clock to move during the bench


def emit(figure: str, value: Any, unit: str = "", **extra: Any) -> None:
    print(json.dumps({"bench": "preview", "figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def plan_text(end: datetime) -> str:
    from backfill.timeutil import format_utc

    start = end - YEAR_WINDOWS * EVERY
    return f"""\
title = "Benchmark: a year of 15-minute windows"
ticket = "BENCH"
[target]
subscription_id = "00000000-0000-0000-0000-000000000000"
resource_group = "rg-energy-analytics"
factory = "adf-grid-telemetry"
pipeline = "{PIPELINE}"
[windows]
start = {format_utc(start)}
end = {format_utc(end)}
every = "15m"
[parameters]
windowStart = "{{start}}"
windowEnd = "{{end}}"
feederRegion = "north"
[match]
on = ["windowStart", "feederRegion"]
"""


def seeded_runs(end: datetime, count: int) -> Iterator[Any]:
    from backfill.emulator import HistoryRun
    from backfill.timeutil import format_utc

    windows = int(SEEDED_DAYS * timedelta(days=1) / EVERY)
    first = end - windows * EVERY
    for n in range(count):
        index, region = n % windows, n // windows
        start = first + index * EVERY
        # Every 20th window of the plan's region failed; other regions are noise for matching.
        status = "Failed" if region == 0 and index % 20 == 0 else "Succeeded"
        yield HistoryRun(
            PIPELINE,
            start + EVERY + timedelta(minutes=2),
            {"windowStart": format_utc(start), "windowEnd": format_utc(start + EVERY),
             "feederRegion": "north" if region == 0 else f"region-{region:02d}"},
            status=status,
            duration=timedelta(minutes=3),
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
    from backfill.checks.registry import build_checks
    from backfill.factory.client import connect
    from backfill.history import load_history, sync_history
    from backfill.matching import latest_runs
    from backfill.plan import load_plan
    from backfill.preview import compute_preview
    from backfill.store.database import Database

    baseline = peak_rss_mb()
    started = time.perf_counter()
    # Part of every command that talks to a factory; shown apart because it is not ours.
    import azure.mgmt.datafactory  # noqa: F401

    sdk_import = time.perf_counter() - started
    loaded = load_plan(plan)
    after_plan = time.perf_counter()
    db = Database(ledger)
    client = connect(loaded.ref)
    synced = sync_history(db, client, loaded.pipeline)
    after_sync = time.perf_counter()
    history = load_history(db, loaded.ref, loaded.pipeline)
    after_load = time.perf_counter()
    preview = compute_preview(loaded, history, build_checks(loaded.check_specs))
    done = time.perf_counter()
    match_started = time.perf_counter()
    latest_runs(loaded.windows, history.records, loaded.match_on)
    match_seconds = time.perf_counter() - match_started
    db.dispose()
    return {
        "seconds": done - started,
        "plan_seconds": after_plan - started - sdk_import,
        "sync_seconds": after_sync - after_plan,
        "load_seconds": after_load - after_sync,
        "decide_seconds": done - after_load,
        "match_seconds": match_seconds,
        "api_calls": synced.api_calls,
        "fetched": synced.fetched,
        "cached_runs": len(history),
        "windows": len(preview.decisions),
        "summary": preview.summary(),  # type: ignore[dict-item]
        "sdk_import_seconds": sdk_import,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
    }


def in_fresh_process(plan: str, ledger: str, env: dict[str, str]) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure, (plan, ledger, env))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--ledger", help="SQLAlchemy URL of an empty ledger (default: SQLite in a temp folder)")
    args = parser.parse_args()

    from backfill.emulator import Pipeline, Scenario
    from backfill.timeutil import utcnow

    folder = Path(tempfile.mkdtemp(prefix="backfill-bench-preview-"))
    end = utcnow().replace(second=0, microsecond=0)
    end -= timedelta(minutes=end.minute % 15)
    plan = folder / "year.toml"
    plan.write_text(plan_text(end), encoding="utf-8")
    ledger = args.ledger or f"sqlite:///{folder / 'ledger.db'}"

    scenario = Scenario()
    scenario.add_pipeline(Pipeline(PIPELINE, parameters={"windowStart": "String", "windowEnd": "String",
                                                         "feederRegion": "String"}))
    scenario.add_history(seeded_runs(end, args.runs))
    emit("note", f"ADF keeps 45 days of runs: the {args.runs} runs are seeded within the last {SEEDED_DAYS} "
         f"days; the plan's {YEAR_WINDOWS} windows span a year, older windows have no run")
    try:
        run_bench(scenario, str(plan), ledger, args.runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_bench(scenario: Any, plan: str, ledger: str, runs: int) -> None:
    from backfill.emulator import Emulator

    seeding = time.perf_counter()
    with Emulator(scenario) as emu:
        emit("emulator_seed_seconds", round(time.perf_counter() - seeding, 2), "s", runs=runs)
        env = emu.env()
        cold = in_fresh_process(plan, ledger, env)
        pages = math.ceil(runs / scenario.page_size)
        emit("cold_preview_seconds", round(cold["seconds"], 2), "s", windows=cold["windows"],
             runs=cold["fetched"], sdk_import_seconds=round(cold["sdk_import_seconds"], 2),
             plan_seconds=round(cold["plan_seconds"], 2), sync_seconds=round(cold["sync_seconds"], 2),
             load_seconds=round(cold["load_seconds"], 2), decide_seconds=round(cold["decide_seconds"], 2))
        emit("cold_preview_api_calls", cold["api_calls"], "calls", pages_needed=pages)
        emit("cold_preview_peak_rss_mb", round(cold["peak_rss_mb"], 1), "MB",
             interpreter_baseline_mb=round(cold["baseline_rss_mb"], 1))
        warm = in_fresh_process(plan, ledger, env)
        emit("warm_preview_seconds", round(warm["seconds"], 2), "s",
             sdk_import_seconds=round(warm["sdk_import_seconds"], 2), plan_seconds=round(warm["plan_seconds"], 2),
             sync_seconds=round(warm["sync_seconds"], 2),
             load_seconds=round(warm["load_seconds"], 2), decide_seconds=round(warm["decide_seconds"], 2),
             cached_runs=warm["cached_runs"])
        emit("warm_preview_api_calls", warm["api_calls"], "calls")
        emit("warm_preview_peak_rss_mb", round(warm["peak_rss_mb"], 1), "MB")
        emit("matching_seconds", round(warm["match_seconds"], 2), "s", windows=warm["windows"],
             runs=warm["cached_runs"])
        emit("decisions", warm["summary"])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
