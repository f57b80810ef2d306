"""What ``backfill request`` freezes: the plan hash, the preview, and the approval policy (spec §6).

Pure: it turns a loaded plan and its computed preview into the ``backfills`` row and the
``backfill.requested`` payload; ``backfill.store.backfills`` writes both in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backfill.approvals import ApprovalPolicy, BackfillRecord
from backfill.identity import Actor
from backfill.ledger import redact_payload
from backfill.timeutil import format_utc, require_utc

if TYPE_CHECKING:
    from backfill.plan import LoadedPlan
    from backfill.preview import Preview


def draft_request(
    loaded: LoadedPlan, preview: Preview, actor: Actor, note: str | None, now: datetime
) -> tuple[BackfillRecord, dict[str, Any]]:
    """The request (its ID still empty) and the ``backfill.requested`` payload."""
    plan = loaded.plan
    policy = ApprovalPolicy.from_plan(plan.approval)
    decisions = {wd.window.key: str(wd.decision) for wd in preview.decisions}
    record = BackfillRecord(
        id="",
        plan_path=str(loaded.path.resolve()),
        plan_hash=loaded.hash,
        pipeline=loaded.pipeline,
        factory_key=loaded.ref.key,
        title=plan.title,
        ticket=plan.ticket or "",
        requester=actor.name,
        requester_source=actor.source.value,
        requested_at=require_utc(now, "now"),
        note=note,
        policy=policy,
        decisions=decisions,
        # Stored outside the ledger but held to the same rule: no credential is ever written.
        preview=redact_payload(preview.to_json()),
    )
    blocked = {
        wd.window.key: {"decision": str(wd.decision), "reason": wd.reason}
        for wd in preview.decisions
        if wd.decision.blocked
    }
    payload = {
        "plan_path": record.plan_path,
        "plan_hash": record.plan_hash,
        "title": record.title,
        "ticket": record.ticket,
        "note": note,
        "pipeline": record.pipeline,
        "factory": record.factory_key,
        "approval": policy.to_json(),
        "summary": dict(preview.summary()),
        "runnable": list(record.runnable_keys),
        "blocked": blocked,
    }
    if loaded.relative and loaded.windows:
        # The plan names its windows relative to now: record what they resolved to (the hash is of
        # the text, so it cannot tell the day); run resolves them against requested_at again.
        payload["windows"] = {"written": dict(loaded.relative), "resolved_at": format_utc(record.requested_at),
                              "start": format_utc(loaded.windows[0].start), "end": format_utc(loaded.windows[-1].end)}
    return record, payload


def summary_lines(record: BackfillRecord, summary: dict[str, int] | None = None) -> Sequence[str]:
    """The short summary ``request`` prints under the ID."""
    total = len(record.decisions)
    runnable = len(record.runnable_keys)
    blocked = len(record.blocked_keys)
    skipped = total - runnable - blocked
    policy = record.policy
    title = f"{record.title} ({record.ticket})" if record.ticket else record.title
    who = f" from {', '.join(policy.approvers)}" if policy.approvers else ""
    lines = [
        title,
        f"pipeline {record.pipeline} in {record.factory_key}; plan {record.plan_hash[:12]}",
        f"windows: {total} in plan, {runnable} to run, {skipped} skipped, {blocked} blocked",
    ]
    if summary:
        lines.append("decisions: " + ", ".join(f"{k} {v}" for k, v in summary.items() if v))
    lines.append(f"needs {policy.required} approval{'s' if policy.required > 1 else ''}{who}, "
                 f"by someone other than {record.requester}")
    return lines
