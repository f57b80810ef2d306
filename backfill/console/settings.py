"""How ``backfill serve`` is configured: where it listens, who signs in and how (issue 15).

Settings come from the command line and the environment, checked once at start so a console that
could not authenticate anyone safely never starts:

- ``--auth dev --dev-users alice,bob``: loopback only; identities are ``declared``.
- ``--auth oidc``: ``BACKFILL_OIDC_ISSUER``, ``BACKFILL_OIDC_CLIENT_ID`` and, for a confidential
  client, ``BACKFILL_OIDC_CLIENT_SECRET``; the redirect URI is ``BACKFILL_CONSOLE_URL`` +
  ``/auth/callback``.
- ``--auth proxy``: behind Azure App Service / Container Apps authentication, which sets
  ``X-MS-CLIENT-PRINCIPAL``; never trusted in any other mode.

``BACKFILL_CONSOLE_SECRET`` signs the session cookie (a random key per start otherwise: everyone
signs in again after a restart).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from enum import StrEnum

from backfill.errors import ConfigError, UsageError
from backfill.identity import clean_identity

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8484


class AuthMode(StrEnum):
    DEV = "dev"
    OIDC = "oidc"
    PROXY = "proxy"


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str | None = None
    scope: str = "openid profile email"

    @property
    def metadata_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleSettings:
    auth: AuthMode
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    dev_users: tuple[str, ...] = ()
    oidc: OidcSettings | None = None
    public_url: str = ""
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    ledger_url: str | None = None

    @property
    def base_url(self) -> str:
        """Where browsers reach the console: ``BACKFILL_CONSOLE_URL``, else the listening address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def load_settings(
    auth: str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    dev_users: str | None = None,
    ledger_url: str | None = None,
) -> ConsoleSettings:
    """The console's settings from the command line and the environment, or a one-line refusal."""
    mode = AuthMode(auth)
    users: tuple[str, ...] = ()
    if dev_users is not None and mode is not AuthMode.DEV:
        raise UsageError("--dev-users goes with --auth dev only")
    if mode is AuthMode.DEV:
        if not is_loopback(host):
            raise UsageError(f"--auth dev listens on loopback only (127.0.0.1, ::1), not {host}: anyone could sign in")
        names = [n for n in (dev_users or "").split(",") if n.strip()]
        if not names:
            raise UsageError("--auth dev needs --dev-users NAME,NAME (who may sign in, declared)")
        users = tuple(dict.fromkeys(clean_identity(n, "--dev-users") for n in names))
    oidc = None
    if mode is AuthMode.OIDC:
        issuer, client_id = _env("BACKFILL_OIDC_ISSUER"), _env("BACKFILL_OIDC_CLIENT_ID")
        if issuer is None or client_id is None:
            raise ConfigError(
                "--auth oidc needs BACKFILL_OIDC_ISSUER and BACKFILL_OIDC_CLIENT_ID (the app registration)"
            )
        if not issuer.startswith("https://") and not is_loopback(issuer.split("//", 1)[-1].split("/")[0].split(":")[0]):
            raise ConfigError(f"BACKFILL_OIDC_ISSUER must be an https:// URL, not {issuer}")
        oidc = OidcSettings(issuer, client_id, _env("BACKFILL_OIDC_CLIENT_SECRET"))
    public = _env("BACKFILL_CONSOLE_URL") or ""
    if public and not public.startswith(("http://", "https://")):
        raise ConfigError(f"BACKFILL_CONSOLE_URL must be an http(s):// URL, not {public}")
    secret = _env("BACKFILL_CONSOLE_SECRET")
    settings = ConsoleSettings(
        auth=mode, host=host, port=port, dev_users=users, oidc=oidc, public_url=public, ledger_url=ledger_url
    )
    if secret is not None:
        if len(secret) < 16:
            raise ConfigError("BACKFILL_CONSOLE_SECRET is too short: 16 characters at least (it signs sessions)")
        settings = ConsoleSettings(**{**settings.__dict__, "session_secret": secret})
    return settings
