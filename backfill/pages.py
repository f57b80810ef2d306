"""Pieces every self-contained HTML page shares (the backfill report, the incident record, the
SLA report): escaping a value and drawing a table of already escaped cells."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

NONE = '<p class="none">(none)</p>'


def escaped(value: Any) -> str:
    """``value`` as HTML text (None as nothing), quotes escaped so it may stand in an attribute."""
    return escape("" if value is None else str(value), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, none: str = NONE) -> str:
    """A table of ``rows``, whose cells hold HTML the caller has already escaped; ``none`` when
    there is no row."""
    if not rows:
        return none
    head = "".join(f"<th>{escaped(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
