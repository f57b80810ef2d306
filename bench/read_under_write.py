"""How long a read waits while another process holds SQLite's write lock (issue 11).

A second connection takes ``BEGIN IMMEDIATE`` (as the runner's append does), appends a row and
holds the transaction for ``--hold`` seconds; meanwhile ``backfill status`` and ``backfill ledger
verify`` run in this process. Reads are deferred transactions, so each should take milliseconds,
not the hold time (when every transaction began with ``BEGIN IMMEDIATE`` a ``status`` waited 1.8 s
behind the runner). Prints one JSON line per figure.

    .venv/bin/python bench/read_under_write.py [--hold 2] [--events 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from backfill.cli import main
from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger

ACTOR = Actor("bench", IdentitySource.DECLARED)


def emit(figure: str, value: float, hold: float, events: int) -> None:
    line = {"bench": "read_under_write", "figure": figure, "backend": "sqlite", "value": round(value, 1)}
    print(json.dumps({**line, "unit": "ms", "writer_holds_s": hold, "events": events}), flush=True)


def hold_write_lock(path: Path, hold: float, held: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO ledger_meta (name, value) VALUES ('bench-writer', 'uncommitted')")
        held.set()
        time.sleep(hold)
        conn.rollback()
    finally:
        conn.close()


def timed_command(*args: str) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main.run(list(args))
    elapsed = (time.perf_counter() - started) * 1000
    if code != 0:
        raise SystemExit(f"backfill {' '.join(args)} exited {code}")
    return elapsed


def run(hold: float, events: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ledger.db"
        url = f"sqlite:///{path}"
        os.environ["BACKFILL_LEDGER"] = url
        os.environ["BACKFILL_STATE_DIR"] = str(Path(folder) / "state")
        db = Database(url)
        ledger = Ledger(db)
        for i in range(events):
            ledger.append("run-created", {"i": i}, actor=ACTOR, backfill_id="bf-bench")
        db.dispose()
        held = threading.Event()
        writer = threading.Thread(target=hold_write_lock, args=(path, hold, held))
        writer.start()
        held.wait()
        try:
            emit("status while a writer holds the lock", timed_command("status"), hold, events)
            emit("ledger verify while a writer holds the lock", timed_command("ledger", "verify"), hold, events)
        finally:
            writer.join()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds the writer holds the lock")
    parser.add_argument("--events", type=int, default=2000, help="ledger events before the reads")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    run(arguments.hold, arguments.events)
