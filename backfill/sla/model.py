"""The SLA file (spec §13): TOML validated by pydantic, every refusal one line naming the key.

Like a plan: unknown keys refused, ``[target]`` exactly as in a plan. The deadline is a local
time of day in an IANA zone; an offset on it, a missing zone, an unknown zone or a weekday that
is not ``Mon``..``Sun`` is refused naming the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backfill.errors import BackfillError
from backfill.factory.protocol import FactoryRef
from backfill.plan.fields import Duration, Name, duration_field, show
from backfill.plan.schema import Target
from backfill.windows import duration_text

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_CLOCK = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class SlaFileError(BackfillError):
    """An SLA file is malformed: names the file, the dotted key and what is expected (exit 1)."""

    def __init__(self, path: str, key: str, expected: str) -> None:
        super().__init__(f"{path}: {key}: {expected}" if key else f"{path}: {expected}")
        self.path, self.key, self.expected = path, key, expected


def _value_error(detail: str) -> PydanticCustomError:
    return PydanticCustomError("sla_value", "{detail}", {"detail": detail})


def _deadline(value: Any) -> time:
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise _value_error(f"{show(value)} carries an offset; write the local time and name its zone in timezone")
        return value
    if not isinstance(value, str):
        raise _value_error(f'expected a local time of day like "06:00", got {show(value)}')
    match = _CLOCK.match(value.strip())
    if match is None:
        if re.match(r"^\d{2}:\d{2}(:\d{2})?\s*(Z|[+-]\d{2}:?\d{2})$", value.strip(), re.IGNORECASE):
            raise _value_error(f"{show(value)} carries an offset; write the local time and name its zone in timezone")
        raise _value_error(f'expected a local time of day like "06:00", got {show(value)}')
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise _value_error(f"{show(value)} is not a time of day (00:00 to 23:59)")
    return time(hour, minute, second)


def _clock_text(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


def _zone(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _value_error(f'expected an IANA time zone like "America/New_York", got {show(value)}')
    name = value.strip()
    try:
        # A path-like or malformed key is a ValueError from zoneinfo, an unknown one not found.
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _value_error(
            f'{show(value)} is not an IANA time zone (e.g. "America/New_York", "Europe/Paris")'
        ) from None
    return name


def _weekday(value: Any) -> str:
    if isinstance(value, str):
        for day in WEEKDAYS:
            if value.strip().lower() == day.lower():
                return day
    raise _value_error(f"expected one of {', '.join(WEEKDAYS)}, got {show(value)}")


def _threshold(value: Any) -> float:
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match is not None:
            return float(match[1]) / 100
    raise _value_error(f'expected a percentage like "15%", got {show(value)}')


def _percent_text(value: float) -> str:
    return f"{value * 100:g}%"


LocalTime = Annotated[
    time,
    PlainValidator(_deadline),
    PlainSerializer(_clock_text, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d{2}:\d{2}(:\d{2})?$", "description": "A local time of day, 06:00."}
    ),
]
ZoneName = Annotated[
    str,
    PlainValidator(_zone),
    WithJsonSchema({"type": "string", "description": "An IANA time zone (America/New_York)."}),
]
Weekday = Annotated[str, PlainValidator(_weekday), WithJsonSchema({"enum": list(WEEKDAYS)})]
Threshold = Annotated[
    float,
    PlainValidator(_threshold),
    PlainSerializer(_percent_text, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?%$", "description": "A percentage, 15%."}),
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlaSpec(_Section):
    business_date: Name = Field(description="The run parameter whose value is the business date (2026-11-03).")
    deadline: LocalTime = Field(description="Local time of day on the business date by which a run must succeed.")
    timezone: ZoneName = Field(description="The IANA zone of the deadline; daylight-saving time is handled.")
    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]), description="Weekdays that are business dates."
    )
    warn_before: Duration = duration_field(
        timedelta(minutes=30), "Succeeding less than this before the deadline is close."
    )

    @model_validator(mode="after")
    def _distinct_days(self) -> SlaSpec:
        if not self.days:
            raise PydanticCustomError(
                "sla_rule", "{detail}", {"key": "days", "detail": "expected at least one weekday"}
            )
        for index, day in enumerate(self.days):
            if day in self.days[:index]:
                raise PydanticCustomError(
                    "sla_rule", "{detail}", {"key": f"days[{index}]", "detail": f"{day} is named twice"}
                )
        return self


class DriftSpec(_Section):
    recent: StrictInt = Field(10, ge=3, description="The last N business dates before --until ...")
    baseline: StrictInt = Field(20, ge=3, description="... against the N business dates before those.")
    threshold: Threshold = Field(
        0.15,
        description="Recent median duration above the baseline's by more than this is drift.",
        json_schema_extra={"default": "15%"},
    )


class SlaFile(_Section):
    title: str = Field("", description="What the SLA promises, for people.")
    target: Target
    sla: SlaSpec
    drift: DriftSpec = Field(default_factory=lambda: DriftSpec())


@dataclass(frozen=True)
class LoadedSla:
    path: Path
    file: SlaFile

    @property
    def spec(self) -> SlaSpec:
        return self.file.sla

    @property
    def ref(self) -> FactoryRef:
        target = self.file.target
        return FactoryRef(target.subscription_id, target.resource_group, target.factory)

    @property
    def pipeline(self) -> str:
        return self.file.target.pipeline

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.spec.timezone)

    def to_json(self) -> dict[str, Any]:
        spec, drift = self.spec, self.file.drift
        return {
            "path": str(self.path),
            "title": self.file.title,
            "factory": self.file.target.factory,
            "resource_group": self.file.target.resource_group,
            "pipeline": self.pipeline,
            "business_date": spec.business_date,
            "deadline": _clock_text(spec.deadline),
            "timezone": spec.timezone,
            "days": list(spec.days),
            "warn_before": duration_text(spec.warn_before),
            "drift": {"recent": drift.recent, "baseline": drift.baseline, "threshold": _percent_text(drift.threshold)},
        }


_SECTIONS: dict[str, type[BaseModel]] = {"": SlaFile, "target": Target, "sla": SlaSpec, "drift": DriftSpec}


def load_sla(path: str | Path) -> LoadedSla:
    """Read and validate an SLA file; ``SlaFileError`` names the file, key and expectation."""
    where = str(path)
    file = Path(path)
    if file.suffix.lower() != ".toml":
        raise SlaFileError(where, "", "expected a .toml SLA file")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SlaFileError(where, "", "no such file") from None
    except IsADirectoryError:
        raise SlaFileError(where, "", "is a directory, expected an SLA file") from None
    except UnicodeDecodeError:
        raise SlaFileError(where, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise SlaFileError(where, "", f"cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SlaFileError(where, "", f"invalid TOML: {exc}") from None
    return sla_from_data(data, path=file)


def sla_from_data(data: Mapping[str, Any], *, path: str | Path = "<sla>") -> LoadedSla:
    try:
        parsed = SlaFile.model_validate(dict(data))
    except ValidationError as exc:
        key, expected = _first_error(exc)
        raise SlaFileError(str(path), " ".join(key.split()), " ".join(expected.split())) from None
    return LoadedSla(path=Path(path), file=parsed)


def sla_schema() -> dict[str, Any]:
    """The JSON Schema of SLA files (``backfill sla schema``), for editors."""
    document = SlaFile.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "backfill SLA"
    return document


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _first_error(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors(include_url=False)[0]
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    key = _dotted(loc)
    if kind == "sla_rule":
        return _dotted((*loc, ctx["key"])), str(ctx["detail"])
    if kind in ("sla_value", "plan_value"):
        return key, str(ctx["detail"])
    if kind == "missing":
        if key == "sla.timezone":
            return key, "is required: the deadline is a local time, name its IANA zone (America/New_York)"
        return key, "is required"
    if kind == "extra_forbidden":
        model = _SECTIONS.get(_dotted(loc[:-1]))
        if model is None:
            return key, "unknown key"
        return key, f"unknown key; expected one of {', '.join(sorted(model.model_fields))}"
    if kind in ("greater_than_equal", "greater_than"):
        return key, f"expected a whole number >= {ctx.get('ge', ctx.get('gt'))}, got {show(error.get('input'))}"
    simple = {
        "int_type": "a whole number",
        "string_type": "a string",
        "list_type": "an array",
        "model_type": "a table",
        "string_too_short": "a non-empty string",
    }
    expected = simple.get(kind, str(error["msg"]))
    value = error.get("input")
    shown = show(value) if not (isinstance(value, float) and math.isnan(value)) else "nan"
    return key, f"expected {expected}, got {shown}"
