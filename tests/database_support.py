"""Throw-away databases on a real server, for the test fixtures and the bench scripts alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def unreachable(admin_url: str) -> str | None:
    """Why the server at ``admin_url`` does not answer (the error's type), or None if it does."""
    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            admin.dispose()
    except Exception as exc:
        return type(exc).__name__
    return None


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database with a unique name on the server at ``admin_url`` (PostgreSQL or
    MariaDB); its SQLAlchemy URL, password kept; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(admin_url)
    # PostgreSQL refuses to drop a database someone is still connected to, unless forced.
    force = " WITH (FORCE)" if server.get_backend_name() == "postgresql" else ""
    name = f"bf_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
    finally:
        admin.dispose()
