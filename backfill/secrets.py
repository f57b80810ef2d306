"""``${VAR}`` expansion at use time, and the Secret value that never reaches a record.

Plans, check definitions and ledger payloads keep the ``${VAR}`` template, never its value: the
value is read from the environment only at the moment a run is created or a check connects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backfill.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REDACTED = "***"


def variables_in(text: str) -> list[str]:
    return _VAR.findall(text)


def expand(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace every ``${VAR}`` with its value from ``env`` (default: the process environment)."""
    source = os.environ if env is None else env

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in source:
            raise ConfigError(f"environment variable {name} is not set (needed by ${{{name}}})")
        return source[name]

    return _VAR.sub(value, text)


@dataclass(frozen=True)
class Secret:
    """A value sent to ADF or a sink but never recorded or printed."""

    template: str

    def reveal(self, env: Mapping[str, str] | None = None) -> str:
        return expand(self.template, env)

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with Secrets replaced and ``${VAR}`` templates left as written."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def reveal_all(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """A copy with every Secret revealed, for the one moment a value is sent out."""
    if isinstance(value, Secret):
        return value.reveal(env)
    if isinstance(value, Mapping):
        return {str(k): reveal_all(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [reveal_all(v, env) for v in value]
    return value
