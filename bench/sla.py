"""``sla report`` over 365 days for one pipeline of 50, a year of daily runs each: one JSON line per figure.

    python bench/sla.py [--pipelines 50] [--days 365] [--repeats 5]

The history cache (a SQLite ledger in a temporary folder) holds a year of daily runs for every
pipeline (50 x 365 = 18,250 runs, one in ten retried), as a year of syncs would have left it. Two
figures, each the median of ``--repeats`` reports in this process after the Azure SDK is imported:

- ``report, cache only``: ``report_sla(..., sync=False)``, what ``sla report --no-sync`` does: open
  the database, read the pipeline's runs of the range and the drift windows, build the report,
  render text, JSON, CSV and HTML;
- ``report, synced``: the same with a warm sync against the emulator (in this process, holding the
  last 44 days of runs, as ADF would) and the longest activity of each completing run ADF still
  keeps (one activity-runs call per date, about 30).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FACTORY = ("00000000-0000-0000-0000-000000000000", "rg-claims", "adf-claims")


def emit(figure: str, value: Any, unit: str = "", **extra: Any) -> None:
    print(json.dumps({"bench": "sla", "figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def sla_text(pipeline: str) -> str:
    return f"""\
title = "Benchmark"
[target]
subscription_id = "{FACTORY[0]}"
resource_group = "{FACTORY[1]}"
factory = "{FACTORY[2]}"
pipeline = "{pipeline}"
[sla]
business_date = "businessDate"
deadline = "06:00"
timezone = "America/New_York"
"""


def year_of_runs(pipeline: str, index: int, days: int, now: datetime) -> list[Any]:
    from backfill.factory.run import Run, RunStatus

    runs = []
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for back in range(days):
        day = today - timedelta(days=back)
        start = day + timedelta(hours=7, minutes=30)
        if start > now:
            continue
        minutes = 40 + (back * 7 + index) % 30
        attempts = [(start, RunStatus.FAILED, 10)] if (back + index) % 10 == 0 else []
        attempts.append((start + timedelta(minutes=15 if attempts else 0), RunStatus.SUCCEEDED, minutes))
        for number, (began, status, length) in enumerate(attempts):
            ended = began + timedelta(minutes=length)
            runs.append(
                Run(
                    run_id=f"{pipeline}-{back}-{number}",
                    pipeline=pipeline,
                    status=status,
                    parameters={"businessDate": day.date().isoformat()},
                    start=began,
                    end=ended,
                    last_updated=ended,
                    duration=ended - began,
                )
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    began = time.perf_counter()
    import azure.mgmt.datafactory  # noqa: F401  (the figures are "after the SDK import")

    emit("Azure SDK import", round(time.perf_counter() - began, 3), "s")

    from backfill.emulator import Emulator, Pipeline, Scenario
    from backfill.emulator.scenario import PastRun
    from backfill.factory.protocol import FactoryRef
    from backfill.services.sla import report_sla
    from backfill.sla.html import render_html
    from backfill.sla.text import to_csv, to_json_text
    from backfill.store.database import Database
    from backfill.store.history_tables import SyncState
    from backfill.store.history_writes import upsert_runs, write_state

    now = datetime.now(UTC)
    ref = FactoryRef(*FACTORY)
    names = [f"RefreshClaims{i:02d}" for i in range(args.pipelines)]
    folder = Path(tempfile.mkdtemp(prefix="bench-sla-"))
    db = Database(f"sqlite:///{folder / 'ledger.db'}")
    total = 0
    recent: list[Any] = []
    for index, name in enumerate(names):
        runs = year_of_runs(name, index, args.days, now)
        total += len(runs)
        if index == 0:
            recent = [run for run in runs if run.start > now - timedelta(days=44)]
        with db.writing() as conn:
            upsert_runs(conn, ref.key, name, runs)
            horizon = now - timedelta(days=args.days + 1)
            write_state(conn, ref.key, name, SyncState(watermark=now, horizon=horizon, synced_at=now), exists=False)
    emit("runs in the cache", total, "runs", pipelines=args.pipelines, days=args.days)

    path = folder / "sla.toml"
    path.write_text(sla_text(names[0]), encoding="utf-8")
    since = now - timedelta(days=args.days)

    def one(sync: bool, emu: Emulator | None = None) -> tuple[float, int, int]:
        start = time.perf_counter()
        calls_before = len(emu.request_log) if emu is not None else 0
        result = report_sla(path, since=since, until=now, sync=sync, now=now, db=db)
        report = result.report
        to_json_text(report), to_csv(report), render_html(report)
        calls = (len(emu.request_log) - calls_before) if emu is not None else 0
        return time.perf_counter() - start, len(report.days), calls

    cache_only = [one(False) for _ in range(args.repeats)]
    seconds = statistics.median(t for t, _, _ in cache_only)
    emit("sla report, 365 days of one pipeline, cache only", round(seconds, 3), "s", dates=cache_only[0][1])

    scenario = Scenario(subscription_id=FACTORY[0], resource_group=FACTORY[1], factory=FACTORY[2])
    scenario.add_pipeline(Pipeline(name=names[0], parameters={"businessDate": "String"}))
    scenario.add_history(
        PastRun(
            pipeline=run.pipeline,
            start=run.start,
            parameters=dict(run.parameters),
            status=run.status.value,
            duration=run.duration,
            run_id=run.run_id,
        )
        for run in recent
    )
    with Emulator(scenario) as emu:
        import os

        os.environ.update(emu.env())
        synced = [one(True, emu) for _ in range(args.repeats + 1)][1:]  # the first sync is not warm
    seconds = statistics.median(t for t, _, _ in synced)
    emit(
        "sla report, 365 days of one pipeline, warm sync + longest activities",
        round(seconds, 3),
        "s",
        dates=synced[0][1],
        api_calls=synced[0][2],
    )
    db.dispose()


if __name__ == "__main__":
    main()
