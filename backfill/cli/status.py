"""``backfill status [ID] [--json]``: every backfill, or one backfill's approvals and windows.

The JSON shape is documented in docs/status-json.md and kept stable.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from backfill import progress as pg
from backfill.backfills import FINISHED, BackfillRecord, BackfillState, BackfillStatus, Decided
from backfill.cli.output import echo_json, echo_table, short_id
from backfill.progress import Progress, summarize, window_duration
from backfill.services import status as service
from backfill.timeutil import format_duration, format_utc, utcnow

SCHEMA_VERSION = 1


def _decided(item: Decided | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"actor": item.actor, "source": item.source, "at": format_utc(item.at), "note": item.note}


def _progress(record: BackfillRecord, state: BackfillState, now: datetime) -> Progress:
    # Here, not at the top: the approval gates are the only thing of theirs ``status`` needs.
    from backfill.approvals import approved_keys

    return summarize((state.windows[k] for k in approved_keys(record, state)), now, state.concurrency)


@click.command()
@click.argument("backfill_id", metavar="[ID]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output (docs/status-json.md).")
@click.option("--wide", is_flag=True, help="Whole run IDs, however wide the table gets.")
def status(backfill_id: str | None, as_json: bool, wide: bool) -> None:
    """Every backfill, or backfill ID's state, approvals and windows with progress."""
    now = utcnow()
    if backfill_id is None:
        _list(service.list_backfills(now=now), now, as_json)
        return
    # The text view says whether a runner is alive; the stable JSON does not.
    view = service.backfill_status(backfill_id, now=now, liveness=not as_json)
    if as_json:
        echo_json(detail_json(view.record, view.state, now))
    else:
        _show(view.record, view.state, now, wide=wide, last_seen=view.last_seen, alive=view.alive)


