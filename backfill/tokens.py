"""Verified tokens: a JWT names who is acting only once its signature, issuer, audience and
expiry hold (spec §15; issue 8, attack 2).

The keys are the issuer's published ones (JWKS), fetched over HTTPS with PyJWT. Settings:

- ``BACKFILL_TOKEN_ISSUER``: the exact ``iss`` demanded. Default: Azure AD's forms for the tenant
  ``AZURE_TENANT_ID`` (``https://sts.windows.net/<tenant>/``, ``https://login.microsoftonline.com/
  <tenant>/v2.0``), or for the token's own ``tid`` when that is unset.
- ``BACKFILL_TOKEN_AUDIENCE``: accepted ``aud`` values, comma-separated. Default: the Azure
  Resource Manager audiences (``https://management.azure.com``, with and without the slash, and
  ``https://management.core.windows.net/``).
- ``BACKFILL_TOKEN_JWKS``: where the keys are. Default: the issuer's OpenID configuration's
  ``jwks_uri`` when ``BACKFILL_TOKEN_ISSUER`` is set, else Azure AD's common key set.
- ``BACKFILL_TOKEN_CA_BUNDLE`` (default ``BACKFILL_ADF_CA_BUNDLE``): the CA for those HTTPS calls.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backfill.errors import ConfigError

ENTRA_JWKS = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
ARM_AUDIENCES = (
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net/",
)
# Azure AD signs access tokens with RS256; anything else (``none``, a shared-secret HS256 that
# a public key could be mistaken for) is refused before any key is looked at.
ALGORITHMS = ("RS256",)
LEEWAY_SECONDS = 60


class TokenError(ConfigError):
    """A token that cannot be trusted to name who is acting (exit 1)."""


@dataclass(frozen=True)
class TokenSettings:
    issuer: str | None = None
    audiences: tuple[str, ...] = ARM_AUDIENCES
    jwks_url: str | None = None
    ca_bundle: str | None = None
    tenant: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TokenSettings:
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        audience = get("BACKFILL_TOKEN_AUDIENCE")
        audiences = tuple(a.strip() for a in audience.split(",") if a.strip()) if audience else ARM_AUDIENCES
        return cls(
            issuer=get("BACKFILL_TOKEN_ISSUER"),
            audiences=audiences,
            jwks_url=get("BACKFILL_TOKEN_JWKS"),
            ca_bundle=get("BACKFILL_TOKEN_CA_BUNDLE") or get("BACKFILL_ADF_CA_BUNDLE"),
            tenant=get("AZURE_TENANT_ID"),
        )

    def issuers(self, claims: Mapping[str, Any]) -> list[str]:
        if self.issuer:
            return [self.issuer]
        tenant = self.tenant or claims.get("tid")
        if not isinstance(tenant, str) or not tenant:
            return []
        return [f"https://sts.windows.net/{tenant}/", f"https://login.microsoftonline.com/{tenant}/v2.0"]


_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()


def _context(settings: TokenSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_bundle) if settings.ca_bundle else ssl.create_default_context()


def _https(url: str, what: str) -> str:
    if not url.lower().startswith("https://"):
        raise TokenError(f"{what} {url} is not an https:// URL; keys are only fetched over HTTPS")
    return url


def _jwks_url(settings: TokenSettings) -> str:
    if settings.jwks_url:
        return _https(settings.jwks_url, "BACKFILL_TOKEN_JWKS")
    if not settings.issuer:
        return ENTRA_JWKS
    config = _https(settings.issuer.rstrip("/") + "/.well-known/openid-configuration", "the issuer's configuration")
    try:
        with urllib.request.urlopen(config, timeout=15, context=_context(settings)) as response:
            document = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise TokenError(f"identity: cannot read the issuer's OpenID configuration at {config}: {exc}") from None
    uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(uri, str):
        raise TokenError(f"identity: the OpenID configuration at {config} names no jwks_uri")
    return _https(uri, "the issuer's jwks_uri")


def _client(settings: TokenSettings) -> Any:
    import jwt

    key = (settings.jwks_url or settings.issuer or ENTRA_JWKS, settings.ca_bundle)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = jwt.PyJWKClient(_jwks_url(settings), timeout=15, ssl_context=_context(settings))
            _clients[key] = client
    return client


def verify_token(token: str, settings: TokenSettings) -> dict[str, Any]:
    """The token's claims once signature, issuer, audience and expiry hold; TokenError otherwise."""
    import jwt

    def refuse(reason: str) -> TokenError:
        return TokenError(f"identity: the Azure AD token is not trusted: {reason}")

    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise refuse(f"it is not a readable JWT ({exc})") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise refuse(f"it is signed with {algorithm!r}, not {', '.join(ALGORITHMS)} (unsigned or forged)")
    issuers = settings.issuers(unverified)
    if not issuers:
        raise refuse("no issuer to demand: set BACKFILL_TOKEN_ISSUER or AZURE_TENANT_ID")
    try:
        signing_key = _client(settings).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        raise refuse(f"cannot fetch the issuer's keys: {exc}") from None
    except jwt.PyJWKClientError:
        raise refuse("it is signed by a key the issuer does not publish (forged)") from None
    except jwt.PyJWTError as exc:
        raise refuse(str(exc)) from None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            signing_key.key,
            algorithms=list(ALGORITHMS),
            audience=list(settings.audiences),
            issuer=issuers,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.InvalidSignatureError:
        raise refuse("its signature does not verify against the issuer's keys (forged)") from None
    except jwt.ExpiredSignatureError:
        expired = unverified.get("exp")
        when = (
            datetime.fromtimestamp(expired, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(expired, int | float)
            else "earlier"
        )
        raise refuse(f"it expired at {when}") from None
    except jwt.InvalidAudienceError:
        raise refuse(f"its audience {unverified.get('aud')!r} is not one of {', '.join(settings.audiences)}") from None
    except jwt.InvalidIssuerError:
        raise refuse(f"its issuer {unverified.get('iss')!r} is not {' or '.join(issuers)}") from None
    except jwt.PyJWTError as exc:
        raise refuse(str(exc)) from None
    return claims


# Those of ``identity.PRINCIPAL_CLAIMS`` plus OpenID Connect's ``preferred_username``; spelled out
# here because identity imports this module (a test keeps the two lists in step).
TOKEN_PRINCIPAL_CLAIMS = ("upn", "preferred_username", "unique_name", "oid")


def principal_of(claims: Mapping[str, Any]) -> str | None:
    for name in TOKEN_PRINCIPAL_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def verified_principal(token: str, settings: TokenSettings) -> str:
    """The principal a verified token names (TokenError when it is not verified or names none)."""
    principal = principal_of(verify_token(token, settings))
    if principal is None:
        raise TokenError("identity: the verified Azure AD token names no principal (upn, unique_name or oid)")
    return principal
