"""``backfill approve``, ``reject`` and ``status`` through the CLI's single error handler.

Backfills are seeded through the store with a hand-built frozen preview, so these tests need
neither a factory nor a plan; the whole ``request`` path is in test_approvals_request.py.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from backfill_samples import K1, K2, K3, sample_record

from backfill import events as ev
from backfill.backfills import ApprovalPolicy
from backfill.cli import main
from backfill.identity import Actor, IdentitySource
from backfill.store.backfills import create_backfill
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.timeutil import utcnow

RUNNER = Actor("alice", IdentitySource.DECLARED)


@pytest.fixture(autouse=True)
def status_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lead points `status` at this module; until then the tests name it themselves.
    monkeypatch.setitem(main.COMMANDS, "status", ("backfill.cli.status", "status", "status"))


def seed(**policy: Any) -> str:
    record = sample_record(
        requested_at=utcnow(),
        policy=ApprovalPolicy(**policy),
        decisions={K1: "rerun", K2: "blocked-partial", K3: "skip-succeeded"},
    )
    db = Database()
    try:
        return create_backfill(db, record, {"runnable": [K1]}, RUNNER).id
    finally:
        db.dispose()


def append(backfill_id: str, kind: str, key: str | None = None, **payload: Any) -> None:
    db = Database()
    try:
        Ledger(db).append(kind, payload, actor=RUNNER, backfill_id=backfill_id, window_key=key)
    finally:
        db.dispose()


def kinds(backfill_id: str) -> list[str]:
    db = Database()
    try:
        return [e.kind for e in Ledger(db).events(backfill_id=backfill_id)]
    finally:
        db.dispose()


def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, actor: str | None, *args: str
) -> tuple[int, str, str]:
    if actor is None:
        monkeypatch.delenv("BACKFILL_ACTOR", raising=False)
    else:
        monkeypatch.setenv("BACKFILL_ACTOR", actor)
    code = main.run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_four_eyes_outsiders_and_repeat_approvals(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bid = seed(required=2, approvers=("bob", "carol"))
    assert cli(capsys, monkeypatch, "alice", "approve", bid) == (
        1,
        "",
        f"error: {bid}: alice requested this backfill and cannot approve it (four eyes)\n",
    )
    assert cli(capsys, monkeypatch, "mallory", "approve", bid) == (
        1,
        "",
        f"error: {bid}: mallory is not among the approvers (bob, carol)\n",
    )
    assert cli(capsys, monkeypatch, "bob", "approve", bid, "--note", "checked the sink") == (
        0,
        f"approval recorded for {bid} (1 of 2); 1 more needed\n",
        "",
    )
    assert cli(capsys, monkeypatch, "Bob", "approve", bid) == (
        1,
        "",
        f"error: {bid}: Bob has already approved it (1 of 2)\n",
    )
    assert cli(capsys, monkeypatch, "carol", "approve", bid) == (
        0,
        f"approved {bid} (2 of 2): backfill run {bid}\n",
        "",
    )
    assert cli(capsys, monkeypatch, "dave", "approve", bid)[0] == 1
    assert kinds(bid) == [ev.REQUESTED, ev.APPROVED, ev.APPROVED]


def test_azure_ad_policy_refuses_declared_and_os_identities(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bid = seed(identity="azure-ad")
    code, _, err = cli(capsys, monkeypatch, "bob", "approve", bid)
    assert (code, err) == (1, f"error: {bid}: the approval policy demands an azure-ad identity; bob is declared\n")
    # No BACKFILL_ACTOR and a static token (no Azure credentials): the OS user acts.
    code, _, err = cli(capsys, monkeypatch, None, "reject", bid, "--reason", "no")
    assert code == 1
    assert err.startswith(f"error: {bid}: ") and err.endswith(" is os\n")
    assert kinds(bid) == [ev.REQUESTED]


def test_expired_request_is_refused_and_recorded_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bid = seed(expires=timedelta(seconds=1))
    time.sleep(1.1)
    code, _, err = cli(capsys, monkeypatch, "bob", "approve", bid)
    assert code == 1
    assert err.startswith(f"error: {bid} expired at ") and err.endswith("; request it again\n")
    assert cli(capsys, monkeypatch, "carol", "reject", bid, "--reason", "late")[2] == err
    assert kinds(bid) == [ev.REQUESTED, ev.EXPIRED]


def test_reject_then_approve_is_refused(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    bid = seed()
    assert cli(capsys, monkeypatch, "bob", "reject", bid)[0] == 2
    assert cli(capsys, monkeypatch, "bob", "reject", bid, "--reason", "  ") == (
        2,
        "",
        "error: --reason must say why the backfill is rejected\n",
    )
    assert cli(capsys, monkeypatch, "bob", "reject", bid, "--reason", "wrong range") == (
        0,
        f"rejected {bid}: wrong range\n",
        "",
    )
    message = f"error: {bid} was rejected by bob: wrong range\n"
    assert cli(capsys, monkeypatch, "carol", "approve", bid) == (1, "", message)
    assert cli(capsys, monkeypatch, "carol", "approve", bid, "--window", K2, "--accept", "partial", "--note", "x") == (
        1,
        "",
        message,
    )


def test_window_accept_only_for_blocked_partial(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bid = seed()
    assert cli(capsys, monkeypatch, "bob", "approve", bid, "--window", K2, "--accept", "partial") == (
        2,
        "",
        "error: --accept partial needs --note TEXT: why the partial window may run\n",
    )
    assert cli(capsys, monkeypatch, "bob", "approve", bid, "--window", K2) == (
        2,
        "",
        "error: --window KEY and --accept partial go together\n",
    )
    assert cli(capsys, monkeypatch, "bob", "approve", bid, "--window", K1, "--accept", "partial", "--note", "n") == (
        1,
        "",
        f"error: {bid}: window {K1} is rerun, not blocked-partial; nothing to accept\n",
    )
    assert cli(
        capsys,
        monkeypatch,
        "bob",
        "approve",
        bid,
        "--window",
        K2,
        "--accept",
        "partial",
        "--note",
        "merge reloads the partial rows",
    ) == (0, f"accepted window {K2} of {bid} (partial): it runs with the backfill\n", "")
    code, out, _ = cli(capsys, monkeypatch, None, "status", bid)
    assert code == 0
    assert "\napprove by " in out and " (requests expire 12h00m after the request)\n" in out
    assert f"\naccepted {K2}: by bob at " in out
    code, out, _ = cli(capsys, monkeypatch, None, "status", bid, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["accepted_windows"][0]["key"] == K2
    assert data["accepted_windows"][0]["note"] == "merge reloads the partial rows"
    assert data["state"] == "requested" and data["progress"]["total"] == 2


def test_canary_pause_is_approved_by_a_second_person(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bid = seed(canary=1)
    assert cli(capsys, monkeypatch, "bob", "approve", bid)[0] == 0
    append(bid, ev.STARTED)
    append(bid, ev.CANARY_PAUSED, windows=1)
    assert cli(capsys, monkeypatch, "alice", "approve", bid)[0] == 1
    assert cli(capsys, monkeypatch, "carol", "approve", bid) == (
        0,
        f"canary approved for {bid}: the remaining windows may run (backfill run {bid})\n",
        "",
    )
    assert cli(capsys, monkeypatch, "dave", "approve", bid) == (
        1,
        "",
        f"error: {bid} is running and awaits no approval\n",
    )


def test_unknown_backfill(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = "error: no backfill bf-nope in the ledger (backfill status lists them)\n"
    assert cli(capsys, monkeypatch, "bob", "approve", "bf-nope") == (1, "", expected)
    assert cli(capsys, monkeypatch, "bob", "status", "bf-nope") == (1, "", expected)


def test_status_list_and_detail(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(capsys, monkeypatch, None, "status") == (0, "no backfills yet (backfill request PLAN creates one)\n", "")
    assert json.loads(cli(capsys, monkeypatch, None, "status", "--json")[1]) == {"schema": 1, "backfills": []}
    bid = seed()
    cli(capsys, monkeypatch, "bob", "approve", bid)
    append(bid, ev.STARTED, concurrency=1)
    append(bid, ev.WINDOW_INTENT, K1, attempt=1)
    append(bid, ev.WINDOW_CREATED, K1, run_id="run-1", attempt=1)
    append(bid, ev.WINDOW_FINISHED, K1, run_id="run-1", status="Succeeded", duration_ms=90_000)
    append(bid, ev.COMPLETED)
    code, out, _ = cli(capsys, monkeypatch, None, "status")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["id", "pipeline", "state", "requested", "by", "requested", "at", "windows"]
    assert lines[2].split()[:4] == [bid, "LoadMeterTelemetry", "completed", "alice"]
    assert lines[2].split()[-1] == "1/1"
    code, out, _ = cli(capsys, monkeypatch, None, "status", bid)
    assert code == 0
    assert out.startswith(f"{bid}: completed\nReplay north (INC-4821)\n")
    assert "approvals (1 of 1): bob (declared) at " in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("2026-")}
    assert rows[K1] == ["rerun", "succeeded", "run-1", "Succeeded", "1m30s"]
    assert rows[K2] == ["blocked-partial", "blocked"]
    assert rows[K3] == ["skip-succeeded", "skipped"]
    assert out.splitlines()[-1] == "progress: 1 done, 0 running, 0 left, 0 failed of 1"
    data = json.loads(cli(capsys, monkeypatch, None, "status", bid, "--json")[1])
    assert data["state"] == "completed"
    assert [a["actor"] for a in data["approvals"]] == ["bob"]
    assert data["windows"][0] == {
        "key": K1,
        "decision": "rerun",
        "state": "succeeded",
        "run_id": "run-1",
        "status": "Succeeded",
        "attempts": 1,
        "accepted": False,
        "cancel_requested": False,
        "started_at": data["windows"][0]["started_at"],
        "finished_at": data["windows"][0]["finished_at"],
        "duration_seconds": 90.0,
        "reason": None,
    }
    assert data["progress"] == {
        "total": 1,
        "done": 1,
        "running": 0,
        "failed": 0,
        "left": 0,
        "average_seconds": 90.0,
        "estimated_finish": None,
    }
