"""State derivation and gate rules on plain data: records and real LedgerEvent values."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from backfill_samples import BID, K1, K2, K3, K4, T0, Chain, sample_record
from hypothesis import given
from hypothesis import strategies as st

from backfill import events as ev
from backfill.approvals import approved_keys, assert_runnable, gate_approval, gate_rejection, gate_window_acceptance
from backfill.backfills import ApprovalPolicy, BackfillRecord, BackfillStatus, derive_state
from backfill.errors import AwaitingApproval, BackfillError, ExitCode
from backfill.identity import Actor, IdentitySource, principal_from_token, resolve_actor

BOB = Actor("bob", IdentitySource.DECLARED)
CAROL = Actor("carol", IdentitySource.DECLARED)


def record(**policy: Any) -> BackfillRecord:
    return sample_record(
        id=BID,
        plan_path="plans/north.toml",
        policy=ApprovalPolicy(**policy),
        decisions={K1: "run", K2: "rerun", K3: "blocked-partial", K4: "skip-succeeded"},
    )


def state_of(rec: BackfillRecord, chain: Chain, minutes: float = 5) -> Any:
    return derive_state(rec, chain.events, T0 + timedelta(minutes=minutes))


def test_fresh_request_awaits_approval_until_it_expires() -> None:
    rec = record()
    state = state_of(rec, Chain())
    assert state.status is BackfillStatus.REQUESTED
    assert state.expires_at == T0 + timedelta(hours=12)
    assert {k: w["state"] for k, w in state.windows.items()} == {
        K1: "pending",
        K2: "pending",
        K3: "blocked",
        K4: "skipped",
    }
    with pytest.raises(AwaitingApproval) as caught:
        assert_runnable(state, T0)
    assert caught.value.exit_code is ExitCode.AWAITING_APPROVAL
    assert str(caught.value) == "bf-20261125-3f9a2c awaits approval (0 of 1): backfill approve bf-20261125-3f9a2c"
    assert state_of(rec, Chain(), minutes=12 * 60).status is BackfillStatus.EXPIRED


def test_required_two_needs_two_distinct_approvers() -> None:
    rec = record(required=2)
    chain = Chain().add(ev.APPROVED, "bob").add(ev.APPROVED, "BOB", minutes=2)
    state = state_of(rec, chain)
    assert state.status is BackfillStatus.REQUESTED
    assert state.approvals == ["bob"]
    with pytest.raises(BackfillError, match=r"^bf-20261125-3f9a2c: bob has already approved it \(1 of 2\)$"):
        gate_approval(rec, state, BOB)
    assert gate_approval(rec, state, CAROL) == ev.APPROVED
    state = state_of(rec, chain.add(ev.APPROVED, "carol", minutes=3))
    assert state.status is BackfillStatus.APPROVED
    assert state.approvals == ["bob", "carol"]
    assert state.approved_at == T0 + timedelta(minutes=3)
    assert_runnable(state, T0 + timedelta(minutes=5))


def test_approval_expires_when_the_run_does_not_start_in_time() -> None:
    rec = record(expires=timedelta(hours=1))
    chain = Chain().add(ev.APPROVED, "bob", minutes=50)
    assert state_of(rec, chain, minutes=100).status is BackfillStatus.APPROVED
    late = state_of(rec, chain, minutes=110)
    assert late.status is BackfillStatus.EXPIRED
    with pytest.raises(BackfillError) as caught:
        assert_runnable(late, T0 + timedelta(minutes=110))
    assert caught.value.exit_code is ExitCode.FAILED
    assert str(caught.value) == "bf-20261125-3f9a2c expired at 2026-11-25T10:50:00Z; request it again"
    started = state_of(rec, chain.add(ev.STARTED, "ops", minutes=100), minutes=500)
    assert started.status is BackfillStatus.RUNNING
    assert started.expires_at is None


def test_an_approval_after_the_deadline_does_not_revive_the_request() -> None:
    rec = record(expires=timedelta(hours=1))
    state = state_of(rec, Chain().add(ev.APPROVED, "bob", minutes=61), minutes=62)
    assert state.status is BackfillStatus.EXPIRED
    assert state.approvals == []
    with pytest.raises(BackfillError, match=r"^bf-20261125-3f9a2c expired at 2026-11-25T10:00:00Z; request"):
        gate_approval(rec, state, CAROL)


def test_rejected_backfill_cannot_be_approved_or_run() -> None:
    rec = record()
    state = state_of(rec, Chain().add(ev.REJECTED, "bob", reason="wrong window range"))
    assert state.status is BackfillStatus.REJECTED
    message = "bf-20261125-3f9a2c was rejected by bob: wrong window range"
    with pytest.raises(BackfillError, match=f"^{message}$"):
        gate_approval(rec, state, CAROL)
    with pytest.raises(BackfillError, match=f"^{message}$"):
        gate_rejection(rec, state, CAROL)
    with pytest.raises(BackfillError, match=f"^{message}$"):
        assert_runnable(state, T0)


def test_four_eyes_approvers_and_identity() -> None:
    rec = record(approvers=("bob", "dave@contoso.com"), identity="azure-ad")
    state = state_of(rec, Chain())
    with pytest.raises(
        BackfillError,
        match=r"^bf-20261125-3f9a2c: ALICE requested this backfill and cannot "
        r"approve it \(four eyes\)$",
    ):
        gate_approval(rec, state, Actor("ALICE", IdentitySource.AZURE_AD))
    with pytest.raises(
        BackfillError,
        match=r"^bf-20261125-3f9a2c: carol is not among the approvers "
        r"\(bob, dave@contoso.com\)$",
    ):
        gate_rejection(rec, state, Actor("carol", IdentitySource.AZURE_AD))
    for source in (IdentitySource.DECLARED, IdentitySource.OS):
        with pytest.raises(BackfillError, match=f"demands an azure-ad identity; bob is {source.value}$"):
            gate_approval(rec, state, Actor("bob", source))
    assert gate_approval(rec, state, Actor("Dave@Contoso.com", IdentitySource.AZURE_AD)) == ev.APPROVED


def test_canary_pause_needs_a_second_approval() -> None:
    rec = record(canary=1)
    chain = Chain().add(ev.APPROVED, "bob").add(ev.STARTED, "alice", minutes=2, concurrency=2)
    running = state_of(rec, chain)
    assert running.status is BackfillStatus.RUNNING
    assert running.concurrency == 2
    with pytest.raises(BackfillError, match=r"^bf-20261125-3f9a2c is running and awaits no approval$"):
        gate_approval(rec, running, CAROL)
    with pytest.raises(BackfillError, match=r"^bf-20261125-3f9a2c is running; stop it with: backfill stop"):
        gate_rejection(rec, running, CAROL)
    paused = state_of(rec, chain.add(ev.CANARY_PAUSED, "alice", minutes=3))
    assert paused.status is BackfillStatus.PAUSED
    assert paused.canary_paused and not paused.canary_approved
    with pytest.raises(AwaitingApproval, match="is paused after its canary windows"):
        assert_runnable(paused, T0)
    with pytest.raises(BackfillError, match="cannot approve it"):
        gate_approval(rec, paused, Actor("alice", IdentitySource.DECLARED))
    # The approver of the request may also approve the canary: it is a different decision.
    assert gate_approval(rec, paused, BOB) == ev.CANARY_APPROVED
    resumed = state_of(rec, chain.add(ev.CANARY_APPROVED, "bob", minutes=4))
    assert resumed.status is BackfillStatus.RUNNING and resumed.canary_approved
    done = state_of(rec, chain.add(ev.COMPLETED, "alice", minutes=9), minutes=10)
    assert done.status is BackfillStatus.COMPLETED
    assert done.finished_at == T0 + timedelta(minutes=9)
    with pytest.raises(BackfillError, match=r"^bf-20261125-3f9a2c is completed; nothing to run$"):
        assert_runnable(done, T0)


def test_stop_request_and_resume() -> None:
    rec = record()
    chain = Chain().add(ev.APPROVED).add(ev.STARTED, "alice", minutes=2).add(ev.STOP_REQUESTED, "alice", 3)
    assert state_of(rec, chain).stop_requested
    stopped = state_of(rec, chain.add(ev.STOPPED, "alice", minutes=4))
    assert stopped.status is BackfillStatus.STOPPED
    assert_runnable(stopped, T0)
    with pytest.raises(BackfillError, match=r"^bf-20261125-3f9a2c is stopped; nothing to approve$"):
        gate_approval(rec, stopped, CAROL)
    resumed = state_of(rec, chain.add(ev.STARTED, "alice", minutes=5))
    assert resumed.status is BackfillStatus.RUNNING and not resumed.stop_requested


def test_window_events_give_each_window_its_latest_state() -> None:
    rec = record()
    chain = (
        Chain()
        .add(ev.APPROVED)
        .add(ev.WINDOW_ACCEPTED, "carol", minutes=1.5, key=K3, note="partial rows reloaded by merge")
        .add(ev.STARTED, "alice", minutes=2)
        .add(ev.WINDOW_INTENT, "alice", minutes=2, key=K1, attempt=1)
        .add(ev.WINDOW_CREATED, "alice", minutes=2.1, key=K1, run_id="r-1", status="Queued")
        .add(ev.WINDOW_STATUS, "alice", minutes=3, key=K1, run_id="r-1", status="InProgress")
        .add(ev.WINDOW_FINISHED, "alice", minutes=6, key=K1, run_id="r-1", status="Succeeded", duration_ms=240000)
        .add(ev.WINDOW_INTENT, "alice", minutes=6, key=K2)
        .add(ev.WINDOW_ADOPTED, "alice", minutes=6.5, key=K2, run_id="r-2", status="InProgress")
        .add(ev.WINDOW_CANCELLED, "alice", minutes=7, key=K2, run_id="r-2")
    )
    state = state_of(rec, chain, minutes=8)
    assert state.accepted_windows == {K3}
    assert state.acceptances[K3].note == "partial rows reloaded by merge"
    assert approved_keys(rec, state) == [K1, K2, K3]
    w1, w2, w3 = state.windows[K1], state.windows[K2], state.windows[K3]
    assert (w1["state"], w1["run_id"], w1["status"], w1["duration_ms"]) == ("succeeded", "r-1", "Succeeded", 240000)
    assert (w2["state"], w2["run_id"], w2["cancel_requested"], w2["attempts"]) == ("running", "r-2", True, 1)
    assert (w3["state"], w3["accepted"], w3["decision"]) == ("pending", True, "blocked-partial")
    failed = state_of(rec, chain.add(ev.WINDOW_FINISHED, "alice", minutes=9, key=K2, status="Cancelled"))
    assert failed.windows[K2]["state"] == "cancelled"
    operator = state_of(rec, chain.add(ev.WINDOW_NEEDS_OPERATOR, "alice", minutes=9, key=K3, reason="doubt"))
    assert (operator.windows[K3]["state"], operator.windows[K3]["reason"]) == ("needs-operator", "doubt")


def test_window_acceptance_only_for_blocked_partial_windows() -> None:
    rec = record()
    state = state_of(rec, Chain())
    gate_window_acceptance(rec, state, CAROL, K3)
    with pytest.raises(
        BackfillError, match=f"^bf-20261125-3f9a2c: window {K1} is run, not blocked-partial; nothing to accept$"
    ):
        gate_window_acceptance(rec, state, CAROL, K1)
    with pytest.raises(BackfillError, match=r"^bf-20261125-3f9a2c: window nope is not in the frozen preview$"):
        gate_window_acceptance(rec, state, CAROL, "nope")
    with pytest.raises(BackfillError, match=r"cannot accept a window of it \(four eyes\)$"):
        gate_window_acceptance(rec, state, Actor("alice", IdentitySource.OS), K3)
    accepted = state_of(rec, Chain().add(ev.WINDOW_ACCEPTED, "carol", key=K3, note="ok"))
    with pytest.raises(BackfillError, match=f"^bf-20261125-3f9a2c: window {K3} was already accepted by carol$"):
        gate_window_acceptance(rec, accepted, BOB, K3)


def test_policy_json_round_trip() -> None:
    policy = ApprovalPolicy(
        required=2, approvers=("a", "b"), expires=timedelta(seconds=90), canary=3, identity="azure-ad"
    )
    assert ApprovalPolicy.from_json(policy.to_json()) == policy


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="has no UTC offset"):
        derive_state(record(), [], datetime(2026, 11, 25, 9, 0))


NAMES = st.sampled_from(["bob", "Bob", "carol", "dave", "erin", "alice"])


@given(
    required=st.integers(1, 3),
    approvers=st.lists(NAMES, max_size=6),
    gaps=st.lists(st.integers(0, 90), min_size=6, max_size=6),
)
def test_status_follows_distinct_timely_approvals(required: int, approvers: list[str], gaps: list[int]) -> None:
    rec = record(required=required, expires=timedelta(hours=1))
    chain, minute = Chain(), 0
    for name, gap in zip(approvers, gaps, strict=False):
        minute += gap
        if minute >= 60:
            break
        chain.add(ev.APPROVED, name, minutes=minute)
    state = derive_state(rec, chain.events, T0 + timedelta(minutes=59))
    distinct: list[str] = []
    for event in chain.events:
        if event.actor.casefold() not in distinct:
            distinct.append(event.actor.casefold())
    expected = BackfillStatus.APPROVED if len(distinct) >= required else BackfillStatus.REQUESTED
    assert state.status is expected
    assert [a.casefold() for a in state.approvals] == distinct
    # Approved or not, nothing started within the hour of its last wait.
    assert derive_state(rec, chain.events, T0 + timedelta(hours=3)).status is BackfillStatus.EXPIRED


def _jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


CLAIM = st.one_of(st.none(), st.text(max_size=12))


@given(upn=CLAIM, unique_name=CLAIM, oid=CLAIM, other=st.text(max_size=8))
def test_principal_is_the_first_named_claim(
    upn: str | None, unique_name: str | None, oid: str | None, other: str
) -> None:
    claims = {k: v for k, v in {"upn": upn, "unique_name": unique_name, "oid": oid}.items() if v is not None}
    claims["name"] = other
    named = [v.strip() for v in (upn, unique_name, oid) if v is not None and v.strip()]
    assert principal_from_token(_jwt(claims)) == (named[0] if named else None)


@given(st.text(max_size=40))
def test_garbage_tokens_name_nobody(token: str) -> None:
    if token.count(".") != 2:
        assert principal_from_token(token) is None
    else:
        principal_from_token(token)  # never raises, whatever the middle part holds


def test_azure_principal_only_without_declared_actor_or_static_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_ACTOR", "ops-lead")
    assert resolve_actor() == Actor("ops-lead", IdentitySource.DECLARED)
    monkeypatch.delenv("BACKFILL_ACTOR")
    # conftest sets BACKFILL_ADF_TOKEN (the emulator's static token): Azure is not asked.
    assert resolve_actor().source is IdentitySource.OS


def test_a_start_without_approval_does_not_count() -> None:
    state = state_of(record(), Chain().add(ev.STARTED, "alice"))
    assert state.status is BackfillStatus.REQUESTED
    assert state.started_at is None
