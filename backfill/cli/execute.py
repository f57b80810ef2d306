"""``backfill run ID`` and ``backfill stop ID [--cancel-run]`` (spec §7, §9).

Thin: each calls one service (``services.run.execute_backfill``, ``stop_backfill``) and
prints its answer; the services raise the errors whose exit codes the spec gives (3 awaiting
approval or the canary pause, 1 refused or failed, 4 windows blocked or needing an operator).
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
    from backfill.identity import resolve_actor
    from backfill.services.run import execute_backfill

    # A caller embedding the CLI may hand a step hook in the context object (the crash harness's
    # tests/crash_runner.py does); the installed ``backfill`` never does.
    obj = click.get_current_context().obj
    outcome = execute_backfill(
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
    from backfill.backfills import BackfillStatus
    from backfill.identity import resolve_actor
    from backfill.services.run import stop_backfill

    done = stop_backfill(backfill_id, actor=resolve_actor(), cancel_run=cancel_run)
    if done.status is BackfillStatus.PAUSED:
        click.echo(f"stopped {backfill_id} at its canary pause")
    elif done.ended:
        click.echo(f"{backfill_id} is {done.status.value}; cancelling the runs it left in flight")
    else:
        click.echo(f"stop requested for {backfill_id}: the runner stops after the windows in flight")
    if not done.cancel_run:
        return
    if not done.cancelled:
        click.echo("no run in flight to cancel")
    for key, run_id in done.cancelled:
        click.echo(f"cancel requested for run {run_id} ({key})")
