"""The issue's "done": a new user keeps the demo, serves the console over it with dev sign-in,
approves as bob and sees the evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from console_support import client_for, events, post, sign_in

from backfill import events as ev
from backfill.cli import main
from backfill.console.settings import load_settings

__all__ = ["client_for"]


def test_demo_kept_at_the_request_then_approved_as_bob_in_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], client_for: Any
) -> None:
    kept = tmp_path / "d"
    assert main.run(["demo", "--keep", str(kept), "--step", "request", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "backfill serve --auth dev --dev-users alice,bob" in out
    monkeypatch.setenv("BACKFILL_LEDGER", f"sqlite:///{kept / 'backfill-ledger.db'}")
    client = client_for(load_settings("dev", dev_users="alice,bob"))
    listing = client.get("/").text
    bid = listing.split('href="/backfills/')[1].split('"')[0]
    assert "requested" in listing and "alice@contoso.com (declared)" in listing
    sign_in(client, "alice")
    assert "cannot approve it (four eyes)" in client.get(f"/backfills/{bid}").text
    sign_in(client, "bob")
    assert post(client, f"/backfills/{bid}/approve", note="checked the frozen preview").status_code == 303
    assert (events(bid)[-1].kind, events(bid)[-1].actor) == (ev.APPROVED, "bob")
    evidence = client.get(f"/backfills/{bid}/evidence").text
    assert "events verified" in evidence and "bob (declared)" in evidence
