"""What every use case shares: the ledger database opened (and disposed) for one call unless the
caller holds one, the factory client, and text as it is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from backfill.terminal import strip_controls

if TYPE_CHECKING:
    from backfill.factory.client import FactoryClient
    from backfill.factory.protocol import FactoryRef
    from backfill.store.database import Database


@contextmanager
def database_for(db: Database | None, *, create: bool = True) -> Iterator[Database]:
    """The caller's database, or one opened (and disposed) for this call."""
    if db is not None:
        yield db
        return
    from backfill.store.database import opened

    with opened(create=create) as fresh:
        yield fresh


def connect_factory(ref: FactoryRef) -> FactoryClient:
    from backfill.factory.client import connect

    return connect(ref)


def recorded_text(value: str | None) -> str | None:
    """A note or reason as it is printed and recorded: no escape sequence rewrites anyone's
    screen; empty is None."""
    return strip_controls(value) or None if value is not None else None
