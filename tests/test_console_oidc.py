"""OIDC sign-in end to end against a real provider (oidc-provider-mock, started here): the
authorization code flow with PKCE, the ID token verified by authlib, and the token's
``preferred_username`` and ``oid`` recorded as the approver, source ``oidc``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from console_support import BOB, client_for, events, post, provider, seed

from backfill import events as ev
from backfill.console.settings import load_settings
from backfill.errors import ConfigError

__all__ = ["client_for", "provider"]


def sign_in_oidc(client: Any, sub: str) -> httpx.Response:
    """What a browser does: follow the console to the provider, pick the user, come back."""
    start = client.get("/signin?next=/", follow_redirects=False)
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    # PKCE: the code challenge goes out, its verifier stays in the signed session.
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert query["redirect_uri"] == ["http://127.0.0.1:8484/auth/callback"] and "nonce" in query
    with httpx.Client() as browser:
        assert browser.get(authorize).status_code == 200
        chosen = browser.post(authorize, data={"sub": sub})
    assert chosen.status_code == 302, chosen.text
    back = urlsplit(chosen.headers["location"])
    response: httpx.Response = client.get(f"{back.path}?{back.query}", follow_redirects=False)
    return response


def test_a_supervisor_signs_in_through_the_provider_and_approves_as_the_token_says(
    provider: str, client_for: Any
) -> None:
    bid = seed(requester=_alice(), identity="verified")
    client = client_for(load_settings("oidc"))
    landed = sign_in_oidc(client, "bob-sub")
    assert landed.status_code == 303 and landed.headers["location"] == "/"
    page = client.get(f"/backfills/{bid}").text
    assert 'signed in as <strong class="actor">bob@contoso.com</strong>' in page and "(oidc)" in page
    assert post(client, f"/backfills/{bid}/approve", note="verified").status_code == 303
    approved = events(bid)[-1]
    assert (approved.kind, approved.actor, approved.identity_source) == (ev.APPROVED, "bob@contoso.com", "oidc")
    assert approved.payload["principal_id"] == BOB["oid"]


def test_the_requester_signed_in_through_the_provider_is_still_refused(provider: str, client_for: Any) -> None:
    bid = seed(requester=_alice())
    client = client_for(load_settings("oidc"))
    assert sign_in_oidc(client, "alice-sub").status_code == 303
    response = post(client, f"/backfills/{bid}/approve")
    assert response.status_code == 403 and "four eyes" in response.text
    assert [e.kind for e in events(bid)] == [ev.REQUESTED]


def test_a_callback_without_this_sessions_state_is_refused(provider: str, client_for: Any) -> None:
    seed()
    client = client_for(load_settings("oidc"))
    response = client.get("/auth/callback?code=stolen&state=forged", follow_redirects=False)
    assert response.status_code == 401 and "sign-in refused" in response.text
    denied = client.get("/auth/callback?error=access_denied", follow_redirects=False)
    assert denied.status_code == 401
    assert "signed in as" not in client.get("/signin", follow_redirects=False).text


def test_oidc_needs_its_issuer_and_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKFILL_OIDC_ISSUER", raising=False)
    with pytest.raises(ConfigError, match="BACKFILL_OIDC_ISSUER"):
        load_settings("oidc")
    monkeypatch.setenv("BACKFILL_OIDC_ISSUER", "http://login.example.com/tenant/v2.0")
    monkeypatch.setenv("BACKFILL_OIDC_CLIENT_ID", "x")
    with pytest.raises(ConfigError, match="https://"):
        load_settings("oidc")


def _alice() -> Any:
    from backfill.identity import Actor, IdentitySource

    return Actor("alice@contoso.com", IdentitySource.DECLARED)
