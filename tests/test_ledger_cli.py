"""``backfill ledger show|verify|checkpoint|export`` through the real CLI entry point."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from backfill.chain import GENESIS_HASH, LedgerEvent
from backfill.cli.main import run
from backfill.identity import Actor, IdentitySource
from backfill.secrets import Secret
from backfill.store.database import Database
from backfill.store.ledger import TABLE, Ledger

ALICE = Actor("alice", IdentitySource.OS)
BOB = Actor("bob", IdentitySource.DECLARED)
W1 = "2026-11-03T02:00:00Z/2026-11-03T02:15:00Z"
W2 = "2026-11-03T02:15:00Z/2026-11-03T02:30:00Z"


@pytest.fixture
def db() -> Iterator[Database]:
    database = Database()  # BACKFILL_LEDGER, as the CLI sees it
    yield database
    database.dispose()


@pytest.fixture
def events(db: Database) -> list[LedgerEvent]:
    ledger = Ledger(db)
    ledger.append("request", {"plan_hash": "ab" * 32, "note": "INC-4821"}, actor=ALICE, backfill_id="bf-1")
    ledger.append("approval", {"note": "ok", "token": "s3cr3t"}, actor=BOB, backfill_id="bf-1")
    ledger.append("intent", {"parameters": {"key": Secret("${K}")}}, actor=ALICE, backfill_id="bf-1", window_key=W1)
    ledger.append("request", {"plan_hash": "cd" * 32}, actor=BOB, backfill_id="bf-2", window_key=W2)
    return ledger.events()


def tamper(db: Database, statement: object) -> None:
    with db.writing() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS ledger_events_no_update")
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS ledger_events_no_delete")
        conn.execute(statement)  # type: ignore[call-overload]


def test_show_prints_a_table_in_utc(events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["seq", "at", "actor", "kind", "backfill", "window", "payload", "hash"]
    assert len(lines) == 2 + len(events)
    assert re.match(r"^1\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+alice \(os\)\s+request\s+bf-1\s+", lines[2])
    assert lines[2].rstrip().endswith(events[0].hash[:12])
    assert '{"note":"ok","token":"***"}' in lines[3]
    assert W1 in lines[4] and '{"parameters":{"key":"***"}}' in lines[4]


def test_show_json_is_the_export_form(events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"events": [e.to_json() for e in events]}
    assert shown["events"][0]["at"].endswith("Z")


def test_show_filters(events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]) -> None:
    def seqs(*args: str) -> list[int]:
        assert run(["ledger", "show", "--json", *args]) == 0
        return [e["seq"] for e in json.loads(capsys.readouterr().out)["events"]]

    assert seqs("--backfill", "bf-1") == [1, 2, 3]
    assert seqs("--kind", "request") == [1, 4]
    assert seqs("--kind", "approval", "--kind", "intent") == [2, 3]
    assert seqs("--since", events[1].to_json()["at"], "--until", events[3].to_json()["at"]) == [2, 3]
    assert seqs("--backfill", "bf-9") == []


def test_show_refuses_a_naive_time(events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "show", "--since", "2026-11-03T02:00:00"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: --since '2026-11-03T02:00:00' has no UTC offset; write it with Z or +00:00\n"


def test_until_must_follow_since(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "export", "--since", "2026-11-03T02:00:00Z", "--until", "2026-11-03T01:00:00Z"]) == 2
    assert capsys.readouterr().err == "error: --until must be later than --since\n"


def test_verify_passes_an_untouched_ledger(events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "verify"]) == 0
    assert capsys.readouterr().out == f"ledger: 4 events verified, head 4:{events[-1].hash}\n"


def test_verify_names_the_first_bad_event(
    db: Database, events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(db, update(TABLE).where(TABLE.c.seq == 2).values(actor="mallory"))
    tamper(db, update(TABLE).where(TABLE.c.seq == 3).values(kind="x"))
    assert run(["ledger", "verify"]) == 5
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "error: ledger: event 2 (approval) hash mismatch\n")


def test_checkpoint_prints_seq_and_hash_only(events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "checkpoint"]) == 0
    out = capsys.readouterr().out
    assert out == f"4:{events[-1].hash}\n"
    assert re.fullmatch(r"\d+:[0-9a-f]{64}\n", out)


def test_checkpoint_of_an_empty_ledger_is_genesis(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "checkpoint"]) == 0
    assert capsys.readouterr().out == f"0:{GENESIS_HASH}\n"
    assert run(["ledger", "verify", "--checkpoint", f"0:{GENESIS_HASH}"]) == 0


def test_checkpoint_refuses_a_broken_ledger(
    db: Database, events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(db, delete(TABLE).where(TABLE.c.seq == 1))
    assert run(["ledger", "checkpoint"]) == 5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: ledger: event 1 missing: the sequence jumps from 0 to 2 (events 1 deleted)\n"


def test_verify_checkpoint_catches_a_truncated_tail(
    db: Database, events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["ledger", "checkpoint"]) == 0
    kept = capsys.readouterr().out.strip()
    assert run(["ledger", "verify", "--checkpoint", kept]) == 0
    tamper(db, delete(TABLE).where(TABLE.c.seq >= 3))
    assert run(["ledger", "verify"]) == 0
    capsys.readouterr()
    assert run(["ledger", "verify", "--checkpoint", kept]) == 5
    assert capsys.readouterr().err == (
        "error: ledger: event 3 missing: the ledger ends at event 2 but the checkpoint is event 4 (truncated)\n"
    )


@pytest.mark.parametrize("value", ["4", "4:xyz", "four:" + "a" * 64])
def test_verify_refuses_a_malformed_checkpoint(
    events: list[LedgerEvent], capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert run(["ledger", "verify", "--checkpoint", value]) == 2
    assert capsys.readouterr().err == (
        f"error: --checkpoint: checkpoint {value!r} is not SEQ:HASH (e.g. 42:{'ab' * 32})\n"
    )


def test_export_jsonl_lines_carry_their_own_proof(
    events: list[LedgerEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["ledger", "export", "--format", "jsonl", "--backfill", "bf-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [e.to_json() for e in events[:3]]
    for line in lines:
        data = json.loads(line)
        body = json.dumps(
            {k: v for k, v in data.items() if k != "hash"}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert hashlib.sha256(body.encode()).hexdigest() == data["hash"]
    assert "s3cr3t" not in "".join(lines)


def test_export_csv_to_a_file_with_filters(
    events: list[LedgerEvent], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.csv"
    since = events[1].to_json()["at"]
    assert run(["ledger", "export", "--format", "csv", "--since", since, "--output", str(out)]) == 0
    assert capsys.readouterr().out == f"ledger: exported 3 events to {out}\n"
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["seq"]) for r in rows] == [2, 3, 4]
    assert rows[1]["window_key"] == W1 and rows[0]["window_key"] == ""
    assert rows[1]["payload"] == '{"parameters":{"key":"***"}}'
    assert [r["hash"] for r in rows] == [e.hash for e in events[1:]]
    assert rows[0]["at"] == since


def test_export_refuses_an_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ledger", "export", "--format", "xml"]) == 2
    assert "Invalid value for '--format': 'xml' is not one of 'jsonl', 'csv'." in capsys.readouterr().err


def test_export_to_an_unwritable_place_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "out.jsonl"
    assert run(["ledger", "export", "--output", str(target)]) == 1
    assert capsys.readouterr().err == f"error: cannot write {target}: No such file or directory\n"


def test_ledger_commands_work_on_postgres(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    database = Database()
    Ledger(database).append("request", {"n": 1}, actor=ALICE, backfill_id="bf-1")
    database.dispose()
    assert run(["ledger", "checkpoint"]) == 0
    kept = capsys.readouterr().out.strip()
    assert kept.startswith("1:")
    assert run(["ledger", "verify", "--checkpoint", kept]) == 0
    assert run(["ledger", "export"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[-1])["hash"] == kept.split(":")[1]
