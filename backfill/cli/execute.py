"""``backfill run ID`` and ``backfill stop ID [--cancel-run]`` (spec §7, §9).

Thin: each opens the ledger database, calls one function of ``backfill.execution`` and prints
its answer; the library raises the errors whose exit codes the spec gives (3 awaiting approval or
the canary pause, 1 refused or failed, 4 windows blocked or needing an operator).
"""

from __future__ import annotations

import click


@click.command()
@click.argument("backfill_id", metavar="ID")
@click.option("--resume", is_flag=True, help="Go on with a stopped backfill (recorded in the ledger, with who).")
def run(backfill_id: str, resume: bool) -> None:
    """Execute approved backfill ID, or pick it up where it was left (after a crash or a failure).

    A stopped backfill stays stopped until --resume. Prints a progress line per window event to
    stderr (done, running, left, estimated finish).
    """
    from backfill.execution import execute_backfill
    from backfill.identity import resolve_actor
    from backfill.store.database import Database

    # A caller embedding the CLI may hand a step hook in the context object (the crash harness's
    # tests/crash_runner.py does); the installed ``backfill`` never does.
    obj = click.get_current_context().obj
    outcome = execute_backfill(
        Database(),
        backfill_id,
        actor=resolve_actor(),
        progress=lambda line: click.echo(line, err=True),
        resume=resume,
        hook=obj.get("step_hook") if isinstance(obj, dict) else None,
    )
    click.echo(outcome.message)


@click.command()
@click.argument("backfill_id", metavar="ID")
@click.option("--cancel-run", is_flag=True, help="Also cancel the ADF runs in flight.")
def stop(backfill_id: str, cancel_run: bool) -> None:
    """Stop backfill ID after the windows in flight (--cancel-run: cancel their runs too)."""
    from backfill.execution import request_stop
    from backfill.identity import resolve_actor
    from backfill.store.database import Database

    for line in request_stop(Database(), backfill_id, actor=resolve_actor(), cancel_run=cancel_run):
        click.echo(line)
