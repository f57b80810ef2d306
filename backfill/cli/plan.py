"""``backfill plan check PLAN [--json]`` and ``backfill plan schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from backfill.cli.output import echo_json, echo_table
from backfill.plan.loader import LoadedPlan, canonical_json
from backfill.services import plans
from backfill.timeutil import format_utc
from backfill.windows import Window


@click.group("plan")
def plan() -> None:
    """Check a plan and print its windows, or the plan schema."""


@plan.command("check")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the plan and its windows as JSON.")
@click.option("--env", "check_env", is_flag=True, help="Also refuse when a ${VAR} the plan needs is not set.")
def check(path: Path, as_json: bool, check_env: bool) -> None:
    """Validate PLAN and print its windows with their rendered parameters (secrets redacted).

    Everything knowable from the file is checked, the checks' definitions included (their kinds,
    options, statements and placeholders), as ``preview`` would check them."""
    loaded = plans.check_plan(path, check_env=check_env)
    if as_json:
        echo_json(check_json(loaded))
        return
    target = loaded.plan.target
    click.echo(f"plan: {loaded.path}")
    click.echo(f"title: {loaded.plan.title}")
    click.echo(f"target: {target.factory}/{target.pipeline} (resource group {target.resource_group})")
    click.echo(f"hash: {loaded.hash}")
    click.echo(f"match on: {', '.join(loaded.match_on) or '(nothing)'}")
    checks = ", ".join(f"{spec.name} ({spec.kind})" for spec in loaded.check_specs)
    click.echo(f"checks: {checks or '(none)'}")
    click.echo(f"windows: {len(loaded.windows)}")
    if loaded.relative and loaded.windows and loaded.resolved_at is not None:
        written = ", ".join(f'{key.split(".")[1]} "{text}"' for key, text in loaded.relative.items())
        click.echo(
            f"relative to now ({format_utc(loaded.resolved_at)}): {written}, resolved to "
            f"{format_utc(loaded.windows[0].start)} to {format_utc(loaded.windows[-1].end)}; "
            "request freezes them"
        )
    names = list(loaded.plan.parameters)
    echo_table(["key", "start", "end", *names], (_row(window, names) for window in loaded.windows))


@plan.command("schema")
def schema() -> None:
    """Print the JSON Schema of plan files (for editors)."""
    echo_json(plans.plan_schema())


def check_json(loaded: LoadedPlan) -> dict[str, Any]:
    """The stable ``plan check --json`` document: the canonical plan, its hash and its windows."""
    return {
        "path": str(loaded.path),
        "hash": loaded.hash,
        "plan": json.loads(canonical_json(loaded.plan)),
        "match_on": list(loaded.match_on),
        "window_count": len(loaded.windows),
        **(
            {"relative": dict(loaded.relative), "resolved_at": format_utc(loaded.resolved_at)}
            if loaded.relative and loaded.resolved_at is not None
            else {}
        ),
        "windows": [
            {
                "key": window.key,
                "start": format_utc(window.start),
                "end": format_utc(window.end),
                "parameters": window.public_parameters(),
            }
            for window in loaded.windows
        ],
    }


def _row(window: Window, names: list[str]) -> list[str]:
    public = window.public_parameters()
    cells = [value if isinstance(value, str) else json.dumps(value) for value in (public[n] for n in names)]
    return [window.key, format_utc(window.start), format_utc(window.end), *cells]
