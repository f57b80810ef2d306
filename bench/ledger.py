"""Ledger throughput: appends per second and events verified per second.

Prints one JSON line per figure, on SQLite (a temporary file) and on PostgreSQL when the server at
BACKFILL_BENCH_POSTGRES (default: postgresql+psycopg://postgres@127.0.0.1:5432/test) is reachable.

    .venv/bin/python bench/ledger.py [--events 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger

# The test suite's helpers (tests/database_support.py): one way to make a throw-away database.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
POSTGRES_ADMIN = os.environ.get("BACKFILL_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ACTOR = Actor("bench", IdentitySource.DECLARED)


def emit(figure: str, backend: str, value: float, unit: str, events: int) -> None:
    print(
        json.dumps(
            {
                "bench": "ledger",
                "figure": figure,
                "backend": backend,
                "value": round(value, 1),
                "unit": unit,
                "events": events,
            }
        ),
        flush=True,
    )


def measure(url: str, backend: str, count: int) -> None:
    db = Database(url)
    ledger = Ledger(db)
    started = time.perf_counter()
    for i in range(count):
        # A payload shaped like the runner's: a window, parameters and a run ID.
        ledger.append(
            "run-created",
            {
                "run_id": str(uuid.uuid4()),
                "parameters": {"windowStart": f"2026-11-03T{i % 24:02d}:00:00Z", "feederRegion": "north"},
                "attempt": 1,
            },
            actor=ACTOR,
            backfill_id="bf-bench",
            window_key=f"2026-11-03T{i % 24:02d}:00:00Z/2026-11-03T{i % 24:02d}:15:00Z",
        )
    elapsed = time.perf_counter() - started
    emit("ledger_appends_per_second", backend, count / elapsed, "appends/s", count)
    started = time.perf_counter()
    report = ledger.verify()
    elapsed = time.perf_counter() - started
    if not report.ok or report.count != count:
        raise SystemExit(f"bench: verification failed on {backend}: {report.message}")
    emit("ledger_verified_per_second", backend, count / elapsed, "events/s", count)
    # What `run` pays before it acts once a run on this machine verified the head (issue 8).
    with tempfile.TemporaryDirectory() as state:
        os.environ["BACKFILL_STATE_DIR"] = state
        ledger.verify_for_action()
        started = time.perf_counter()
        ledger.verify_for_action("bf-other")
        emit("run_verify_from_trusted_head_ms", backend, (time.perf_counter() - started) * 1000, "ms", count)
    db.dispose()


@contextmanager
def fresh_postgres() -> Iterator[str | None]:
    from database_support import fresh_database, unreachable

    why = unreachable(POSTGRES_ADMIN)
    if why is not None:
        print(f"bench: PostgreSQL not reachable at {POSTGRES_ADMIN} ({why}); skipped", file=sys.stderr)
        yield None
        return
    with fresh_database(POSTGRES_ADMIN) as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000, help="events to append per backend")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measure(f"sqlite:///{Path(folder) / 'bench-ledger.db'}", "sqlite", args.events)
    with fresh_postgres() as url:
        if url is not None:
            measure(url, "postgresql", args.events)


if __name__ == "__main__":
    main()
