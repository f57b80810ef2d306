"""The console's pages and actions through its ASGI app (Starlette's TestClient, real SQLite ledger).

Four eyes, read-only readers, CSRF, escaping and redaction are asserted on what the server does,
not only on which buttons a page shows.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from console_support import K1, K2, K3, append, client_for, csrf_of, events, kinds, post, seed, sign_in

from backfill import events as ev
from backfill.console.settings import load_settings
from backfill.errors import UsageError

__all__ = ["client_for"]


def test_the_list_shows_pending_backfills_first_with_requester_age_expiry(client_for: Any) -> None:
    done = seed(title="An older one that was rejected")
    append(done, ev.REJECTED, actor=load_actor("bob"), reason="not now")
    pending = seed(title="Replay north")
    page = client_for().get("/").text
    assert page.index(pending) < page.index(done)
    assert "alice (declared)" in page and "requested" in page and "rejected" in page
    assert "Development sign-in" in page  # the dev banner is on every page


def load_actor(name: str) -> Any:
    from backfill.identity import Actor, IdentitySource

    return Actor(name, IdentitySource.DECLARED)


def test_anonymous_readers_see_the_frozen_preview_and_no_buttons(client_for: Any) -> None:
    bid = seed()
    page = client_for().get(f"/backfills/{bid}").text
    assert "Sign in</a> to approve" in page
    assert 'action="/backfills/' not in page
    assert "readings-in-sink: partial (300 / 900)" in page  # check evidence: rows found / expected
    assert "ab" * 32 in page and "INC-4821" in page and "LoadMeterTelemetry in sub-1/rg-energy/adf-grid" in page


def test_the_requester_sees_no_approve_button_and_the_server_refuses_anyway(client_for: Any) -> None:
    bid = seed()
    client = client_for()
    sign_in(client, "alice")
    page = client.get(f"/backfills/{bid}").text
    assert 'id="approve"' not in page
    assert "requested this backfill and cannot approve it (four eyes)" in page
    response = post(client, f"/backfills/{bid}/approve", note="me myself")
    assert response.status_code == 403
    assert "cannot approve it (four eyes)" in response.text
    assert kinds(bid) == [ev.REQUESTED]


def test_a_supervisor_approves_as_the_signed_in_identity_never_a_form_field(client_for: Any) -> None:
    bid = seed()
    client = client_for()
    sign_in(client, "bob")
    assert 'id="approve"' in client.get(f"/backfills/{bid}").text
    response = post(client, f"/backfills/{bid}/approve", note="looks right", actor="carol", source="azure-ad")
    assert response.status_code == 303
    approved = events(bid)[-1]
    assert (approved.kind, approved.actor, approved.identity_source) == (ev.APPROVED, "bob", "declared")
    assert approved.payload["note"] == "looks right"
    page = client.get(f"/backfills/{bid}").text
    assert f"approved {bid} (1 of 1)" in page and "bob (declared)" in page


def test_a_post_without_the_token_or_from_another_site_is_refused(client_for: Any) -> None:
    bid = seed()
    client = client_for()
    sign_in(client, "bob")
    assert client.post(f"/backfills/{bid}/approve", data={"note": "x"}).status_code == 403
    token = csrf_of(client.get("/").text)
    forged = client.post(f"/backfills/{bid}/approve", data={"csrf": "A" * 43})
    assert forged.status_code == 403 and "does not match" in forged.text
    other = client.post(f"/backfills/{bid}/approve", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and "cross-site" in other.text
    fetched = client.post(f"/backfills/{bid}/approve", data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetched.status_code == 403
    assert kinds(bid) == [ev.REQUESTED]


def test_session_cookie_is_samesite_and_http_only(client_for: Any) -> None:
    seed()
    cookie = client_for().get("/").headers["set-cookie"].lower()
    assert "samesite=lax" in cookie and "httponly" in cookie


def test_read_only_readers_outside_the_approvers_can_read_never_act(client_for: Any) -> None:
    bid = seed(approvers=("bob",))
    client = client_for()
    sign_in(client, "carol")
    page = client.get(f"/backfills/{bid}").text
    assert 'id="approve"' not in page and 'id="reject"' not in page
    assert "carol is not among the approvers (bob)" in page
    assert post(client, f"/backfills/{bid}/approve").status_code == 403
    assert post(client, f"/backfills/{bid}/reject", reason="no").status_code == 403
    assert kinds(bid) == [ev.REQUESTED]


def test_notes_are_escaped_and_redacted_as_in_reports(client_for: Any) -> None:
    bid = seed(note="<script>alert(1)</script> Server=db;Password=hunter2")
    client = client_for()
    sign_in(client, "bob")
    post(client, f"/backfills/{bid}/approve", note='"><img src=x onerror=alert(2)>')
    page = client.get(f"/backfills/{bid}").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "hunter2" not in page and "Password=***" in page
    assert "script-src" not in client.get("/").headers["content-security-policy"]  # no script at all


def test_reject_needs_a_reason_and_records_it(client_for: Any) -> None:
    bid = seed()
    client = client_for()
    sign_in(client, "bob")
    assert post(client, f"/backfills/{bid}/reject", reason="  ").status_code == 400
    assert post(client, f"/backfills/{bid}/reject", reason="wrong window").status_code == 303
    assert events(bid)[-1].payload["reason"] == "wrong window"
    assert "wrong window" in client.get(f"/backfills/{bid}").text


def test_canary_approval_and_accept_partial_with_a_note(client_for: Any) -> None:
    bid = seed(canary=1)
    client = client_for()
    sign_in(client, "bob")
    assert post(client, f"/backfills/{bid}/accept", window=K2).status_code == 400  # a note is required
    assert post(client, f"/backfills/{bid}/accept", window=K2, note="300 rows are the good ones").status_code == 303
    assert post(client, f"/backfills/{bid}/approve").status_code == 303
    append(bid, ev.STARTED, concurrency=1)
    append(bid, ev.CANARY_PAUSED)
    page = client.get(f"/backfills/{bid}").text
    assert "paused, awaiting approval" in page and "Approve the canary" in page
    assert post(client, f"/backfills/{bid}/approve", note="canary fine").status_code == 303
    assert kinds(bid)[-1] == ev.CANARY_APPROVED
    accepted = next(e for e in events(bid) if e.kind == ev.WINDOW_ACCEPTED)
    assert (accepted.window_key, accepted.actor) == (K2, "bob")


def test_run_ids_link_to_the_adf_monitoring_page_and_running_pages_refresh(client_for: Any) -> None:
    bid = seed()
    client = client_for()
    sign_in(client, "bob")
    post(client, f"/backfills/{bid}/approve")
    append(bid, ev.STARTED, concurrency=1)
    append(bid, ev.WINDOW_INTENT, K1, attempt=1)
    append(bid, ev.WINDOW_CREATED, K1, run_id="run-0001", attempt=1)
    page = client.get(f"/backfills/{bid}").text
    assert (
        'href="https://adf.azure.com/en/monitoring/pipelineruns/run-0001?factory=%2Fsubscriptions%2Fsub-1'
        "%2FresourceGroups%2Frg-energy%2Fproviders%2FMicrosoft.DataFactory%2Ffactories%2Fadf-grid"
    ) in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "0 done, 1 running, 0 left" in page
    assert post(client, f"/backfills/{bid}/stop").status_code == 303
    assert kinds(bid)[-1] == ev.STOP_REQUESTED


def test_a_big_backfill_pages_and_filters_by_decision(client_for: Any) -> None:
    decisions = {
        f"2026-01-01T{h:02d}:{m:02d}:00Z/x{h}-{m}": ("run" if m % 2 else "skip-succeeded")
        for h in range(24)
        for m in range(60)
    }
    bid = seed(decisions=decisions)
    client = client_for()
    first = client.get(f"/backfills/{bid}").text
    assert "page 1 of 15 (1440 windows)" in first and first.count('<tr id="w-') == 100
    runs = client.get(f"/backfills/{bid}?decision=run&page=8").text
    assert "page 8 of 8 (720 windows)" in runs and "skip-succeeded</span>" not in runs
    assert runs.count('<tr id="w-') == 20


def test_evidence_and_report_pages(client_for: Any) -> None:
    bid = seed()
    client = client_for()
    evidence = client.get(f"/backfills/{bid}/evidence").text
    assert "events verified" in evidence and 'id="checkpoint"' in evidence
    report = client.get(f"/backfills/{bid}/report")
    assert report.status_code == 200 and bid in report.text and "<script" not in report.text
    assert client.get("/backfills/bf-nope").status_code == 404


def principal(name: str, oid: str = "11111111-2222") -> str:
    claims = [
        {"typ": "preferred_username", "val": name},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
    ]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


def test_a_forged_principal_header_is_ignored_unless_auth_proxy(client_for: Any) -> None:
    bid = seed()
    client = client_for()
    forged = {"X-MS-CLIENT-PRINCIPAL": principal("bob@contoso.com")}
    page = client.get(f"/backfills/{bid}", headers=forged).text
    assert "signed in as" not in page and 'id="approve"' not in page
    token = csrf_of(client.get("/signin").text)
    refused = client.post(f"/backfills/{bid}/approve", data={"csrf": token}, headers=forged)
    assert refused.status_code == 401
    assert kinds(bid) == [ev.REQUESTED]


def test_behind_the_proxy_its_principal_acts_with_source_proxy(client_for: Any) -> None:
    bid = seed(identity="verified")
    client = client_for(load_settings("proxy"))
    header = {"X-MS-CLIENT-PRINCIPAL": principal("bob@contoso.com", "oid-bob")}
    page = client.get(f"/backfills/{bid}", headers=header).text
    assert 'signed in as <strong class="actor">bob@contoso.com</strong>' in page
    response = client.post(
        f"/backfills/{bid}/approve", data={"csrf": csrf_of(page)}, headers=header, follow_redirects=False
    )
    assert response.status_code == 303
    approved = events(bid)[-1]
    assert (approved.actor, approved.identity_source) == ("bob@contoso.com", "proxy")
    assert approved.payload["principal_id"] == "oid-bob"


def test_a_verified_identity_policy_refuses_declared_dev_users(client_for: Any) -> None:
    bid = seed(identity="verified")
    client = client_for()
    sign_in(client, "bob")
    response = post(client, f"/backfills/{bid}/approve")
    assert response.status_code == 403 and "demands a verified identity" in response.text


@pytest.mark.parametrize(
    ("auth", "kwargs", "message"),
    [
        ("dev", {"dev_users": "alice"}, None),
        ("dev", {}, "--auth dev needs --dev-users"),
        ("dev", {"dev_users": "alice", "host": "0.0.0.0"}, "loopback only"),
        ("proxy", {"dev_users": "alice"}, "--dev-users goes with --auth dev only"),
    ],
)
def test_settings_refuse_unsafe_combinations(auth: str, kwargs: dict[str, Any], message: str | None) -> None:
    if message is None:
        assert load_settings(auth, **kwargs).dev_users == ("alice",)
        return
    with pytest.raises(UsageError, match=message):
        load_settings(auth, **kwargs)


def test_each_blocked_partial_window_is_accepted_on_its_own(client_for: Any) -> None:
    bid = seed(decisions={K1: "blocked-partial", K2: "blocked-partial", K3: "run"})
    client = client_for()
    sign_in(client, "bob")
    assert client.get(f"/backfills/{bid}").text.count('class="accept"') == 2
    assert post(client, f"/backfills/{bid}/accept", window=K1, note="checked").status_code == 303
    page = client.get(f"/backfills/{bid}").text
    assert page.count('class="accept"') == 1 and "(accepted)" in page
    assert post(client, f"/backfills/{bid}/accept", window=K1, note="again").status_code == 403
