"""``[approval] identity``, four eyes across identity sources, hostile identities and notes
(spec §15; issue 8, attacks 1 and 2b; issue 9 #8 and #9)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from backfill_samples import BID, K1, T0, Chain, sample_record
from hypothesis import given
from hypothesis import strategies as st
from runner_support import base_time, cli, emulator, events, plan_text, request, scenario, write_plan

from backfill import events as ev
from backfill.approvals import assert_satisfiable, gate_approval
from backfill.backfills import ApprovalPolicy, BackfillRecord, derive_state
from backfill.cli import main
from backfill.errors import BackfillError, ConfigError
from backfill.identity import Actor, IdentitySource, current_actor, same_person
from backfill.terminal import strip_controls

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


def record(requester: str = "alice", source: str = "declared", **policy: Any) -> BackfillRecord:
    return sample_record(
        id=BID,
        plan_path="plans/north.toml",
        pipeline="P",
        factory_key="s/r/f",
        title="t",
        ticket="",
        requester=requester,
        requester_source=source,
        policy=ApprovalPolicy(**policy),
        decisions={K1: "run"},
    )


def approve(rec: BackfillRecord, actor: Actor) -> str:
    return gate_approval(rec, derive_state(rec, [], T0), actor)


# --- identity = any | verified | <source> -------------------------------------------------------


def test_verified_refuses_a_declared_approver() -> None:
    # Issue 8, attack 1: BACKFILL_ACTOR=bob typed by alice, with approvers = ["bob"].
    rec = record(approvers=("bob",), identity="verified")
    with pytest.raises(
        BackfillError,
        match=r"demands a verified identity \(azure-ad, database, oidc, proxy\); "
        r"bob is declared$",
    ):
        approve(rec, Actor("bob", IdentitySource.DECLARED))
    with pytest.raises(BackfillError, match=r"bob is os$"):
        approve(rec, Actor("bob", IdentitySource.OS))
    for source in (IdentitySource.AZURE_AD, IdentitySource.DATABASE, IdentitySource.OIDC, IdentitySource.PROXY):
        assert approve(rec, Actor("bob", source)) == ev.APPROVED


def test_the_allow_list_never_matches_by_local_part() -> None:
    rec = record(approvers=("bob",), aliases=(("bob", "bob@contoso.com"),))
    with pytest.raises(BackfillError, match=r"bob@fabrikam.com is not among the approvers \(bob\)$"):
        approve(rec, Actor("bob@fabrikam.com", IdentitySource.AZURE_AD))
    assert approve(rec, Actor("bob@contoso.com", IdentitySource.AZURE_AD)) == ev.APPROVED


def test_one_named_source() -> None:
    rec = record(identity="database")
    with pytest.raises(BackfillError, match=r"demands a database identity; bob@contoso.com is azure-ad$"):
        approve(rec, Actor("bob@contoso.com", IdentitySource.AZURE_AD))
    assert approve(rec, Actor("bob", IdentitySource.DATABASE)) == ev.APPROVED
    assert approve(record(identity="any"), Actor("bob", IdentitySource.DECLARED)) == ev.APPROVED


# --- four eyes across sources -------------------------------------------------------------------


def test_the_token_local_part_is_the_declared_requester() -> None:
    # Issue 8, attack 2b: requested as `alice`, approved as alice@contoso.com from a token.
    with pytest.raises(
        BackfillError,
        match=r"alice@contoso.com \(alice\) requested this backfill and cannot "
        r"approve it \(four eyes\)$",
    ):
        approve(record(), Actor("alice@contoso.com", IdentitySource.AZURE_AD))
    with pytest.raises(BackfillError, match="four eyes"):
        approve(record("alice@contoso.com", "azure-ad"), Actor("Alice", IdentitySource.OS))


def test_aliases_name_one_person() -> None:
    rec = record(aliases=(("alice", "ajones@fabrikam.com", "a.jones"),))
    for name in ("ajones@fabrikam.com", "A.Jones"):
        with pytest.raises(BackfillError, match="four eyes"):
            approve(rec, Actor(name, IdentitySource.AZURE_AD))
    assert approve(rec, Actor("bob@contoso.com", IdentitySource.AZURE_AD)) == ev.APPROVED


def test_refuse_when_unsure() -> None:
    with pytest.raises(
        BackfillError,
        match=r"cannot tell whether alice@fabrikam.com is alice@contoso.com, who "
        r"requested it \(four eyes\); name them in \[approval\] aliases",
    ):
        approve(record("alice@contoso.com", "azure-ad"), Actor("alice@fabrikam.com", IdentitySource.AZURE_AD))


def test_one_person_under_two_sources_counts_once() -> None:
    rec = record(required=2)
    chain = Chain().add(ev.APPROVED, "bob", minutes=0)
    (first,) = chain.events
    state = derive_state(rec, [first], T0)
    with pytest.raises(BackfillError, match=r"bob@contoso.com has already approved it"):
        gate_approval(rec, state, Actor("bob@contoso.com", IdentitySource.AZURE_AD))
    second = chain.add(ev.APPROVED, "bob@contoso.com", minutes=0, source="azure-ad").events[-1]
    assert len(derive_state(rec, [first, second], T0).approvals) == 1


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_same_person_is_symmetric(a: str, b: str) -> None:
    assert same_person(a, b) == same_person(b, a)
    assert same_person(a, a) is True


# --- approvals that can never be given (issue 9 #8) ---------------------------------------------


@pytest.mark.parametrize(
    ("policy", "left"),
    [
        ({"approvers": ("alice",)}, "nobody"),
        ({"approvers": ("alice@contoso.com",)}, "nobody"),
        ({"approvers": ("alice", "bob"), "required": 2}, "bob"),
        ({"approvers": ("bob", "Bob"), "required": 2}, "bob"),
    ],
)
def test_unsatisfiable_approvers_are_refused(policy: dict[str, object], left: str) -> None:
    with pytest.raises(BackfillError, match=f"approval.approvers can never approve it: .* the list leaves {left}$"):
        assert_satisfiable(ApprovalPolicy(**policy), "alice", "p.toml")  # type: ignore[arg-type]
    assert_satisfiable(ApprovalPolicy(approvers=("bob",)), "alice", "p.toml")
    assert_satisfiable(ApprovalPolicy(), "alice", "p.toml")


def test_request_refuses_approvers_that_can_never_approve(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = tmp_path / "p.toml"
    plan.write_text(plan_text(base_time(), 2).replace("[approval]\n", '[approval]\napprovers = ["alice"]\n'))
    with emulator(scenario(base_time()), monkeypatch):
        assert cli(monkeypatch, "alice", "request", str(plan)) == 1
    assert capsys.readouterr().err == (
        f"error: {plan}: approval.approvers can never approve it: 1 approval needed from someone other than "
        "alice (four eyes), and the list leaves nobody\n"
    )


CHECK_ERROR = """
[[checks]]
name = "broken"
kind = "command"
command = ["false"]
"""


def test_request_refuses_when_no_window_can_run(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2, checks=CHECK_ERROR)
    with emulator(scenario(base_time()), monkeypatch):
        assert cli(monkeypatch, "alice", "request", str(plan)) == 1
    assert capsys.readouterr().err == (
        f"error: {plan}: nothing to request: no window can run (2 blocked; only a blocked-partial window can "
        "be accepted), fix what blocks them first (backfill preview shows why)\n"
    )


# --- declared identities: warned at request, refused under identity = verified ------------------


def test_request_says_who_and_warns_about_declared_approvals(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch):
        assert cli(monkeypatch, "alice", "request", str(plan)) == 0
        out = capsys.readouterr().out.splitlines()
        assert "requested as alice (declared by BACKFILL_ACTOR)" in out
        warnings = [line for line in out if line.startswith("warning:")]
        assert warnings == [
            "warning: a declared identity (BACKFILL_ACTOR, anyone can set it) can approve this "
            'plan; [approval] identity = "verified" demands one a third party vouches for'
        ]
        plan.write_text(plan_text(base_time(), 2, approval={"identity": "verified"}))
        assert cli(monkeypatch, "alice", "request", str(plan)) == 0
        assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]


def test_declared_bob_cannot_approve_a_verified_plan(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2, approval={"identity": "verified"})
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys, approve=False)
        assert cli(monkeypatch, "bob", "approve", bid) == 1
        assert cli(monkeypatch, "bob", "run", bid) == 3
        assert emu.create_run_calls() == []
    assert "demands a verified identity" in capsys.readouterr().err
    assert [e.kind for e in events(bid)] == [ev.REQUESTED]


# --- identities are one printable line; notes lose control sequences (issue 9 #9) ---------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "BACKFILL_ACTOR is empty: name who is acting (or unset it)"),
        ("   ", "BACKFILL_ACTOR is empty: name who is acting (or unset it)"),
        ("bob\nalice", "BACKFILL_ACTOR holds a control character (U+000A); an identity is one printable line"),
        ("bob\x1b[2J", "BACKFILL_ACTOR holds a control character (U+001B); an identity is one printable line"),
        ("b\u202eob", "BACKFILL_ACTOR holds a control character (U+202E); an identity is one printable line"),
    ],
)
def test_hostile_declared_identities_are_refused(value: str, message: str, monkeypatch: MP) -> None:
    monkeypatch.setenv("BACKFILL_ACTOR", value)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        current_actor()


def test_an_empty_actor_is_one_line_at_the_command(monkeypatch: MP, capsys: Cap) -> None:
    monkeypatch.setenv("BACKFILL_ACTOR", "")
    assert main.run(["approve", "bf-20261125-000000"]) == 1
    assert capsys.readouterr().err == "error: BACKFILL_ACTOR is empty: name who is acting (or unset it)\n"


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("ok \x1b[31mred\x1b[0m", "ok red"),
        ("title\x1b]0;pwned\x07 set", "title set"),
        ("link \x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "link click"),
        ("8-bit \x9b2J csi \x9d0;t\x9c osc", "8-bit csi osc"),
        ("line one\nline two\r\nthree\ttab", "line one line two three tab"),
        ("nul\x00 bell\x07 del\x7f", "nul bell del"),
    ],
)
def test_control_sequences_are_stripped(text: str, clean: str) -> None:
    assert strip_controls(text) == clean


@given(st.text())
def test_stripped_text_is_one_printable_line(text: str) -> None:
    stripped = strip_controls(text)
    assert not [c for c in stripped if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    assert stripped == stripped.strip() and strip_controls(stripped) == stripped


def test_notes_and_reasons_are_recorded_and_printed_clean(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch):
        capsys.readouterr()
        assert cli(monkeypatch, "alice", "request", str(plan), "--note", "sink \x1b]0;owned\x07lock\x1b[2J") == 0
        bid = capsys.readouterr().out.splitlines()[0]
        assert cli(monkeypatch, "bob", "reject", bid, "--reason", "wrong\x1b[1A\x1b[2K range\nfor sure") == 0
        out = capsys.readouterr().out
    assert out == f"rejected {bid}: wrong range for sure\n"
    requested, rejected = events(bid)
    assert requested.payload["note"] == "sink lock"
    assert rejected.payload["reason"] == "wrong range for sure"


@pytest.mark.parametrize(
    ("table", "key"),
    [('approvers = ["bob\\nalice"]', "approvers[0]"), ('aliases = { alice = ["a\\u001b[2Jb"] }', "aliases.alice[0]")],
)
def test_plan_identities_are_one_printable_line(table: str, key: str, tmp_path: Path, capsys: Cap) -> None:
    plan = tmp_path / "p.toml"
    plan.write_text(plan_text(base_time(), 2).replace("[approval]\n", f"[approval]\n{table}\n"))
    assert main.run(["plan", "check", str(plan)]) == 1
    assert capsys.readouterr().err == (
        f"error: {plan}: approval.{key}: expected one printable line without surrounding spaces\n"
    )


def test_an_approver_who_may_have_approved_already_is_refused() -> None:
    rec = record(required=2)
    (first,) = Chain().add(ev.APPROVED, "bob@contoso.com", minutes=0, source="azure-ad").events
    with pytest.raises(
        BackfillError,
        match=r"cannot tell whether bob@fabrikam.com is bob@contoso.com, who "
        r"already approved it",
    ):
        gate_approval(rec, derive_state(rec, [first], T0), Actor("bob@fabrikam.com", IdentitySource.AZURE_AD))
