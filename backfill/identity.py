"""Who is acting: the Azure AD principal, a declared actor, or the OS user (spec §6)."""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
from dataclasses import dataclass
from enum import StrEnum


class IdentitySource(StrEnum):
    AZURE_AD = "azure-ad"
    OS = "os"
    DECLARED = "declared"


@dataclass(frozen=True)
class Actor:
    name: str
    source: IdentitySource

    def __str__(self) -> str:
        return f"{self.name} ({self.source.value})"


def current_actor(azure_principal: str | None = None) -> Actor:
    """``BACKFILL_ACTOR`` when declared, else the Azure AD principal when Azure credentials are in
    use (the caller passes it, read from the token's claims), else the OS user."""
    declared = os.environ.get("BACKFILL_ACTOR", "").strip()
    if declared:
        return Actor(declared, IdentitySource.DECLARED)
    if azure_principal:
        return Actor(azure_principal, IdentitySource.AZURE_AD)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid-{os.getuid()}"
    return Actor(user, IdentitySource.OS)


# Claims naming the principal, most readable first: a user's UPN, older tokens' unique_name,
# and the object ID, which every Azure AD token (service principals and managed identities too) has.
PRINCIPAL_CLAIMS = ("upn", "unique_name", "oid")
MANAGEMENT_ENDPOINT = "https://management.azure.com"


def principal_from_token(token: str) -> str | None:
    """The principal named in a JWT access token's claims, or None when it names none.

    The signature is not checked: the token comes from our own credential, and Azure checks it
    on every call it authorises; here it only names who is acting.
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
    """The Azure AD principal of DefaultAzureCredential's token for the management scope, or
    None when no Azure credential is available."""
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
    return principal_from_token(token)


def resolve_actor() -> Actor:
    """``current_actor``, asking Azure for the principal only when Azure credentials are in use:
    neither ``BACKFILL_ACTOR`` nor ``BACKFILL_ADF_TOKEN`` (a static token, for emulators) is set."""
    if os.environ.get("BACKFILL_ACTOR", "").strip() or os.environ.get("BACKFILL_ADF_TOKEN", "").strip():
        return current_actor()
    return current_actor(azure_principal())