def _list(backfills: list[service.BackfillView], now: datetime, as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    for view in backfills:
        record, state = view.record, view.state
        progress = _progress(record, state, now)
        rows.append(
            {
                "id": record.id,
                "title": record.title,
                "pipeline": record.pipeline,
                "factory": record.factory_key,
                "state": state.status.value,
                "requested_by": {"name": record.requester, "source": record.requester_source},
                "requested_at": format_utc(record.requested_at),
                "windows_done": progress.done,
                "windows_total": progress.total,
            }
        )
    if as_json:
        echo_json({"schema": SCHEMA_VERSION, "backfills": rows})
        return
    if not rows:
        click.echo("no backfills yet (backfill request PLAN creates one)")
        return
    echo_table(
        ["id", "pipeline", "state", "requested by", "requested at", "windows"],
        [
            [
                r["id"],
                r["pipeline"],
                r["state"],
                r["requested_by"]["name"],
                r["requested_at"],
                f"{r['windows_done']}/{r['windows_total']}",
            ]
            for r in rows
        ],
    )


def detail_json(record: BackfillRecord, state: BackfillState, now: datetime) -> dict[str, Any]:
    """The stable JSON of one backfill (docs/status-json.md)."""
    windows = []
    for key, w in state.windows.items():
        duration = window_duration(w, now)
        windows.append(
            {
                "key": key,
                "decision": w["decision"],
                "state": w["state"],
                "run_id": w["run_id"],
                "status": w["status"],
                "attempts": w["attempts"],
                "accepted": w["accepted"],
                "cancel_requested": w["cancel_requested"],
                "started_at": format_utc(w["started_at"]) or None,
                "finished_at": format_utc(w["finished_at"]) or None,
                "duration_seconds": duration.total_seconds() if duration is not None else None,
                "reason": w["reason"],
            }
        )
    return {
        "schema": SCHEMA_VERSION,
        "id": record.id,
        "title": record.title,
        "ticket": record.ticket,
        "pipeline": record.pipeline,
        "factory": record.factory_key,
        "plan_path": record.plan_path,
        "plan_hash": record.plan_hash,
        "state": state.status.value,
        "requested_by": {"name": record.requester, "source": record.requester_source},
        "requested_at": format_utc(record.requested_at),
        "note": record.note,
        "policy": record.policy.to_json(),
        "approvals": [_decided(a) for a in state.approval_events],
        "approvals_required": state.required,
        "expires_at": format_utc(state.expires_at) or None,
        "rejection": _decided(state.rejection),
        "canary": {
            "windows": record.policy.canary,
            "paused": state.canary_paused,
            "approved": state.canary_approved,
            "approval": _decided(state.canary_approval),
        },
        "accepted_windows": [{"key": k, **(_decided(d) or {})} for k, d in sorted(state.acceptances.items())],
        "stop_requested": state.stop_requested,
        "started_at": format_utc(state.started_at) or None,
        "finished_at": format_utc(state.finished_at) or None,
        "progress": _progress(record, state, now).to_json(),
        "windows": windows,
    }


def _show(
    record: BackfillRecord,
    state: BackfillState,
    now: datetime,
    *,
    wide: bool = False,
    last_seen: datetime | None = None,
    alive: bool = False,
) -> None:
    policy = record.policy
    click.echo(f"{record.id}: {state.status.value}")
    click.echo(f"{record.title} ({record.ticket})" if record.ticket else record.title)
    click.echo(f"pipeline {record.pipeline} in {record.factory_key}; plan {record.plan_path} ({record.plan_hash[:12]})")
    requested = f"requested by {record.requester} ({record.requester_source}) at {format_utc(record.requested_at)}"
    click.echo(requested + (f": {record.note}" if record.note else ""))
    given = ", ".join(f"{a.actor} ({a.source}) at {format_utc(a.at)}" for a in state.approval_events) or "none"
    click.echo(f"approvals ({len(state.approvals)} of {state.required}): {given}")
    if state.expires_at is not None:
        deadline, waited = format_utc(state.expires_at), format_duration(policy.expires)
        if state.status is BackfillStatus.REQUESTED:
            click.echo(f"approve by {deadline} (requests expire {waited} after the request)")
        elif state.status is BackfillStatus.APPROVED:
            click.echo(f"start by {deadline} (approvals expire {waited} after the approval)")
        else:
            click.echo(f"expired at {deadline}")
    if state.rejection is not None:
        r = state.rejection
        click.echo(f"rejected by {r.actor} ({r.source}) at {format_utc(r.at)}: {r.note}")
    if policy.canary:
        if state.canary_approval is not None:
            canary = f"approved by {state.canary_approval.actor} at {format_utc(state.canary_approval.at)}"
        else:
            canary = "paused, awaiting approval" if state.canary_paused else "not reached"
        click.echo(f"canary ({policy.canary} window{'s' if policy.canary > 1 else ''}): {canary}")
    for key, a in sorted(state.acceptances.items()):
        click.echo(f"accepted {key}: by {a.actor} at {format_utc(a.at)}: {a.note}")
    if state.stop_requested:
        if state.status in FINISHED:
            click.echo(f"stopped: backfill run {record.id} --resume goes on")
        else:
            click.echo("stop requested: stops after the window in flight")
    rows = []
    for key, w in state.windows.items():
        run_id = w["run_id"] or ""
        rows.append(
            [
                key,
                w["decision"],
                w["state"],
                run_id if wide else short_id(run_id),
                _status_cell(w),
                format_duration(window_duration(w, now)),
            ]
        )
    echo_table(["window", "decision", "state", "run id", "status", "duration"], rows, wide=wide)
    for key, w in state.windows.items():
        if w["state"] == pg.WindowState.NEEDS_OPERATOR:
            click.echo(f"needs an operator: {key}: {w['reason'] or 'no reason recorded'}")
    click.echo(_progress_line(_progress(record, state, now), state, now, last_seen, alive=alive))


def _status_cell(window: pg.WindowProgress) -> str:
    """ADF's last status seen; for a window in flight whose status nobody read yet, say so."""
    if window["status"]:
        return window["status"]
    if window["state"] == pg.WindowState.RUNNING:
        return "not read yet"
    if window["state"] == pg.WindowState.INTENT:
        return "no run ID yet"
    return ""


# A running backfill with no live claim and nothing recorded for this long has no runner.
RUNNER_SILENCE = timedelta(minutes=1)


def _progress_line(
    progress: Progress,
    state: BackfillState | None = None,
    now: datetime | None = None,
    last_seen: datetime | None = None,
    *,
    alive: bool = False,
) -> str:
    line = (
        f"progress: {progress.done} done, {progress.running} running, {progress.left} left, "
        f"{progress.failed} failed of {progress.total}"
    )
    if not (progress.running or progress.left):
        return line
    status = state.status if state is not None else BackfillStatus.RUNNING
    if status in FINISHED:
        # A failed or stopped backfill finishes nothing by itself: no estimate to give.
        why = {BackfillStatus.FAILED: "it failed", BackfillStatus.STOPPED: "it was stopped"}.get(status, "it ended")
        return line + f"; no estimated finish: {why} (backfill run ID --resume goes on)"
    if status is not BackfillStatus.RUNNING:
        return line
    if now is not None and last_seen is not None and not alive:
        silent = now - last_seen
        if silent >= RUNNER_SILENCE:
            return line + (
                f"; runner not seen since {format_utc(last_seen)} ({format_duration(silent)} ago): "
                "if it died, backfill run ID resumes (runbooks/after-a-crash.md)"
            )
    if progress.estimated_finish is not None and progress.average is not None:
        line += (
            f"; estimated finish {format_utc(max(progress.estimated_finish, now or progress.estimated_finish))} "
            f"(average {format_duration(progress.average)} a window)"
        )
    elif progress.failed:
        line += "; no estimated finish yet: no window has succeeded"
    else:
        line += "; estimated finish: after the first window succeeds"
    return line
