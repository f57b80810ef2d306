"""``backfill incident RUN_ID`` (SPEC §12): the record of case study 1 against the emulator over
HTTPS; exit 4 until the latest follow-up run of the window succeeded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_runs_investigate import PIPELINE, STUCK, Factory, _factory, _z

from backfill.cli.main import run


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Factory]:
    with _factory(tmp_path, monkeypatch, timedelta(seconds=60)) as made:
        yield made


def _incident(capsys: pytest.CaptureFixture[str], *args: str, code: int) -> dict[str, Any]:
    assert run(["incident", STUCK, "--json", *args]) == code
    return dict(json.loads(capsys.readouterr().out))


def _replace(factory: Factory) -> str:
    start, end = factory.stuck_window
    client = factory.emu.client()
    replacement = client.create_run(PIPELINE, {"windowStart": _z(start), "windowEnd": _z(end), "feederRegion": "south"})
    deadline = time.monotonic() + 30
    while client.get_run(replacement).status.value != "Succeeded":
        assert time.monotonic() < deadline, "the replacement run did not finish"
        time.sleep(0.2)
    return replacement


def test_an_open_incident_exits_4_and_names_the_stuck_activity(
    factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _incident(capsys, code=4)
    assert data["resolved"] is False and data["follow_up"] == []
    assert data["run"]["run_id"] == STUCK and data["run"]["outlier"] is True
    assert data["stuck_activity"]["name"] == "CopyReadings"
    assert data["usual_ms"] and data["ledger_events"] == []
    assert {a["name"] for a in data["activities"]} == {"LookupWatermark", "CopyReadings"}


def test_cancelled_and_replaced_the_incident_is_resolved(
    factory: Factory, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = factory.plan()
    reason = "stuck in CopyReadings <12h>; INC-4821"
    assert run(["runs", "cancel", STUCK, "--reason", reason, "--plan", plan, "--yes"]) == 0
    capsys.readouterr()
    data = _incident(capsys, code=4)
    assert data["match_on"] == ["windowStart", "feederRegion"]
    (cancel,) = data["cancels"]
    assert cancel["by"] == "carol@contoso.com" and cancel["reason"] == reason and cancel["outcome"] == "Cancelled"
    assert [e["kind"] for e in data["ledger_events"]] == ["run.cancel-requested", "run.cancelled"]
    replacement = _replace(factory)
    data = _incident(capsys, "--html", "incident.html", code=0)
    assert data["resolved"] is True
    assert [r["run_id"] for r in data["follow_up"]] == [replacement]
    assert data["follow_up"][0]["status"] == "Succeeded"
    page = (tmp_path / "incident.html").read_text(encoding="utf-8")
    assert "Incident resolved: replaced by" in page and replacement in page and "CopyReadings" in page
    assert "&lt;12h&gt;" in page and "<12h>" not in page  # free text escaped
    assert "<script" not in page and "http" not in page.replace("<!doctype html>", "")
    assert run(["incident", STUCK]) == 0
    out = capsys.readouterr().out
    assert "cancel requested " in out and "by carol@contoso.com: " + reason in out and "ADF confirmed Cancelled" in out
    assert f"resolved: {replacement} succeeded at " in out and "stuck or failing activity: CopyReadings" in out


def test_a_cancel_without_outcome_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with _factory(tmp_path, monkeypatch, timedelta(days=1)):
        monkeypatch.setenv("BACKFILL_CANCEL_WAIT", "1s")
        assert run(["runs", "cancel", STUCK, "--reason", "stuck", "--no-check", "--yes"]) == 1
        capsys.readouterr()
        assert run(["incident", STUCK]) == 4
        out = capsys.readouterr().out
        assert "no outcome recorded (no confirmation of the cancel)" in out
        assert "not resolved: no later run of this window yet" in out


def test_unknown_run_is_one_line(factory: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["incident", "no-such-run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: factory: 404") and err.count("\n") == 1
