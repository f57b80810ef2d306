"""``backfill preview PLAN [--json] [--no-sync]``: what would happen to every window, and why."""

from __future__ import annotations

import textwrap
from operator import itemgetter
from pathlib import Path

import click

from backfill.cli.output import WIDTH, echo_json, echo_table, echo_text, exit_with, short_id
from backfill.decisions import BLOCKED, Decision
from backfill.errors import ExitCode
from backfill.gcpause import paused_gc
from backfill.preview import Preview, WindowDecision


def echo_preview(result: Preview, *, wide: bool = False) -> None:
    """The table of decisions, the whole reason of each window not plainly skipped, then the
    summary line; ``wide``: whole run IDs and a reason column instead.

    Like ``kubectl get``, the default table leaves out the reason column (``--wide`` adds it): a
    skipped window's reason only repeats its run and status, and the others' follow the table
    whole, so the table fits ``WIDTH`` columns (the checks column is cut if it must be)."""
    headers = ["window", "latest run", "status", "checks", "decision"]
    # Enum members' .value is a Python property: looked up once per decision, not per window.
    names = {decision: decision.value for decision in Decision}
    rows = []
    notable: list[tuple[bool, WindowDecision]] = []
    for item in result.decisions:
        run = item.latest_run
        decision = item.decision
        if run is None:
            row = [item.window.key, "-", "-", item.check_summary(), names[decision]]
        else:
            run_id = run.run_id if wide else short_id(run.run_id)
            row = [item.window.key, run_id, run.status.value, item.check_summary(), names[decision]]
        if wide:
            row.append(item.reason)
        rows.append(row)
        if decision is not Decision.SKIP_SUCCEEDED:
            notable.append((decision not in BLOCKED, item))
    echo_table([*headers, "reason"] if wide else headers, rows, shrink=["checks"], wide=wide)
    if not wide:
        # What a window that is not plainly skipped needs is the point of the preview, so its
        # reason follows whole (wrapped), blocked ones first.
        lines: list[str] = []
        # Windows share a few reasons and their keys have no spaces, so each reason is wrapped
        # once with a stand-in of the key's length, and each window's lines are the two halves
        # around it joined by its key (a year of windows: 60,000 lines).
        halves: dict[tuple[str, str, int], list[str]] = {}
        # sorted() is stable: within blocked and not blocked, the plan's order.
        for _, item in sorted(notable, key=itemgetter(0)):
            key = item.window.key
            shape = (names[item.decision], item.reason, len(key))
            parts = halves.get(shape)
            if parts is None:
                stand_in = _STAND_IN * len(key)
                wrapped = textwrap.wrap(
                    f"{shape[0]} {stand_in}: {item.reason}", WIDTH, initial_indent="  ", subsequent_indent="    "
                )
                parts = halves[shape] = "\n".join(wrapped).split(stand_in)
            if len(parts) == 2:
                lines.append(key.join(parts))
            else:  # the stand-in was broken across lines (a key wider than a line): wrap alone
                lines.extend(
                    textwrap.wrap(
                        f"{shape[0]} {key}: {item.reason}", WIDTH, initial_indent="  ", subsequent_indent="    "
                    )
                )
        if lines:
            echo_text("\n".join(lines))
    click.echo(result.summary_line())


# No reason holds it, and textwrap never breaks on it (a key has no spaces either).
_STAND_IN = "\x00"


@click.command("preview")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output (docs/preview-json.md).")
@click.option("--no-sync", is_flag=True, help="Use the cached history as it is, without asking the factory.")
@click.option("--wide", is_flag=True, help="Whole run IDs and a reason column, however wide the table gets.")
def preview(path: Path, as_json: bool, no_sync: bool, wide: bool) -> None:
    """Decide every window of PLAN from the pipeline's history and the sink checks.

    Syncs the history cache first (a few API calls once it is warm). Exits 4 when any window is
    blocked, 0 otherwise."""
    from backfill.cli.history import describe_sync
    from backfill.services.plans import preview_plan_file

    planned = preview_plan_file(path, sync=not no_sync)
    pipeline = planned.loaded.pipeline
    if planned.synced is not None:
        click.echo(describe_sync(planned.synced, pipeline), err=True)
    if planned.history.synced_at is None:
        click.echo(f"note: the history of {pipeline} was never synced; run without --no-sync", err=True)
    result = planned.preview
    # The output is a few hundred thousand short-lived strings, lists and dicts, no cycles:
    # without the pause, collections of the oldest generation walk the whole preview again.
    with paused_gc():
        if as_json:
            echo_json(result.to_json())
        else:
            echo_preview(result, wide=wide)
    if result.blocked_keys:
        exit_with(ExitCode.BLOCKED)
