"""Load a scenario TOML file (docs/scenario.md) into a ``Scenario``.

Anything malformed raises ``ScenarioError`` with one line naming the file, the key and what is
expected; unknown keys are refused too, so a typo never silently changes a scenario.
"""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from backfill.emulator.faults import Fault
from backfill.emulator.scenario import (
    HISTORY_STATUSES,
    RESULTS,
    Activity,
    HistorySeries,
    OutcomeRule,
    PastRun,
    Pipeline,
    Scenario,
    Sink,
    When,
)
from backfill.emulator.throttle import DEFAULT_READ_BURST, DEFAULT_READ_RATE, ServiceLimits
from backfill.errors import ScenarioError
from backfill.relative_time import parse_relative
from backfill.timeutil import NaiveTimestamp, parse_duration, parse_utc, require_utc

T = TypeVar("T")

_TOP = {"factory", "clock", "service", "pipelines", "history", "series", "outcomes", "faults"}
_FAULT_KEYS = {"kind", "operation", "count", "skip", "when", "status", "code", "message", "retry_after", "latency"}


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, expected: str) -> ScenarioError:
        return ScenarioError(f"{self.path}: {key}: {expected}")

    def keys(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown key (expected one of {', '.join(sorted(allowed))})",
            )
        return value

    def tables(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"expected an array of tables ([[{key}]])")
        return value

    def get(self, data: dict[str, Any], key: str, where: str, kind: type[T], default: T) -> T:
        if key not in data:
            return default
        value = data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"{where}{key}", f"expected {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")
        return value

    def required(self, data: dict[str, Any], key: str, where: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}{key}", "is required (a non-empty string)")
        return value

    def duration(self, data: dict[str, Any], key: str, where: str, *, zero: bool = False) -> timedelta | None:
        if key not in data:
            return None
        value = data[key]
        if zero and value in ("0", "0s", 0):
            return timedelta(0)
        try:
            if not isinstance(value, str):
                raise ValueError
            return parse_duration(value, key)
        except ValueError:
            raise self.fail(f"{where}{key}", f"expected a duration like 15m, 90s or 2h, got {value!r}") from None

    def when(self, data: dict[str, Any], key: str, where: str) -> When:
        if key not in data:
            raise self.fail(f"{where}{key}", "is required (a UTC time, or relative: -5h, yesterday 02:00Z)")
        value = data[key]
        expected = "expected a UTC time (2026-11-03T02:00:00Z) or an offset from now like -5h or now"
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise self.fail(f"{where}{key}", f"{value.isoformat()} has no UTC offset; write it with Z or +00:00")
            return require_utc(value, key)
        if not isinstance(value, str):
            raise self.fail(f"{where}{key}", f"{expected}, got {value!r}")
        text = value.strip()
        try:
            relative = parse_relative(text)
        except ValueError as exc:
            raise self.fail(f"{where}{key}", str(exc)) from None
        if relative is not None:
            # Plain offsets stay timedeltas, as Python scenarios write them.
            return relative if relative.day_aligned else relative.offset
        try:
            return parse_utc(text, key)
        except NaiveTimestamp as exc:
            raise self.fail(f"{where}{key}", str(exc)) from None
        except ValueError:
            raise self.fail(f"{where}{key}", f"{expected}, got {value!r}") from None

    def choice(self, data: dict[str, Any], key: str, where: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(data, key, where, str, default)
        if value not in choices:
            raise self.fail(f"{where}{key}", f"expected one of {', '.join(choices)}, got {value!r}")
        return value


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a table",
    list: "an array",
}


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; ScenarioError (exit 1) names the file and key."""
    where = str(path)
    reader = _Reader(where)
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ScenarioError(f"{where}: no such file") from None
    except OSError as exc:
        raise ScenarioError(f"{where}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from None
    reader.keys(data, "", _TOP)
    scenario = Scenario(source=where)
    factory = reader.keys(data.get("factory", {}), "factory", {"subscription_id", "resource_group", "name", "token"})
    scenario.subscription_id = reader.get(factory, "subscription_id", "factory.", str, scenario.subscription_id)
    scenario.resource_group = reader.get(factory, "resource_group", "factory.", str, scenario.resource_group)
    scenario.factory = reader.get(factory, "name", "factory.", str, scenario.factory)
    scenario.token = reader.get(factory, "token", "factory.", str, "") or None
    clock = reader.keys(data.get("clock", {}), "clock", {"speed", "queue", "cancel"})
    scenario.speed = reader.get(clock, "speed", "clock.", float, 1.0)
    if scenario.speed <= 0:
        raise reader.fail("clock.speed", f"expected a positive number, got {scenario.speed:g}")
    scenario.queue_time = reader.duration(clock, "queue", "clock.", zero=True) or scenario.queue_time
    scenario.cancel_time = reader.duration(clock, "cancel", "clock.") or scenario.cancel_time
    service = reader.keys(
        data.get("service", {}), "service", {"page_size", "retention", "throttle", "burst", "latency"}
    )
    scenario.page_size = reader.get(service, "page_size", "service.", int, 100)
    if scenario.page_size < 1:
        raise reader.fail("service.page_size", "expected a positive integer")
    scenario.limits = _limits(reader, service)
    scenario.retention = reader.duration(service, "retention", "service.") or scenario.retention
    for index, raw in enumerate(reader.tables(data, "pipelines")):
        scenario.pipelines.append(_pipeline(reader, raw, f"pipelines[{index}]."))
    only = scenario.pipelines[0].name if len(scenario.pipelines) == 1 else None
    for index, raw in enumerate(reader.tables(data, "history")):
        scenario.history.append(_history(reader, raw, f"history[{index}].", only))
    for index, raw in enumerate(reader.tables(data, "series")):
        scenario.series.append(_series(reader, raw, f"series[{index}].", only))
    for index, raw in enumerate(reader.tables(data, "outcomes")):
        scenario.outcomes.append(_outcome(reader, raw, f"outcomes[{index}]."))
    for index, raw in enumerate(reader.tables(data, "faults")):
        reader.keys(raw, f"faults[{index}]", _FAULT_KEYS)
        options = dict(raw)
        if options.get("count") == 0:
            options["count"] = None  # 0: every matching call
        try:
            scenario.faults.append(Fault(**options))
        except (TypeError, ValueError) as exc:
            raise reader.fail(f"faults[{index}]", str(exc)) from None
    try:
        scenario.validate()
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    return scenario


def _limits(reader: _Reader, service: dict[str, Any]) -> ServiceLimits:
    """``[service] throttle`` (reads a second, ``true`` for ARM's 25), ``burst``, ``latency``."""
    raw = service.get("throttle", False)
    rate: float | None
    if raw is True:
        rate = DEFAULT_READ_RATE
    elif raw is False or raw == 0:
        rate = None
    elif isinstance(raw, int | float) and raw > 0:
        rate = float(raw)
    else:
        raise reader.fail(
            "service.throttle", f"expected true, false or a positive number of reads a second, got {raw!r}"
        )
    burst = reader.get(service, "burst", "service.", int, DEFAULT_READ_BURST)
    if burst < 1:
        raise reader.fail("service.burst", "expected a positive integer")
    latency = reader.duration(service, "latency", "service.", zero=True)
    return ServiceLimits(rate, burst, latency.total_seconds() if latency is not None else 0.0)


def _pipeline(reader: _Reader, raw: dict[str, Any], where: str) -> Pipeline:
    reader.keys(
        raw,
        where.rstrip("."),
        {"name", "activities", "parameters", "duration", "rows", "sink", "concurrency", "description", "annotations"},
    )
    pipeline = Pipeline(name=reader.required(raw, "name", where))
    activities = raw.get("activities")
    if activities is not None:
        if not isinstance(activities, list) or not activities:
            raise reader.fail(f"{where}activities", "expected a non-empty array of names or {name, type} tables")
        parsed = []
        for position, item in enumerate(activities):
            if isinstance(item, str):
                parsed.append(Activity(item))
                continue
            key = f"{where}activities[{position}]"
            item = reader.keys(item, key, {"name", "type"})
            parsed.append(
                Activity(reader.required(item, "name", f"{key}."), reader.get(item, "type", f"{key}.", str, "Copy"))
            )
        pipeline.activities = tuple(parsed)
    parameters = reader.get(raw, "parameters", where, dict, {})
    types: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    for name, spec in parameters.items():
        if isinstance(spec, str):
            types[name] = spec
        else:
            spec = reader.keys(spec, f"{where}parameters.{name}", {"type", "default"})
            types[name] = reader.get(spec, "type", f"{where}parameters.{name}.", str, "String")
            if "default" in spec:
                defaults[name] = spec["default"]
    pipeline.parameters, pipeline.defaults = types, defaults
    pipeline.duration = reader.duration(raw, "duration", where) or pipeline.duration
    pipeline.rows = _count(reader, raw, "rows", where, 0)
    concurrency = reader.get(raw, "concurrency", where, int, 0)
    pipeline.concurrency = concurrency or None
    pipeline.description = reader.get(raw, "description", where, str, "")
    annotations = reader.get(raw, "annotations", where, list, [])
    pipeline.annotations = tuple(str(a) for a in annotations)
    if "sink" in raw:
        pipeline.sink = _sink(reader, raw["sink"], f"{where}sink.")
    return pipeline


def _sink(reader: _Reader, raw: Any, where: str) -> Sink:
    reader.keys(
        raw,
        where.rstrip("."),
        {
            "url",
            "table",
            "timestamp_column",
            "window_start",
            "window_end",
            "columns",
            "run_id_column",
            "reset",
            "write",
        },
    )
    columns = reader.get(raw, "columns", where, dict, {})
    for name, value in columns.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise reader.fail(f"{where}columns.{name}", 'expected a template like "{feederRegion}" or a number')
    return Sink(
        url=reader.required(raw, "url", where),
        table=reader.required(raw, "table", where),
        timestamp_column=reader.get(raw, "timestamp_column", where, str, "reading_ts"),
        window_start=reader.get(raw, "window_start", where, str, "windowStart"),
        window_end=reader.get(raw, "window_end", where, str, "windowEnd"),
        columns=columns,
        run_id_column=reader.get(raw, "run_id_column", where, str, "") or None,
        reset=reader.get(raw, "reset", where, bool, True),
        write=reader.choice(raw, "write", where, ("append", "replace"), "append"),
    )


def _count(reader: _Reader, raw: dict[str, Any], key: str, where: str, default: T) -> T | int:
    value = reader.get(raw, key, where, int, -1)
    if key not in raw:
        return default
    if value < 0:
        raise reader.fail(f"{where}{key}", "expected a whole number of rows, 0 or more")
    return value


def _failure(reader: _Reader, raw: dict[str, Any], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in ("error_code", "message", "failure_type"):
        if key in raw:
            fields[key] = reader.get(raw, key, where, str, "")
    if "activity" in raw:
        fields["activity"] = reader.required(raw, "activity", where)
    return fields


def _history(reader: _Reader, raw: dict[str, Any], where: str, only: str | None) -> PastRun:
    reader.keys(
        raw,
        where.rstrip("."),
        {
            "pipeline",
            "start",
            "parameters",
            "status",
            "duration",
            "activity",
            "error_code",
            "message",
            "failure_type",
            "rows",
            "rows_before_failure",
            "run_id",
            "run_group_id",
            "invoked_by",
            "invoked_by_type",
        },
    )
    return PastRun(
        pipeline=_pipeline_name(reader, raw, where, only),
        start=reader.when(raw, "start", where),
        parameters=reader.get(raw, "parameters", where, dict, {}),
        status=reader.choice(raw, "status", where, HISTORY_STATUSES, "Succeeded"),
        duration=reader.duration(raw, "duration", where),
        rows=_count(reader, raw, "rows", where, None),
        rows_before_failure=_count(reader, raw, "rows_before_failure", where, 0),
        run_id=reader.get(raw, "run_id", where, str, "") or None,
        run_group_id=reader.get(raw, "run_group_id", where, str, "") or None,
        invoked_by=reader.get(raw, "invoked_by", where, str, "Manual"),
        invoked_by_type=reader.get(raw, "invoked_by_type", where, str, "Manual"),
        **_failure(reader, raw, where),
    )


def _series(reader: _Reader, raw: dict[str, Any], where: str, only: str | None) -> HistorySeries:
    reader.keys(
        raw,
        where.rstrip("."),
        {
            "pipeline",
            "start",
            "end",
            "every",
            "parameters",
            "status",
            "duration",
            "delay",
            "rows",
            "rows_before_failure",
            "activity",
            "error_code",
            "message",
            "failure_type",
            "weekdays",
        },
    )
    every = reader.duration(raw, "every", where)
    if every is None:
        raise reader.fail(f"{where}every", "is required (a duration like 15m)")
    parameters = reader.get(raw, "parameters", where, dict, {})
    return HistorySeries(
        pipeline=_pipeline_name(reader, raw, where, only),
        start=reader.when(raw, "start", where),
        end=reader.when(raw, "end", where),
        every=every,
        parameters=parameters,
        status=reader.choice(raw, "status", where, HISTORY_STATUSES, "Succeeded"),
        duration=reader.duration(raw, "duration", where),
        delay=reader.duration(raw, "delay", where, zero=True) or timedelta(0),
        rows=_count(reader, raw, "rows", where, None),
        rows_before_failure=_count(reader, raw, "rows_before_failure", where, 0),
        weekdays=_weekdays(reader, raw, where),
        **_failure(reader, raw, where),
    )


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _weekdays(reader: _Reader, raw: dict[str, Any], where: str) -> frozenset[int] | None:
    """``weekdays = ["Tue"]``: only the windows that end on these UTC weekdays (issue 13: history
    of business dates that falls on the same weekdays whatever day the emulator starts)."""
    names = reader.get(raw, "weekdays", where, list, [])
    if "weekdays" not in raw:
        return None
    found = set()
    for index, name in enumerate(names):
        if name not in _WEEKDAYS:
            raise reader.fail(f"{where}weekdays[{index}]", f"expected one of {', '.join(_WEEKDAYS)}, got {name!r}")
        found.add(_WEEKDAYS.index(name))
    return frozenset(found)


def _outcome(reader: _Reader, raw: dict[str, Any], where: str) -> OutcomeRule:
    reader.keys(
        raw,
        where.rstrip("."),
        {
            "result",
            "pipeline",
            "match",
            "activity",
            "error_code",
            "message",
            "failure_type",
            "duration",
            "rows",
            "rows_before_failure",
            "times",
        },
    )
    match = reader.get(raw, "match", where, dict, {})
    for name, value in match.items():
        listed = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not (isinstance(value, str) or listed):
            raise reader.fail(f"{where}match.{name}", "expected a string (wildcards allowed) or an array of strings")
    times = reader.get(raw, "times", where, int, 0)
    if "times" in raw and times < 1:
        raise reader.fail(f"{where}times", "expected a positive integer")
    result = reader.choice(raw, "result", where, RESULTS, "succeed")
    return OutcomeRule(
        result=cast(Any, result),
        pipeline=reader.get(raw, "pipeline", where, str, "") or None,
        match=match,
        duration=reader.duration(raw, "duration", where),
        rows=_count(reader, raw, "rows", where, None),
        rows_before_failure=_count(reader, raw, "rows_before_failure", where, 0),
        times=times or None,
        **_failure(reader, raw, where),
    )


def _pipeline_name(reader: _Reader, raw: dict[str, Any], where: str, only: str | None) -> str:
    if "pipeline" not in raw and only is not None:
        return only
    return reader.required(raw, "pipeline", where)
