"""The console's reads of frozen requests and their events, kept between page views.

Both are safe to keep: the ``backfills`` row is insert-only and the ledger is append-only (the
database refuses UPDATE and DELETE), so a backfill's record never changes and its events only
grow. Each page view reads only the events appended since the last one and derives the state
afresh with ``derive_state`` and ``sealed_record`` (the same rules as every command). The frozen
preview (megabytes for a year of 15-minute windows) is decoded lazily, window by window, as far
as the page shown needs: page 1 of a 35,040-window backfill decodes 100 windows, not 35,040.
The evidence page still reads and verifies the whole ledger (``collect_report``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from backfill.backfills import BackfillRecord, BackfillState, derive_state, sealed_record
from backfill.chain import LedgerEvent
from backfill.store.database import Database
from backfill.store.ledger import Ledger

_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


class FrozenWindows:
    """The ``windows`` of a frozen preview's JSON text, decoded on demand and kept."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._found: dict[str, Mapping[str, Any]] = {}
        self.head: dict[str, Any] = {}
        self._pos: int | None = self._find_windows()
        self._lock = threading.Lock()

    def _skip(self, pos: int, chars: str = _SPACE) -> int:
        while pos < len(self._text) and self._text[pos] in chars:
            pos += 1
        return pos

    def _find_windows(self) -> int | None:
        """Walk the top-level object, decoding every value but ``windows`` (all small)."""
        text = self._text
        pos = self._skip(0)
        if not text.startswith("{", pos):
            return None
        pos += 1
        while True:
            pos = self._skip(pos, _SPACE + ",")
            if pos >= len(text) or text[pos] == "}":
                return None
            key, pos = _DECODER.raw_decode(text, pos)
            pos = self._skip(pos, _SPACE + ":")
            if key == "windows" and text.startswith("[", pos):
                return pos + 1
            self.head[key], pos = _DECODER.raw_decode(text, pos)

    def get(self, keys: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        wanted = [k for k in keys]
        with self._lock:
            missing = {k for k in wanted if k not in self._found}
            while missing and self._pos is not None:
                pos = self._skip(self._pos, _SPACE + ",")
                if pos >= len(self._text) or self._text[pos] == "]":
                    self._pos = None
                    break
                window, self._pos = _DECODER.raw_decode(self._text, pos)
                if isinstance(window, Mapping) and isinstance(window.get("key"), str):
                    self._found[window["key"]] = window
                    missing.discard(window["key"])
            return {k: self._found[k] for k in wanted if k in self._found}


@dataclass
class _Events:
    events: list[LedgerEvent] = field(default_factory=list)
    last_seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Shown:
    """One backfill as a page shows it: the sealed request, its state now, its frozen windows."""

    record: BackfillRecord
    state: BackfillState
    windows: FrozenWindows


class FrozenRequests:
    """Frozen requests and their events for the console, most recently used first."""

    def __init__(self, db: Database, size: int = 32) -> None:
        self.db = db
        self.size = size
        self._requests: OrderedDict[str, tuple[BackfillRecord, FrozenWindows]] = OrderedDict()
        self._events: dict[str, _Events] = {}
        self._lock = threading.Lock()

    def request(self, backfill_id: str) -> tuple[BackfillRecord, FrozenWindows]:
        """The insert-only request row, its preview's windows to be decoded as pages need them."""
        key = backfill_id.strip()
        with self._lock:
            found = self._requests.get(key)
            if found is not None:
                self._requests.move_to_end(key)
                return found
        from backfill.store.backfills import TABLE, get_backfill

        record = get_backfill(self.db, key, with_preview=False)
        with self.db.reading() as conn:
            text = conn.execute(select(TABLE.c.preview).where(TABLE.c.id == record.id)).scalar_one()
        windows = FrozenWindows(str(text))
        # What the console reads of the preview besides its windows (the factory, the history).
        found = (replace(record, preview=windows.head), windows)
        with self._lock:
            found = self._requests.setdefault(record.id, found)
            while len(self._requests) > self.size:
                self._requests.popitem(last=False)
        return found

    def events(self, backfill_id: str) -> list[LedgerEvent]:
        """The backfill's events in ledger order: those read before, and any appended since."""
        with self._lock:
            kept = self._events.setdefault(backfill_id, _Events())
        with kept.lock:
            fresh = Ledger(self.db).events(backfill_id=backfill_id, after_seq=kept.last_seq)
            if fresh:
                kept.events.extend(fresh)
                kept.last_seq = fresh[-1].seq
            return list(kept.events)

    def show(self, backfill_id: str, now: datetime) -> Shown:
        """As ``load_backfill``: the request as the chain seals it, its state derived as of ``now``."""
        record, windows = self.request(backfill_id)
        events = self.events(record.id)
        sealed = sealed_record(record, events)
        return Shown(sealed, derive_state(sealed, events, now), windows)
