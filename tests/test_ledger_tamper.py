"""Issue 8 attacks 3 and 6 on SQLite: ``run`` verifies before it acts, and a ledger that vanished
or shrank is tampering, never silently recreated empty."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from runner_support import base_time, cli, emulator, request, scenario, write_plan

from backfill.cli.main import run
from backfill.errors import LedgerInvalid
from backfill.identity import Actor, IdentitySource
from backfill.store.database import Database
from backfill.store.ledger import Ledger
from backfill.store.seen import remember_checkpoint, seen_checkpoint

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch
ALICE = Actor("alice", IdentitySource.DECLARED)


def ledger_file(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"  # conftest's BACKFILL_LEDGER


def raw(tmp_path: Path, *statements: str) -> None:
    """What an attacker with the file does: sqlite3, triggers dropped first."""
    with sqlite3.connect(ledger_file(tmp_path)) as conn:
        for name in ("ledger_events_no_update", "ledger_events_no_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        for statement in statements:
            conn.execute(statement)


def err_line(capsys: Cap) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def test_run_refuses_a_ledger_whose_chain_is_broken(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        # The approval now says carol approved: no hash recomputed.
        raw(tmp_path, "UPDATE ledger_events SET actor = 'carol' WHERE kind = 'backfill.approved'")
        assert cli(monkeypatch, "alice", "run", bid) == 5
        assert emu.create_run_calls() == []
    assert err_line(capsys) == (
        "error: ledger: event 2 (backfill.approved) hash mismatch; refusing to act on a ledger that does not verify"
    )


def test_run_refuses_a_ledger_shrunk_below_what_it_verified(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    plan = write_plan(tmp_path, 2)
    with emulator(scenario(base_time()), monkeypatch) as emu:
        bid = request(plan, monkeypatch, capsys)
        assert cli(monkeypatch, "alice", "run", bid) == 0, capsys.readouterr()
        seen = seen_checkpoint(f"sqlite:///{ledger_file(tmp_path)}")
        assert seen is not None and seen[0] >= 2
        calls = len(emu.create_run_calls())
        capsys.readouterr()
        raw(tmp_path, "DELETE FROM ledger_events WHERE seq > 2")  # back to "requested, approved"
        assert cli(monkeypatch, "alice", "run", bid) == 5
        assert len(emu.create_run_calls()) == calls
    line = err_line(capsys)
    assert line.startswith("error: ledger: event 3 missing: the ledger ends at event 2 but this machine verified event")
    assert run(["ledger", "verify"]) == 5
    assert "(truncated)" in err_line(capsys)


@pytest.mark.parametrize("args", [["status"], ["ledger", "verify"], ["ledger", "show"]])
def test_a_dropped_events_table_is_tampering(tmp_path: Path, args: list[str], capsys: Cap) -> None:
    Ledger(Database()).append("note", {"text": "x"}, actor=ALICE)
    raw(tmp_path, "DROP TABLE ledger_events")
    assert run(args) == 5
    assert err_line(capsys) == (
        f"error: ledger sqlite:///{ledger_file(tmp_path)}: table ledger_events is missing although the schema is "
        "recorded (dropped: tampering); restore the database from a backup, nothing was recreated"
    )
    with pytest.raises(LedgerInvalid):
        Database()  # a writing command does not recreate it either
    with sqlite3.connect(ledger_file(tmp_path)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "ledger_events" not in names


@pytest.mark.parametrize("how", ["tables dropped", "file deleted"])
def test_a_ledger_gone_after_this_machine_saw_it_is_tampering(tmp_path: Path, how: str, capsys: Cap) -> None:
    db = Database()
    ledger = Ledger(db)
    ledger.append("note", {"text": "x"}, actor=ALICE)
    ledger.verify_for_action()
    db.dispose()
    if how == "file deleted":
        for path in tmp_path.glob("ledger.db*"):
            path.unlink()
    else:
        with sqlite3.connect(ledger_file(tmp_path)) as conn:
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                conn.execute(f"DROP TABLE {name}")
    for args in (["status"], ["ledger", "verify"]):
        assert run(args) == 5
        assert "this machine has seen event 1 in it but it holds no ledger (dropped or replaced: tampering)" in (
            err_line(capsys)
        )
    with pytest.raises(LedgerInvalid, match="tampering"):
        Database()


def test_from_a_trusted_checkpoint_an_old_edit_of_the_backfill_is_caught(tmp_path: Path) -> None:
    db = Database()
    ledger = Ledger(db)
    ledger.append("backfill.requested", {"plan_hash": "ab" * 32}, actor=ALICE, backfill_id="bf-1")
    ledger.append("note", {"text": "other"}, actor=ALICE)
    ledger.verify_for_action("bf-1")
    ledger.append("note", {"text": "newer"}, actor=ALICE)
    assert ledger.verify_for_action("bf-1").head_seq == 3
    # The request's plan hash swapped; its own hash recomputed, so only its link to event 2 tells.
    from backfill.chain import compute_hash

    event = ledger.events(backfill_id="bf-1")[0]
    fields = {**event.fields(), "payload": {"plan_hash": "cd" * 32}}
    forged = compute_hash(event.prev_hash, fields)
    raw(
        tmp_path,
        f"UPDATE ledger_events SET payload = '{{\"plan_hash\":\"{'cd' * 32}\"}}', hash = '{forged}' WHERE seq = 1",
    )
    with pytest.raises(LedgerInvalid, match=r"event 1 \(backfill.requested\) chain broken: event 2 does not link"):
        ledger.verify_for_action("bf-1")


def test_a_rewritten_history_at_the_trusted_checkpoint_is_caught() -> None:
    db = Database()
    ledger = Ledger(db)
    ledger.append("note", {"text": "x"}, actor=ALICE)
    remember_checkpoint(db.url, (1, "ef" * 32))
    with pytest.raises(LedgerInvalid, match="does not match the checkpoint this machine verified"):
        ledger.verify_for_action()


def test_the_record_never_moves_backwards() -> None:
    url = "sqlite:///x.db"
    remember_checkpoint(url, (5, "ab" * 32))
    remember_checkpoint(url, (3, "cd" * 32))
    assert seen_checkpoint(url) == (5, "ab" * 32)
