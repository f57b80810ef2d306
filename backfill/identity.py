"""Who is acting: the Azure AD principal, a declared actor, or the OS user (spec §6)."""

from __future__ import annotations

import getpass
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
