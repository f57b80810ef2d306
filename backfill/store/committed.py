"""Who hears of committed ledger appends (notifications, issue 15: sent after the event is written).

Its own module, free of SQLAlchemy, so that every command can install the notifier without paying
for the database layer's import; ``backfill.store.ledger`` calls the listeners after each commit.
A listener never raises into the writer: it must catch its own errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backfill.chain import LedgerEvent
    from backfill.store.database import Database

COMMITTED: list[Callable[[Database, list[LedgerEvent]], None]] = []
