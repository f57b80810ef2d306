"""The evidence report of one backfill (spec §9): plan, approvals, gates, decisions, runs, timeline.

``build_report`` turns the frozen request, the backfill's ledger events and the verification of
the whole chain into plain JSON-ready data (its shape: docs/report-json.md); ``render_text`` and
``backfill.report_html.render_html`` present that same data, so the three forms never disagree.
Nothing is re-expanded: payloads were redacted before they were hashed, and the request's note,
the one text read from outside the ledger, is scrubbed the same way here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from backfill import events as ev
from backfill import progress as pg
from backfill.approvals import BackfillRecord, BackfillState, Decided, derive_state, sealed_record
from backfill.chain import LedgerEvent, VerifyReport, format_checkpoint
from backfill.decisions import Decision
from backfill.secrets import redact_payload
from backfill.timeutil import format_duration, format_utc, parse_utc, utcnow

if TYPE_CHECKING:
    from backfill.store.database import Database

SCHEMA_VERSION = 1
SUMMARY_LIMIT = 200


def collect_report(db: Database, backfill_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Read the request and its events, verify the whole ledger chain, and build the report.

    BackfillError (exit 1) for an unknown ID; LedgerInvalid (exit 5) when a row cannot be read.
    """
    from backfill.store.backfills import get_backfill
    from backfill.store.ledger import Ledger

    record = get_backfill(db, backfill_id)
    ledger = Ledger(db)
    events = ledger.events(backfill_id=record.id)
    # The request as the chain records it, not as the mutable row says (spec §15).
    record = sealed_record(record, events)
    return build_report(record, events, ledger.verify(), now or utcnow())


def build_report(
    record: BackfillRecord, events: Sequence[LedgerEvent], verification: VerifyReport, now: datetime
) -> dict[str, Any]:
    """The report as plain data: strings, numbers, booleans, lists and dicts only."""
    state = derive_state(record, events, now)
    canary_paused = [e for e in events if e.kind == ev.CANARY_PAUSED]
    return {
        "schema": SCHEMA_VERSION,
        "generated_at": format_utc(now),
        "backfill": {
            "id": record.id,
            "title": record.title,
            "ticket": record.ticket,
            "plan_path": record.plan_path,
            "plan_hash": record.plan_hash,
            "pipeline": record.pipeline,
            "factory": record.factory_key,
            "requested_by": {"name": record.requester, "source": record.requester_source},
            "requested_at": format_utc(record.requested_at),
            # The backfills row keeps the note as typed; hold it to the ledger's redaction rule.
            "note": redact_payload({"note": record.note})["note"],
            "state": state.status.value,
            "expires_at": format_utc(state.expires_at) or None,
            "started_at": format_utc(state.started_at) or None,
            "finished_at": format_utc(state.finished_at) or None,
            "outcome": outcome_line(record, state, events),
        },
        "ledger": _ledger(verification, events),
        "approvals": {
            "required": state.required,
            "approvers": list(record.policy.approvers),
            "identity": record.policy.identity,
            "given": [_decided(d) for d in state.approval_events],
            "rejection": _decided(state.rejection) if state.rejection else None,
        },
        "gates": {
            "canary": {
                "windows": record.policy.canary,
                "paused_at": format_utc(canary_paused[-1].at) if canary_paused else None,
                "approval": _decided(state.canary_approval) if state.canary_approval else None,
            },
            "accepted_windows": [{"key": k, **_decided(d)} for k, d in sorted(state.acceptances.items())],
            "stop_requested": state.stop_requested,
        },
        "decisions": _decisions(record, {k: w["state"] for k, w in state.windows.items()}),
        "runs": _runs(events),
        "timeline": [_timeline_entry(e) for e in events],
    }


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def outcome_line(record: BackfillRecord, state: BackfillState, events: Sequence[LedgerEvent]) -> str:
    """What came of the backfill in one line: ``Completed: 4 ran and succeeded, 1 partial window
    left blocked, 19 skipped``; a failed or stopped one says why first."""
    windows = state.windows
    by_state: dict[str, int] = {}
    for window in windows.values():
        by_state[window["state"]] = by_state.get(window["state"], 0) + 1
    partial = sum(1 for w in windows.values() if w["state"] == pg.BLOCKED and w["decision"] == "blocked-partial")
    other_blocked = by_state.get(pg.BLOCKED, 0) - partial
    parts = [
        _count(by_state.get(pg.SUCCEEDED, 0), "ran and succeeded", "ran and succeeded"),
        _count(by_state.get(pg.FAILED, 0), "failed", "failed"),
        _count(by_state.get(pg.CANCELLED, 0), "was cancelled", "were cancelled"),
        _count(by_state.get(pg.NEEDS_OPERATOR, 0), "needs an operator", "need an operator"),
        _count(by_state.get(pg.RUNNING, 0) + by_state.get(pg.INTENT, 0), "is in flight", "are in flight"),
        _count(partial, "partial window left blocked", "partial windows left blocked"),
        _count(other_blocked, "window left blocked", "windows left blocked"),
        _count(by_state.get(pg.SKIPPED, 0), "skipped", "skipped"),
        _count(by_state.get(pg.PENDING, 0), "not run", "not run"),
    ]
    tally = ", ".join(part for part in parts if not part.startswith("0 ")) or "no windows"
    status = state.status.value
    ended = next((e for e in reversed(events) if e.kind in (ev.FAILED, ev.STOPPED, ev.REJECTED, ev.EXPIRED)), None)
    if ended is not None and state.status.value == ended.kind.split(".")[-1]:
        why = str(ended.payload.get("reason") or "").strip()
        asked = next((e for e in reversed(events) if e.kind == ev.STOP_REQUESTED), ended)
        who = {ev.STOPPED: f" by {asked.actor}", ev.REJECTED: f" by {ended.actor}"}.get(ended.kind, "")
        return f"{status.capitalize()}{who}: {why}. {tally}" if why else f"{status.capitalize()}{who}. {tally}"
    return f"{status.capitalize()}: {tally}"


