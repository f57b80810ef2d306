"""Approvals and gates (spec §6): who may approve, reject or accept a window of a backfill.

The gate functions read the Backfill aggregate (``backfill.backfills``: the frozen request and the
state its events fold into) and say whether an actor may approve, reject or accept a window; they
raise ``BackfillError`` with the one-line reason, and the CLI writes the event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from backfill import events as ev
from backfill.backfills import (
    FINISHED,
    RUNNABLE_DECISIONS,
    ApprovalPolicy,
    BackfillRecord,
    BackfillState,
    BackfillStatus,
)
from backfill.decision_kinds import Decision
from backfill.errors import AwaitingApproval, BackfillError
from backfill.identity import VERIFIED_SOURCES, Actor, IdentitySource, describe_source, same_name, same_person
from backfill.timeutil import format_duration, format_utc, require_utc

ACCEPTABLE_DECISION = Decision.BLOCKED_PARTIAL


def assert_runnable(state: BackfillState, now: datetime) -> None:
    """Raise unless the runner may go on: AwaitingApproval (exit 3) while an approval or the
    canary approval is missing, BackfillError (exit 1) when rejected, expired or completed.
    A failed or stopped backfill may be resumed (``backfill run ID`` is resumable)."""
    bid = state.backfill_id
    if state.expires_at is not None and require_utc(now, "now") >= state.expires_at:
        raise BackfillError(f"{bid} expired at {format_utc(state.expires_at)}; request it again")
    if state.status is BackfillStatus.REQUESTED:
        raise AwaitingApproval(
            f"{bid} awaits approval ({len(state.approvals)} of {state.required}): backfill approve {bid}"
        )
    if state.status is BackfillStatus.PAUSED:
        raise AwaitingApproval(f"{bid} is paused after its canary windows: backfill approve {bid}")
    _refuse_sealed(state, "run")


def _refuse_sealed(state: BackfillState, action: str) -> None:
    bid = state.backfill_id
    if state.status is BackfillStatus.REJECTED:
        who = state.rejection.actor if state.rejection else "someone"
        reason = state.rejection.note if state.rejection and state.rejection.note else "no reason"
        raise BackfillError(f"{bid} was rejected by {who}: {reason}")
    if state.status is BackfillStatus.EXPIRED:
        when = f" at {format_utc(state.expires_at)}" if state.expires_at else ""
        raise BackfillError(f"{bid} expired{when}; request it again")
    if state.status is BackfillStatus.COMPLETED:
        raise BackfillError(f"{bid} is completed; nothing to {action}")


def check_reviewer(record: BackfillRecord, actor: Actor, action: str) -> None:
    """Four eyes, the approvers allow-list and the identity demand, for any gate decision."""
    bid, policy = record.id, record.policy
    check_identity_policy(bid, policy, actor)
    same = same_person(actor.name, record.requester, policy.aliases)
    if same:
        who = actor.name if same_name(actor.name, record.requester) else f"{actor.name} ({record.requester})"
        raise BackfillError(f"{bid}: {who} requested this backfill and cannot {action} it (four eyes)")
    if same is None:
        raise BackfillError(
            f"{bid}: cannot tell whether {actor.name} is {record.requester}, who requested it (four eyes); "
            "name them in [approval] aliases, or approve as someone else"
        )
    if policy.approvers and not any(_listed(actor.name, a, policy.aliases) for a in policy.approvers):
        allowed = ", ".join(policy.approvers)
        raise BackfillError(f"{bid}: {actor.name} is not among the approvers ({allowed})")


def _listed(name: str, approver: str, aliases: Sequence[Sequence[str]]) -> bool:
    # Granting is stricter than refusing: the allow-list matches a name or its aliases, never a
    # local part (bob@another-tenant.com is not the "bob" the plan meant).
    return same_name(name, approver) or any(
        any(same_name(name, n) for n in group) and any(same_name(approver, n) for n in group) for group in aliases
    )


def check_identity_policy(bid: str, policy: ApprovalPolicy, actor: Actor) -> None:
    """``[approval] identity``: ``any``, ``verified`` (a source a third party vouches for) or one source."""
    demanded = policy.identity
    if demanded == "any":
        return
    if demanded == "verified":
        if actor.source not in VERIFIED_SOURCES:
            names = ", ".join(sorted(s.value for s in VERIFIED_SOURCES))
            raise BackfillError(
                f"{bid}: the approval policy demands a verified identity ({names}); "
                f"{actor.name} is {actor.source.value}"
            )
        return
    if actor.source.value != demanded:
        raise BackfillError(
            f"{bid}: the approval policy demands an {demanded} identity; {actor.name} is {actor.source.value}"
            if demanded[0] in "aeiou"
            else f"{bid}: the approval policy demands a {demanded} identity; {actor.name} is {actor.source.value}"
        )


def declared_may_approve(policy: ApprovalPolicy) -> bool:
    """Whether a name anyone can type (BACKFILL_ACTOR) satisfies the policy: ``request`` warns."""
    return policy.identity in ("any", IdentitySource.DECLARED.value)


def assert_satisfiable(policy: ApprovalPolicy, requester: str, where: str) -> None:
    """Refuse a policy nobody can ever satisfy: the approvers allow-list, without the requester
    (four eyes), names fewer distinct people than ``required`` (issue 9 #8)."""
    if not policy.approvers:
        return
    others: list[str] = []
    for name in policy.approvers:
        if same_person(name, requester, policy.aliases) is not False:
            continue
        if not any(same_person(name, o, policy.aliases) is not False for o in others):
            others.append(name)
    if len(others) >= policy.required:
        return
    listed = ", ".join(others) if others else "nobody"
    raise BackfillError(
        f"{where}: approval.approvers can never approve it: {policy.required} approval"
        f"{'s' if policy.required > 1 else ''} needed from someone other than {requester} "
        f"(four eyes), and the list leaves {listed}"
    )


def gate_approval(record: BackfillRecord, state: BackfillState, actor: Actor) -> str:
    """The event kind ``approve ID`` records (an approval or a canary approval), or raise."""
    bid = state.backfill_id
    _refuse_sealed(state, "approve")
    if state.status in (BackfillStatus.FAILED, BackfillStatus.STOPPED):
        raise BackfillError(f"{bid} is {state.status.value}; nothing to approve")
    check_reviewer(record, actor, "approve")
    if state.status is BackfillStatus.PAUSED:
        return ev.CANARY_APPROVED
    if state.status is BackfillStatus.RUNNING:
        raise BackfillError(f"{bid} is running and awaits no approval")
    for given in state.approval_events:
        same = same_person(actor.name, given.actor, record.policy.aliases)
        if same:
            raise BackfillError(
                f"{bid}: {actor.name} has already approved it ({len(state.approvals)} of {state.required})"
            )
        if same is None:
            raise BackfillError(
                f"{bid}: cannot tell whether {actor.name} is {given.actor}, who already approved it; "
                "name them in [approval] aliases, or approve as someone else"
            )
    if state.status is BackfillStatus.APPROVED:
        raise BackfillError(f"{bid} is already approved by {', '.join(state.approvals)}: backfill run {bid}")
    return ev.APPROVED


def gate_rejection(record: BackfillRecord, state: BackfillState, actor: Actor) -> None:
    """Raise unless ``actor`` may reject: before the run starts, or at the canary pause."""
    bid = state.backfill_id
    _refuse_sealed(state, "reject")
    if state.status in (BackfillStatus.FAILED, BackfillStatus.STOPPED):
        raise BackfillError(f"{bid} is {state.status.value}; nothing to reject")
    if state.status is BackfillStatus.RUNNING:
        raise BackfillError(f"{bid} is running; stop it with: backfill stop {bid}")
    check_reviewer(record, actor, "reject")


def gate_window_acceptance(record: BackfillRecord, state: BackfillState, actor: Actor, key: str) -> None:
    """Raise unless ``actor`` may clear the blocked-partial window ``key`` of the frozen preview."""
    bid = state.backfill_id
    _refuse_sealed(state, "accept")
    if state.status in FINISHED:
        raise BackfillError(f"{bid} is {state.status.value}; no window can be accepted any more")
    decision = record.decisions.get(key)
    if decision is None:
        raise BackfillError(f"{bid}: window {key} is not in the frozen preview")
    if decision != ACCEPTABLE_DECISION:
        raise BackfillError(f"{bid}: window {key} is {decision}, not {ACCEPTABLE_DECISION}; nothing to accept")
    check_reviewer(record, actor, "accept a window of")
    if key in state.accepted_windows:
        by = state.acceptances[key].actor
        raise BackfillError(f"{bid}: window {key} was already accepted by {by}")


def expiry_reason(record: BackfillRecord, state: BackfillState) -> str:
    """Why an expired backfill expired, for the ``backfill.expired`` event and messages."""
    waited = format_duration(record.policy.expires)
    if state.approved_at is not None:
        return f"approved at {format_utc(state.approved_at)} but not started within {waited}"
    return f"not approved within {waited} of the request"


def approved_keys(record: BackfillRecord, state: BackfillState) -> list[str]:
    """The windows the approval covers: the frozen runnable ones and the accepted blocked ones."""
    return [k for k, d in record.decisions.items() if d in RUNNABLE_DECISIONS or k in state.accepted_windows]


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
