"""What the emulated factory holds and does: pipelines, past runs, future outcomes, sinks, faults.

A ``Scenario`` is plain dataclasses, built in Python or loaded from TOML (``loader.py``). Every
duration in it is *emulated* time and is divided by ``speed`` when the emulator runs; timestamps
stay real UTC. Past runs may be declared at absolute times or relative to the emulator's start
(``start = timedelta(hours=-5)``), so tests and the demo build scenarios around "now".
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from backfill.emulator.faults import Fault
from backfill.emulator.throttle import ServiceLimits
from backfill.factory.protocol import FactoryRef
from backfill.relative_time import RelativeTime
from backfill.timeutil import parse_utc
from backfill.windows import render_parameters

RunResult = Literal["succeed", "fail", "hang"]
RESULTS: tuple[str, ...] = ("succeed", "fail", "hang")
HISTORY_STATUSES: tuple[str, ...] = ("Succeeded", "Failed", "Cancelled", "InProgress", "Queued")
# A point in time: absolute UTC, or an offset from the emulator's start (negative: the past).
When = datetime | timedelta | RelativeTime  # RelativeTime: ``yesterday 02:00Z`` and the like

DEFAULT_ERROR_CODE = "2200"
DEFAULT_ERROR_MESSAGE = "Failure happened on 'Sink' side. ErrorCode=SqlOperationFailed."
DEFAULT_FAILURE_TYPE = "UserError"


def adf_string(value: Any) -> str:
    """A parameter value as ADF reports it: strings as they are, arrays/objects JSON-encoded."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        # ADF is .NET: booleans come back as True/False.
        return "True" if value else "False"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def value_matches(pattern: str, value: str) -> bool:
    """An outcome's match value against a run parameter (in ADF's string form).

    Equal strings match; ``*``/``?``/``[...]`` are shell-style wildcards; two timestamps match
    when they are the same instant however they are written (``...T02:00:00Z`` and
    ``...T02:00:00.000+00:00``).
    """
    if pattern == value:
        return True
    if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(value, pattern):
        return True
    if pattern[:1].isdigit() and value[:1].isdigit() and "T" in pattern and "T" in value:
        try:
            return parse_utc(pattern) == parse_utc(value)
        except ValueError:
            return False
    return False


def resolve(when: When, origin: datetime) -> datetime:
    """An absolute time, or ``origin`` plus a relative offset."""
    if isinstance(when, timedelta):
        return origin + when
    if isinstance(when, RelativeTime):
        return when.resolve(origin)
    return when.astimezone(UTC)


def _floored(when: When) -> bool:
    return isinstance(when, timedelta) or (isinstance(when, RelativeTime) and not when.day_aligned)


def _z(value: datetime) -> str:
    # format_utc's form (2026-11-03T02:00:00Z) without strftime's cost, for large series.
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"


@dataclass(frozen=True)
class Activity:
    name: str
    type: str = "Copy"


@dataclass(frozen=True)
class Sink:
    """The real table a pipeline's runs write rows to (any SQLAlchemy URL; ``${VAR}`` allowed)."""

    url: str
    table: str
    timestamp_column: str = "reading_ts"
    # Run parameters that hold the window bounds; rows are spread over [start, end).
    window_start: str = "windowStart"
    window_end: str = "windowEnd"
    # Extra columns: a template over run parameters ("{feederRegion}") or a literal number.
    columns: Mapping[str, str | int | float] = field(default_factory=dict)
    run_id_column: str | None = None
    # Delete the table's rows at start, so a restarted scenario does not pile rows up.
    reset: bool = True
    # "append": a rerun adds its rows again (duplicates, what the checks guard against);
    # "replace": a run first deletes its window's rows (an idempotent pipeline).
    write: str = "append"


@dataclass
class Pipeline:
    name: str
    activities: tuple[Activity, ...] = (Activity("CopyData"),)
    parameters: Mapping[str, str] = field(default_factory=dict)  # name -> ADF type (String, Array...)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # default values ADF fills in
    duration: timedelta = timedelta(minutes=15)  # a typical run, emulated time
    rows: int = 0  # rows a successful run writes to the sink
    sink: Sink | None = None
    concurrency: int | None = None
    description: str = ""
    annotations: tuple[str, ...] = ()

    def activity_index(self, name: str) -> int:
        for index, activity in enumerate(self.activities):
            if activity.name == name:
                return index
        raise KeyError(name)


