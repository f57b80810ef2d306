"""The evidence report of one backfill (spec §9): plan, approvals, gates, decisions, runs, timeline.

``build_report`` turns the frozen request, the backfill's ledger events and the verification of
the whole chain into plain JSON-ready data (its shape: docs/report-json.md); ``report.text`` and
``report.html`` present that same data, so the three forms never disagree.
Nothing is re-expanded: payloads were redacted before they were hashed, and the request's note,
the one text read from outside the ledger, is scrubbed the same way here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from backfill import events as ev
from backfill.backfills import (
    BackfillRecord,
    BackfillState,
    BackfillStatus,
    Decided,
    WindowRun,
    derive_state,
    run_seconds,
)
from backfill.chain import LedgerEvent, VerifyReport, format_checkpoint
from backfill.progress import WindowState
from backfill.secrets import redact_payload
from backfill.timeutil import format_duration, format_utc

if TYPE_CHECKING:
    pass

SCHEMA_VERSION = 1
SUMMARY_LIMIT = 200


def build_report(
    record: BackfillRecord, events: Sequence[LedgerEvent], verification: VerifyReport, now: datetime
) -> dict[str, Any]:
    """The report as plain data: strings, numbers, booleans, lists and dicts only."""
    state = derive_state(record, events, now)
    # Decoded once: the outcome, the runs and the timeline all read the typed events.
    typed = [(event, ev.decode(event.kind, event.payload)) for event in events]
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
            "outcome": outcome_line(record, state, typed),
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
                "paused_at": format_utc(state.canary_paused_at) if state.canary_paused_at else None,
                "approval": _decided(state.canary_approval) if state.canary_approval else None,
            },
            "accepted_windows": [{"key": k, **_decided(d)} for k, d in sorted(state.acceptances.items())],
            "stop_requested": state.stop_requested,
        },
        "decisions": _decisions(record, {k: w["state"] for k, w in state.windows.items()}),
        "runs": [_run(run) for run in state.runs],
        "timeline": [_timeline_entry(e, body) for e, body in typed],
    }


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# The events that end a backfill with a reason the outcome line gives, and the state they leave.
_ENDED_AS: dict[type[ev.Event], BackfillStatus] = {
    ev.Failed: BackfillStatus.FAILED,
    ev.Stopped: BackfillStatus.STOPPED,
    ev.Rejected: BackfillStatus.REJECTED,
    ev.Expired: BackfillStatus.EXPIRED,
}


def outcome_line(record: BackfillRecord, state: BackfillState, events: Sequence[tuple[LedgerEvent, ev.Event]]) -> str:
    """What came of the backfill in one line: ``Completed: 4 ran and succeeded, 1 partial window
    left blocked, 19 skipped``; a failed or stopped one says why first."""
    windows = state.windows
    by_state: dict[str, int] = {}
    for window in windows.values():
        by_state[window["state"]] = by_state.get(window["state"], 0) + 1
    partial = sum(
        1 for w in windows.values() if w["state"] == WindowState.BLOCKED and w["decision"] == "blocked-partial"
    )
    other_blocked = by_state.get(WindowState.BLOCKED, 0) - partial
    parts = [
        _count(by_state.get(WindowState.SUCCEEDED, 0), "ran and succeeded", "ran and succeeded"),
        _count(by_state.get(WindowState.FAILED, 0), "failed", "failed"),
        _count(by_state.get(WindowState.CANCELLED, 0), "was cancelled", "were cancelled"),
        _count(by_state.get(WindowState.NEEDS_OPERATOR, 0), "needs an operator", "need an operator"),
        _count(
            by_state.get(WindowState.RUNNING, 0) + by_state.get(WindowState.INTENT, 0),
            "is in flight",
            "are in flight",
        ),
        _count(partial, "partial window left blocked", "partial windows left blocked"),
        _count(other_blocked, "window left blocked", "windows left blocked"),
        _count(by_state.get(WindowState.SKIPPED, 0), "skipped", "skipped"),
        _count(by_state.get(WindowState.PENDING, 0), "not run", "not run"),
    ]
    tally = ", ".join(part for part in parts if not part.startswith("0 ")) or "no windows"
    status = state.status.value
    ended = next(((e, body) for e, body in reversed(events) if type(body) in _ENDED_AS), None)
    if ended is not None and state.status is _ENDED_AS[type(ended[1])]:
        event, body = ended
        why = (body.reason or "").strip() if isinstance(body, ev.Ended) else ""
        asked = next((e for e, b in reversed(events) if isinstance(b, ev.StopRequested)), event)
        who = (
            f" by {asked.actor}"
            if isinstance(body, ev.Stopped)
            else f" by {event.actor}"
            if isinstance(body, ev.Rejected)
            else ""
        )
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


def _run(run: WindowRun) -> dict[str, Any]:
    return {
        "window": run.window,
        "attempt": run.attempt,
        "mode": run.mode,
        "reference_run_id": run.reference_run_id,
        "run_id": run.run_id,
        "adopted": run.adopted,
        "status": run.status,
        "started_at": format_utc(run.started_at),
        "finished_at": format_utc(run.finished_at) if run.finished_at else None,
        "duration_seconds": run.duration_seconds,
        "failed_activity": run.failed_activity,
        "activity_type": run.activity_type,
        "error_code": run.error_code,
        "error": run.error,
        "cancel_requested": run.cancel_requested,
        "cancelled_by": run.cancelled_by,
        "cancel_reason": run.cancel_reason,
    }


# --- one-line summaries of events ------------------------------------------------------------------


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def _scalars(payload: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(payload.items()) if isinstance(v, str | int | float) and v != "")


def with_note(text: str, note: Any) -> str:
    """``text: note``, or ``text`` when there is no note."""
    return f"{text}: {note}" if note else text


def _or(value: Any) -> Any:
    return "?" if value is None else value


def summarize_event(body: ev.Event) -> str:
    """One short line saying what an event recorded (for the timeline)."""
    run = f"run {body.run_id}" if isinstance(body, ev.WindowEvent) and body.run_id else "no run"
    match body:
        case ev.Requested():
            runnable = len(body.runnable) if body.runnable is not None else 0
            blocked = len(body.blocked) if isinstance(body.blocked, Mapping) else 0
            text = with_note(f"plan {(body.plan_hash or '')[:12]}; {runnable} to run, {blocked} blocked", body.note)
        case ev.Approved():
            text = with_note(f"approval {_or(body.approval)} of {_or(body.required)}", body.note)
        case ev.Ended():
            windows = body.windows
            tally = ", ".join(f"{n} {s}" for s, n in windows.items()) if windows is not None else ""
            text = "; ".join(part for part in (body.reason or "", tally) if part) or body.kind.split(".")[-1]
        case ev.Started():
            text = f"concurrency {body.concurrency if body.concurrency is not None else 1}"
        case ev.CanaryPaused():
            text = f"paused after {_or(body.succeeded)} succeeded (canary {_or(body.canary)})"
        case ev.CanaryApproved():
            text = with_note("canary approved", body.note)
        case ev.WindowAccepted():
            text = with_note(f"accepted {_or(body.accept)} ({_or(body.decision)})", body.note)
        case ev.StopRequested():
            text = "stop requested" + (", cancelling runs" if body.cancel_run else "")
        case ev.WindowIntent():
            text = f"intent: {body.mode if body.mode is not None else 'new-run'} attempt {_or(body.attempt)}"
            text += f" from run {body.reference_run_id}" if body.reference_run_id else ""
        case ev.WindowCreated() | ev.WindowStatus():
            text = f"{run} {body.status or ''}".rstrip()
        case ev.WindowAdopted():
            text = with_note(f"adopted {run} {body.status or ''}".rstrip(), body.reason)
        case ev.WindowFinished():
            seconds = run_seconds(body)
            text = f"{run} {body.status or '?'}"
            text += f" in {format_duration(timedelta(seconds=seconds))}" if seconds is not None else ""
            text += f", activity {body.failed_activity}" if body.failed_activity else ""
            text = with_note(text, body.error or body.message)
        case ev.WindowChecked() | ev.WindowSkipped():
            text = with_note(body.decision or "?", body.reason)
        case ev.WindowCreateFailed() | ev.WindowNeedsOperator() | ev.WindowCancelled():
            text = with_note(run if body.run_id else body.kind.split(".")[-1], body.reason or body.message)
        case _:
            text = _scalars(ev.encode(body)[1])
    return _one_line(text)


def _timeline_entry(event: LedgerEvent, body: ev.Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": format_utc(event.at),
        "actor": event.actor,
        "source": event.identity_source,
        "kind": event.kind,
        "window": event.window_key,
        "summary": summarize_event(body),
        "hash": event.hash,
    }
