"""The evidence report as Markdown, for the terminal (``backfill report``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from backfill.decisions import Decision
from backfill.report.build import with_note
from backfill.timeutil import format_duration


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    # One line per row, and a literal | must not open a new column of the Markdown table.
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    from tabulate import tabulate

    if not rows:
        return ["(none)"]
    cells = [[_cell(v) for v in row] for row in rows]
    return str(tabulate(cells, headers=list(headers), tablefmt="github", disable_numparse=True)).splitlines()


def format_seconds(seconds: float | None) -> str:
    """``12.3s``, ``45m``, ``1h05m``; empty when unknown."""
    return format_duration(timedelta(seconds=seconds)) if seconds is not None else ""


def decided_text(item: Mapping[str, Any] | None) -> str:
    """``bob (os) at 2026-11-25T09:00:00Z: note``."""
    if not item:
        return ""
    return with_note(f"{item['actor']} ({item['source']}) at {item['at']}", item.get("note"))


def ledger_text(ledger: Mapping[str, Any]) -> str:
    """The verification verdict in one line."""
    if ledger["ok"]:
        return f"ok: {ledger['events_verified']} events verified, checkpoint {ledger['checkpoint']}"
    bad = ledger["first_bad"] or {}
    where = " (an event of this backfill)" if bad.get("in_this_backfill") else ""
    return f"FAILED: {ledger['message']}{where}"


def summary_text(summary: Mapping[str, Any]) -> str:
    """``2 run, 1 blocked-partial``: most frequent first, ties in the decision table's order."""
    order = {d.value: i for i, d in enumerate(Decision)}
    counts = sorted(((n, name) for name, n in summary.items() if n), key=lambda c: (-c[0], order.get(c[1], 99)))
    return ", ".join(f"{n} {name}" for n, name in counts) or "no windows"


def render_text(report: Mapping[str, Any]) -> str:
    """The report as Markdown, for the terminal."""
    b, ledger, approvals, gates = report["backfill"], report["ledger"], report["approvals"], report["gates"]
    decisions = report["decisions"]
    requested = f"by {b['requested_by']['name']} ({b['requested_by']['source']}) at {b['requested_at']}"
    header = [
        ("ticket", b["ticket"]),
        ("state", b["state"]),
        ("plan", b["plan_path"]),
        ("plan hash", b["plan_hash"]),
        ("pipeline", f"{b['pipeline']} in {b['factory']}"),
        ("requested", with_note(requested, b["note"])),
        ("expires", b["expires_at"]),
        ("started", b["started_at"]),
        ("finished", b["finished_at"]),
        ("report generated", report["generated_at"]),
    ]
    lines = [f"# Backfill {b['id']}: {_cell(b['title'])}", ""]
    if b.get("outcome"):
        lines += [f"**{_cell(b['outcome'])}**", ""]
    lines += [f"- {name}: {_cell(value)}" for name, value in header if value]
    span = f" (seq {ledger['first_seq']}-{ledger['last_seq']})" if ledger["first_seq"] is not None else ""
    lines += [
        "",
        "## Ledger",
        "",
        f"- chain: {ledger_text(ledger)}",
        f"- this backfill: {ledger['backfill_events']} events{span}",
    ]
    lines += ["", f"## Approvals ({len(approvals['given'])} of {approvals['required']} required)", ""]
    lines += _table(
        ["actor", "source", "at", "note"], [[a["actor"], a["source"], a["at"], a["note"]] for a in approvals["given"]]
    )
    if approvals["rejection"]:
        lines += ["", f"- rejected by {_cell(decided_text(approvals['rejection']))}"]
    canary = gates["canary"]
    lines += ["", "## Gates", "", f"- canary windows: {canary['windows']}"]
    if canary["paused_at"]:
        lines.append(f"- canary pause: {canary['paused_at']}")
    if canary["approval"]:
        lines.append(f"- canary approved by {_cell(decided_text(canary['approval']))}")
    if gates["stop_requested"]:
        lines.append("- stop requested")
    lines += ["", "Accepted partial windows:", ""]
    lines += _table(
        ["window", "actor", "source", "at", "note"],
        [[a["key"], a["actor"], a["source"], a["at"], a["note"]] for a in gates["accepted_windows"]],
    )
    lines += ["", "## Decisions (frozen at request)", "", f"- {summary_text(decisions['summary'])}"]
    if decisions["history_horizon"]:
        lines.append(f"- history horizon: {decisions['history_horizon']}")
    lines.append("")
    lines += _table(
        ["window", "decision", "state", "reason"],
        [[w["key"], w["decision"], w["state"], w["reason"]] for w in decisions["windows"]],
    )
    lines += ["", "## Runs", ""]
    lines += _table(
        ["window", "attempt", "run id", "status", "duration", "failing activity", "error"],
        [
            [
                r["window"],
                r["attempt"],
                r["run_id"],
                r["status"],
                format_seconds(r["duration_seconds"]),
                r["failed_activity"],
                r["error"],
            ]
            for r in report["runs"]
        ],
    )
    lines += ["", "## Timeline", ""]
    lines += _table(
        ["seq", "at", "actor", "kind", "window", "summary"],
        [
            [t["seq"], t["at"], f"{t['actor']} ({t['source']})", t["kind"], t["window"], t["summary"]]
            for t in report["timeline"]
        ],
    )
    return "\n".join(lines) + "\n"
