"""The emulator in its own process for the history benches: ``backfill emulator serve`` with a
scenario of N past runs (``[[series]]`` of 15-minute windows, one series per feeder region), so
the client measured never shares an interpreter (or the GIL) with the server.

Also: the plain SDK loop a user would write (models, ``continuation_token``), the figure the
sync is compared with.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

PIPELINE = "LoadMeterTelemetry"
EVERY = timedelta(minutes=15)
SEEDED_DAYS = 44  # inside the 45-day retention, with room for the clock to move during the bench
ROOT = Path(__file__).resolve().parent.parent
EMULATOR_PID = "BENCH_EMULATOR_PID"


def emulator_cpu(env: dict[str, str]) -> float:
    """CPU seconds (user + system) the emulator's process has used so far, from /proc."""
    fields = Path(f"/proc/{env[EMULATOR_PID]}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu() -> float:
    """CPU seconds (user + system, every thread) of this process so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def scenario_text(end: datetime, runs: int) -> str:
    """``runs`` past runs in the last SEEDED_DAYS days: series of 15-minute windows, region
    ``north`` first (the one the bench plans match), the others noise for matching."""
    from backfill.timeutil import format_utc

    windows = int(SEEDED_DAYS * timedelta(days=1) / EVERY)
    first = end - windows * EVERY
    lines = [
        "[factory]",
        'subscription_id = "00000000-0000-0000-0000-000000000000"',
        'resource_group = "rg-energy-analytics"',
        'name = "adf-grid-telemetry"',
        "[[pipelines]]",
        f'name = "{PIPELINE}"',
        'parameters = { windowStart = "String", windowEnd = "String", feederRegion = "String" }',
        "[[pipelines.activities]]",
        'name = "CopyReadings"',
        'type = "Copy"',
    ]
    for region in range(math.ceil(runs / windows)):
        count = min(windows, runs - region * windows)
        name = "north" if region == 0 else f"region-{region:02d}"
        lines += [
            "[[series]]",
            f"start = {format_utc(first)}",
            f"end = {format_utc(first + count * EVERY)}",
            'every = "15m"',
            'delay = "2m"',
            'duration = "3m"',
            f'parameters = {{ windowStart = "{{start}}", windowEnd = "{{end}}", feederRegion = "{name}" }}',
        ]
    return "\n".join(lines) + "\n"


@contextmanager
def served(folder: Path, end: datetime, runs: int, *options: str) -> Iterator[dict[str, str]]:
    """``backfill emulator serve`` over a scenario of ``runs`` runs; yields its settings."""
    scenario = folder / f"scenario-{runs}.toml"
    scenario.write_text(scenario_text(end, runs), encoding="utf-8")
    out, err = folder / "emulator.env", folder / "emulator.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backfill", "emulator", "serve", "--scenario", str(scenario), *options],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            exports = dict(re.findall(r"^export (\w+)=(.*)$", out.read_text(encoding="utf-8"), re.MULTILINE))
            if "BACKFILL_FACTORY" in exports:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"backfill emulator serve did not start: {err.read_text(errors='replace')[-800:]}")
            time.sleep(0.1)
        settings = {name: shlex.split(value)[0] for name, value in exports.items()}
        # Not a setting of the emulator: its process, whose CPU the benches read (emulator_cpu).
        settings[EMULATOR_PID] = str(proc.pid)
        yield settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def sdk_loop(env: dict[str, str]) -> dict[str, Any]:
    """Every run of the pipeline through the SDK's models, page by page, as a user would write it
    (no cache, no decoding of ours); in a fresh process (``spawn``)."""
    os.environ.update(env)
    started, cpu, served_cpu = time.perf_counter(), process_cpu(), emulator_cpu(env)
    from azure.mgmt.datafactory import DataFactoryManagementClient
    from azure.mgmt.datafactory.models import RunFilterParameters, RunQueryFilter

    from backfill.factory.client import StaticTokenCredential
    from backfill.timeutil import utcnow

    client = DataFactoryManagementClient(
        StaticTokenCredential(env["BACKFILL_ADF_TOKEN"]),
        "00000000-0000-0000-0000-000000000000",
        base_url=env["BACKFILL_ADF_ENDPOINT"],
        connection_verify=env["BACKFILL_ADF_CA_BUNDLE"],
    )
    now = utcnow()
    query = RunFilterParameters(
        last_updated_after=now - timedelta(days=45),
        last_updated_before=now + timedelta(days=1),
        filters=[RunQueryFilter(operand="PipelineName", operator="Equals", values_property=[PIPELINE])],
    )
    runs: list[Any] = []
    pages = 0
    while True:
        answer = client.pipeline_runs.query_by_factory("rg-energy-analytics", "adf-grid-telemetry", query)
        pages += 1
        runs.extend(answer.value)
        if not answer.continuation_token:
            break
        query.continuation_token = answer.continuation_token
    client.close()
    return {
        "seconds": time.perf_counter() - started,
        "runs": len(runs),
        "pages": pages,
        "cpu_seconds": process_cpu() - cpu,
        "emulator_cpu_seconds": emulator_cpu(env) - served_cpu,
    }


def emit(bench: str, figure: str, value: Any, unit: str = "", **extra: Any) -> None:
    print(
        json.dumps({"bench": bench, "figure": figure, "value": value, "unit": unit, **extra, "load": load_average()}),
        flush=True,
    )
