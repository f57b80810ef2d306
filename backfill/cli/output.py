"""Shared output helpers: tables with tabulate, stable JSON, and exit codes from commands.

Tables fit ``WIDTH`` columns by default, like ``kubectl get``: run IDs are shortened and the
columns named ``shrink`` (free text: reasons, parameters) are cut with an ellipsis; ``--wide``
prints everything whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

from backfill.errors import ExitCode

WIDTH = 120  # a normal terminal; wider tables wrap and become unreadable
GAP = 2  # tabulate's "simple" format puts two spaces between columns
HEADER_PAD = 2
ELLIPSIS = "…"


def short_id(run_id: str) -> str:
    """The first block of an ADF run ID (a GUID), as tables show it; other IDs unchanged."""
    head, _, rest = run_id.partition("-")
    return head if rest and len(run_id) > 12 else run_id


def fit(
    headers: Sequence[str], rows: Sequence[Sequence[str]], shrink: Sequence[str], width: int = WIDTH
) -> list[list[str]]:
    """``rows`` with the ``shrink`` columns cut so that the table is at most ``width`` wide.

    The other columns keep their natural width; the shrinkable ones share what is left, the
    narrow ones keeping their full text, never narrower than their header."""
    names = list(headers)
    cells = [row if isinstance(row, list) else list(map(str, row)) for row in rows]
    natural = _widths(names, cells)
    total = sum(natural) + GAP * (len(names) - 1)
    columns = [names.index(name) for name in shrink if name in names]
    if total <= width or not columns:
        return cells
    budget = width - (total - sum(natural[i] for i in columns))
    limits: dict[int, int] = {}
    # Water-filling: the narrowest shrinkable column takes what it needs up to an equal share.
    ordered = sorted(columns, key=lambda c: natural[c])
    for n, i in enumerate(ordered):
        share = budget // (len(ordered) - n)
        limits[i] = max(len(names[i]) + HEADER_PAD, min(natural[i], share))
        budget -= limits[i]
    return [[_cut(cell, limits.get(i)) for i, cell in enumerate(row)] for row in cells]


def _widths(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    """Each column's natural width: its longest cell, and at least its header plus two (as
    tabulate draws it). One pass per column (a year of windows: 35,040 rows)."""
    columns = list(zip(*cells, strict=True)) if cells else [() for _ in headers]
    return [
        max(len(header) + HEADER_PAD, max(map(len, column), default=0))
        for header, column in zip(headers, columns, strict=True)
    ]


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def echo_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, shrink: Sequence[str] = (), wide: bool = True
) -> None:
    """Print a table; unless ``wide``, cut the ``shrink`` columns to fit ``WIDTH`` columns."""
    cells = [list(map(str, row)) for row in rows]
    if not wide:
        cells = fit(headers, cells, shrink)
    if _plain(headers, cells):
        echo_text(simple_table(headers, cells))
        return
    from tabulate import tabulate

    click.echo(tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True))


def echo_text(text: str) -> None:
    """``click.echo(text)`` in one write. Text without an escape character is written as it is:
    stripping ANSI codes (what click does when stdout is not a terminal) would run a regular
    expression over every character of a 96,000-line preview for nothing."""
    click.echo(text, color=True if "\x1b" not in text else None)


def _plain(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> bool:
    """Cells that tabulate would draw as they are: one line, printable ASCII, no edge spaces.

    Checked a column at a time (one joined string: str methods run in C): a cell holding a line
    break shows as one line break too many, an edge space as a space next to a line break."""
    if not set(map(len, cells)) <= {len(headers)}:
        return False
    for column in zip(headers, *cells, strict=True):
        joined = "\n".join(column)
        if not joined.isascii() or joined.count("\n") != len(column) - 1:
            return False
        if not joined.replace("\n", "").isprintable():
            return False
        if joined.startswith(" ") or joined.endswith(" ") or " \n" in joined or "\n " in joined:
            return False
    return True


def simple_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """tabulate's ``simple`` format (strings left-aligned), character for character, for
    single-line ASCII cells (``_plain``); the other tables go to tabulate."""
    widths = _widths(headers, cells)
    gap = " " * GAP
    # One format for every line; tabulate ends a line at its last character, so the padding of
    # the last columns is dropped.
    line = gap.join(f"{{:<{width}}}" for width in widths).format
    lines = [line(*headers).rstrip(), gap.join("-" * width for width in widths)]
    lines.extend([line(*row).rstrip() for row in cells])
    return "\n".join(lines)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def exit_with(code: ExitCode | int) -> None:
    """End a command with a non-zero exit code that is not an error message (4: blocked...)."""
    if int(code) != 0:
        raise click.exceptions.Exit(int(code))
