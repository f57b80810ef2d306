"""Orchestration overhead per window and API calls per window: one JSON line per figure.

    python bench/orchestration.py [--windows 40]

Runs real backfills against the in-process emulator (HTTPS, the real SDK) with a SQLite ledger:

- ``short``: ``--windows`` windows one at a time, each run 50 ms of real time; the overhead per
  window is the wall time minus the runs' own durations (ADF's durationInMs), divided by the
  windows: claiming, checks, ledger events, createRun, polling lag and the final reads;
- ``hour``: four 60-minute runs (compressed 1,200x, so three seconds each) in parallel, after a
  history of 60-minute runs: how many status calls a run costs with adaptive polling, and how
  late its end is seen, as a fraction of its duration.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
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


def emit(figure: str, value: Any, unit: str = "", **extra: Any) -> None:
    print(json.dumps({"bench": "orchestration", "figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def plan_text(base: datetime, windows: int, concurrency: int) -> str:
    from plan_samples import plan_toml

    return plan_toml(
        {"start": base, "end": base + windows * EVERY, "every": "15m"},
        title="Benchmark: orchestration",
        ticket=None,
        parameters={"windowStart": "{start}", "windowEnd": "{end}"},
        match=None,
        execution={"concurrency": concurrency},
    )


def run_case(folder: Path, windows: int, concurrency: int, duration: timedelta, speed: float) -> dict[str, Any]:
    from backfill.cli import main
    from backfill.emulator import Emulator, HistorySeries, Pipeline, Scenario
    from backfill.events import WINDOW_FINISHED
    from backfill.identity import Actor, IdentitySource
    from backfill.services.run import execute_backfill
    from backfill.store.backfills import list_backfills
    from backfill.store.database import Database
    from backfill.store.ledger import Ledger
    from backfill.timeutil import parse_utc, utcnow

    folder.mkdir()
    os.environ["BACKFILL_LEDGER"] = f"sqlite:///{folder / 'ledger.db'}"
    base = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    scenario = Scenario(speed=speed)
    scenario.add_pipeline(
        Pipeline(PIPELINE, parameters={"windowStart": "String", "windowEnd": "String"}, duration=duration)
    )
    # A day of past runs of the usual duration, before the plan's windows: the poll schedule's basis.
    scenario.series.append(
        HistorySeries(
            PIPELINE,
            base - timedelta(days=1),
            base,
            EVERY,
            {"windowStart": "{start}", "windowEnd": "{end}"},
            duration=duration,
        )
    )
    plan = folder / "plan.toml"
    plan.write_text(plan_text(base, windows, concurrency))
    with Emulator(scenario) as emu:
        os.environ.update(emu.env())
        db = Database()
        # The commands' own output would mix with the figures on stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            os.environ["BACKFILL_ACTOR"] = "alice"
            assert main.run(["request", str(plan)]) == 0
            backfill_id = list_backfills(db)[-1].id
            os.environ["BACKFILL_ACTOR"] = "bob"
            assert main.run(["approve", backfill_id]) == 0
        emu.clear_log()
        client = emu.client()
        started = time.perf_counter()
        execute_backfill(backfill_id, actor=Actor("carol", IdentitySource.DECLARED), db=db, factory=client)
        wall = time.perf_counter() - started
        status_calls = len(emu.requests("getPipelineRun"))
        requests = len(emu.request_log)
    recorded = Ledger(db).events(backfill_id=backfill_id)
    finished = [e for e in recorded if e.kind == WINDOW_FINISHED]
    durations = [e.payload["duration_ms"] / 1000 for e in finished]
    lags = [
        (e.at - parse_utc(e.payload["run_end"])).total_seconds() / (e.payload["duration_ms"] / 1000) for e in finished
    ]
    db.dispose()
    return {
        "wall": wall,
        "durations": durations,
        "status_calls": status_calls,
        "requests": requests,
        "client_calls": client.api_calls,
        "events": len(recorded),
        "lags": lags,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("BACKFILL_RECONCILE_SETTLE", "300ms")
    with tempfile.TemporaryDirectory(prefix="bench-orchestration-") as tmp:
        os.chdir(tmp)
        short_run = timedelta(minutes=15)
        short = run_case(Path(tmp) / "short", args.windows, 1, short_run, speed=short_run / timedelta(milliseconds=50))
        n = args.windows
        overhead = (short["wall"] - sum(short["durations"])) / n
        emit(
            "overhead_per_window",
            round(overhead * 1000, 1),
            "ms",
            windows=n,
            concurrency=1,
            run_seconds=round(sum(short["durations"]) / n, 3),
        )
        emit(
            "api_calls_per_window",
            round(short["requests"] / n, 2),
            "requests",
            note="every request the emulator saw during `run`: history sync, createRun, status, activity runs",
        )
        emit("status_calls_per_window", round(short["status_calls"] / n, 2), "requests", run_ms=50)
        emit("ledger_events_per_window", round(short["events"] / n, 2), "events")
        hour = run_case(Path(tmp) / "hour", 4, 4, timedelta(minutes=60), speed=1200)
        emit("status_calls_per_60min_run", round(hour["status_calls"] / 4, 2), "requests", runs=4, compressed="1200x")
        emit("end_seen_after_fraction_of_duration_max", round(max(hour["lags"]), 3), "fraction", runs=4)


if __name__ == "__main__":
    main()
