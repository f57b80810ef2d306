"""Helpers shared by the built-in check kinds: option validation, counts, and secret scrubbing.

Private to ``backfill.checks``; plugins use ``backfill.checks.base`` only.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from backfill.checks.base import CheckResult, CheckSpec, CheckStatus
from backfill.errors import CheckError
from backfill.secrets import REDACTED, variables_in
from backfill.timeutil import require_utc
from backfill.windows import FIELDS, TemplateError, check_formats, template_fields

# Values this short cannot be told apart from ordinary text, so scrubbing them would only garble
# reasons ("1" in every number); a two-character secret protects nothing anyway.
_MIN_SECRET = 3
_MAX_REASON = 400
_PASSWORD_KEYS = re.compile(r"(?i)\b(pwd|password)\s*=\s*(\{[^}]*\}|[^;]*)")


def fail(spec: CheckSpec, option: str, expected: str) -> CheckError:
    """The one-line configuration error naming the check and the option."""
    return CheckError(f"check {spec.name!r}: option {option!r}: {expected}")


def check_options(spec: CheckSpec, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    known = sorted(allowed)
    for option in spec.options:
        if option not in known:
            raise CheckError(
                f"check {spec.name!r}: unknown option {option!r} for kind {spec.kind!r} (allowed: {', '.join(known)})"
            )
    for option in required:
        if option not in spec.options:
            raise fail(spec, option, f"is required for kind {spec.kind!r}")


def check_timeout(spec: CheckSpec) -> float:
    seconds = spec.timeout.total_seconds()
    if seconds <= 0:
        raise fail(spec, "timeout", "must be positive")
    return seconds


def require_text(spec: CheckSpec, option: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(spec, option, "must be a non-empty string")
    return value


def no_variables(spec: CheckSpec, option: str, text: str) -> None:
    # Queries, args and commands are recorded as evidence: expanding ${VAR} in them would put
    # its value in the ledger, and leaving it literal would count the wrong rows.
    if variables_in(text):
        raise fail(
            spec,
            option,
            "may not use ${VAR}: only the connection is expanded (queries, args and commands are recorded as evidence)",
        )


def template(spec: CheckSpec, option: str, value: Any) -> Any:
    """Validate one argument template: a string using only {start}/{end}, or a plain value
    (number, boolean, UTC date-time) bound as it is."""
    if isinstance(value, datetime):
        try:
            return require_utc(value)
        except ValueError as exc:
            raise fail(spec, option, str(exc)) from None
    if isinstance(value, bool | int | float):
        return value
    if not isinstance(value, str):
        raise fail(spec, option, f"{value!r} is not a string, a number, a boolean or a date-time")
    no_variables(spec, option, value)
    try:
        unknown = [name for name in template_fields(value) if name not in FIELDS]
        if not unknown:
            check_formats(value)
    except TemplateError as exc:
        raise fail(spec, option, str(exc)) from None
    if unknown:
        raise fail(
            spec,
            option,
            f"unknown field {{{unknown[0]}}} (only {{start}} and {{end}} exist; "
            "write {{ and }} for literal braces)",
        )
    return value


def resolve_path(spec: CheckSpec, written: str) -> Path:
    path = Path(written).expanduser()
    if not path.is_absolute() and spec.base_dir is not None:
        path = spec.base_dir / path
    return path


def read_statement(spec: CheckSpec, options: Mapping[str, Any], prefix: str = "") -> tuple[str, str | None]:
    """``query`` or ``query_file`` (relative to the plan's folder), exactly one of them."""
    has_query, has_file = "query" in options, "query_file" in options
    if has_query == has_file:
        raise fail(spec, f"{prefix}query", "give exactly one of query or query_file")
    if has_query:
        text = require_text(spec, f"{prefix}query", options["query"])
        no_variables(spec, f"{prefix}query", text)
        return text, None
    written = require_text(spec, f"{prefix}query_file", options["query_file"])
    path = resolve_path(spec, written)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(spec, f"{prefix}query_file", f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise fail(spec, f"{prefix}query_file", f"{path} is empty")
    no_variables(spec, f"{prefix}query_file", text)
    return text.strip(), written


def expect_number(spec: CheckSpec, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(spec, "expect", "must be a whole number >= 0 or a table with a query")
    return value


def as_count(value: Any) -> int:
    """A query's or a program's answer as a row count; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a count")
    if isinstance(value, int):
        count = value
    elif isinstance(value, Decimal | float) and math.isfinite(value) and value == int(value):
        count = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        # Some ODBC drivers (SQLite's among them) hand back COUNT(*) as text.
        count = int(value.strip())
    else:
        raise ValueError(f"{value!r} is not a count")
    if count < 0:
        raise ValueError(f"{count} is not a count (negative)")
    return count


def first_cell(rows: list[Any]) -> Any:
    """The single value a counting query returns; ValueError when it returned more or less."""
    if not rows:
        raise ValueError("the query returned no row")
    if len(rows) > 1:
        raise ValueError("the query returned more than one row")
    row = rows[0]
    if len(row) != 1:
        raise ValueError(f"the query returned {len(row)} columns, expected one count")
    return row[0]


def secret_values(template_text: str, env: Mapping[str, str]) -> list[str]:
    """The current values of the ``${VAR}`` a template uses: what must never be shown."""
    return [env[name] for name in variables_in(template_text) if name in env]


def password_values(connection: str) -> list[str]:
    """``PWD=...`` / ``Password=...`` values of an ODBC connection string, braces removed."""
    values = []
    for match in _PASSWORD_KEYS.finditer(connection):
        raw = match.group(2).strip()
        values.append(raw)
        if raw.startswith("{") and raw.endswith("}"):
            values.append(raw[1:-1])
    return values


class Scrubber:
    """Removes every known secret value from text before it can reach a reason or evidence."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        self._secrets.update(s for s in secrets if len(s) >= _MIN_SECRET)

    def __call__(self, text: str) -> str:
        # Longest first, so a secret that contains another is removed whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text


def describe(exc: BaseException) -> str:
    """An exception as one short line (driver messages span lines and carry diagnostics)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if len(message) > _MAX_REASON:
        message = message[: _MAX_REASON - 3] + "..."
    return f"{type(exc).__name__}: {message}"


def elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def error_result(check: str, reason: str, evidence: Mapping[str, Any]) -> CheckResult:
    return CheckResult(check, CheckStatus.ERROR, reason, dict(evidence))