def _decided(item: Decided) -> dict[str, Any]:
    return {"actor": item.actor, "source": item.source, "at": format_utc(item.at), "note": item.note}


def _ledger(verification: VerifyReport, events: Sequence[LedgerEvent]) -> dict[str, Any]:
    seqs = {e.seq for e in events}
    first_bad = None
    if not verification.ok:
        first_bad = {
            "seq": verification.first_bad_seq,
            "kind": verification.first_bad_kind,
            "reason": verification.reason,
            "in_this_backfill": verification.first_bad_seq in seqs,
        }
    return {
        "ok": verification.ok,
        "message": verification.message,
        "events_verified": verification.count,
        # Only a verified head is a checkpoint an auditor may keep (as `ledger checkpoint` prints it).
        "checkpoint": format_checkpoint((verification.head_seq, verification.head_hash)) if verification.ok else None,
        "first_bad": first_bad,
        "backfill_events": len(events),
        "first_seq": min(seqs) if seqs else None,
        "last_seq": max(seqs) if seqs else None,
    }


def _decisions(record: BackfillRecord, states: Mapping[str, str]) -> dict[str, Any]:
    preview = record.preview or {}
    frozen = {w["key"]: w for w in preview.get("windows", []) if isinstance(w, Mapping) and "key" in w}
    windows = []
    for key, decision in record.decisions.items():
        reason = frozen.get(key, {}).get("reason")
        windows.append({"key": key, "decision": decision, "reason": reason, "state": states.get(key)})
    summary = preview.get("summary")
    if not isinstance(summary, Mapping):
        summary = {}
        for decision in record.decisions.values():
            summary[decision] = summary.get(decision, 0) + 1
    history = preview.get("history")
    if not isinstance(history, Mapping):
        history = {}
    return {
        "plan_hash": preview.get("plan_hash", record.plan_hash),
        "history_horizon": history.get("horizon"),
        "history_synced_at": history.get("synced_at"),
        "summary": dict(summary),
        "windows": windows,
    }


