"""What ``backfill request`` freezes: the plan hash, the preview, and the approval policy (spec §6).

Pure: it turns a loaded plan and its computed preview into the ``backfills`` row and the
``backfill.requested`` payload; ``backfill.store.backfills`` writes both in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backfill.approvals import ACCEPTABLE_DECISION, ApprovalPolicy, BackfillRecord, declared_may_approve
from backfill.errors import BackfillError
from backfill.identity import Actor, describe_source
from backfill.seal import seal_request
from backfill.secrets import redact_payload
from backfill.timeutil import format_utc, require_utc

if TYPE_CHECKING:
    from backfill.plan.loader import LoadedPlan
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
        # Sealed in the chain (spec §15): gates and ``run`` read these, not the mutable row.
        "requester": {"name": actor.name, "source": actor.source.value},
        "seal": seal_request(loaded).to_json(),
    }
    if loaded.relative and loaded.windows:
        # The plan names its windows relative to now: record what they resolved to (the hash is of
        # the text, so it cannot tell the day); run resolves them against requested_at again.
        payload["windows"] = {
            "written": dict(loaded.relative),
            "resolved_at": format_utc(record.requested_at),
            "start": format_utc(loaded.windows[0].start),
            "end": format_utc(loaded.windows[-1].end),
        }
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
    lines.append(
        f"needs {policy.required} approval{'s' if policy.required > 1 else ''}{who}, "
        f"by someone other than {record.requester}"
    )
    return lines


def assert_requestable(where: str, draft: BackfillRecord) -> None:
    """Refuse a request no approval could make run: every window skipped, or every one blocked
    by something only a new preview can clear (issue 9 #8). A blocked-partial window counts: a
    supervisor may accept it."""
    if not draft.runnable_keys and not draft.blocked_keys:
        count = len(draft.decisions)
        what = "its window needs no run" if count == 1 else f"none of its {count} windows needs a run"
        raise BackfillError(f"{where}: nothing to request: {what} (backfill preview shows why)")
    acceptable = [k for k in draft.blocked_keys if draft.decisions[k] == ACCEPTABLE_DECISION]
    if not draft.runnable_keys and not acceptable:
        count = len(draft.blocked_keys)
        raise BackfillError(
            f"{where}: nothing to request: no window can run ({count} blocked; only a blocked-partial "
            "window can be accepted), fix what blocks them first (backfill preview shows why)"
        )


def identity_lines(actor: Actor, policy: ApprovalPolicy) -> list[str]:
    """Who requested, from which source, and (once) the warning when a declared identity can
    approve (spec §15): printed with the summary."""
    lines = [f"requested as {actor.name} ({describe_source(actor)})"]
    if declared_may_approve(policy):
        lines.append(
            "warning: a declared identity (BACKFILL_ACTOR, anyone can set it) can approve this plan; "
            '[approval] identity = "verified" demands one a third party vouches for'
        )
    return lines
