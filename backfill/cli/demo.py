"""``backfill demo [--keep DIR] [--fast] [--step preview|request|all]``: the whole story on the emulator."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Keep the demo's folder (plan, ledger, sink) here, to try commands afterwards.",
)
@click.option("--fast", is_flag=True, help="Run the emulated factory at full speed (for tests).")
@click.option(
    "--step",
    "stop_after",
    type=click.Choice(["preview", "request", "all"]),
    default="all",
    show_default=True,
    help="Stop after this step.",
)
def demo(keep: Path | None, fast: bool, stop_after: str) -> None:
    """Tell the whole story on an in-process ADF emulator, in a temporary folder.

    Previews the demo plan, requests and approves a backfill as two people, runs it through its
    canary pause, and verifies the ledger, printing every command with its real output. Needs no
    Azure account. Exits 0 when every step ended as the story expects, 1 otherwise."""
    from backfill.cli.demo_story import DemoOptions, run_demo

    run_demo(DemoOptions(keep=keep, fast=fast, stop_after=stop_after))
