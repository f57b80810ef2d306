"""Verified tokens (spec §15; issue 8, attack 2): a token names who is acting only once its
signature (the issuer's published keys), issuer, audience and expiry hold.

The emulator issues RS256 tokens and serves its OpenID configuration and JWKS over HTTPS, so the
verification here is the real one: discovery, key by ``kid``, PyJWT's checks.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_support import base_time, emulator, events, plan_text, request, scenario, write_plan

from backfill.emulator import Emulator
from backfill.identity import Actor, IdentitySource, resolve_actor
from backfill.tokens import TokenError, TokenSettings, verified_principal

Cap = pytest.CaptureFixture[str]
MP = pytest.MonkeyPatch


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


def settings(emu: Emulator) -> TokenSettings:
    return TokenSettings.from_env(emu.token_env())


def _unsigned(claims: dict[str, object], alg: str = "none") -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


def test_a_valid_token_names_its_principal(emu: Emulator) -> None:
    assert verified_principal(emu.issue_token("bob@contoso.com"), settings(emu)) == "bob@contoso.com"


def test_a_forged_token_is_refused(emu: Emulator) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    mallory = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = emu.issue_token("bob@contoso.com", signed_by=mallory)
    with pytest.raises(
        TokenError,
        match=r"^identity: the Azure AD token is not trusted: its signature does not "
        r"verify against the issuer's keys \(forged\)$",
    ):
        verified_principal(forged, settings(emu))


def test_an_unsigned_token_is_refused(emu: Emulator) -> None:
    claims = json.loads(base64.urlsafe_b64decode(emu.issue_token("bob@contoso.com").split(".")[1] + "=="))
    with pytest.raises(TokenError, match=r"signed with 'none', not RS256 \(unsigned or forged\)$"):
        verified_principal(_unsigned(claims), settings(emu))


def test_an_expired_token_is_refused(emu: Emulator) -> None:
    with pytest.raises(TokenError, match=r"not trusted: it expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"):
        verified_principal(emu.issue_token("bob@contoso.com", expires_in=-3600), settings(emu))


def test_a_token_for_another_audience_is_refused(emu: Emulator) -> None:
    token = emu.issue_token("bob@contoso.com", audience="https://graph.microsoft.com")
    with pytest.raises(
        TokenError,
        match=r"its audience 'https://graph.microsoft.com' is not one of "
        r"https://management.azure.com",
    ):
        verified_principal(token, settings(emu))


def test_a_token_from_another_issuer_is_refused(emu: Emulator) -> None:
    token = emu.issue_token("bob@contoso.com", issuer="https://login.microsoftonline.com/evil/v2.0")
    with pytest.raises(TokenError, match=r"its issuer 'https://login.microsoftonline.com/evil/v2.0' is not "):
        verified_principal(token, settings(emu))


def test_keys_are_only_fetched_over_https() -> None:
    token = _unsigned({"upn": "x"}, alg="RS256") + "c2ln"  # RS256, so its keys are looked up
    plain = TokenSettings(issuer="http://127.0.0.1:9/tenant", jwks_url="http://127.0.0.1:9/keys")
    with pytest.raises(TokenError, match=r"BACKFILL_TOKEN_JWKS http://127.0.0.1:9/keys is not an https:// URL"):
        verified_principal(token, plain)


def _approve_with(
    token: str, plan: Path, monkeypatch: MP, capsys: Cap, emu: Emulator, approval: str = ""
) -> tuple[str, int, str]:
    plan.write_text(plan_text(base_time(), 2).replace("[approval]\n", f"[approval]\n{approval}"))
    bid = request(plan, monkeypatch, capsys, approve=False)
    static = os.environ["BACKFILL_ADF_TOKEN"]
    monkeypatch.delenv("BACKFILL_ACTOR")
    for name, value in emu.token_env().items():
        monkeypatch.setenv(name, value)
    # `approve` calls no ADF API: the static token only names who is acting.
    monkeypatch.setenv("BACKFILL_ADF_TOKEN", token)
    from backfill.cli import main

    code = main.run(["approve", bid])
    monkeypatch.setenv("BACKFILL_ADF_TOKEN", static)
    return bid, code, capsys.readouterr().err


def test_approve_as_a_verified_principal(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    with emulator(scenario(base_time()), monkeypatch) as emu:
        token = emu.issue_token("bob@contoso.com")
        bid, code, err = _approve_with(
            token,
            tmp_path / "p.toml",
            monkeypatch,
            capsys,
            emu,
            'identity = "verified"\napprovers = ["bob@contoso.com"]\n',
        )
    assert (code, err) == (0, "")
    approved = events(bid)[-1]
    assert (approved.kind, approved.actor, approved.identity_source) == (
        "backfill.approved",
        "bob@contoso.com",
        "azure-ad",
    )


def test_approve_with_an_unsigned_token_is_refused(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    with emulator(scenario(base_time()), monkeypatch) as emu:
        claims = json.loads(base64.urlsafe_b64decode(emu.issue_token("bob@contoso.com").split(".")[1] + "=="))
        _, code, err = _approve_with(_unsigned(claims), tmp_path / "p.toml", monkeypatch, capsys, emu)
    assert code == 1
    assert (
        err == "error: identity: the Azure AD token is not trusted: it is signed with 'none', not RS256 "
        "(unsigned or forged)\n"
    )


def test_a_fake_az_cli_is_not_trusted(tmp_path: Path, monkeypatch: MP) -> None:
    # Issue 8, attack 2: a fake `az` on PATH handing DefaultAzureCredential an unsigned token
    # naming bob was accepted as bob.
    claims = {
        "upn": "bob@contoso.com",
        "aud": "https://management.azure.com",
        "tid": "t",
        "exp": 4102444800,
        "iss": "https://sts.windows.net/t/",
    }
    fake = tmp_path / "bin" / "az"
    fake.parent.mkdir()
    answer = {
        "accessToken": _unsigned(claims),
        "expiresOn": "2099-12-31 00:00:00.000000",
        "expires_on": 4102444800,
        "tokenType": "Bearer",
        "subscription": "s",
        "tenant": "t",
    }
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(answer)}\nEOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k not in ("BACKFILL_ADF_TOKEN", "BACKFILL_ACTOR")}
    env["PATH"] = f"{fake.parent}{os.pathsep}{env['PATH']}"
    # DefaultAzureCredential asks only the Azure CLI (no managed identity probe of a real address),
    # and should it probe anyway, the loopback's closed port answers.
    env["AZURE_TOKEN_CREDENTIALS"] = "AzureCliCredential"
    env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = "http://127.0.0.1:9"
    env["HOME"] = str(tmp_path)
    code = "from backfill.identity import resolve_actor\nprint(resolve_actor())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert "bob" not in done.stdout
    assert "the Azure AD token is not trusted: it is signed with 'none'" in done.stderr


def test_an_opaque_static_token_names_nobody(monkeypatch: MP) -> None:
    monkeypatch.setenv("BACKFILL_ADF_TOKEN", "opaque-emulator-token")
    assert resolve_actor().source is IdentitySource.OS
    monkeypatch.setenv("BACKFILL_ACTOR", "ops-lead")
    assert resolve_actor() == Actor("ops-lead", IdentitySource.DECLARED)


def test_a_backfill_under_verified_principals_end_to_end(tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    from backfill.cli import main

    plan = write_plan(tmp_path, 2, approval={"identity": "verified"})
    with emulator(scenario(base_time()), monkeypatch) as emu:
        for name, value in emu.token_env().items():
            monkeypatch.setenv(name, value)

        def as_(upn: str, *args: str) -> int:
            # The emulator takes its issuer's tokens as bearer tokens: ADF calls and identity agree.
            monkeypatch.setenv("BACKFILL_ADF_TOKEN", emu.issue_token(upn))
            return main.run(list(args))

        assert as_("alice@contoso.com", "request", str(plan)) == 0
        out = capsys.readouterr().out.splitlines()
        bid = out[0]
        assert "requested as alice@contoso.com (a verified Azure AD token)" in out
        assert not [line for line in out if line.startswith("warning:")]
        assert as_("Alice@Contoso.com", "approve", bid) == 1
        assert "requested this backfill and cannot approve it (four eyes)" in capsys.readouterr().err
        assert as_("bob@contoso.com", "approve", bid) == 0
        assert as_("carol@contoso.com", "run", bid) == 0, capsys.readouterr()
        assert len(emu.create_run_calls()) == 2
    sources = {(e.kind, e.actor, e.identity_source) for e in events(bid) if not e.window_key}
    assert ("backfill.requested", "alice@contoso.com", "azure-ad") in sources
    assert ("backfill.approved", "bob@contoso.com", "azure-ad") in sources
