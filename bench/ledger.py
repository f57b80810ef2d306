"""Ledger throughput: appends per second (single and batched), verification and export.

Prints one JSON line per figure, on SQLite (a temporary file) and on PostgreSQL when the server at
BACKFILL_BENCH_POSTGRES (default: postgresql+psycopg://postgres@127.0.0.1:5432/test) is reachable.
Each append figure comes with the limit measured in the same run: the same durable transaction
sent through the bare driver, and the ratio to it. An append after this process's own is one
guarded insert (SQLite: BEGIN IMMEDIATE, INSERT, COMMIT; PostgreSQL: the lock and the insert in
one statement, a transaction of its own: one round trip): that is ``bare_driver``.
``bare_driver_locked_path`` is the locked path's transaction (lock, head read, insert, commit),
what every append sent before issue 14. The lines also carry the statements sent per append and
this process's CPU per append (on PostgreSQL the server's work is not in it), and every line the
1-minute load average (the machine may be shared). ``ledger_two_writers_appends_per_second`` is
two processes appending at once (each one's guess goes stale at the other's turn: on SQLite the
head read under the write lock, on PostgreSQL a head read and a second guarded insert).

    .venv/bin/python bench/ledger.py [--events 2000] [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Draft, Ledger

# The test suite's helpers (tests/database_support.py): one way to make a throw-away database.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
POSTGRES_ADMIN = os.environ.get("BACKFILL_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ACTOR = Actor("bench", IdentitySource.DECLARED)
BATCH = 5  # events the runner records at once at most (checked + skipped, failed + finished, ...)
FILL_BATCH = 1000


def emit(figure: str, backend: str, value: float, unit: str, events: int, **extra: Any) -> None:
    line = {
        "bench": "ledger",
        "figure": figure,
        "backend": backend,
        "value": round(value, 3 if unit in ("s", "ms") else 1),
        "unit": unit,
        "events": events,
        **extra,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(line), flush=True)


def payload(i: int) -> dict[str, Any]:
    # Shaped like the runner's: a window, parameters and a run ID.
    return {
        "run_id": str(uuid.uuid4()),
        "parameters": {"windowStart": f"2026-11-03T{i % 24:02d}:00:00Z", "feederRegion": "north"},
        "attempt": 1,
    }


def key(i: int) -> str:
    return f"2026-11-03T{i % 24:02d}:00:00Z/2026-11-03T{i % 24:02d}:15:00Z"


def measure_appends(ledger: Ledger, backend: str, count: int, bare: dict[str, float]) -> None:
    sent = statements_per_append(ledger)
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(count):
        ledger.append("window.created", payload(i), actor=ACTOR, backfill_id="bf-bench", window_key=key(i))
    rate = count / (time.perf_counter() - started)
    cpu = time.process_time() - cpu
    emit(
        "ledger_appends_per_second",
        backend,
        rate,
        "appends/s",
        count,
        bare_driver=round(bare["guarded"], 1),
        ratio_to_bare=round(rate / bare["guarded"], 2),
        bare_driver_locked_path=round(bare["locked"], 1),
        cpu_us_per_append=round(cpu / count * 1e6),
        statements_per_append=sent,
        target=2000 if backend == "sqlite" else 1000,
    )
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(0, count, BATCH):
        drafts = [Draft("window.checked", payload(j), "bf-bench", key(j)) for j in range(i, i + BATCH)]
        ledger.append_many(drafts, actor=ACTOR)
    rate = count / (time.perf_counter() - started)
    cpu = time.process_time() - cpu
    emit(
        "ledger_batched_appends_per_second",
        backend,
        rate,
        "events/s",
        count,
        batch=BATCH,
        cpu_us_per_event=round(cpu / count * 1e6),
    )


def statements_per_append(ledger: Ledger) -> float:
    """Statements the driver receives per single append (COMMIT is not one: the driver's own call)."""
    from sqlalchemy import event

    sent = [0]

    def count(*_args: Any) -> None:
        sent[0] += 1

    ledger.append("bench.warm", {}, actor=ACTOR)  # the first append of a process reads the head
    event.listen(ledger.db.engine, "before_cursor_execute", count)
    for i in range(20):
        ledger.append("bench.warm", payload(i), actor=ACTOR, backfill_id="bf-bench")
    event.remove(ledger.db.engine, "before_cursor_execute", count)
    return sent[0] / 20


def _two_writers_worker(url: str, count: int, ready: Any, go: Any, sent: Any) -> None:
    from sqlalchemy import event

    db = Database(url)
    ledger = Ledger(db)
    ledger.append("bench.warm", {}, actor=ACTOR)

    def counted(*_args: Any) -> None:
        sent.value += 1

    event.listen(db.engine, "before_cursor_execute", counted)
    ready.release()
    go.wait()
    for i in range(count):
        ledger.append("window.created", payload(i), actor=ACTOR, backfill_id="bf-two", window_key=key(i))
    db.dispose()


def measure_two_writers(url: str, backend: str, count: int) -> None:
    """Two processes appending ``count`` events each at the same time: the total rate, and the
    statements per append (a stale guess costs a head read and another insert)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, go = context.Semaphore(0), context.Event()
    sent = [context.Value("l", 0, lock=False) for _ in range(2)]
    workers = [context.Process(target=_two_writers_worker, args=(url, count, ready, go, sent[i])) for i in range(2)]
    for process in workers:
        process.start()
    for _ in workers:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    for process in workers:
        process.join()
    elapsed = time.perf_counter() - started
    if any(p.exitcode != 0 for p in workers):
        raise SystemExit(f"bench: a writer failed on {backend}")
    emit(
        "ledger_two_writers_appends_per_second",
        backend,
        2 * count / elapsed,
        "appends/s",
        2 * count,
        writers=2,
        statements_per_append=round(sum(v.value for v in sent) / (2 * count), 2),
    )


def fill(ledger: Ledger, total: int) -> None:
    have = ledger.head()
    i = have.seq if have else 0
    while i < total:
        n = min(FILL_BATCH, total - i)
        ledger.append_many(
            [Draft("window.status", payload(j), "bf-bench", key(j)) for j in range(i, i + n)], actor=ACTOR
        )
        i += n


def measure_reads(ledger: Ledger, backend: str, sizes: list[int]) -> None:
    for size in sizes:
        fill(ledger, size)
        cpu = time.process_time()
        started = time.perf_counter()
        report = ledger.verify()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if not report.ok or report.count != size:
            raise SystemExit(f"bench: verification failed on {backend}: {report.message}")
        # Events per second of this process's CPU too: a busy machine inflates wall time far more
        # (on PostgreSQL the server's own work is not in it).
        emit(
            "ledger_verified_per_second",
            backend,
            size / elapsed,
            "events/s",
            size,
            seconds=round(elapsed, 3),
            per_cpu_second=round(size / cpu),
            target=200_000 if backend == "sqlite" else 150_000,
        )
        # The floor: the same rows read in one streamed query and nothing else done with them.
        started = time.perf_counter()
        with ledger.db.reading() as conn:
            result = conn.execution_options(yield_per=5000).exec_driver_sql(
                "SELECT seq, at, actor, identity_source, backfill_id, window_key, kind, payload, prev_hash, hash "
                "FROM ledger_events ORDER BY seq"
            )
            rows = sum(len(part) for part in result.partitions())
        elapsed = time.perf_counter() - started
        emit("ledger_read_only_rows_per_second", backend, rows / elapsed, "rows/s", rows)
        for fmt in ("jsonl", "csv"):
            # Into the null device: the figure is producing the text, not holding a million lines.
            with Path(os.devnull).open("w", encoding="utf-8") as out:
                started = time.perf_counter()
                written = ledger.export(fmt, out)
                elapsed = time.perf_counter() - started
            assert written == size
            emit(f"ledger_export_{fmt}_seconds", backend, elapsed, "s", size, events_per_second=round(size / elapsed))
    # What `run` pays before it acts once a run on this machine verified the head (issue 8).
    with tempfile.TemporaryDirectory() as state:
        os.environ["BACKFILL_STATE_DIR"] = state
        ledger.verify_for_action()
        started = time.perf_counter()
        ledger.verify_for_action("bf-other")
        emit("run_verify_from_trusted_head_ms", backend, (time.perf_counter() - started) * 1000, "ms", sizes[-1])


def bare_sqlite(path: Path, count: int) -> dict[str, float]:
    """The same durable appends (WAL, synchronous=FULL) through sqlite3 alone: the ceiling for
    this disk. ``guarded``: BEGIN IMMEDIATE, the insert guarded by the head, COMMIT; ``locked``:
    BEGIN IMMEDIATE, head read, insert, COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq BIGINT PRIMARY KEY, payload TEXT NOT NULL, hash TEXT NOT NULL)")
    conn.execute("INSERT INTO t VALUES (0, '{}', ?)", ("0" * 64,))
    rates = {}
    started = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        head = conn.execute("SELECT seq, hash FROM t ORDER BY seq DESC LIMIT 1").fetchone()
        text = json.dumps(payload(i), sort_keys=True)
        digest = hashlib.sha256((head[1] + text).encode()).hexdigest()
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (head[0] + 1, text, digest))
        conn.execute("COMMIT")
    rates["locked"] = count / (time.perf_counter() - started)
    seq, prev = conn.execute("SELECT seq, hash FROM t ORDER BY seq DESC LIMIT 1").fetchone()
    guarded = (
        "INSERT INTO t (seq, payload, hash) SELECT * FROM (VALUES (?, ?, ?)) "
        "WHERE (?, ?) = (SELECT seq, hash FROM t ORDER BY seq DESC LIMIT 1)"
    )
    started = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        text = json.dumps(payload(i), sort_keys=True)
        digest = hashlib.sha256((prev + text).encode()).hexdigest()
        conn.execute(guarded, (seq + 1, text, digest, seq, prev))
        conn.execute("COMMIT")
        seq, prev = seq + 1, digest
    rates["guarded"] = count / (time.perf_counter() - started)
    conn.close()
    return rates


