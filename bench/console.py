"""The console's backfill page for a year of 15-minute windows (35,040): how long it takes to open.

Seeds a SQLite ledger with one backfill whose frozen preview holds 35,040 windows (each with its
reason, check evidence and latest run, as ``request`` freezes them) and a ledger of a running
backfill (intents, creations and finishes for the first ``--ran`` windows), then times the page
through the console's ASGI app: the summary (page 1), a decision filter, and the last page.
One JSON line per figure (seconds, median of ``--repeat``; the first open is reported apart).

    .venv/bin/python bench/console.py [--windows 35040] [--ran 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backfill import events as ev
from backfill.backfills import ApprovalPolicy, BackfillRecord
from backfill.identity import Actor, IdentitySource
from backfill.store.backfills import create_backfill
from backfill.store.database import Database
from backfill.store.ledger import Draft, Ledger
from backfill.timeutil import format_utc
from backfill.windows import window_key

START = datetime(2025, 1, 1, tzinfo=UTC)
EVERY = timedelta(minutes=15)
ALICE = Actor("alice", IdentitySource.DECLARED)
BOB = Actor("bob", IdentitySource.DECLARED)
RUNNER = Actor("runner", IdentitySource.OS)


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "console", "figure": figure, "value": round(value, 4), "unit": "s", **extra}), flush=True
    )


def frozen_window(i: int, key: str, decision: str) -> dict[str, Any]:
    start, end = START + i * EVERY, START + (i + 1) * EVERY
    checks = []
    if decision != "skip-succeeded":
        checks.append(
            {
                "check": "readings-in-sink",
                "status": "clean",
                "reason": "nothing committed",
                "evidence": {"committed": 0, "expected": 900, "duration_ms": 9, "statement": "SELECT COUNT(*) ..."},
            }
        )
    run_id = f"{i:08d}-0000-4000-8000-000000000000"
    return {
        "key": key,
        "start": format_utc(start),
        "end": format_utc(end),
        "decision": decision,
        "reason": f"latest run {run_id} {'Failed' if decision == 'rerun' else 'Succeeded'}",
        "parameters": {"windowStart": format_utc(start), "windowEnd": format_utc(end), "feederRegion": "north"},
        "checks": checks,
        "latest_run": {"run_id": run_id, "status": "Failed" if decision == "rerun" else "Succeeded"},
    }


def seed(url: str, windows: int, ran: int) -> str:
    db = Database(url)
    decisions: dict[str, str] = {}
    frozen = []
    for i in range(windows):
        key = window_key(START + i * EVERY, START + (i + 1) * EVERY)
        decision = "rerun" if i % 7 == 0 else "skip-succeeded"
        decisions[key] = decision
        frozen.append(frozen_window(i, key, decision))
    record = BackfillRecord(
        id="",
        plan_path="/plans/year.toml",
        plan_hash="ab" * 32,
        pipeline="LoadMeterTelemetry",
        factory_key="sub/rg/adf",
        title="A year of 15-minute windows",
        ticket="BENCH",
        requester=ALICE.name,
        requester_source=ALICE.source.value,
        requested_at=datetime.now(UTC),
        note=None,
        policy=ApprovalPolicy(expires=timedelta(days=7)),
        decisions=decisions,
        preview={"factory": {"subscription_id": "sub", "resource_group": "rg", "factory": "adf"}, "windows": frozen},
    )
    runnable = [k for k, d in decisions.items() if d == "rerun"]
    bid = create_backfill(db, record, {"runnable": runnable, "blocked": []}, ALICE).id
    ledger = Ledger(db)
    ledger.append(ev.APPROVED, {"note": None, "approval": 1, "required": 1}, actor=BOB, backfill_id=bid)
    ledger.append(ev.STARTED, {"concurrency": 4}, actor=RUNNER, backfill_id=bid)
    drafts = []
    for n, key in enumerate(runnable[:ran]):
        run_id = f"run-{n:08d}"
        drafts += [
            Draft(ev.WINDOW_INTENT, {"attempt": 1}, bid, key),
            Draft(ev.WINDOW_CREATED, {"run_id": run_id, "attempt": 1}, bid, key),
            Draft(ev.WINDOW_FINISHED, {"run_id": run_id, "status": "Succeeded", "duration_ms": 660000}, bid, key),
        ]
    for at in range(0, len(drafts), 2000):
        ledger.append_many(drafts[at : at + 2000], actor=RUNNER)
    db.dispose()
    return bid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=35_040)
    parser.add_argument("--ran", type=int, default=2000, help="windows already run (3 events each)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'ledger.db'}"
        bid = seed(url, args.windows, args.ran)
        from starlette.testclient import TestClient

        from backfill.console.app import create_app
        from backfill.console.settings import ConsoleSettings, load_settings

        settings: ConsoleSettings = load_settings("dev", dev_users="bob")
        settings = ConsoleSettings(**{**settings.__dict__, "ledger_url": url})
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8484") as client:
            pages = {
                "page_summary": f"/backfills/{bid}",
                "page_filtered_rerun": f"/backfills/{bid}?decision=rerun&page=3",
                "page_last": f"/backfills/{bid}?page={-(-args.windows // 100)}",
            }
            first = time.perf_counter()
            assert client.get(pages["page_summary"]).status_code == 200
            emit("page_first_open", time.perf_counter() - first, windows=args.windows)
            for figure, path in pages.items():
                times = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    response = client.get(path)
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text[:200]
                emit(figure, statistics.median(times), windows=args.windows, events=3 * args.ran + 3)
            started = time.perf_counter()
            assert client.get("/").status_code == 200
            emit("list", time.perf_counter() - started, backfills=1)


if __name__ == "__main__":
    main()
