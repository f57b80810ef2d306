"""Who is acting: the Azure AD principal, a declared actor, or the OS user (spec §6, §15).

An identity is one printable line (issue 9 #9). A token names the Azure AD principal only after
``backfill.tokens`` verified it (signature against the issuer's keys, issuer, audience, expiry):
an unsigned or forged token is refused, never trusted as whoever it claims to be.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from backfill.errors import ConfigError


class IdentitySource(StrEnum):
    AZURE_AD = "azure-ad"
    OS = "os"
    DECLARED = "declared"
    # Stamped by the ledger database (team mode), or by the console's sign-in.
    DATABASE = "database"
    OIDC = "oidc"
    PROXY = "proxy"


# Sources a third party vouches for: a verified token, the database's authentication, the
# console's sign-in. ``declared`` and ``os`` are whatever the person at the keyboard says.
VERIFIED_SOURCES = frozenset(
    {IdentitySource.AZURE_AD, IdentitySource.DATABASE, IdentitySource.OIDC, IdentitySource.PROXY}
)
MAX_NAME = 320


def clean_identity(name: str, where: str) -> str:
    """``name`` stripped, or ConfigError when it is empty, too long or not one printable line."""
    text = name.strip()
    if not text:
        raise ConfigError(f"{where} is empty: name who is acting (or unset it)")
    if len(text) > MAX_NAME:
        raise ConfigError(f"{where} is longer than {MAX_NAME} characters")
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        raise ConfigError(f"{where} holds a control character (U+{ord(bad):04X}); an identity is one printable line")
    return text


@dataclass(frozen=True)
class Actor:
    name: str
    source: IdentitySource
    # A token's stable object ID (Entra ID ``oid``) beside its readable name, when signed in
    # through the console: the ledger records it with the event (issue 15).
    principal_id: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.source.value})"


def current_actor(azure_principal: str | None = None) -> Actor:
    """``BACKFILL_ACTOR`` when declared, else the Azure AD principal when Azure credentials are in
    use (the caller passes it, read from the token's claims), else the OS user."""
    declared = os.environ.get("BACKFILL_ACTOR")
    if declared is not None:
        # Set but empty is a mistake to say, not a reason to become the OS user silently.
        return Actor(clean_identity(declared, "BACKFILL_ACTOR"), IdentitySource.DECLARED)
    if azure_principal:
        return Actor(clean_identity(azure_principal, "the Azure AD principal"), IdentitySource.AZURE_AD)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid-{os.getuid()}"
    return Actor(clean_identity(user, "the OS user name"), IdentitySource.OS)


def describe_source(actor: Actor) -> str:
    """Where the identity came from, for the line ``request`` prints."""
    return {
        IdentitySource.DECLARED: "declared by BACKFILL_ACTOR",
        IdentitySource.OS: "the OS user",
        IdentitySource.AZURE_AD: "a verified Azure AD token",
        IdentitySource.DATABASE: "the ledger database's login",
        IdentitySource.OIDC: "the console's OIDC sign-in",
        IdentitySource.PROXY: "the console's proxy sign-in",
    }[actor.source]


# Claims naming the principal, most readable first: a user's UPN, older tokens' unique_name,
# and the object ID, which every Azure AD token (service principals and managed identities too) has.
PRINCIPAL_CLAIMS = ("upn", "unique_name", "oid")
MANAGEMENT_ENDPOINT = "https://management.azure.com"


def principal_from_token(token: str) -> str | None:
    """The principal named in a JWT access token's claims, or None when it names none.

    Unverified: only for display. Who is acting is read from ``backfill.tokens.verified_principal``.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    for name in PRINCIPAL_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def azure_principal() -> str | None:
    """The Azure AD principal of DefaultAzureCredential's token for the management scope, once
    verified (TokenError otherwise), or None when no Azure credential is available."""
    try:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import DefaultAzureCredential
    except ImportError:
        return None
    endpoint = os.environ.get("BACKFILL_ADF_ENDPOINT", "").strip() or MANAGEMENT_ENDPOINT
    credential = DefaultAzureCredential()
    try:
        token = credential.get_token(f"{endpoint.rstrip('/')}/.default").token
    except ClientAuthenticationError:
        return None
    finally:
        credential.close()
    from backfill.tokens import TokenSettings, verified_principal

    return verified_principal(token, TokenSettings.from_env())


def resolve_actor() -> Actor:
    """``current_actor``, asking Azure for the principal only when Azure credentials are in use:
    neither ``BACKFILL_ACTOR`` nor ``BACKFILL_ADF_TOKEN`` (a static token, for emulators) is set.
    A static token that is a JWT names its principal once verified; an opaque one names nobody."""
    if "BACKFILL_ACTOR" in os.environ:
        return current_actor()
    if "BACKFILL_ADF_TOKEN" in os.environ:
        static = os.environ["BACKFILL_ADF_TOKEN"].strip()
        if static.count(".") != 2:
            return current_actor()
        from backfill.tokens import TokenSettings, verified_principal

        return current_actor(verified_principal(static, TokenSettings.from_env()))
    return current_actor(azure_principal())


def same_name(a: str, b: str) -> bool:
    """Whether two principal names are equal as Azure AD compares them."""
    # Principal names (UPNs, OS users) are compared case-insensitively, as Azure AD does.
    return a.casefold() == b.casefold()


def _local(name: str) -> tuple[str, str | None]:
    local, at, domain = name.casefold().partition("@")
    return (local, domain) if at else (local, None)


def same_person(a: str, b: str, aliases: Sequence[Sequence[str]] = ()) -> bool | None:
    """Whether two names, perhaps from two identity sources, are one person (spec §15).

    True when equal (case-insensitively), listed in one ``[approval] aliases`` group, or when one
    is a bare name and the other a principal (``alice@contoso.com``) with that local part. None
    (unsure) when two principals share a local part in different domains: callers refuse then.
    False otherwise."""
    if same_name(a, b):
        return True
    for group in aliases:
        if any(same_name(a, n) for n in group) and any(same_name(b, n) for n in group):
            return True
    (local_a, domain_a), (local_b, domain_b) = _local(a), _local(b)
    if local_a != local_b:
        return False
    if domain_a is None or domain_b is None:
        return True
    return None
