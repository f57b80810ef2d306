"""The runner's incremental reading of one backfill's ledger events (spec §7).

Every step of the window machine is a ledger event, read back here: the ledger alone says where a
window stands, so a runner killed at any point resumes from it. Appends go through the
``StepHook`` port, where the crash harness kills or freezes the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from backfill import events as ev
from backfill import progress as pg
from backfill.approvals import BackfillRecord
from backfill.chain import LedgerEvent
from backfill.identity import Actor
from backfill.runner.ports import NO_HOOK, LedgerPort, StepHook

BACKFILL_ENDS = (ev.COMPLETED, ev.FAILED, ev.STOPPED)


class LedgerView:
    """The runner's incremental reading of one backfill's ledger events (thread-safe)."""

    def __init__(
        self, ledger: LedgerPort, record: BackfillRecord, actor: Actor, *, hook: StepHook | None = None
    ) -> None:
        self.ledger = ledger
        self.backfill_id = record.id
        self.actor = actor
        self.hook: StepHook = hook or NO_HOOK
        self.windows = pg.initial_windows(record.decisions)
        # Window key -> (time, payload) of an intent not yet followed by created/adopted/finished.
        self.pending: dict[str, tuple[datetime, Mapping[str, Any]]] = {}
        # Window key -> time of its first intent in this backfill: a run of the window that started
        # after it may be this backfill's own (a late effect), never another backfill's to skip for.
        self.first_intent: dict[str, datetime] = {}
        # Windows whose end is recorded (finished or skipped). Not derived from the progress
        # state: a status event saying Succeeded is not yet a recorded finish.
        self.closed: set[str] = set()
        self.stop_requested = False
        self.ended: str | None = None
        self.listeners: list[Callable[[LedgerEvent], None]] = []
        self.lock = threading.RLock()
        self._seq = 0

    def refresh(self) -> None:
        with self.lock:
            for event in self.ledger.events(backfill_id=self.backfill_id, after_seq=self._seq):
                self._apply(event)
                self._seq = event.seq

    def _apply(self, event: LedgerEvent) -> None:
        kind, key = event.kind, event.window_key
        if kind.startswith("window.") and key:
            pg.apply_window_event(self.windows, key, kind, event.payload, event.at)
            if kind == ev.WINDOW_INTENT:
                self.pending[key] = (event.at, event.payload)
                self.first_intent.setdefault(key, intent_time(event.payload, event.at))
            elif kind in (
                ev.WINDOW_CREATED,
                ev.WINDOW_ADOPTED,
                ev.WINDOW_CREATE_FAILED,
                ev.WINDOW_FINISHED,
                ev.WINDOW_SKIPPED,
            ):
                self.pending.pop(key, None)
            if kind in (ev.WINDOW_FINISHED, ev.WINDOW_SKIPPED):
                self.closed.add(key)
        elif kind == ev.WINDOW_ACCEPTED and key:
            pg.apply_window_event(self.windows, key, kind, event.payload, event.at)
        elif kind == ev.STARTED:
            self.stop_requested, self.ended = False, None
        elif kind == ev.STOP_REQUESTED:
            self.stop_requested = True
        elif kind in BACKFILL_ENDS:
            self.ended = kind

    def append(self, kind: str, payload: Mapping[str, Any], window_key: str | None = None) -> LedgerEvent:
        self.hook.before(kind)
        event = self.ledger.append(kind, payload, actor=self.actor, backfill_id=self.backfill_id, window_key=window_key)
        self.hook.after(kind)
        self.refresh()
        for listener in self.listeners:
            listener(event)
        return event

    def window(self, key: str) -> pg.WindowProgress:
        with self.lock:
            return pg.WindowProgress(**self.windows.get(key, pg.new_window("")))


def intent_time(payload: Mapping[str, Any], recorded: datetime) -> datetime:
    from backfill.timeutil import parse_utc

    text = payload.get("intent_at")
    try:
        return parse_utc(text) if isinstance(text, str) else recorded
    except ValueError:
        return recorded
