"""Shared output helpers: tables with tabulate, stable JSON, and exit codes from commands."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

from backfill.errors import ExitCode


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from tabulate import tabulate

    click.echo(tabulate(list(rows), headers=list(headers), tablefmt="simple", disable_numparse=True))


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def exit_with(code: ExitCode | int) -> None:
    """End a command with a non-zero exit code that is not an error message (4: blocked...)."""
    if int(code) != 0:
        raise click.exceptions.Exit(int(code))
