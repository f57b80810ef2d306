"""Our own immutable values for ADF pipeline runs and activity runs.

They are built from the raw JSON the service sends (the SDK is asked for the raw body, see
client.py), so SDK model objects never leak into the rest of the code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from backfill.timeutil import format_utc, parse_adf_time


class RunStatus(StrEnum):
    QUEUED = "Queued"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELING = "Canceling"
    CANCELLED = "Cancelled"
    # A status this tool does not know (ADF may add one: ``Waiting``, ``NotStarted``): counted as
    # in progress, never as an end, so it can never lead to a second run (spec §14). The run keeps
    # the service's own word in ``Run.status_text``.
    UNKNOWN = "Unknown"

    @classmethod
    def read(cls, text: str) -> RunStatus:
        """The status of a run the service sent: ``UNKNOWN`` for a word we do not know."""
        exact = _STATUS_BY_VALUE.get(text)
        if exact is not None and exact is not cls.UNKNOWN:
            return exact
        try:
            found = cls.parse(text)
        except ValueError:
            return cls.UNKNOWN
        return cls.UNKNOWN if found is cls.UNKNOWN else found

    @classmethod
    def parse(cls, text: str) -> RunStatus:
        exact = _STATUS_BY_VALUE.get(text)
        if exact is not None:
            return exact
        # ADF's documents spell it both ways; we normalise to the service's "Cancelled".
        if text.lower() == "canceled":
            return cls.CANCELLED
        for member in cls:
            if member.value.lower() == text.lower():
                return member
        raise ValueError(f"unknown run status {text!r}")

    @property
    def is_active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.CANCELING, RunStatus.UNKNOWN)

    @property
    def is_final(self) -> bool:
        return not self.is_active


# The service's own spelling, looked up directly: parsing 200,000 runs must not walk the enum.
_STATUS_BY_VALUE: dict[str, RunStatus] = {status.value: status for status in RunStatus}


def decode_parameter(value: Any) -> Any:
    """ADF returns every run parameter as a string; arrays and objects arrive JSON-encoded.

    A string that holds a JSON array or object is decoded; anything else is kept as sent, so a
    String parameter ``"north"`` stays ``"north"`` and ``"5"`` stays ``"5"``.
    """
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("[", "{"):
            try:
                return json.loads(stripped)
            except ValueError:
                return value
    return value


def _unknown_word(status: RunStatus, word: str) -> str:
    # Kept only when it says more than "Unknown": the label is the same either way.
    return word if status is RunStatus.UNKNOWN and word != RunStatus.UNKNOWN.value else ""


class MalformedRun(ValueError):
    """A run record the service sent that cannot be read (no runId, parameters not an object,
    a runStart that is not a time): one line naming the record and what is wrong with it."""


def _time_field(body: Mapping[str, Any], name: str, run_id: str) -> datetime | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise MalformedRun(f"run {run_id}: {name} {value!r} is not a time")
    try:
        return parse_adf_time(value)
    except ValueError:
        raise MalformedRun(f"run {run_id}: {name} {value!r} is not a time") from None


# Slots: a sync holds thousands at a time.
@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    pipeline: str
    status: RunStatus
    parameters: Mapping[str, Any] = field(default_factory=dict)
    run_group_id: str | None = None
    is_latest: bool = True
    start: datetime | None = None
    end: datetime | None = None
    last_updated: datetime | None = None
    duration: timedelta | None = None
    message: str = ""
    invoked_by: str = ""
    invoked_by_type: str = ""
    # The service's word for a status we do not know (``status`` is then UNKNOWN); "" otherwise.
    status_text: str = ""

    @property
    def status_label(self) -> str:
        """The status as the service spelled it: ``Waiting`` for an unknown one."""
        return self.status_text or self.status.value

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Run:
        """A run from the service's JSON; ``MalformedRun`` (one line) for a record we cannot read."""
        if not isinstance(body, Mapping):
            raise MalformedRun(f"run record is {type(body).__name__}, not an object")
        raw_id = body.get("runId")
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise MalformedRun(f"run record without a runId (runId {raw_id!r})")
        # Named in one line whatever the service sent: an ID with a line break is shown quoted.
        shown = raw_id if raw_id.isprintable() else repr(raw_id)
        duration_ms = body.get("durationInMs")
        invoked = body.get("invokedBy") or {}
        raw_params = body.get("parameters") or {}
        if not isinstance(raw_params, Mapping):
            raise MalformedRun(f"run {shown}: parameters is a {type(raw_params).__name__}, not an object")
        duration: timedelta | None = None
        if isinstance(duration_ms, int | float) and not isinstance(duration_ms, bool):
            try:
                duration = timedelta(milliseconds=duration_ms)
            except (OverflowError, ValueError):
                duration = None  # a duration we cannot read is only a missing figure
        group = body.get("runGroupId")
        text = str(body.get("status") or "")
        status = RunStatus.read(text)
        return cls(
            run_id=raw_id,
            pipeline=str(body.get("pipelineName") or ""),
            status=status,
            parameters={str(k): decode_parameter(v) for k, v in raw_params.items()},
            run_group_id=group if isinstance(group, str) else None,
            # The published examples omit isLatest; a run alone in its group is the latest.
            is_latest=bool(body.get("isLatest", True)),
            start=_time_field(body, "runStart", shown),
            end=_time_field(body, "runEnd", shown),
            last_updated=_time_field(body, "lastUpdated", shown),
            duration=duration,
            message=str(body.get("message") or ""),
            invoked_by=str(invoked.get("name") or "") if isinstance(invoked, Mapping) else "",
            invoked_by_type=str(invoked.get("invokedByType") or "") if isinstance(invoked, Mapping) else "",
            status_text=_unknown_word(status, text or "(none)"),
        )

    def to_json(self) -> dict[str, Any]:
        """A stable JSON form (our own, used by --json output and the history cache)."""
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status_label,
            "parameters": dict(self.parameters),
            "run_group_id": self.run_group_id,
            "is_latest": self.is_latest,
            "start": format_utc(self.start, precise=True) or None,
            "end": format_utc(self.end, precise=True) or None,
            "last_updated": format_utc(self.last_updated, precise=True) or None,
            "duration_ms": int(self.duration.total_seconds() * 1000) if self.duration is not None else None,
            "message": self.message,
            "invoked_by": self.invoked_by,
            "invoked_by_type": self.invoked_by_type,
        }

    @classmethod
    def from_cache(cls, data: Mapping[str, Any]) -> Run:
        """Inverse of ``to_json``."""
        duration_ms = data.get("duration_ms")
        status = RunStatus.read(data["status"])
        return cls(
            run_id=data["run_id"],
            pipeline=data["pipeline"],
            status=status,
            status_text=_unknown_word(status, data["status"]),
            parameters=dict(data.get("parameters") or {}),
            run_group_id=data.get("run_group_id"),
            is_latest=bool(data.get("is_latest", True)),
            start=parse_adf_time(data.get("start")),
            end=parse_adf_time(data.get("end")),
            last_updated=parse_adf_time(data.get("last_updated")),
            duration=timedelta(milliseconds=duration_ms) if duration_ms is not None else None,
            message=data.get("message") or "",
            invoked_by=data.get("invoked_by") or "",
            invoked_by_type=data.get("invoked_by_type") or "",
        )


