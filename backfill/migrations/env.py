"""Alembic environment: always run by ``backfill.store.database`` on its own connection."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from backfill.store.database import load_tables

load_tables()
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
