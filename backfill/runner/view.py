"""The runner's incremental reading of one backfill's ledger events (spec §7).

Every step of the window machine is a ledger event, read back here: the ledger alone says where a
window stands, so a runner killed at any point resumes from it. Appends go through the
``StepHook`` port, where the crash harness kills or freezes the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from backfill import progress as pg
from backfill.backfills import FINISHED, BackfillRecord, apply_event, new_state
from backfill.chain import Draft, LedgerEvent
from backfill.identity import Actor
from backfill.runner.ports import NO_HOOK, LedgerPort, StepHook


class LedgerView:
    """The runner's incremental reading of one backfill's ledger events (thread-safe)."""

    def __init__(
        self, ledger: LedgerPort, record: BackfillRecord, actor: Actor, *, hook: StepHook | None = None
    ) -> None:
        self.ledger = ledger
        self.backfill_id = record.id
        self.actor = actor
        self.hook: StepHook = hook or NO_HOOK
        self.record = record
        # The aggregate's one fold (backfill.backfills), fed incrementally: the state every other
        # command derives, plus the intents in doubt and the closed windows the runner resumes from.
        self.state = new_state(record)
        self.listeners: list[Callable[[LedgerEvent], None]] = []
        self.lock = threading.RLock()
        self._seq = 0

    @property
    def windows(self) -> dict[str, pg.WindowProgress]:
        return self.state.windows

    @property
    def pending(self) -> dict[str, tuple[datetime, Mapping[str, Any]]]:
        """Window key -> (time, payload) of an intent not yet followed by created/adopted/finished."""
        return self.state.intents

    @property
    def first_intent(self) -> dict[str, datetime]:
        return self.state.first_intents

    @property
    def closed(self) -> set[str]:
        return self.state.closed

    @property
    def stop_requested(self) -> bool:
        return self.state.stop_requested

    @property
    def ended(self) -> str | None:
        """The state the backfill's last run ended in (completed, failed, stopped), or None."""
        return self.state.status.value if self.state.status in FINISHED else None

    def refresh(self) -> None:
        with self.lock:
            for event in self.ledger.events(backfill_id=self.backfill_id, after_seq=self._seq):
                apply_event(self.record, self.state, event)
                self._seq = event.seq

    def append(self, kind: str, payload: Mapping[str, Any], window_key: str | None = None) -> LedgerEvent:
        self.hook.before(kind)
        event = self.ledger.append(kind, payload, actor=self.actor, backfill_id=self.backfill_id, window_key=window_key)
        self.hook.after(kind)
        self.refresh()
        for listener in self.listeners:
            listener(event)
        return event

    def append_many(self, steps: Sequence[tuple[str, Mapping[str, Any], str | None]]) -> list[LedgerEvent]:
        """Record several steps (kind, payload, window key) in one transaction: one commit where
        the runner knows them all at once. The hook sees each step before and, once all are
        durable, after."""
        if not steps:
            return []
        for kind, _, _ in steps:
            self.hook.before(kind)
        drafts = [Draft(kind, payload, self.backfill_id, key) for kind, payload, key in steps]
        events = self.ledger.append_many(drafts, actor=self.actor)
        for kind, _, _ in steps:
            self.hook.after(kind)
        self.refresh()
        for event in events:
            for listener in self.listeners:
                listener(event)
        return events

    def window(self, key: str) -> pg.WindowProgress:
        with self.lock:
            return pg.WindowProgress(**self.windows.get(key, pg.new_window("")))