@dataclass
class OutcomeRule:
    """What future runs whose parameters match do. First matching rule wins; ``times`` limits a
    rule to that many runs (so a first run can fail and its rerun succeed)."""

    result: RunResult = "succeed"
    pipeline: str | None = None
    match: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    activity: str | None = None  # the failing (or hanging) activity; default the last one
    error_code: str = DEFAULT_ERROR_CODE
    message: str = DEFAULT_ERROR_MESSAGE
    failure_type: str = DEFAULT_FAILURE_TYPE
    duration: timedelta | None = None  # default: the pipeline's
    rows: int | None = None  # default: the pipeline's
    rows_before_failure: int = 0  # written when the run starts (a partial write)
    times: int | None = None

    def matches(self, pipeline: str, parameters: Mapping[str, str]) -> bool:
        """Whether this rule applies to a run of ``pipeline`` with ADF-string ``parameters``."""
        if self.pipeline is not None and self.pipeline != pipeline:
            return False
        for name, expected in self.match.items():
            actual = parameters.get(name)
            if actual is None:
                return False
            patterns = [expected] if isinstance(expected, str) else list(expected)
            if not any(value_matches(adf_string(p), actual) for p in patterns):
                return False
        return True


@dataclass
class PastRun:
    """A run that exists when the emulator starts. Queued/InProgress ones hang until cancelled."""

    pipeline: str
    start: When
    parameters: Mapping[str, Any] = field(default_factory=dict)
    status: str = "Succeeded"
    duration: timedelta | None = None  # emulated; default the pipeline's
    activity: str | None = None
    error_code: str = DEFAULT_ERROR_CODE
    message: str = DEFAULT_ERROR_MESSAGE
    failure_type: str = DEFAULT_FAILURE_TYPE
    rows: int | None = None  # a Succeeded run's rows; default the pipeline's
    rows_before_failure: int = 0
    run_id: str | None = None
    # Runs sharing a group are one recovery group; the newest start is isLatest.
    run_group_id: str | None = None
    invoked_by: str = "Manual"
    invoked_by_type: str = "Manual"


@dataclass
class HistorySeries:
    """Many past runs at once: one per window of ``every`` in [start, end), each starting at its
    window's end plus ``delay``. Relative bounds are floored to the ``every`` grid."""

    pipeline: str
    start: When
    end: When
    every: timedelta
    parameters: Mapping[str, Any] = field(default_factory=dict)  # templates: "{start}", "{end:%H}"
    status: str = "Succeeded"
    duration: timedelta | None = None
    delay: timedelta = timedelta(0)
    rows: int | None = None
    rows_before_failure: int = 0
    activity: str | None = None
    error_code: str = DEFAULT_ERROR_CODE
    message: str = DEFAULT_ERROR_MESSAGE
    failure_type: str = DEFAULT_FAILURE_TYPE
    weekdays: frozenset[int] | None = None  # only windows ending on these UTC weekdays (0: Monday)

    def bounds(self, origin: datetime) -> tuple[datetime, datetime]:
        start, end = resolve(self.start, origin), resolve(self.end, origin)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        # Offsets from the start fall anywhere; day forms (``yesterday 02:00Z``) are as written.
        if _floored(self.start):
            start -= (start - epoch) % self.every
        if _floored(self.end):
            end -= (end - epoch) % self.every
        return start, end

    def runs(self, origin: datetime) -> Iterator[PastRun]:
        start, end = self.bounds(origin)
        # Bare {start}/{end} are by far the most common templates: format each instant once.
        simple = {k: v for k, v in self.parameters.items() if v in ("{start}", "{end}")}
        other = {k: v for k, v in self.parameters.items() if k not in simple}
        start_text = _z(start)
        while start + self.every <= end:
            window_end = start + self.every
            end_text = _z(window_end)
            if self.weekdays is not None and window_end.weekday() not in self.weekdays:
                start, start_text = window_end, end_text
                continue
            parameters = render_parameters(other, start, window_end) if other else {}
            for name, template in simple.items():
                parameters[name] = start_text if template == "{start}" else end_text
            yield PastRun(
                pipeline=self.pipeline,
                start=window_end + self.delay,
                parameters=parameters,
                status=self.status,
                duration=self.duration,
                rows=self.rows,
                rows_before_failure=self.rows_before_failure,
                activity=self.activity,
                error_code=self.error_code,
                message=self.message,
                failure_type=self.failure_type,
            )
            start, start_text = window_end, end_text


