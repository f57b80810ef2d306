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
    # tabulate makes a column at least its header plus two wide.
    natural = [max([len(h) + HEADER_PAD] + [len(str(row[i])) for row in rows]) for i, h in enumerate(names)]
    total = sum(natural) + GAP * (len(names) - 1)
    columns = [names.index(name) for name in shrink if name in names]
    if total <= width or not columns:
        return [list(map(str, row)) for row in rows]
    budget = width - (total - sum(natural[i] for i in columns))
    limits: dict[int, int] = {}
    # Water-filling: the narrowest shrinkable column takes what it needs up to an equal share.
    ordered = sorted(columns, key=lambda c: natural[c])
    for n, i in enumerate(ordered):
        share = budget // (len(ordered) - n)
        limits[i] = max(len(names[i]) + HEADER_PAD, min(natural[i], share))
        budget -= limits[i]
    return [[_cut(str(cell), limits.get(i)) for i, cell in enumerate(row)] for row in rows]


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def echo_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, shrink: Sequence[str] = (), wide: bool = True
) -> None:
    """Print a table; unless ``wide``, cut the ``shrink`` columns to fit ``WIDTH`` columns."""
    cells = [[str(cell) for cell in row] for row in rows]
    if not wide:
        cells = fit(headers, cells, shrink)
    if len(cells) >= FAST_TABLE_ROWS and _plain(headers, cells):
        click.echo(simple_table(headers, cells))
        return
    from tabulate import tabulate

    click.echo(tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True))


# From this many rows a table is drawn by simple_table: tabulate takes ~60 us a row (2 s for a
# year of 15-minute windows), most of it guessing types we told it not to use.
FAST_TABLE_ROWS = 500


def _plain(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> bool:
    """Cells that tabulate would draw as they are: one line, printable ASCII, no edge spaces."""
    for row in (headers, *cells):
        for cell in row:
            if not (cell.isascii() and cell.isprintable()) or cell != cell.strip():
                return False
    return True


def simple_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """tabulate's ``simple`` format (strings left-aligned), character for character, for
    single-line ASCII cells (``_plain``); the other tables go to tabulate."""
    widths = [max([len(h) + HEADER_PAD] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    gap = " " * GAP

    def line(row: Sequence[str]) -> str:
        # tabulate ends a line at its last character: the last columns' padding is dropped.
        return gap.join([cell.ljust(widths[i]) for i, cell in enumerate(row)]).rstrip()

    lines = [line(headers), gap.join("-" * width for width in widths)]
    lines.extend(line(row) for row in cells)
    return "\n".join(lines)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def exit_with(code: ExitCode | int) -> None:
    """End a command with a non-zero exit code that is not an error message (4: blocked...)."""
    if int(code) != 0:
        raise click.exceptions.Exit(int(code))
