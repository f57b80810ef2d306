"""The base of the tables still written as SQLModel classes (window claims).

They register on ``store.schema.METADATA`` like the Core tables, so one metadata describes the
whole schema; importing this module imports SQLModel and the ORM, which read paths never do.
"""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from backfill.store.schema import METADATA


class TableModel(SQLModel, registry=registry(metadata=METADATA)):
    """A SQLModel table on the shared metadata."""
