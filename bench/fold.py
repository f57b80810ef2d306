"""The one fold: how long deriving a backfill's state from its events takes (``status``, gates,
reports and the runner all fold every event of a backfill through ``backfills.derive_state``).

Synthetic events (check, intent, created, status, finished per window) held in memory, so the
figure is the fold's own cost: decoding each typed event and applying it. CPU time, best of
``--repeat``, so other processes on the machine do not inflate it.

    .venv/bin/python bench/fold.py [--windows 2000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backfill import events as ev
from backfill.backfills import ApprovalPolicy, BackfillRecord, derive_state

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    kind: str
    at: datetime
    window_key: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    actor: str = "bob"
    identity_source: str = "os"


def story(windows: int) -> tuple[BackfillRecord, list[Event]]:
    keys = [f"2026-11-01T{i:06d}Z" for i in range(windows)]
    record = BackfillRecord(
        "bf-bench", "plan.toml", "0" * 64, "Load", "factory", "bench", "", "alice", "os", T0, None,
        ApprovalPolicy(), {k: "run" for k in keys},
    )  # fmt: skip
    events = [
        Event(ev.REQUESTED, T0, actor="alice"),
        Event(ev.APPROVED, T0),
        Event(ev.STARTED, T0, None, {"concurrency": 4}),
    ]
    for i, key in enumerate(keys):
        at, run = T0 + timedelta(seconds=i), {"run_id": f"run-{i}"}
        events += [
            Event(ev.WINDOW_CHECKED, at, key, {"decision": "run", "reason": "no run yet"}),
            Event(ev.WINDOW_INTENT, at, key, {"mode": "new-run", "attempt": 1}),
            Event(ev.WINDOW_CREATED, at, key, {**run, "status": "Queued"}),
            Event(ev.WINDOW_STATUS, at, key, {**run, "status": "InProgress"}),
            Event(ev.WINDOW_FINISHED, at, key, {**run, "status": "Succeeded", "duration_ms": 60_000}),
        ]
    return record, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    record, events = story(args.windows)
    now = T0 + timedelta(days=1)
    best = float("inf")
    for _ in range(args.repeat):
        started = time.process_time()
        derive_state(record, events, now)
        best = min(best, time.process_time() - started)
    figure = {"bench": "fold", "figure": "derive_state_cpu_seconds", "value": round(best, 4), "unit": "s"}
    print(json.dumps({**figure, "events": len(events), "per_event_us": round(best / len(events) * 1e6, 2)}))


if __name__ == "__main__":
    main()
