"""The evidence report as one self-contained HTML page: inline CSS, no script, no external asset.

Every value is passed through ``html.escape`` (quotes included), because notes, reasons and ADF
error messages are free text that anyone with access to a pipeline or the CLI could have written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from backfill.backfills import BackfillStatus
from backfill.decisions import Decision
from backfill.factory.run import RunStatus
from backfill.pages import escaped as _e
from backfill.pages import table as _table
from backfill.progress import WindowState
from backfill.report.text import decided_text, format_seconds, ledger_text, summary_text
from backfill.timeutil import format_utc, parse_utc

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1f23;max-width:90rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.none{color:#57606a}
.outcome{font-size:1.2rem;font-weight:600;padding:.6rem .9rem;border-radius:6px;margin:1rem 0}
.outcome.good{background:#dafbe1;color:#116329}.outcome.poor{background:#ffebe9;color:#a40e26}
.outcome.open{background:#fff8c5;color:#6c4a00}
svg.timeline{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;max-width:100%;height:auto}
"""
# Bar colours by ADF status (GitHub's palette): green done, red failed, grey cancelled, amber in flight.
_BAR = {
    RunStatus.SUCCEEDED: "#2da44e",
    RunStatus.FAILED: "#cf222e",
    RunStatus.CANCELLED: "#8c959f",
    "Canceled": "#8c959f",  # the spelling some ADF documents use
}
_IN_FLIGHT = "#d4a72c"
# Tones of the values the page shows: backfill states, ADF run statuses, window states, decisions.
_GOOD: frozenset[str] = frozenset(
    {
        BackfillStatus.COMPLETED,
        BackfillStatus.APPROVED,
        RunStatus.SUCCEEDED,
        WindowState.SUCCEEDED,
        Decision.RUN,
        Decision.RERUN,
    }
)
_BAD: frozenset[str] = frozenset(
    {
        BackfillStatus.FAILED,
        BackfillStatus.REJECTED,
        BackfillStatus.EXPIRED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        WindowState.CANCELLED,
        WindowState.NEEDS_OPERATOR,
        WindowState.BLOCKED,
    }
)


def _status(value: Any) -> str:
    text = "" if value is None else str(value)
    tone = "ok" if text in _GOOD else "bad" if text in _BAD or text.startswith("blocked") else ""
    return f'<span class="{tone}">{_e(text)}</span>' if tone else _e(text)


def _dl(items: Sequence[tuple[str, str]]) -> str:
    """``items`` are (label, already escaped HTML)."""
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items if v) + "</dl>"


