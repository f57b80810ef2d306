"""A console over a team ledger reads, never acts: the database stamps every event with the
console's one login, so an approval through it would be recorded as the console, not the person."""

from __future__ import annotations

import pytest
from console_support import dev_settings, post, sign_in
from test_team_ledger import Team, _request, team

from backfill.console.app import create_app
from backfill.store.database import Database
from backfill.store.ledger import Ledger

__all__ = ["team"]

pytestmark = pytest.mark.postgres


def test_a_team_ledger_console_reads_and_refuses_every_action(team: Team) -> None:
    from starlette.testclient import TestClient

    bid = _request(team, team.alice)
    db = Database(team.url(team.bob), create=False)
    try:
        with TestClient(create_app(dev_settings("bob"), db), base_url="http://127.0.0.1:8484") as client:
            sign_in(client, "bob")
            page = client.get(f"/backfills/{bid}").text
            assert 'id="approve"' not in page and "team mode: the database stamps every event" in page
            refused = post(client, f"/backfills/{bid}/approve", note="through the console")
            assert refused.status_code == 403 and "the console reads only" in refused.text
        assert [e.kind for e in Ledger(db).events(backfill_id=bid)] == ["backfill.requested"]
    finally:
        db.dispose()