def bare_postgres(url: str, count: int) -> dict[str, float]:
    """The same appends through psycopg alone. ``guarded``: the advisory lock and the guarded
    insert in one statement, a transaction of its own (autocommit); ``locked``: BEGIN, lock,
    head read, insert, COMMIT."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        dbname=parsed.database,
        password=parsed.password or None,
    )
    conn.execute("CREATE TABLE bare_t (seq BIGINT PRIMARY KEY, payload TEXT NOT NULL, hash TEXT NOT NULL)")
    conn.execute("INSERT INTO bare_t VALUES (0, '{}', %s)", ("0" * 64,))
    conn.commit()
    rates = {}
    started = time.perf_counter()
    for i in range(count):
        conn.execute("SELECT pg_advisory_xact_lock(42)")
        head = conn.execute("SELECT seq, hash FROM bare_t ORDER BY seq DESC LIMIT 1").fetchone()
        assert head is not None
        text = json.dumps(payload(i), sort_keys=True)
        digest = hashlib.sha256((head[1] + text).encode()).hexdigest()
        conn.execute("INSERT INTO bare_t VALUES (%s, %s, %s)", (head[0] + 1, text, digest))
        conn.commit()
    rates["locked"] = count / (time.perf_counter() - started)
    head = conn.execute("SELECT seq, hash FROM bare_t ORDER BY seq DESC LIMIT 1").fetchone()
    assert head is not None
    seq, prev = head
    conn.commit()
    conn.autocommit = True
    guarded = (
        "WITH l AS (SELECT pg_advisory_xact_lock(42)) INSERT INTO bare_t SELECT v.* FROM l, (VALUES (%s, %s, %s)) AS v "
        "WHERE (%s, %s) = (SELECT seq, hash FROM bare_t ORDER BY seq DESC LIMIT 1) ON CONFLICT (seq) DO NOTHING"
    )
    started = time.perf_counter()
    for i in range(count):
        text = json.dumps(payload(i), sort_keys=True)
        digest = hashlib.sha256((prev + text).encode()).hexdigest()
        conn.execute(guarded, (seq + 1, text, digest, seq, prev))
        seq, prev = seq + 1, digest
    rates["guarded"] = count / (time.perf_counter() - started)
    conn.close()
    return rates


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


def run(url: str, backend: str, bare: dict[str, float], args: argparse.Namespace) -> None:
    db = Database(url)
    ledger = Ledger(db)
    measure_appends(ledger, backend, args.events, bare)
    measure_two_writers(url, backend, args.events // 2)
    # The same ledger topped up to each size in large batches.
    measure_reads(ledger, backend, args.sizes)
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000, help="events to append per backend")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[10_000, 100_000],
        help="ledger sizes for the verify and export figures (comma-separated)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            bare = bare_sqlite(Path(folder) / "bare.db", args.events)
            run(f"sqlite:///{Path(folder) / 'bench-ledger.db'}", "sqlite", bare, args)
    if args.backend in ("postgresql", "both"):
        with fresh_postgres() as url:
            if url is not None:
                bare = bare_postgres(url, args.events)
                run(url, "postgresql", bare, args)


if __name__ == "__main__":
    main()