@dataclass
class Scenario:
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "rg-energy-analytics"
    factory: str = "adf-grid-telemetry"
    token: str | None = None  # None: a random token at every start
    speed: float = 1.0  # every emulated duration is divided by this
    queue_time: timedelta = timedelta(seconds=2)  # a new run stays Queued this long
    cancel_time: timedelta = timedelta(seconds=5)  # a cancelled run stays Canceling this long
    retention: timedelta = timedelta(days=45)
    page_size: int = 100
    # ARM's read throttling and added latency (emulator.throttle); off by default.
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    pipelines: list[Pipeline] = field(default_factory=list)
    outcomes: list[OutcomeRule] = field(default_factory=list)
    history: list[PastRun] = field(default_factory=list)
    series: list[HistorySeries] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    source: str = "<scenario>"

    @property
    def ref(self) -> FactoryRef:
        return FactoryRef(self.subscription_id, self.resource_group, self.factory)

    def pipeline(self, name: str) -> Pipeline:
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise KeyError(name)

    def add_pipeline(self, pipeline: Pipeline) -> Pipeline:
        self.pipelines.append(pipeline)
        return pipeline

    def add_outcome(self, outcome: OutcomeRule) -> OutcomeRule:
        self.outcomes.append(outcome)
        return outcome

    def add_history(self, runs: PastRun | Iterable[PastRun]) -> None:
        """Add one past run or many (a generator of 200,000 is fine: they are stored as given)."""
        if isinstance(runs, PastRun):
            self.history.append(runs)
        else:
            self.history.extend(runs)

    def all_history(self, origin: datetime) -> Iterator[PastRun]:
        yield from self.history
        for series in self.series:
            yield from series.runs(origin)

    def scaled(self, value: timedelta) -> timedelta:
        """An emulated duration in real time."""
        return value / self.speed

    @classmethod
    def default(cls) -> Scenario:
        """The scenario ``backfill emulator serve`` uses without ``--scenario``."""
        return cls(
            speed=60.0,
            pipelines=[
                Pipeline(
                    name="LoadMeterTelemetry",
                    activities=(Activity("LookupWatermark", "Lookup"), Activity("CopyReadings", "Copy")),
                    parameters={
                        "windowStart": "String",
                        "windowEnd": "String",
                        "feederRegion": "String",
                        "sourceKey": "SecureString",
                    },
                )
            ],
            source="<default scenario>",
        )

    def validate(self) -> None:
        """Cross-checks a loaded or hand-built scenario; raises ValueError naming the problem."""
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        names = [p.name for p in self.pipelines]
        if len(set(names)) != len(names):
            raise ValueError("two pipelines have the same name")
        for pipeline in self.pipelines:
            if not pipeline.activities:
                raise ValueError(f"pipeline {pipeline.name} has no activities")
        for index, outcome in enumerate(self.outcomes):
            if outcome.result not in RESULTS:
                raise ValueError(f"outcomes[{index}]: result must be one of {', '.join(RESULTS)}")
            self._check_activity(outcome.pipeline, outcome.activity, f"outcomes[{index}]")
        for index, series in enumerate(self.series):
            if series.status not in HISTORY_STATUSES:
                raise ValueError(f"series[{index}]: status must be one of {', '.join(HISTORY_STATUSES)}")
            for bound in (series.start, series.end):
                if isinstance(bound, datetime) and bound.tzinfo is None:
                    raise ValueError(f"series[{index}]: {bound.isoformat()} has no UTC offset")
            if series.every <= timedelta(0):
                raise ValueError(f"series[{index}]: every must be positive")
            self._check_activity(series.pipeline, series.activity, f"series[{index}]")
        for index, run in enumerate(self.history):
            if isinstance(run.start, datetime) and run.start.tzinfo is None:
                raise ValueError(f"history[{index}].start: {run.start.isoformat()} has no UTC offset")
            if run.status not in HISTORY_STATUSES:
                raise ValueError(f"history[{index}]: status must be one of {', '.join(HISTORY_STATUSES)}")
            self._check_activity(run.pipeline, run.activity, f"history[{index}]")

    def _check_activity(self, pipeline: str | None, activity: str | None, where: str) -> None:
        if pipeline is None:
            candidates = self.pipelines
        else:
            try:
                candidates = [self.pipeline(pipeline)]
            except KeyError:
                raise ValueError(f"{where}: unknown pipeline {pipeline!r}") from None
        if activity is not None and not any(activity in (a.name for a in p.activities) for p in candidates):
            if pipeline:
                raise ValueError(f"{where}: pipeline {pipeline} has no activity {activity!r}")
            raise ValueError(f"{where}: no pipeline has an activity {activity!r}")
