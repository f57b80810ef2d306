"""A plan's ``[windows]`` ``start``/``end`` written relative to now (``"yesterday 00:00Z"``).

Example plans name their windows this way so that they meet the example scenario's history on
any day. Only day forms (``today 00:00Z``, ``yesterday 06:00Z``, ``-2d 00:00Z``) are allowed: an
offset from the instant (``-6h``) would put window bounds at whatever second the command ran.
The bounds resolve against one reference instant, which ``request`` records; ``run`` resolves
them against the request's time again, so the windows a backfill works on are the requested ones
however late it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from backfill.errors import PlanError
from backfill.relative_time import DAY_FORM_PATTERN, parse_relative

RELATIVE_BOUND_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": DAY_FORM_PATTERN,
    "description": "Relative to now: a day and a UTC time of day (yesterday 00:00Z, today 06:00Z, -2d 00:00Z); "
    "resolved and frozen at request.",
}


def relative_bound_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of ``[windows] start``/``end``: the day forms beside the UTC time."""
    choices = schema.get("anyOf")
    if isinstance(choices, list):
        choices.insert(1, dict(RELATIVE_BOUND_SCHEMA))  # after the date-time, before null


def resolve_relative_windows(
    where: str, data: Mapping[str, Any], now: datetime
) -> tuple[Mapping[str, Any], dict[str, str]]:
    """``data`` with relative window bounds resolved, and what they were written as, by key."""
    windows = data.get("windows")
    if not isinstance(windows, Mapping):
        return data, {}
    resolved: dict[str, Any] = dict(windows)
    relative: dict[str, str] = {}
    for key in ("start", "end"):
        value = windows.get(key)
        if not isinstance(value, str):
            continue
        try:
            point = parse_relative(value)
        except ValueError as exc:
            raise PlanError(where, f"windows.{key}", str(exc)) from None
        if point is None:
            continue  # a JSON plan's absolute time: the model reads it
        if not point.day_aligned:
            raise PlanError(
                where,
                f"windows.{key}",
                f"{value!r}: write a day and a UTC time of day (yesterday 00:00Z, -2d 06:00Z) or an "
                "absolute time; an offset from now would move the windows with every command",
            )
        resolved[key] = point.resolve(now)
        relative[f"windows.{key}"] = point.text
    if not relative:
        return data, {}
    return {**data, "windows": resolved}, relative
