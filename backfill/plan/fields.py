"""Value types of plan files: UTC times, durations, parameter values, and their errors.

Each raises a ``plan_value`` error with a one-line message (``backfill.plan.loader`` adds file and key);
cross-key rules raise ``plan_rule`` with the key they concern. Times and durations serialise to
the strings a plan file holds, so a dumped plan loads again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, PlainValidator, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

from backfill.errors import ConfigError
from backfill.secrets import Secret, variables_in
from backfill.timeutil import NaiveTimestamp, format_utc, parse_duration, parse_utc
from backfill.windows import TemplateError, check_template, duration_text

DEFAULT_MAX_WINDOWS = 100_000
MAX_WINDOWS_ENV = "BACKFILL_MAX_WINDOWS"
EXAMPLE_TIME = "2026-11-03T00:00:00Z"


def show(value: Any) -> str:
    """A value as the user wrote it, for messages: strings quoted, times in ISO form, arrays and
    tables in TOML style, long ones shortened."""
    text = _show(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _show(value: Any) -> str:
    if isinstance(value, str):
        # JSON quoting escapes newlines, so a message stays on one line.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {_show(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return str(value)


def rule(key: str, detail: str) -> PydanticCustomError:
    """An error for ``key`` (dotted, relative to the model being validated)."""
    return PydanticCustomError("plan_rule", "{detail}", {"key": key, "detail": detail})


def value_error(detail: str) -> PydanticCustomError:
    return PydanticCustomError("plan_value", "{detail}", {"detail": detail})


def max_windows_limit(explicit: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """The window limit: the caller's, else ``BACKFILL_MAX_WINDOWS``, else 100,000."""
    if explicit is not None:
        return explicit
    source = os.environ if env is None else env
    raw = source.get(MAX_WINDOWS_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_WINDOWS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_WINDOWS_ENV}={raw!r} is not a positive whole number")
    return value


# --- scalar types -------------------------------------------------------------------------------


def as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise value_error(f"{show(value)} is a local time; expected a UTC offset, e.g. {EXAMPLE_TIME}")
        result = value.astimezone(UTC)
    elif isinstance(value, str):
        try:
            result = parse_utc(value)
        except NaiveTimestamp:
            raise value_error(f"{show(value)} is a local time; expected a UTC offset, e.g. {EXAMPLE_TIME}") from None
        except ValueError:
            raise value_error(f"expected a date-time like {EXAMPLE_TIME}, got {show(value)}") from None
    elif isinstance(value, date):
        raise value_error(f"{show(value)} is a date without a time; expected e.g. {EXAMPLE_TIME}")
    elif isinstance(value, time):
        raise value_error(f"{show(value)} is a time without a date; expected e.g. {EXAMPLE_TIME}")
    else:
        raise value_error(f"expected a date-time like {EXAMPLE_TIME}, got {show(value)}")
    if result.microsecond:
        # Window keys and ADF's parameters have whole seconds.
        raise value_error(f"{show(value)} has fractions of a second; expected whole seconds")
    return result


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta) and value > timedelta(0):
        return value
    if not isinstance(value, str):
        raise value_error(f'expected a duration string like "15m", got {show(value)}')
    try:
        return parse_duration(value)
    except ValueError:
        raise value_error(f'expected a duration like "15m", "1h", "90s" or "2d", got {show(value)}') from None


def _poll(value: Any) -> Literal["auto"] | timedelta:
    if value == "auto":
        return "auto"
    try:
        return _duration(value)
    except PydanticCustomError:
        raise value_error(f'expected "auto" or a duration like "30s", got {show(value)}') from None


def _dump_poll(value: Literal["auto"] | timedelta) -> str:
    return value if isinstance(value, str) else duration_text(value)


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*\d+\s*(ms|s|m|h|d|w)\s*$",
    "description": "A duration: a whole number and one unit of ms, s, m, h, d or w (e.g. 15m, 12h).",
}

UtcDatetime = Annotated[
    datetime,
    PlainValidator(as_utc),
    PlainSerializer(format_utc, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "A UTC date-time with an offset (2026-11-03T00:00:00Z); local times are refused.",
        }
    ),
]
Duration = Annotated[
    timedelta,
    PlainValidator(_duration),
    PlainSerializer(duration_text, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
Poll = Annotated[
    Literal["auto"] | timedelta,
    PlainValidator(_poll),
    PlainSerializer(_dump_poll, return_type=str),
    WithJsonSchema({"anyOf": [{"const": "auto"}, _DURATION_SCHEMA], "description": '"auto" or a duration (e.g. 30s).'}),
]
Name = Annotated[StrictStr, Field(min_length=1)]


def duration_field(default: timedelta, description: str) -> Any:
    # The schema shows the default as written in a plan ("12h"), not pydantic's ISO form.
    return Field(
        default,
        description=f"{description} A duration like 15m.",
        json_schema_extra={"default": duration_text(default)},
    )


# --- parameters ---------------------------------------------------------------------------------


def _template(text: str, where: str = "") -> None:
    try:
        check_template(text)
    except TemplateError as exc:
        raise value_error(f"template {show(text)}{where}: {exc}") from None


def _literal(value: Any, where: str = "") -> Any:
    if isinstance(value, str):
        _template(value, where)
        if variables_in(value):
            raise value_error(
                f"{show(value)}{where} uses ${{VAR}}, which is expanded only in secrets; "
                f"write {{ secret = {show(value)} }}"
            )
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise value_error(f"{show(value)}{where} is not a finite number")
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list):
        return [_literal(item, f"{where} at [{i}]") for i, item in enumerate(value)]
    raise value_error(f'expected a string, number, boolean, array or {{ secret = "..." }}, got {show(value)}{where}')


def _parameter(value: Any) -> Any:
    if isinstance(value, Secret):
        return value
    if isinstance(value, dict):
        if set(value) != {"secret"} or not isinstance(value["secret"], str):
            raise value_error(f'expected {{ secret = "..." }} (one string key "secret"), got {show(value)}')
        _template(value["secret"])
        return Secret(value["secret"])
    return _literal(value)


def _dump_parameter(value: Any) -> Any:
    return {"secret": value.template} if isinstance(value, Secret) else value


ParameterValue = Annotated[
    Any,
    PlainValidator(_parameter),
    PlainSerializer(_dump_parameter),
    WithJsonSchema(
        {
            "description": "A template string ({start:%Y-%m-%d}, {end}), a literal, an array, "
            'or { secret = "${VAR}" } for a value sent to ADF but never recorded.',
            "anyOf": [
                {"type": "string"},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "array"},
                {
                    "type": "object",
                    "properties": {"secret": {"type": "string"}},
                    "required": ["secret"],
                    "additionalProperties": False,
                },
            ],
        }
    ),
]


def _pair(value: Any) -> Any:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise value_error(f"expected a [start, end] pair, got {show(value)}")
    return value


# Checked for shape first so a short pair is "expected a [start, end] pair", not "field required".
WindowPair = Annotated[tuple[UtcDatetime, UtcDatetime], BeforeValidator(_pair)]
