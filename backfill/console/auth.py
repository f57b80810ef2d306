"""Who is acting in the console: a signed-in session or, behind App Service, the front end's header.

The identity is never a form field. It is set in the signed session cookie by a sign-in (a dev
user picked on loopback, or an OIDC authorization code exchange whose ID token was verified), or,
with ``--auth proxy`` only, read from ``X-MS-CLIENT-PRINCIPAL`` on every request (the front end
strips any such header a client sends). In every other mode that header is ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from backfill.console.settings import AuthMode, ConsoleSettings
from backfill.errors import ConfigError
from backfill.identity import Actor, IdentitySource, clean_identity

SESSION_USER = "user"
PRINCIPAL_HEADER = "x-ms-client-principal"
# Entra ID's object ID claim as App Service names it in the principal's claims.
_OID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_NAME_CLAIMS = ("preferred_username", "upn", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "email")


class SignInRefused(ConfigError):
    """A sign-in whose identity cannot be recorded (no usable name in the token, say)."""


def session_actor(session: Mapping[str, Any]) -> Actor | None:
    user = session.get(SESSION_USER)
    if not isinstance(user, Mapping):
        return None
    try:
        return Actor(str(user["name"]), IdentitySource(str(user["source"])), user.get("oid") or None)
    except (KeyError, ValueError):
        return None


def remember(session: dict[str, Any], actor: Actor) -> None:
    session[SESSION_USER] = {"name": actor.name, "source": actor.source.value, "oid": actor.principal_id}


def current_actor(request: Request, settings: ConsoleSettings) -> Actor | None:
    """The acting identity of this request, or None (anonymous: may read the sign-in page only)."""
    if settings.auth is AuthMode.PROXY:
        header = request.headers.get(PRINCIPAL_HEADER)
        return proxy_actor(header) if header else None
    return session_actor(request.session)


def proxy_actor(header: str) -> Actor | None:
    """The user App Service authentication names in ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON with
    ``claims``: ``[{typ, val}]``), or None when it names nobody readable."""
    try:
        principal = json.loads(base64.b64decode(header, validate=False))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(principal, Mapping):
        return None
    claims: dict[str, str] = {}
    for claim in principal.get("claims") or ():
        if isinstance(claim, Mapping) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            claims.setdefault(claim["typ"], claim["val"])
    name_typ = principal.get("name_typ")
    names = (name_typ, *_NAME_CLAIMS) if isinstance(name_typ, str) else _NAME_CLAIMS
    name = next((claims[n] for n in names if claims.get(n, "").strip()), None)
    if name is None:
        return None
    try:
        cleaned = clean_identity(name, "the proxy's principal")
    except ConfigError:
        return None
    oid = next((claims[n] for n in _OID_CLAIMS if claims.get(n)), None)
    return Actor(cleaned, IdentitySource.PROXY, oid)


def oidc_actor(claims: Mapping[str, Any]) -> Actor:
    """The identity of a verified ID token: ``preferred_username`` (or ``upn``, ``email``) as the
    readable name, ``oid`` (or ``sub``) as the stable object ID, source ``oidc``."""
    name = next((claims[n] for n in ("preferred_username", "upn", "email") if isinstance(claims.get(n), str)), None)
    if not name or not name.strip():
        raise SignInRefused("the ID token names no preferred_username, upn or email: nobody to record")
    subject = claims.get("oid") or claims.get("sub")
    cleaned = clean_identity(name, "the ID token's preferred_username")
    return Actor(cleaned, IdentitySource.OIDC, str(subject) if subject else None)