def _mono(value: Any) -> str:
    return f'<span class="mono">{_e(value)}</span>' if value not in (None, "") else ""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as an HTML5 document."""
    b, ledger, approvals, gates = report["backfill"], report["ledger"], report["approvals"], report["gates"]
    decisions, canary = report["decisions"], report["gates"]["canary"]
    requested = f"by {b['requested_by']['name']} ({b['requested_by']['source']}) at {b['requested_at']}"
    header = _dl(
        [
            ("ID", _mono(b["id"])),
            ("Ticket", _e(b["ticket"])),
            ("State", _status(b["state"])),
            ("Plan", _mono(b["plan_path"])),
            ("Plan hash", _mono(b["plan_hash"])),
            ("Pipeline", f"{_e(b['pipeline'])} in {_mono(b['factory'])}"),
            ("Requested", _e(requested + (f": {b['note']}" if b["note"] else ""))),
            ("Expires", _e(b["expires_at"])),
            ("Started", _e(b["started_at"])),
            ("Finished", _e(b["finished_at"])),
            ("Report generated", _e(report["generated_at"])),
        ]
    )
    verdict = f'<span class="{"ok" if ledger["ok"] else "bad"}">{_e(ledger_text(ledger))}</span>'
    span = f" (seq {ledger['first_seq']}-{ledger['last_seq']})" if ledger["first_seq"] is not None else ""
    ledger_html = _dl([("Chain", verdict), ("This backfill", _e(f"{ledger['backfill_events']} events{span}"))])
    approvals_html = _table(
        ["Actor", "Source", "At", "Note"],
        [[_e(a["actor"]), _e(a["source"]), _e(a["at"]), _e(a["note"])] for a in approvals["given"]],
    )
    if approvals["rejection"]:
        approvals_html += f'<p class="bad">Rejected by {_e(decided_text(approvals["rejection"]))}</p>'
    gates_html = (
        _dl(
            [
                ("Canary windows", _e(canary["windows"])),
                ("Canary pause", _e(canary["paused_at"])),
                ("Canary approved by", _e(decided_text(canary["approval"]))),
                ("Stop requested", "yes" if gates["stop_requested"] else ""),
            ]
        )
        + "<h3>Accepted partial windows</h3>"
        + _table(
            ["Window", "Actor", "Source", "At", "Note"],
            [
                [_mono(a["key"]), _e(a["actor"]), _e(a["source"]), _e(a["at"]), _e(a["note"])]
                for a in gates["accepted_windows"]
            ],
        )
    )
    decisions_html = _dl(
        [
            ("Summary", _e(summary_text(decisions["summary"]))),
            ("History horizon", _e(decisions["history_horizon"])),
        ]
    ) + _table(
        ["Window", "Decision", "State", "Reason"],
        [[_mono(w["key"]), _status(w["decision"]), _status(w["state"]), _e(w["reason"])] for w in decisions["windows"]],
    )
    runs_html = _table(
        ["Window", "Attempt", "Run ID", "Status", "Duration", "Failing activity", "Error", "Cancelled by"],
        [
            [
                _mono(r["window"]),
                _e(r["attempt"]),
                _mono(r["run_id"]),
                _status(r["status"]),
                _e(format_seconds(r["duration_seconds"])),
                _e(r["failed_activity"]),
                _e(r["error"]),
                _e(f"{r['cancelled_by']}: {r['cancel_reason']}" if r.get("cancelled_by") else ""),
            ]
            for r in report["runs"]
        ],
    )
    timeline_html = _table(
        ["Seq", "At", "Actor", "Kind", "Window", "Summary", "Hash"],
        [
            [
                _e(t["seq"]),
                _e(t["at"]),
                _e(f"{t['actor']} ({t['source']})"),
                _mono(t["kind"]),
                _mono(t["window"]),
                _e(t["summary"]),
                f'<span class="mono" title="{_e(t["hash"])}">{_e(t["hash"][:12])}</span>',
            ]
            for t in report["timeline"]
        ],
    )
    cancelled_by = {r["run_id"]: r for r in report["runs"] if r.get("cancelled_by")}
    if cancelled_by:
        runs_html += "<h3>Cancelled runs: who and why</h3>" + _table(
            ["Run ID", "Window", "Cancelled by", "Why"],
            [
                [_mono(r["run_id"]), _mono(r["window"]), _e(r["cancelled_by"]), _e(r["cancel_reason"])]
                for r in cancelled_by.values()
            ],
        )
    title = f"Backfill {b['id']}: {b['title']}"
    sections = [
        ("Ledger", ledger_html),
        (f"Approvals ({len(approvals['given'])} of {approvals['required']} required)", approvals_html),
        ("Gates", gates_html),
        ("Decisions (frozen at request)", decisions_html),
        ("Runs", runs_html),
        ("Timeline", timeline_html),
    ]
    body = "".join(f"<section><h2>{_e(name)}</h2>{content}</section>" for name, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_e(title)}</h1>{_outcome(report)}{_timeline_svg(report)}{header}{body}</body></html>\n"
    )


def _outcome(report: Mapping[str, Any]) -> str:
    """The first thing the page says: what came of the backfill."""
    state = report["backfill"]["state"]
    poor = (BackfillStatus.FAILED, BackfillStatus.STOPPED, BackfillStatus.REJECTED, BackfillStatus.EXPIRED)
    tone = "good" if state == BackfillStatus.COMPLETED else "poor" if state in poor else "open"
    return f'<p class="outcome {tone}" id="outcome">{_e(report["backfill"].get("outcome") or state)}</p>'


def _instant(text: Any) -> datetime | None:
    try:
        return parse_utc(str(text)) if text else None
    except ValueError:
        return None


def _timeline_svg(report: Mapping[str, Any]) -> str:
    """One bar per run on a time axis, coloured by status; the canary pause and the approvals as
    labelled vertical marks. Inline SVG: the page stays one self-contained file."""
    now = _instant(report["generated_at"]) or datetime.now(UTC)
    bars = []
    for run in report["runs"]:
        start = _instant(run["started_at"])
        if start is not None:
            bars.append((run, start, _instant(run["finished_at"]) or now))
    marks: list[tuple[datetime, str, str]] = []
    for approval in report["approvals"]["given"]:
        if (at := _instant(approval["at"])) is not None:
            marks.append((at, f"approved by {approval['actor']}", "#0969da"))
    canary = report["gates"]["canary"]
    if (at := _instant(canary["paused_at"])) is not None:
        marks.append((at, "canary pause", "#bf8700"))
    if canary["approval"] and (at := _instant(canary["approval"]["at"])) is not None:
        marks.append((at, f"canary approved by {canary['approval']['actor']}", "#0969da"))
    if not bars and not marks:
        return '<p class="none" id="timeline">(no runs yet: nothing to draw)</p>'
    moments = [t for _, s, e in bars for t in (s, e)] + [m[0] for m in marks]
    first, last = min(moments), max(moments)
    span = max((last - first).total_seconds(), 1.0)
    left, width, row, top = 150, 760, 18, 34
    height = top + row * len(bars) + 24

    def x(moment: datetime) -> float:
        return left + width * (moment - first).total_seconds() / span

    parts = [
        f'<svg class="timeline" id="timeline" role="img" '
        f'width="{left + width + 20}" height="{height}" viewBox="0 0 {left + width + 20} {height}">',
        "<title>Runs over time: one bar per run, coloured by status</title>",
        f'<rect x="0" y="0" width="{left + width + 20}" height="{height}" fill="#ffffff"/>',
        f'<line x1="{left}" y1="{height - 20}" x2="{left + width}" y2="{height - 20}" stroke="#d0d7de"/>',
        f'<text x="{left}" y="{height - 6}">{_e(format_utc(first))}</text>',
        f'<text x="{left + width}" y="{height - 6}" text-anchor="end">{_e(format_utc(last))}</text>',
    ]
    for index, (run, start, end) in enumerate(bars):
        y = top + index * row
        colour = _BAR.get(str(run["status"]), _IN_FLIGHT)
        label = str(run["window"]).split("/")[0].replace("T", " ").removesuffix("Z")[5:16]
        bar_width = max(x(end) - x(start), 10.0)  # a run of seconds in a day-long story stays visible
        tip = f"{run['window']} run {run['run_id'] or '-'}: {run['status'] or 'in flight'}"
        parts.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{_e(label)}</text>')
        parts.append(
            f'<rect class="run" x="{x(start):.1f}" y="{y + 2}" width="{bar_width:.1f}" height="{row - 5}" '
            f'shape-rendering="crispEdges" fill="{colour}" data-status="{_e(run["status"])}">'
            f"<title>{_e(tip)}</title></rect>"
        )
    for index, (at, text, colour) in enumerate(sorted(marks)):
        mx = x(at)
        parts.append(
            f'<line class="mark" x1="{mx:.1f}" y1="{top - 4}" x2="{mx:.1f}" y2="{height - 20}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="4 3"><title>{_e(text)} at '
            f"{_e(format_utc(at))}</title></line>"
        )
        parts.append(f'<text x="{mx + 3:.1f}" y="{10 + 11 * (index % 2)}" fill="{colour}">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)
