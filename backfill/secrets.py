"""``${VAR}`` expansion at use time, the Secret value that never reaches a record, and the
redaction of what is written to the ledger (``redact_payload``).

Plans, check definitions and ledger payloads keep the ``${VAR}`` template, never its value: the
value is read from the environment only at the moment a run is created or a check connects.
"""

from __future__ import annotations

import functools
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


# --- redaction -----------------------------------------------------------------------------------

# Key words that mark a value as a credential or something that usually embeds one.
_DENIED_WORDS = frozenset(
    {
        "connection",
        "connstr",
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "url",
        "uri",
        "dsn",
        "credential",
        "credentials",
        "apikey",
    }
)
_TEMPLATE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
# ``Password=hunter2;``, ``AccountKey=...``, ``sig=...`` in connection strings and query strings.
_ASSIGNMENT = re.compile(
    r"(?i)\b(password|pwd|passwd|secret|token|access_token|accountkey|sharedaccesskey|api_key|apikey|sig)"
    r"(\s*=\s*)([^;&\s]+)"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^@\s/]+)@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*")


def _key_words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


# Pure, and asked for every key of every ledger payload, of which there are few distinct ones.
@functools.lru_cache(maxsize=4096)
def is_denied_key(key: str) -> bool:
    """True for keys named like a credential: ``connection_string``, ``sinkPassword``, ``url``...

    The last word decides (``connection_timeout`` is a number, not a credential), except for
    ``connection string`` and ``api key`` anywhere in the name.
    """
    words = _key_words(key)
    joined = "".join(words)
    if words and words[-1] in _DENIED_WORDS:
        return True
    return "apikey" in joined or "connectionstring" in joined


def scrub_text(text: str) -> str:
    """Mask credentials embedded in free text: ``Password=x``, ``scheme://user:pass@``, bearer tokens.

    Values that are still ``${VAR}`` templates are left as written: they name the secret, not
    its value.
    """

    if text.isascii() and "=" not in text and "@" not in text and "bearer" not in text.lower():
        # None of the three patterns can match: each needs its "=", "@" or "bearer" (ASCII text, so
        # lower() is exactly the patterns' case folding). Most payload strings end here.
        return text

    def assignment(match: re.Match[str]) -> str:
        value = match.group(3)
        if _TEMPLATE.fullmatch(value):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{REDACTED}"

    def userinfo(match: re.Match[str]) -> str:
        if _TEMPLATE.fullmatch(match.group(2)):
            return match.group(0)
        return f"{match.group(1)}:{REDACTED}@"

    text = _ASSIGNMENT.sub(assignment, text)
    text = _USERINFO.sub(userinfo, text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def _denied_value(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        # Only the template form is safe to keep: once expanded, nothing tells a credential apart.
        return scrub_text(value) if _TEMPLATE.search(value) else REDACTED
    if isinstance(value, Mapping):
        return {str(k): _denied_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_denied_value(v) for v in value]
    return REDACTED


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): (_denied_value(v) if is_denied_key(str(k)) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def redact_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What of a payload may be written to the ledger.

    The rule, applied at every depth:

    1. A ``Secret`` (plan parameters marked secret, check connections) becomes ``***``.
    2. Under a key named like a credential (ending in ``connection``, ``password``, ``secret``,
       ``token``, ``url``, ``uri``, ``dsn``, ``credential``, or containing ``connection_string`` or
       ``api_key``, in snake, kebab or camel case; see ``is_denied_key``) a string is kept only
       while it still contains an unexpanded ``${VAR}`` template, and even then with any literal
       ``Password=...`` masked; every other string or number there becomes ``***``. ``None`` and
       booleans carry nothing and stay.
    3. Everywhere else, strings keep their text but lose embedded credentials: ``Password=x``,
       ``AccountKey=x``, ``sig=x``, ``scheme://user:pass@`` and ``Bearer x`` are masked.
    """
    redacted = redact(payload)
    assert isinstance(redacted, dict)
    result = _redact_value(redacted)
    assert isinstance(result, dict)
    return result