def _seconds(payload: Mapping[str, Any]) -> float | None:
    duration = payload.get("duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        return duration / 1000
    start, end = payload.get("run_start"), payload.get("run_end")
    if isinstance(start, str) and isinstance(end, str) and start and end:
        try:
            return (parse_utc(end) - parse_utc(start)).total_seconds()
        except ValueError:
            return None
    return None


def _new_run(key: str, attempt: int, intent: Mapping[str, Any], run_id: str | None, at: datetime) -> dict[str, Any]:
    return {
        "window": key,
        "attempt": attempt,
        "mode": intent.get("mode"),
        "reference_run_id": intent.get("reference_run_id"),
        "run_id": run_id,
        "adopted": False,
        "status": None,
        "started_at": format_utc(at),
        "finished_at": None,
        "duration_seconds": None,
        "failed_activity": None,
        "activity_type": None,
        "error_code": None,
        "error": None,
        "cancel_requested": False,
        "cancelled_by": None,  # who asked ADF to cancel it (stop --cancel-run, runs cancel, run_timeout)
        "cancel_reason": None,
    }


def _runs(events: Sequence[LedgerEvent]) -> list[dict[str, Any]]:
    """One row per ADF run (or per createRun that was refused), in the order they began."""
    rows: list[dict[str, Any]] = []
    by_run: dict[str, dict[str, Any]] = {}
    attempts: dict[str, int] = {}
    intents: dict[str, Mapping[str, Any]] = {}
    open_refusal: dict[str, dict[str, Any]] = {}
    for event in events:
        key, payload, kind = event.window_key, event.payload, event.kind
        if not key or not kind.startswith("window."):
            continue
        run_id = payload.get("run_id") if isinstance(payload.get("run_id"), str) else None
        if kind == ev.WINDOW_INTENT:
            attempts[key] = attempts.get(key, 0) + 1
            intents[key] = payload
            continue
        row = by_run.get(run_id) if run_id else None
        if row is None and (run_id or kind in (ev.WINDOW_CREATE_FAILED, ev.WINDOW_FINISHED)):
            if not run_id and key in open_refusal:
                row = open_refusal.pop(key)
            elif run_id or kind == ev.WINDOW_CREATE_FAILED:
                row = _new_run(key, attempts.get(key, 0), intents.get(key, {}), run_id, event.at)
                rows.append(row)
                if run_id:
                    by_run[run_id] = row
                else:
                    open_refusal[key] = row
        if row is None:
            continue
        if kind == ev.WINDOW_ADOPTED:
            row["adopted"] = True
        if isinstance(payload.get("status"), str):
            row["status"] = payload["status"]
        if kind == ev.WINDOW_CREATE_FAILED:
            row["status"] = "Failed"
            row["error"] = payload.get("reason")
        elif kind == ev.WINDOW_CANCELLED:
            row["cancel_requested"] = True
            row["cancelled_by"] = event.actor
            row["cancel_reason"] = payload.get("reason")
        elif kind == ev.WINDOW_FINISHED:
            row["finished_at"] = format_utc(event.at)
            row["duration_seconds"] = _seconds(payload)
            for name in ("failed_activity", "activity_type", "error_code"):
                row[name] = payload.get(name) or row[name]
            error = payload.get("error") or payload.get("activity_error") or payload.get("message")
            row["error"] = error or row["error"]
    return rows


# --- one-line summaries of events ------------------------------------------------------------------


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def _scalars(payload: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(payload.items()) if isinstance(v, str | int | float) and v != "")


def _with(text: str, note: Any) -> str:
    return f"{text}: {note}" if note else text


def summarize_event(kind: str, payload: Mapping[str, Any]) -> str:
    """One short line saying what an event recorded (for the timeline)."""
    p = payload
    run = f"run {p['run_id']}" if p.get("run_id") else "no run"
    if kind == ev.REQUESTED:
        runnable, blocked = p.get("runnable"), p.get("blocked")
        counts = (
            f"{len(runnable) if isinstance(runnable, list) else 0} to run, "
            f"{len(blocked) if isinstance(blocked, Mapping) else 0} blocked"
        )
        text = _with(f"plan {str(p.get('plan_hash', ''))[:12]}; {counts}", p.get("note"))
    elif kind == ev.APPROVED:
        text = _with(f"approval {p.get('approval', '?')} of {p.get('required', '?')}", p.get("note"))
    elif kind in (ev.REJECTED, ev.EXPIRED, ev.COMPLETED, ev.FAILED, ev.STOPPED):
        windows = p.get("windows")
        tally = ", ".join(f"{n} {s}" for s, n in windows.items()) if isinstance(windows, Mapping) else ""
        text = "; ".join(part for part in (str(p.get("reason") or ""), tally) if part) or kind.split(".")[-1]
    elif kind == ev.STARTED:
        text = f"concurrency {p.get('concurrency', 1)}"
    elif kind == ev.CANARY_PAUSED:
        text = f"paused after {p.get('succeeded', '?')} succeeded (canary {p.get('canary', '?')})"
    elif kind == ev.CANARY_APPROVED:
        text = _with("canary approved", p.get("note"))
    elif kind == ev.WINDOW_ACCEPTED:
        text = _with(f"accepted {p.get('accept', '?')} ({p.get('decision', '?')})", p.get("note"))
    elif kind == ev.STOP_REQUESTED:
        text = "stop requested" + (", cancelling runs" if p.get("cancel_run") else "")
    elif kind == ev.WINDOW_INTENT:
        text = f"intent: {p.get('mode', 'new-run')} attempt {p.get('attempt', '?')}"
        text += f" from run {p['reference_run_id']}" if p.get("reference_run_id") else ""
    elif kind in (ev.WINDOW_CREATED, ev.WINDOW_STATUS):
        text = f"{run} {p.get('status') or ''}".rstrip()
    elif kind == ev.WINDOW_ADOPTED:
        text = _with(f"adopted {run} {p.get('status') or ''}".rstrip(), p.get("reason"))
    elif kind == ev.WINDOW_FINISHED:
        seconds = _seconds(p)
        text = f"{run} {p.get('status') or '?'}"
        text += f" in {format_duration(timedelta(seconds=seconds))}" if seconds is not None else ""
        text += f", activity {p['failed_activity']}" if p.get("failed_activity") else ""
        text = _with(text, p.get("error") or p.get("message"))
    elif kind in (ev.WINDOW_CHECKED, ev.WINDOW_SKIPPED):
        text = _with(str(p.get("decision") or "?"), p.get("reason"))
    elif kind in (ev.WINDOW_CREATE_FAILED, ev.WINDOW_NEEDS_OPERATOR, ev.WINDOW_CANCELLED):
        text = _with(run if p.get("run_id") else kind.split(".")[-1], p.get("reason") or p.get("message"))
    else:
        text = _scalars(p)
    return _one_line(text)


def _timeline_entry(event: LedgerEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": format_utc(event.at),
        "actor": event.actor,
        "source": event.identity_source,
        "kind": event.kind,
        "window": event.window_key,
        "summary": summarize_event(event.kind, event.payload),
        "hash": event.hash,
    }


# --- text ------------------------------------------------------------------------------------------


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
    return _with(f"{item['actor']} ({item['source']}) at {item['at']}", item.get("note"))


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
        ("requested", _with(requested, b["note"])),
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