@dataclass(frozen=True)
class ActivityRun:
    activity_run_id: str
    name: str
    type: str
    status: str
    start: datetime | None = None
    end: datetime | None = None
    duration: timedelta | None = None
    error_code: str = ""
    message: str = ""
    failure_type: str = ""

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ActivityRun:
        error = body.get("error") or {}
        duration_ms = body.get("durationInMs")
        return cls(
            activity_run_id=str(body.get("activityRunId") or ""),
            name=str(body.get("activityName") or ""),
            type=str(body.get("activityType") or ""),
            status=str(body.get("status") or ""),
            start=parse_adf_time(body.get("activityRunStart")),
            end=parse_adf_time(body.get("activityRunEnd")),
            duration=timedelta(milliseconds=duration_ms) if duration_ms is not None else None,
            error_code=str(error.get("errorCode") or ""),
            message=str(error.get("message") or ""),
            failure_type=str(error.get("failureType") or ""),
        )

    @property
    def failed(self) -> bool:
        return self.status == "Failed"


@dataclass(frozen=True)
class PipelineInfo:
    name: str
    parameters: Mapping[str, str]  # name -> ADF type (String, Array, SecureString...)
    activities: tuple[str, ...]
    concurrency: int | None = None
    defaults: frozenset[str] = frozenset()  # the parameters with a default value (optional ones)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PipelineInfo:
        # The REST body nests under "properties"; the SDK's as_dict() flattens it and spells
        # keys in snake case (default_value).
        props = body.get("properties") or body
        params = props.get("parameters") or {}
        return cls(
            name=str(body.get("name") or ""),
            parameters={str(k): str((v or {}).get("type", "String")) for k, v in params.items()},
            activities=tuple(str(a.get("name")) for a in props.get("activities") or []),
            concurrency=props.get("concurrency"),
            defaults=frozenset(
                str(k) for k, v in params.items() if "defaultValue" in (v or {}) or "default_value" in (v or {})
            ),
        )
