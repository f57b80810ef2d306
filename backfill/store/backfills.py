"""The ``backfills`` table: one insert-only row per request, the frozen plan hash and preview.

A backfill's state is not a column: it is derived from the ledger (``backfill.backfills``), so
there is nothing here to update, and the database refuses UPDATE and DELETE (triggers, Alembic
revision 0001_baseline). The row and its ``backfill.requested`` event commit in one transaction;
``load_backfill`` reads the row and its events back and hands them to the aggregate's fold.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, String, Table, Text, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from backfill import events as ev
from backfill.backfills import ApprovalPolicy, BackfillRecord, BackfillState, derive_state, sealed_record
from backfill.chain import LedgerEvent
from backfill.errors import BackfillError, LedgerError, LedgerInvalid
from backfill.identity import Actor
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.store.schema import METADATA

INSERT_ONLY = "backfills are insert-only"


# Core, not SQLModel: ``status`` reads it and must not import the ORM (store.schema).
TABLE = Table(
    "backfills",
    METADATA,
    Column("id", String(64), primary_key=True, autoincrement=False),
    Column("plan_path", Text, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("pipeline", String(260), nullable=False),
    Column("factory_key", String(400), nullable=False),
    Column("title", Text, nullable=False),
    Column("ticket", String(200), nullable=False),
    Column("requester", String(320), nullable=False),
    Column("requester_source", String(16), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False, index=True),
    Column("note", Text),
    # JSON texts: the approval policy, window key -> decision, and the whole frozen preview.
    Column("approval", Text, nullable=False),
    Column("decisions", Text, nullable=False),
    Column("preview", Text, nullable=False),
)


def new_backfill_id(at: datetime) -> str:
    """Short and readable: ``bf-20261125-3f9a2c`` (request date, 24 random bits)."""
    return f"bf-{at.astimezone(UTC):%Y%m%d}-{secrets.token_hex(3)}"


def _to_row(record: BackfillRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "plan_path": record.plan_path,
        "plan_hash": record.plan_hash,
        "pipeline": record.pipeline,
        "factory_key": record.factory_key,
        "title": record.title,
        "ticket": record.ticket,
        "requester": record.requester,
        "requester_source": record.requester_source,
        "requested_at": record.requested_at,
        "note": record.note,
        "approval": json.dumps(record.policy.to_json(), sort_keys=True),
        "decisions": json.dumps(dict(record.decisions)),
        "preview": json.dumps(dict(record.preview), sort_keys=True, default=str),
    }


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything written here was UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _to_record(row: Mapping[Any, Any], with_preview: bool = True) -> BackfillRecord:
    return BackfillRecord(
        id=row["id"],
        plan_path=row["plan_path"],
        plan_hash=row["plan_hash"],
        pipeline=row["pipeline"],
        factory_key=row["factory_key"],
        title=row["title"],
        ticket=row["ticket"],
        requester=row["requester"],
        requester_source=row["requester_source"],
        requested_at=_utc(row["requested_at"]),
        note=row["note"],
        policy=ApprovalPolicy.from_json(json.loads(row["approval"])),
        decisions=json.loads(row["decisions"]),
        preview=json.loads(row["preview"]) if with_preview else {},
    )


def create_backfill(db: Database, draft: BackfillRecord, payload: Mapping[str, Any], actor: Actor) -> BackfillRecord:
    """Insert the request under a fresh ID with its ``backfill.requested`` event, atomically.
    ``draft.id`` is ignored."""
    ledger = Ledger(db)
    for _ in range(5):
        record = replace(draft, id=new_backfill_id(draft.requested_at))
        if db.team_mode:
            # Team mode: the database's role is the requester (its trigger refuses any other).
            record = replace(record, requester=db.session_user(), requester_source="database")
            # The sealed request names the same requester as the row and the stamped event: the
            # role, never the name the client declared (that stays a note, ``client_actor``).
            payload = {**payload, "requester": {"name": record.requester, "source": record.requester_source}}
        try:
            with db.writing() as conn:
                conn.execute(insert(TABLE), _to_row(record))
                requested = ledger.append(ev.REQUESTED, payload, actor=actor, backfill_id=record.id, conn=conn)
        except IntegrityError:
            # Two requests drew the same 24 random bits on the same day: draw again.
            continue
        except DBAPIError as exc:  # team mode's trigger or a missing grant
            if "team ledger:" not in str(exc.orig) and "permission denied" not in str(exc.orig):
                raise
            line = str(exc.orig).strip().splitlines()[0]
            reason = line[line.find("team ledger:") :] if "team ledger:" in line else f"ledger: {line}"
            raise LedgerError(reason) from None
        ledger.announce([requested])  # committed: notifications may go out (issue 15)
        return record
    raise LedgerError("ledger: could not allocate a backfill ID; retry")


def get_backfill(db: Database, backfill_id: str, *, with_preview: bool = True) -> BackfillRecord:
    """The request, or BackfillError (exit 1) when no backfill has this ID (``with_preview=False``:
    without the frozen preview, megabytes for a year of windows, which the console reads lazily)."""
    columns = [c for c in TABLE.c if with_preview or c.name != "preview"]
    with db.reading() as conn:
        row = conn.execute(select(*columns).where(TABLE.c.id == backfill_id.strip())).mappings().first()
    if row is None:
        raise BackfillError(f"no backfill {backfill_id} in the ledger (backfill status lists them)")
    return _to_record(row, with_preview=with_preview)


def list_backfills(db: Database) -> list[BackfillRecord]:
    """Every request, oldest first, without the frozen previews (large; reports read them)."""
    columns = [c for c in TABLE.c if c.name != "preview"]
    with db.reading() as conn:
        rows = conn.execute(select(*columns).order_by(TABLE.c.requested_at, TABLE.c.id)).mappings().all()
    return [_to_record(row, with_preview=False) for row in rows]


def load_backfill(db: Database, backfill_id: str, now: datetime | None = None) -> tuple[BackfillRecord, BackfillState]:
    """The frozen request and its state derived from the ledger (BackfillError if unknown)."""
    from backfill.timeutil import utcnow

    record = get_backfill(db, backfill_id)
    events = Ledger(db).events(backfill_id=record.id)
    record = sealed_record(record, events)
    return record, derive_state(record, events, now or utcnow())


def verify_requests(db: Database) -> str | None:
    """The first ``backfills`` row that disagrees with its sealed request event, as one line, or
    None: ``ledger verify`` holds the rows outside the chain to the events inside it."""
    requested: dict[str, LedgerEvent] = {}
    for event in Ledger(db).events(kinds=[ev.REQUESTED]):
        if event.backfill_id:
            requested.setdefault(event.backfill_id, event)
    for record in list_backfills(db):
        try:
            sealed_record(record, [requested[record.id]] if record.id in requested else [])
        except LedgerInvalid as exc:
            return str(exc)
    return None
