"""Run investigation (SPEC §12): ``runs list --since 2d`` over 20,000 runs and ``runs export`` of
up to 200,000 runs; one JSON line per figure.

    python bench/runs.py [--list-runs 20000] [--export-runs 200000]

The emulator runs in this process, seeded with 15-minute loads of many feeder regions (one run
per region and window, 11 minutes each); each command runs as a child process of its own (the
console script, as a user runs it), so its time includes start-up and the SDK import, and its
peak RSS (``wait4``) is the command's own. The export is measured over growing ranges (a quarter,
half and all of the runs) to show that its memory does not grow with the range: rows are written
as they arrive; what it holds is the usual durations of the last 30 days (a few bytes a run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)


def emit(figure: str, value: Any, unit: str = "", **extra: Any) -> None:
    print(json.dumps({"bench": "runs", "figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def scenario(runs: int, days: float) -> Any:
    from backfill.emulator import HistorySeries, Pipeline, Scenario

    windows = int(days * 24 * 4)
    regions = math.ceil(runs / windows)
    now = datetime.now(UTC)
    end = now - (now - datetime(1970, 1, 1, tzinfo=UTC)) % EVERY - EVERY
    start = end - windows * EVERY
    made = Scenario(speed=60.0)
    made.add_pipeline(
        Pipeline(
            name=PIPELINE,
            parameters={"windowStart": "String", "windowEnd": "String", "feederRegion": "String"},
            duration=timedelta(minutes=11),
        )
    )
    for region in range(regions):
        made.series.append(
            HistorySeries(
                PIPELINE,
                start=start,
                end=end,
                every=EVERY,
                parameters={"windowStart": "{start}", "windowEnd": "{end}", "feederRegion": f"region-{region:03d}"},
                delay=timedelta(minutes=2),
            )
        )
    return made


def plan_text() -> str:
    now = datetime.now(UTC)
    end = now - (now - datetime(1970, 1, 1, tzinfo=UTC)) % EVERY
    start = end - 8 * EVERY
    return f"""\
title = "Benchmark: the pipeline whose runs are investigated"
[target]
subscription_id = "00000000-0000-0000-0000-000000000000"
resource_group = "rg-energy-analytics"
factory = "adf-grid-telemetry"
pipeline = "{PIPELINE}"
[windows]
start = {start.strftime("%Y-%m-%dT%H:%M:%SZ")}
end = {end.strftime("%Y-%m-%dT%H:%M:%SZ")}
every = "15m"
[parameters]
windowStart = "{{start}}"
windowEnd = "{{end}}"
feederRegion = "region-000"
[match]
on = ["windowStart", "feederRegion"]
"""


# The command as its console script runs it, then its own peak RSS: VmHWM belongs to the address
# space, so unlike ru_maxrss it does not count the parent's (the emulator's) pages before exec.
_CHILD = """
import sys
from pathlib import Path
from backfill.cli.main import run
code = run(sys.argv[1:])
hwm = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")]
sys.stderr.write("\\nVmHWM " + hwm[0].split()[1] + "\\n")
sys.exit(code)
"""


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float]:
    """Seconds, peak RSS (MB) and CPU seconds of one command in a child process: the CPU time is
    the command's own, the rest of its time it waits for the emulator (in this process)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"backfill {' '.join(args)} exited {proc.returncode}: {stderr.strip()[-400:]}")
    peak_kb = int(stderr.rsplit("VmHWM ", 1)[1].split()[0])
    return elapsed, peak_kb / 1024, usage.ru_utime + usage.ru_stime


def bench_list(runs: int, folder: Path) -> None:
    from backfill.emulator import Emulator

    with Emulator(scenario(runs, days=2)) as emu:
        env = {**os.environ, **emu.env(), "BACKFILL_LEDGER": f"sqlite:///{folder / 'list-ledger.db'}"}
        seeded = len(emu.runs())
        seconds, peak, cpu = timed(["runs", "list", "--since", "2d", "--json"], env, folder)
        emit(
            "runs list --since 2d",
            round(seconds, 2),
            "s",
            runs=seeded,
            peak_mb=round(peak, 1),
            cpu_s=round(cpu, 1),
            usual_from="adf",
        )
        seconds, peak, cpu = timed(["runs", "list", "--since", "2d", "--outliers"], env, folder)
        emit(
            "runs list --since 2d --outliers",
            round(seconds, 2),
            "s",
            runs=seeded,
            peak_mb=round(peak, 1),
            cpu_s=round(cpu, 1),
            usual_from="adf",
        )
        # Once the pipeline is synced, the usual durations come from the history cache.
        (folder / "plan.toml").write_text(plan_text(), encoding="utf-8")
        timed(["history", "sync", "plan.toml"], env, folder)
        seconds, peak, cpu = timed(["runs", "list", "--since", "2d", "--outliers"], env, folder)
        emit(
            "runs list --since 2d --outliers",
            round(seconds, 2),
            "s",
            runs=seeded,
            peak_mb=round(peak, 1),
            cpu_s=round(cpu, 1),
            usual_from="cache",
        )


def bench_export(runs: int, folder: Path) -> None:
    from backfill.emulator import Emulator

    days = 30
    with Emulator(scenario(runs, days=days)) as emu:
        env = {**os.environ, **emu.env(), "BACKFILL_LEDGER": f"sqlite:///{folder / 'export-ledger.db'}"}
        seeded = len(emu.runs())
        for share in (0.25, 0.5, 1.0):
            since = f"{math.ceil(days * share * 24) + 1}h"
            out = folder / "runs.jsonl"
            seconds, peak, cpu = timed(["runs", "export", "--since", since, "--output", str(out)], env, folder)
            with out.open(encoding="utf-8") as handle:
                lines = sum(1 for _ in handle)
            emit(
                "runs export jsonl",
                round(seconds, 2),
                "s",
                runs=lines,
                seeded=seeded,
                since=since,
                peak_mb=round(peak, 1),
                cpu_s=round(cpu, 1),
                runs_per_second=round(lines / seconds),
            )
        seconds, peak, cpu = timed(
            ["runs", "export", "--since", "31d", "--format", "csv", "--output", "runs.csv"], env, folder
        )
        emit("runs export csv", round(seconds, 2), "s", runs=seeded, peak_mb=round(peak, 1), cpu_s=round(cpu, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list-runs", type=int, default=20_000)
    parser.add_argument("--export-runs", type=int, default=200_000)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    try:
        bench_list(options.list_runs, folder)
        bench_export(options.export_runs, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
