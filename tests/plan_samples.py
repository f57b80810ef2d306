"""Plan texts and the TOML writers every test and bench script builds its plans with."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# The full example of SPEC.md §3, verbatim: it must load.
SPEC_PLAN = """\
title = "Replay north feeder telemetry after the sink lock incident"
ticket = "INC-4821"                       # free text, shown in reports

[target]
subscription_id = "00000000-0000-0000-0000-000000000000"
resource_group = "rg-energy-analytics"
factory = "adf-grid-telemetry"
pipeline = "LoadMeterTelemetry"

[windows]
start = 2026-11-03T00:00:00Z              # TOML offset date-times; local (naive) ones are rejected
end = 2026-11-03T06:00:00Z
every = "15m"                             # or: list = [[start, end], ...] for explicit windows

[parameters]                              # rendered per window; {start}/{end} take strftime formats;
                                          # bare {start} renders as 2026-11-03T02:00:00Z
windowStart = "{start:%Y-%m-%dT%H:%M:%SZ}"
windowEnd = "{end:%Y-%m-%dT%H:%M:%SZ}"
feederRegion = "north"
sourceKey = { secret = "${SOURCE_API_KEY}" }   # sent to ADF, never recorded or printed

[match]
on = ["windowStart", "feederRegion"]      # parameters that identify a window in history (default: all)

[[checks]]
name = "readings-in-sink"
kind = "odbc"                             # odbc | sql | command | a plugin name
connection = "${TELEMETRY_SINK_ODBC}"     # ${VAR} is expanded at run time and never recorded
query = "SELECT COUNT(*) FROM meter_readings WHERE feeder = ? AND reading_ts >= ? AND reading_ts < ?"
args = ["north", "{start}", "{end}"]      # always bound as parameters, never pasted into SQL
expect = 900                              # optional: a number, or a query giving the source count

[approval]
required = 1                              # approvals by people other than the requester
approvers = []                            # optional allow-list of identities
expires = "12h"
canary = 1                                # pause for approval after the first N windows succeed

[execution]
mode = "new-run"                          # or "recover": ADF rerun-from-failure of the failed run
concurrency = 1                           # windows in flight at once
order = "oldest-first"                    # or "newest-first"
on_failure = "stop"                       # or "continue"
run_timeout = "45m"
on_timeout = "report"                     # or "cancel"
poll = "auto"                             # adaptive from this pipeline's past durations, or a duration
"""


def toml_value(value: Any, *, offset_style: int = 0) -> str:
    """A TOML inline value; ``offset_style`` varies how an instant is written (Z, +00:00, +02:00)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are valid TOML basic-string escapes
    if isinstance(value, datetime):
        return _instant(value, offset_style)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v, offset_style=offset_style) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v, offset_style=offset_style)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(type(value))


def _instant(value: datetime, style: int) -> str:
    from datetime import timedelta, timezone

    if style == 1:
        return value.astimezone(UTC).isoformat()  # +00:00
    if style == 2:
        return value.astimezone(timezone(timedelta(hours=2))).isoformat()
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def toml_document(
    data: dict[str, Any],
    *,
    order: list[str] | None = None,
    gap: str = "\n",
    comment: str = "",
    offset_style: int = 0,
) -> str:
    """Write a plan dict as TOML: top-level scalars, then one [section] per table, then
    [[checks]]. ``order`` reorders keys everywhere it is allowed; ``gap`` and ``comment`` vary
    the layout."""

    def ordered(keys: list[str]) -> list[str]:
        rank = {k: i for i, k in enumerate(order or [])}
        return sorted(keys, key=lambda k: rank.get(k, len(rank))) if order else keys

    def line(key: str, value: Any) -> str:
        note = f"  # {comment}" if comment else ""
        return f"{json.dumps(key)} = {toml_value(value, offset_style=offset_style)}{note}\n"

    scalars = [k for k in data if not isinstance(data[k], dict) and k != "checks"]
    tables = [k for k in data if isinstance(data[k], dict)]
    text = "".join(line(k, data[k]) for k in ordered(scalars))
    for table in ordered(tables):
        text += f"{gap}[{table}]{'  # ' + comment if comment else ''}\n"
        text += "".join(line(k, data[table][k]) for k in ordered(list(data[table])))
    for check in data.get("checks", []):
        text += f"{gap}[[checks]]\n" + "".join(line(k, check[k]) for k in ordered(list(check)))
    return text


# The target, parameters and match of the spec's example plan: what most tests' plans point at.
TARGET = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "rg-energy-analytics",
    "factory": "adf-grid-telemetry",
    "pipeline": "LoadMeterTelemetry",
}
NORTH = {
    "windowStart": "{start}",
    "windowEnd": "{end}",
    "feederRegion": "north",
    "sourceKey": {"secret": "${SOURCE_API_KEY}"},
}
MATCH_NORTH = ("windowStart", "feederRegion")
# The target of MINIMAL_PLAN: the shortest names that load.
TINY_TARGET = {"subscription_id": "s", "resource_group": "rg", "factory": "f", "pipeline": "P"}
# A check that counts a window's rows in the SQL sink at ${SINK_URL}; a whole window holds 10.
SINK_CHECK = """
[[checks]]
name = "readings"
kind = "sql"
url = "${SINK_URL}"
query = "SELECT COUNT(*) FROM readings WHERE ts >= :start AND ts < :end"
args = { start = "{start}", end = "{end}" }
expect = 10
"""


def plan_toml(
    windows: Mapping[str, Any] | str | None,
    *,
    title: str = "Replay north",
    ticket: str | None = "INC-4821",
    target: Mapping[str, str] = TARGET,
    parameters: Mapping[str, Any] = NORTH,
    match: Sequence[str] | None = MATCH_NORTH,
    checks: str = "",
    **sections: Mapping[str, Any],
) -> str:
    """A plan as a person writes it (bare keys, one ``key = value`` a line), so tests may still
    ``replace`` a line of it. ``windows`` is a table, raw TOML lines, or None for a test that
    appends its own; ``checks`` is raw ``[[checks]]`` TOML; ``sections`` are further tables
    ([approval], [execution]) in the order given."""

    def table(name: str, values: Mapping[str, Any] | str) -> str:
        lines = values if isinstance(values, str) else "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
        return f"\n[{name}]\n{lines.rstrip()}\n"

    text = f"title = {toml_value(title)}\n" + (f"ticket = {toml_value(ticket)}\n" if ticket is not None else "")
    text += table("target", target)
    if windows is not None:
        text += table("windows", windows)
    text += table("parameters", parameters)
    if match is not None:
        text += table("match", {"on": list(match)})
    text += checks
    return text + "".join(table(name, values) for name, values in sections.items())


# A small valid plan that malformed-plan tests change one line of.
MINIMAL_PLAN = plan_toml(
    {"start": datetime(2026, 11, 3, tzinfo=UTC), "end": datetime(2026, 11, 3, 1, tzinfo=UTC), "every": "15m"},
    title="t",
    ticket=None,
    target=TINY_TARGET,
    parameters={"windowStart": "{start}"},
    match=None,
)
