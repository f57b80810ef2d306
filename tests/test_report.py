"""``backfill report``: the evidence of a backfill, built through the real CLI against the emulator."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from backfill_samples import Chain, sample_record
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_samples import SINK_CHECK
from runner_support import EVERY, base_time, cli, emulator, fail_in_copy, keys, scenario, write_plan
from sqlalchemy import update

from backfill import events as ev
from backfill.backfills import BackfillRecord
from backfill.chain import verify_chain
from backfill.report.build import build_report
from backfill.report.html import render_html
from backfill.report.text import render_text
from backfill.store.backfills import list_backfills
from backfill.store.database import Database
from backfill.store.ledger import TABLE
from backfill.timeutil import format_utc

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch

INJECTED = "<script>alert('x')</script> & \"quoted\""
REPORT_KEYS = {"schema", "generated_at", "backfill", "ledger", "approvals", "gates", "decisions", "runs", "timeline"}


@dataclass(frozen=True)
class Story:
    backfill_id: str
    keys: list[str]
    ledger: Path


def _sink(path: Path, base: datetime) -> str:
    """A sink where the third window holds 3 of its 10 rows: a partial write."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE readings (ts TEXT)")
    third = base + 2 * EVERY
    conn.executemany("INSERT INTO readings VALUES (?)", [(format_utc(third + timedelta(minutes=i)),) for i in range(3)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def told(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """Built once for the module (the reports only read it): request, approve with a note, accept
    a partial window, run to the canary pause, approve the canary, run on; the second window fails
    in CopyReadings, so the backfill ends failed."""
    root = tmp_path_factory.mktemp("story")
    base = base_time()
    scen = scenario(base)
    fail_in_copy(scen, base + EVERY, "Sink lock timeout on meter_readings")
    plan = write_plan(
        root, 3, base=base, approval={"canary": 1}, execution={"on_failure": "continue"}, checks=SINK_CHECK
    )
    first, second, third = keys(base, 3)
    with pytest.MonkeyPatch.context() as mp, emulator(scen, mp):
        # What the autouse isolation does per test, for this module-wide ledger.
        mp.chdir(root)
        mp.setenv("BACKFILL_LEDGER", f"sqlite:///{root / 'ledger.db'}")
        mp.setenv("SINK_URL", _sink(root / "sink.db", base))
        assert cli(mp, "alice", "request", str(plan)) == 0
        db = Database()
        bid = list_backfills(db)[0].id
        db.dispose()
        assert cli(mp, "bob", "approve", bid, "--note", f"ok per CAB {INJECTED}") == 0
        assert (
            cli(
                mp,
                "carol",
                "approve",
                bid,
                "--window",
                third,
                "--accept",
                "partial",
                "--note",
                "rows are replaced downstream",
            )
            == 0
        )
        assert cli(mp, "alice", "run", bid) == 3
        assert cli(mp, "carol", "approve", bid, "--note", "canary looks right") == 0
        assert cli(mp, "alice", "run", bid) == 1
    yield Story(bid, [first, second, third], root / "ledger.db")


@pytest.fixture
def story(told: Story, tmp_path: Path, monkeypatch: MP) -> Story:
    """This test's own copy of the story's ledger (the SQLite backup API includes the WAL)."""
    copy = tmp_path / "story-ledger.db"
    source, target = sqlite3.connect(told.ledger), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    monkeypatch.setenv("BACKFILL_LEDGER", f"sqlite:///{copy}")
    return Story(told.backfill_id, told.keys, copy)


def _rows(lines: list[str], heading: str) -> list[list[str]]:
    """The cells of the Markdown table under ``heading`` (header and rule dropped)."""
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    table = [line for line in lines[start:end] if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table]


def _report(monkeypatch: MP, capsys: Cap, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli(monkeypatch, "dave", "report", *args)
    out, err = capsys.readouterr()
    return code, out, err


def test_text_report_holds_the_evidence(story: Story, monkeypatch: MP, capsys: Cap) -> None:
    code, out, err = _report(monkeypatch, capsys, story.backfill_id)
    assert (code, err) == (0, "")
    first, second, third = story.keys
    lines = out.splitlines()
    assert lines[0] == f"# Backfill {story.backfill_id}: Replay north"
    assert "- ticket: INC-4821" in lines
    assert "- state: failed" in lines
    assert any(line.startswith("- chain: ok: ") and "events verified, checkpoint " in line for line in lines)
    assert "## Approvals (1 of 1 required)" in lines
    assert any(line.startswith("| bob ") and "ok per CAB <script>" in line for line in lines)
    assert any(
        line.startswith("- canary approved by carol (declared) at ") and line.endswith(": canary looks right")
        for line in lines
    )
    assert any(line.startswith(f"| {third} | carol ") and "rows are replaced downstream" in line for line in lines)
    assert "- 2 run, 1 blocked-partial" in lines
    decisions = _rows(lines, "## Decisions (frozen at request)")
    assert [row[:3] for row in decisions] == [
        [first, "run", "succeeded"],
        [second, "run", "failed"],
        [third, "blocked-partial", "succeeded"],
    ]
    runs = _rows(lines, "## Runs")
    assert [row[0:2] + row[3:4] + row[5:] for row in runs] == [
        [first, "1", "Succeeded", "-", "-"],
        [second, "1", "Failed", "CopyReadings", "Sink lock timeout on meter_readings"],
        [third, "1", "Succeeded", "-", "-"],
    ]
    timeline = [row[3] for row in _rows(lines, "## Timeline")]
    assert timeline[:4] == [ev.REQUESTED, ev.APPROVED, ev.WINDOW_ACCEPTED, ev.STARTED]
    assert ev.CANARY_PAUSED in timeline and ev.CANARY_APPROVED in timeline and timeline[-1] == ev.FAILED
    assert "hunter2" not in out


def test_html_report_is_written_parses_and_escapes(story: Story, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    target = tmp_path / "evidence.html"
    code, out, err = _report(monkeypatch, capsys, story.backfill_id, "--html", str(target))
    assert (code, out, err) == (0, "", f"report of {story.backfill_id} written to {target}\n")
    page = target.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert parsed.unclosed == [] and "script" not in parsed.tags
    assert not ({"link", "img", "iframe", "object"} & parsed.tags) and "src=" not in page and "http" not in page
    assert story.backfill_id in parsed.text
    assert f"ok per CAB {INJECTED}" in parsed.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert "Sink lock timeout on meter_readings" in parsed.text and "hunter2" not in page


def test_json_report_is_stable(story: Story, monkeypatch: MP, capsys: Cap) -> None:
    code, out, err = _report(monkeypatch, capsys, story.backfill_id, "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == REPORT_KEYS and data["schema"] == 1
    again = json.loads(_report(monkeypatch, capsys, story.backfill_id, "--json")[1])
    assert {k: v for k, v in again.items() if k != "generated_at"} == {
        k: v for k, v in data.items() if k != "generated_at"
    }
    assert out == json.dumps(data, indent=2, sort_keys=True) + "\n"
    first, second, third = story.keys
    assert [(r["window"], r["status"], r["failed_activity"], r["error_code"]) for r in data["runs"]] == [
        (first, "Succeeded", None, None),
        (second, "Failed", "CopyReadings", "2200"),
        (third, "Succeeded", None, None),
    ]
    assert all(r["duration_seconds"] is not None and r["mode"] == "new-run" for r in data["runs"])
    assert data["approvals"]["given"][0]["note"] == f"ok per CAB {INJECTED}"
    assert data["gates"]["accepted_windows"] == [
        {
            "key": third,
            "actor": "carol",
            "source": "declared",
            "at": data["gates"]["accepted_windows"][0]["at"],
            "note": "rows are replaced downstream",
        }
    ]
    assert data["ledger"]["ok"] is True and data["ledger"]["first_bad"] is None
    assert data["ledger"]["backfill_events"] == len(data["timeline"])
    assert [t["seq"] for t in data["timeline"]] == sorted(t["seq"] for t in data["timeline"])


def test_a_tampered_ledger_is_reported_and_exits_5(story: Story, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    db = Database()
    with db.writing() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS ledger_events_no_update")
        conn.execute(update(TABLE).where(TABLE.c.seq == 2).values(actor="mallory"))
    db.dispose()
    target = tmp_path / "r.html"
    code, out, err = _report(monkeypatch, capsys, story.backfill_id, "--html", str(target))
    assert code == 5
    assert err.splitlines()[-1] == "error: ledger: event 2 (backfill.approved) hash mismatch"
    assert "FAILED: ledger: event 2 (backfill.approved) hash mismatch (an event of this backfill)" in target.read_text()
    code, out, _ = _report(monkeypatch, capsys, story.backfill_id)
    assert code == 5 and "- chain: FAILED: ledger: event 2 (backfill.approved) hash mismatch" in out


def test_unknown_id_and_unwritable_file(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    assert _report(monkeypatch, capsys, "bf-nope") == (
        1,
        "",
        "error: no backfill bf-nope in the ledger (backfill status lists them)\n",
    )
    code, _, err = _report(monkeypatch, capsys, "bf-nope", "--html", str(tmp_path))
    assert code == 2 and "is a directory" in err


def test_requester_note_is_redacted_and_a_missing_html_folder_is_one_line(
    tmp_path: Path, monkeypatch: MP, capsys: Cap
) -> None:
    base = base_time()
    plan = write_plan(tmp_path, 1, base=base)
    with emulator(scenario(base), monkeypatch):
        capsys.readouterr()
        assert cli(monkeypatch, "alice", "request", str(plan), "--note", "sink Password=s3cret;") == 0
        bid = capsys.readouterr().out.splitlines()[0]
    code, out, _ = _report(monkeypatch, capsys, bid)
    assert code == 0 and "s3cret" not in out
    assert "- requested: by alice (declared) at " in out and ": sink Password=***;" in out
    assert "- state: requested" in out and "## Runs\n\n(none)\n" in out
    missing_dir = tmp_path / "no" / "such.html"
    assert _report(monkeypatch, capsys, bid, "--html", str(missing_dir)) == (
        1,
        "",
        f"error: cannot write {missing_dir}: No such file or directory\n",
    )


# --- pure: any text survives rendering escaped -----------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.stack: list[str] = []
        self.unclosed: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in ("meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.unclosed.append(tag)

    def handle_data(self, data: str) -> None:
        self.text += data

    def close(self) -> None:
        super().close()
        self.unclosed += self.stack


def _record(note: str) -> BackfillRecord:
    return sample_record(
        id="bf-20261125-abcdef",
        plan_path="/plans/p.toml",
        pipeline="P",
        factory_key="s/r/f",
        title=note,
        ticket="T-1",
        requester_source="os",
        decisions={"2026-11-03T00:00:00Z/2026-11-03T00:15:00Z": "run"},
    )


@settings(max_examples=40, deadline=None)
@given(note=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40))
def test_any_note_renders_escaped(note: str) -> None:
    record = _record(note)
    at = datetime(2026, 11, 25, 10, tzinfo=UTC)
    chain = Chain(record.id, start=at).add(ev.REQUESTED, "alice", minutes=0, source="os", note=note)
    chain.add(ev.APPROVED, "bob", minutes=0, source="os", note=note, approval=1, required=1)
    requested, approved = chain.events
    data = build_report(record, [requested, approved], verify_chain([requested, approved]), at)
    assert data["backfill"]["state"] == "approved" and data["approvals"]["given"][0]["note"] == note
    page = _Page()
    page.feed(render_html(data))
    page.close()
    assert page.unclosed == [] and "script" not in page.tags
    assert " ".join(note.split()) in " ".join(page.text.split())
    assert render_text(data).count("\n| 1 ") == 1  # a note never breaks a table row in two
