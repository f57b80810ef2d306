"""The one ``MetaData`` every table of the ledger database is defined on.

Core only, so that a read path (``status``, ``ledger verify``) that imports a table module never
imports SQLModel or SQLAlchemy's ORM; the few modules still written as SQLModel classes
(``store.orm.TableModel``) register on this same metadata. ``HEAD_TABLES`` names every table the
head revision has: an up-to-date database is recognised from it without importing those modules
(a test compares it with the metadata).
"""

from __future__ import annotations

from sqlalchemy import MetaData

METADATA = MetaData()

HEAD_TABLES = frozenset(
    {
        "backfills",
        "history_key_sets",
        "history_keys",
        "history_runs",
        "history_secrets",
        "history_sync",
        "ledger_events",
        "ledger_meta",
        "window_claims",
    }
)
