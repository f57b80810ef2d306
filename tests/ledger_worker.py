"""Runs in spawned processes for the ledger concurrency test: keep its imports light."""

from __future__ import annotations

from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger


def append_events(url: str, worker: int, count: int) -> None:
    database = Database(url)
    ledger = Ledger(database)
    actor = Actor(f"worker-{worker}", IdentitySource.DECLARED)
    for i in range(count):
        ledger.append("tick", {"worker": worker, "i": i}, actor=actor, backfill_id=f"bf-{worker}")
    database.dispose()


def append_batches(url: str, worker: int, batches: int, size: int) -> None:
    """``batches`` appends of ``size`` events each, numbered on across batches."""
    from backfill.store.ledger import Draft

    database = Database(url)
    ledger = Ledger(database)
    actor = Actor(f"worker-{worker}", IdentitySource.DECLARED)
    for b in range(batches):
        drafts = [Draft("tick", {"worker": worker, "i": b * size + j}, f"bf-{worker}") for j in range(size)]
        ledger.append_many(drafts, actor=actor)
    database.dispose()
