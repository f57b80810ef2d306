"""Where notifications go: ``BACKFILL_NOTIFY`` names webhook targets, ``KIND=URL`` comma-separated.

Kinds: ``teams`` (an Adaptive Card, for a Teams Workflows webhook), ``slack`` (an incoming webhook)
and ``json`` (a generic JSON POST). A URL is a secret (webhook URLs carry their credential): write
it as ``${VAR}``, expanded only when a message is sent, never recorded or printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backfill.errors import ConfigError
from backfill.secrets import Secret, variables_in

KINDS = ("teams", "slack", "json")


@dataclass(frozen=True)
class Target:
    kind: str
    url: Secret

    def resolve(self, env: Mapping[str, str] | None = None) -> str:
        """The URL with its ``${VAR}``s expanded (ConfigError when one is unset or not https)."""
        url = self.url.reveal(env).strip()
        if not allowed_url(url):
            raise ConfigError(f"the {self.kind} webhook URL must be https:// (http:// only on loopback)")
        return url


def allowed_url(url: str) -> bool:
    if url.startswith("https://"):
        return True
    host = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)[0] if url.startswith("http://") else ""
    return host in ("127.0.0.1", "localhost", "[::1]")


def parse_targets(value: str, where: str = "BACKFILL_NOTIFY") -> list[Target]:
    """``teams=${TEAMS_HOOK},json=${AUDIT_HOOK}`` as targets, or a one-line ConfigError."""
    targets = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        kind, sep, url = part.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in KINDS or not url.strip():
            raise ConfigError(f"{where}: {kind or part!r} is not KIND=URL with KIND one of {', '.join(KINDS)}")
        url = url.strip()
        if not variables_in(url) and not allowed_url(url):
            raise ConfigError(f"{where}: a {kind} webhook URL must be https:// (or a ${{VAR}} holding one)")
        targets.append(Target(kind, Secret(url)))
    return targets
