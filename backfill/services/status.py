"""Read a backfill: every backfill's state, one backfill's state and liveness, its report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backfill.backfills import BackfillRecord, BackfillState, BackfillStatus
from backfill.services.common import database_for
from backfill.store.backfills import load_backfill
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from backfill.store.database import Database


@dataclass(frozen=True)
class BackfillView:
    record: BackfillRecord
    state: BackfillState
    last_seen: datetime | None = None  # the last event of the backfill (with ``liveness``)
    alive: bool = False  # a runner holds a live claim (with ``liveness``, while it runs)


def list_backfills(*, now: datetime | None = None, db: Database | None = None) -> list[BackfillView]:
    """Every backfill with its state (read-only: never creates a ledger, issue 9 #2)."""
    from backfill.backfills import derive_state
    from backfill.store import backfills as store
    from backfill.store.ledger import Ledger

    now = now or utcnow()
    with database_for(db, create=False) as database:
        ledger = Ledger(database)
        return [
            BackfillView(record, derive_state(record, ledger.events(backfill_id=record.id), now))
            for record in store.list_backfills(database)
        ]


def backfill_status(
    backfill_id: str, *, now: datetime | None = None, liveness: bool = False, db: Database | None = None
) -> BackfillView:
    """One backfill's record and state; with ``liveness``, when the ledger last heard of it and
    whether a runner is alive (read-only: never creates a ledger)."""
    with database_for(db, create=False) as database:
        record, state = load_backfill(database, backfill_id, now)
        if not liveness:
            return BackfillView(record, state)
        alive = state.status is BackfillStatus.RUNNING and _runner_alive(database, record.id)
        return BackfillView(record, state, _last_seen(database, record.id), alive)


def _runner_alive(db: Database, backfill_id: str) -> bool:
    """A runner holds a live claim: it renews its lease every third of it while a window is in
    flight, even when the run's status does not change for an hour (and nothing is recorded)."""
    from backfill.store.claims import Claims

    return bool(Claims(db).held_by_others(backfill_id))


def _last_seen(db: Database, backfill_id: str) -> datetime | None:
    """When the ledger last heard of this backfill: a live runner records every step it takes."""
    from backfill.store.ledger import Ledger

    last = None
    for event in Ledger(db).events(backfill_id=backfill_id):
        last = event.at
    return last


def backfill_report(backfill_id: str, *, db: Database | None = None) -> dict[str, Any]:
    """The evidence of one backfill as plain data (docs/report-json.md): the request and its
    events read, the whole ledger chain verified, the report built.

    BackfillError (exit 1) for an unknown ID; LedgerInvalid (exit 5) when a row cannot be read.
    """
    from backfill.backfills import sealed_record
    from backfill.report.build import build_report
    from backfill.store.backfills import get_backfill
    from backfill.store.ledger import Ledger
    from backfill.timeutil import utcnow

    with database_for(db) as database:
        record = get_backfill(database, backfill_id)
        ledger = Ledger(database)
        events = ledger.events(backfill_id=record.id)
        # The request as the chain records it, not as the mutable row says (spec §15).
        record = sealed_record(record, events)
        return build_report(record, events, ledger.verify(), utcnow())
