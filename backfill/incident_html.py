"""The incident record as one self-contained HTML page: inline CSS, no script, no external asset.

Every value goes through ``html.escape``: reasons, ADF error messages and parameters are free text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backfill.incident import Incident
from backfill.pages import escaped as _e
from backfill.pages import table
from backfill.runs_query import JudgedRun
from backfill.timeutil import format_duration, format_utc

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f23;max-width:80rem}"
    "h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #d0d7de}"
    "table{border-collapse:collapse;font-size:.85rem}th,td{border:1px solid #d0d7de;padding:.25rem .5rem;"
    "text-align:left;vertical-align:top}th{background:#f6f8fa}.mono{font-family:ui-monospace,monospace}"
    ".outcome{font-weight:600;padding:.6rem .9rem;border-radius:6px}.good{background:#dafbe1;color:#116329}"
    ".open{background:#fff8c5;color:#6c4a00}.outlier{color:#cf222e;font-weight:600}"
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return table(headers, [[_e(c) for c in row] for row in rows], none="<p>(none)</p>")


def _ms(value: int | None) -> str:
    from datetime import timedelta

    return format_duration(timedelta(milliseconds=value)) if value is not None else ""


def _run_rows(runs: Sequence[JudgedRun]) -> list[list[Any]]:
    return [
        [
            j.run.run_id,
            j.run.status_label,
            format_utc(j.run.start),
            format_utc(j.run.end),
            _ms(j.verdict.elapsed_ms) + (" (outlier)" if j.verdict.outlier else ""),
            j.run.invoked_by,
        ]
        for j in runs
    ]


def render_incident(incident: Incident) -> str:
    run, verdict = incident.run, incident.subject.verdict
    state = "resolved" if incident.resolved else "not resolved"
    tone = "good" if incident.resolved else "open"
    replacement = incident.replacement
    outcome = f"Incident {state}" + (
        f": replaced by {replacement.run.run_id} ({replacement.run.status_label})"
        if replacement
        else ": no follow-up run"
    )
    usual = verdict.usual.describe() if verdict.usual else "none (fewer than 5 succeeded runs in 30 days)"
    facts = [
        ("run ID", run.run_id),
        ("pipeline", run.pipeline),
        ("status", run.status_label),
        ("start", format_utc(run.start)),
        ("end", format_utc(run.end)),
        ("duration", _ms(verdict.elapsed_ms) + (" (outlier)" if verdict.outlier else "")),
        ("usual duration", usual),
        ("invoked by", run.invoked_by),
        ("window (matched on)", ", ".join(incident.match_fields)),
    ]
    stuck = incident.stuck
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Incident record: run {_e(run.run_id)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Incident record: run <span class=mono>{_e(run.run_id)}</span></h1>",
        f'<p class="outcome {tone}">{_e(outcome)}</p>',
        "<h2>The run</h2>",
        _table(["field", "value"], facts),
        "<h2>Parameters</h2>",
        _table(["parameter", "value"], [[k, v] for k, v in run.parameters.items()]),
        "<h2>Activity runs</h2>",
        _table(
            ["activity", "type", "status", "start", "end", "error"],
            [
                [
                    a.name,
                    a.type,
                    a.status,
                    format_utc(a.start),
                    format_utc(a.end),
                    f"{a.error_code} {a.message}".strip(),
                ]
                for a in incident.activities
            ],
        ),
    ]
    if stuck is not None:
        parts.append(
            f"<p>Stuck or failing activity: <b>{_e(stuck.name)}</b> ({_e(stuck.status)} since "
            f"{_e(format_utc(stuck.start))})</p>"
        )
    parts += [
        "<h2>Cancel requests</h2>",
        _table(
            ["at", "by", "reason", "outcome"],
            [
                [
                    format_utc(c.requested.at),
                    c.requested.actor,
                    c.requested.payload.get("reason"),
                    c.confirmed.payload.get("status") if c.confirmed else "no outcome recorded",
                ]
                for c in incident.cancels
            ],
        ),
        "<h2>Follow-up runs of the same window</h2>",
        _table(["run ID", "status", "start", "end", "duration", "invoked by"], _run_rows(incident.follow_up)),
        "<h2>Ledger events naming these runs</h2>",
        _table(
            ["seq", "at", "kind", "actor", "backfill", "window"],
            [
                [e.seq, format_utc(e.at), e.kind, f"{e.actor} ({e.identity_source})", e.backfill_id, e.window_key]
                for e in incident.ledger_events
            ],
        ),
        f"<p>Recorded {_e(format_utc(incident.now))}. All times UTC.</p></body></html>",
    ]
    return "\n".join(parts)
