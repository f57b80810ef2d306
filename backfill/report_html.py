"""The evidence report as one self-contained HTML page: inline CSS, no script, no external asset.

Every value is passed through ``html.escape`` (quotes included), because notes, reasons and ADF
error messages are free text that anyone with access to a pipeline or the CLI could have written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from backfill.report import decided_text, format_seconds, ledger_text, summary_text

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1f23;max-width:90rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.none{color:#57606a}
"""
_GOOD = frozenset({"completed", "approved", "Succeeded", "succeeded", "run", "rerun"})
_BAD = frozenset({"failed", "rejected", "expired", "Failed", "Cancelled", "cancelled", "needs-operator", "blocked"})


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _status(value: Any) -> str:
    text = "" if value is None else str(value)
    tone = "ok" if text in _GOOD else "bad" if text in _BAD or text.startswith("blocked") else ""
    return f'<span class="{tone}">{_e(text)}</span>' if tone else _e(text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` hold HTML that the caller has already escaped."""
    if not rows:
        return '<p class="none">(none)</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    header = _dl([
        ("ID", _mono(b["id"])), ("Ticket", _e(b["ticket"])), ("State", _status(b["state"])),
        ("Plan", _mono(b["plan_path"])), ("Plan hash", _mono(b["plan_hash"])),
        ("Pipeline", f"{_e(b['pipeline'])} in {_mono(b['factory'])}"),
        ("Requested", _e(requested + (f": {b['note']}" if b["note"] else ""))),
        ("Expires", _e(b["expires_at"])), ("Started", _e(b["started_at"])), ("Finished", _e(b["finished_at"])),
        ("Report generated", _e(report["generated_at"])),
    ])
    verdict = f'<span class="{"ok" if ledger["ok"] else "bad"}">{_e(ledger_text(ledger))}</span>'
    span = f" (seq {ledger['first_seq']}-{ledger['last_seq']})" if ledger["first_seq"] is not None else ""
    ledger_html = _dl([("Chain", verdict), ("This backfill", _e(f"{ledger['backfill_events']} events{span}"))])
    approvals_html = _table(
        ["Actor", "Source", "At", "Note"],
        [[_e(a["actor"]), _e(a["source"]), _e(a["at"]), _e(a["note"])] for a in approvals["given"]],
    )
    if approvals["rejection"]:
        approvals_html += f'<p class="bad">Rejected by {_e(decided_text(approvals["rejection"]))}</p>'
    gates_html = _dl([
        ("Canary windows", _e(canary["windows"])), ("Canary pause", _e(canary["paused_at"])),
        ("Canary approved by", _e(decided_text(canary["approval"]))),
        ("Stop requested", "yes" if gates["stop_requested"] else ""),
    ]) + "<h3>Accepted partial windows</h3>" + _table(
        ["Window", "Actor", "Source", "At", "Note"],
        [[_mono(a["key"]), _e(a["actor"]), _e(a["source"]), _e(a["at"]), _e(a["note"])]
         for a in gates["accepted_windows"]],
    )
    decisions_html = _dl([
        ("Summary", _e(summary_text(decisions["summary"]))), ("History horizon", _e(decisions["history_horizon"])),
    ]) + _table(
        ["Window", "Decision", "State", "Reason"],
        [[_mono(w["key"]), _status(w["decision"]), _status(w["state"]), _e(w["reason"])]
         for w in decisions["windows"]],
    )
    runs_html = _table(
        ["Window", "Attempt", "Run ID", "Status", "Duration", "Failing activity", "Error"],
        [[_mono(r["window"]), _e(r["attempt"]), _mono(r["run_id"]), _status(r["status"]),
          _e(format_seconds(r["duration_seconds"])), _e(r["failed_activity"]), _e(r["error"])]
         for r in report["runs"]],
    )
    timeline_html = _table(
        ["Seq", "At", "Actor", "Kind", "Window", "Summary", "Hash"],
        [[_e(t["seq"]), _e(t["at"]), _e(f"{t['actor']} ({t['source']})"), _mono(t["kind"]), _mono(t["window"]),
          _e(t["summary"]), f'<span class="mono" title="{_e(t["hash"])}">{_e(t["hash"][:12])}</span>']
         for t in report["timeline"]],
    )
    title = f"Backfill {b['id']}: {b['title']}"
    sections = [
        ("Ledger", ledger_html),
        (f"Approvals ({len(approvals['given'])} of {approvals['required']} required)", approvals_html),
        ("Gates", gates_html), ("Decisions (frozen at request)", decisions_html), ("Runs", runs_html),
        ("Timeline", timeline_html),
    ]
    body = "".join(f"<section><h2>{_e(name)}</h2>{content}</section>" for name, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_e(title)}</h1>{header}{body}</body></html>\n"
    )
