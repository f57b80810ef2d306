"""Backfills on plain data: a frozen request with defaults, and real hash-chained ledger events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from backfill.backfills import ApprovalPolicy, BackfillRecord
from backfill.chain import GENESIS_HASH, LedgerEvent, make_event

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
BID = "bf-20261125-3f9a2c"
# The windows of a 15-minute plan from 2026-11-03T00:00Z, by key.
K1 = "2026-11-03T00:00:00Z/2026-11-03T00:15:00Z"
K2 = "2026-11-03T00:15:00Z/2026-11-03T00:30:00Z"
K3 = "2026-11-03T00:30:00Z/2026-11-03T00:45:00Z"
K4 = "2026-11-03T00:45:00Z/2026-11-03T01:00:00Z"


def sample_record(**fields: Any) -> BackfillRecord:
    """alice's request of the north plan, no windows, the default policy; ``fields`` override.
    ``id=""`` lets the store give it one (``create_backfill``)."""
    defaults: dict[str, Any] = {
        "id": "",
        "plan_path": "/plans/north.toml",
        "plan_hash": "ab" * 32,
        "pipeline": "LoadMeterTelemetry",
        "factory_key": "sub/rg/adf",
        "title": "Replay north",
        "ticket": "INC-4821",
        "requester": "alice",
        "requester_source": "declared",
        "requested_at": T0,
        "note": None,
        "policy": ApprovalPolicy(),
        "decisions": {},
    }
    return BackfillRecord(**{**defaults, **fields})


class Chain:
    """Builds a hash-chained list of real ledger events of one backfill, ``minutes`` after ``start``."""

    def __init__(self, backfill_id: str = BID, start: datetime = T0) -> None:
        self.backfill_id = backfill_id
        self.start = start
        self.events: list[LedgerEvent] = []

    def add(
        self,
        kind: str,
        actor: str = "bob",
        minutes: float = 1,
        key: str | None = None,
        source: str = "declared",
        **payload: Any,
    ) -> Chain:
        prev = self.events[-1].hash if self.events else GENESIS_HASH
        self.events.append(
            make_event(
                seq=len(self.events) + 1,
                at=self.start + timedelta(minutes=minutes),
                actor=actor,
                identity_source=source,
                kind=kind,
                payload=payload,
                prev_hash=prev,
                backfill_id=self.backfill_id,
                window_key=key,
            )
        )
        return self
