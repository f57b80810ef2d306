"""Alembic environment: always run by ``backfill.store.database`` on its own connection."""

from __future__ import annotations

from alembic import context

from backfill.store.database import load_tables
from backfill.store.schema import METADATA

load_tables()
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
