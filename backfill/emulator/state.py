"""The emulated factory's state: runs, their lifecycle on the clock, outcomes and sink writes.

Each run follows a script fixed when it is created (from the scenario's outcome rules or a
declared past run): Queued, InProgress after the queue time, then its final status at start plus
its duration, all durations divided by the clock speed. Transitions are events applied in time
order, on every request and by the emulator's ticker, so a sink write always lands before any
answer shows the run past that point. Runs are kept sorted by ``lastUpdated`` for queries.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from backfill.emulator.runs import EmulatedRun, Script, micros, new_run_id
from backfill.emulator.scenario import PastRun, Pipeline, Scenario, adf_string, resolve
from backfill.emulator.sink import SinkWriter
from backfill.emulator.wire import (
    ApiError,
    adf_time,
    duration_ms,
    factory_path,
    invoked_by,
    run_resource_id,
)
from backfill.errors import ScenarioError

FINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
_HISTORY_RESULT = {
    "Succeeded": "succeed",
    "Failed": "fail",
    "Cancelled": "cancel",
    "InProgress": "hang",
    "Queued": "queued",
}


class FactoryState:
    """All runs of the emulated factory. Thread-safe: every public method takes the lock."""

    def __init__(self, scenario: Scenario, env: Mapping[str, str] | None = None) -> None:
        self.scenario = scenario
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.started = datetime.now(UTC)
        self.factory_id = factory_path(scenario.subscription_id, scenario.resource_group, scenario.factory)
        self.pipelines = {p.name: p for p in scenario.pipelines}
        self.runs: dict[str, EmulatedRun] = {}
        self.by_updated: list[tuple[int, str]] = []
        self.version = 0
        self.sink_errors: list[str] = []
        self._groups: dict[str, list[EmulatedRun]] = {}
        self._events: list[tuple[int, int, datetime, str, str]] = []
        self._seq = itertools.count()
        self._uses = [0] * len(scenario.outcomes)
        self._env = env
        self._sinks: dict[str, SinkWriter] = {}
        self._loading = True
        self._pending: list[tuple[EmulatedRun, int, int, int]] = []
        # Runs a createRun made that the service applies late (a fault's effect_delay): not
        # visible anywhere until their "appear" event.
        self._unborn: dict[str, EmulatedRun] = {}

    # --- start and stop --------------------------------------------------------------------------

    def load(self) -> None:
        """Connect the sinks and materialise the declared past runs (and their rows)."""
        where = self.scenario.source
        for pipeline in self.scenario.pipelines:
            if pipeline.sink is None:
                continue
            try:
                writer = SinkWriter(pipeline.sink, self._env)
                self._sinks[pipeline.name] = writer
                writer.prepare()
            except Exception as exc:
                self.close()
                raise ScenarioError(
                    f"{where}: pipelines.{pipeline.name}.sink: cannot prepare table {pipeline.sink.table}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ) from None
        with self.lock:
            now = datetime.now(UTC)
            self._load_history(self.scenario.all_history(self.started), now)
            self.by_updated = sorted((rec.lu_key, rec.run_id) for rec in self.runs.values())
            heapq.heapify(self._events)
            self._loading = False
            pending, self._pending = self._pending, []
            for rec, first, count, total in pending:
                self._write(rec, first, count, total)

    def close(self) -> None:
        for writer in self._sinks.values():
            writer.close()

    def _load_history(self, history: Iterable[PastRun], now: datetime) -> None:
        scenario = self.scenario
        queue = scenario.scaled(scenario.queue_time)
        scripts: dict[tuple[Any, ...], Script] = {}  # shared: 200,000 runs have a handful of scripts
        for index, declared in enumerate(history):
            pipeline = self.pipelines.get(declared.pipeline)
            if pipeline is None:
                raise ScenarioError(f"{scenario.source}: history[{index}]: unknown pipeline {declared.pipeline!r}")
            result = _HISTORY_RESULT[declared.status]
            stop = len(pipeline.activities) - 1
            if declared.activity is not None and result in ("fail", "hang"):
                stop = pipeline.activity_index(declared.activity)
            rows = pipeline.rows if declared.rows is None else declared.rows
            key = (
                result,
                stop,
                declared.error_code,
                declared.message,
                declared.failure_type,
                rows,
                declared.rows_before_failure,
            )
            script = scripts.get(key)
            if script is None:
                script = scripts[key] = Script(*key)
            run_id = declared.run_id or new_run_id()
            if run_id in self.runs:
                raise ScenarioError(f"{scenario.source}: history[{index}]: run_id {run_id} is used twice")
            duration = scenario.scaled(declared.duration or pipeline.duration)
            rec = EmulatedRun(
                run_id,
                pipeline,
                _wire(declared.parameters),
                resolve(declared.start, self.started),
                duration,
                queue,
                script,
            )
            rec.invoked_by, rec.invoked_by_type = declared.invoked_by, declared.invoked_by_type
            if declared.run_group_id:
                rec.group = declared.run_group_id
                self._groups.setdefault(rec.group, []).append(rec)
            self._add(rec, now)
        for members in self._groups.values():
            newest = max(members, key=lambda r: r.start)
            for member in members:
                member.is_latest = member is newest

    def _add(self, rec: EmulatedRun, now: datetime) -> None:
        self.runs[rec.run_id] = rec
        if not self._loading:
            bisect.insort(self.by_updated, (rec.lu_key, rec.run_id))
        if rec.script.result != "queued":
            if rec.begin <= now:
                self._apply(rec, "begin", rec.begin)
            else:
                self._push(rec.begin, rec.run_id, "begin")
        finish = rec.finish
        if finish is not None:
            if finish <= now:
                self._apply(rec, "finish", finish)
            else:
                self._push(finish, rec.run_id, "finish")

    def _push(self, at: datetime, run_id: str, kind: str) -> None:
        entry = (micros(at), next(self._seq), at, run_id, kind)
        if self._loading:
            self._events.append(entry)
        else:
            heapq.heappush(self._events, entry)
            self.changed.notify_all()

    # --- the clock -------------------------------------------------------------------------------

    def advance(self, now: datetime) -> None:
        """Apply every transition due at ``now`` (sink writes included)."""
        with self.lock:
            limit = micros(now)
            while self._events and self._events[0][0] <= limit:
                _, _, at, run_id, kind = heapq.heappop(self._events)
                if kind == "appear":
                    self._add(self._unborn.pop(run_id), at)
                    self.version += 1
                    continue
                self._apply(self.runs[run_id], kind, at)

    def next_event(self) -> datetime | None:
        with self.lock:
            return self._events[0][2] if self._events else None

    def _apply(self, rec: EmulatedRun, kind: str, at: datetime) -> None:
        script = rec.script
        if kind == "begin" and rec.status == "Queued":
            rec.status = "InProgress"
            if script.rows_before_failure:
                total = max(script.rows, script.rows_before_failure)
                self._write(rec, 0, script.rows_before_failure, total)
        elif kind == "finish" and rec.status == "InProgress":
            if script.result == "succeed":
                rec.status, rec.end = "Succeeded", at
                self._write(rec, rec.rows_written, script.rows - rec.rows_written, script.rows)
            elif script.result == "fail":
                rec.status, rec.end = "Failed", at
                failed = rec.pipeline.activities[max(script.stop, rec.first)].name
                rec.message = f"Operation on target {failed} failed: {script.message}"
            else:
                rec.status, rec.cancel_at = "Cancelled", at
        elif kind == "cancelled" and rec.status == "Canceling":
            rec.status = "Cancelled"
        else:
            return
        self._touch(rec, at)

    def _touch(self, rec: EmulatedRun, at: datetime) -> None:
        if not self._loading:
            index = bisect.bisect_left(self.by_updated, (rec.lu_key, rec.run_id))
            if index < len(self.by_updated) and self.by_updated[index][1] == rec.run_id:
                del self.by_updated[index]
        rec.last_updated, rec.lu_key = at, micros(at)
        if not self._loading:
            bisect.insort(self.by_updated, (rec.lu_key, rec.run_id))
        self.version += 1

    def _write(self, rec: EmulatedRun, first: int, count: int, total: int) -> None:
        writer = self._sinks.get(rec.pipeline.name)
        if writer is None or count <= 0:
            return
        if self._loading:
            self._pending.append((rec, first, count, total))
            rec.rows_written += count
            return
        try:
            written = writer.write(rec.run_id, rec.parameters, first, count, total)
        except Exception as exc:
            self.sink_errors.append(f"{rec.pipeline.name} {rec.run_id}: {type(exc).__name__}: {exc}")
            return
        rec.rows_written = max(rec.rows_written, first + written)

    # --- operations ------------------------------------------------------------------------------

    def live_run(self, run_id: str, now: datetime) -> EmulatedRun | None:
        """A run the service still shows: older than the retention it is gone, as in ADF."""
        rec = self.runs.get(run_id)
        if rec is None or rec.last_updated < now - self.scenario.retention:
            return None
        return rec

    def pipeline(self, name: str) -> Pipeline:
        found = self.pipelines.get(name)
        if found is None:
            raise ApiError(404, "EntityNotFound", f"Entity {name} not found", target=f"pipeline/{name}/")
        return found

    def create_run(
        self, pipeline_name: str, body: Any, options: Mapping[str, str], now: datetime, *, delay: float = 0.0
    ) -> str:
        """``pipelines/{name}/createRun``; returns the new run's ID. With ``delay`` (real seconds)
        the run starts, and becomes visible, only that long after ``now``."""
        with self.lock:
            self.advance(now)
            pipeline = self.pipeline(pipeline_name)
            if body is not None and not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "The request body must be a JSON object of parameters.")
            recovery = _flag(options, "isRecovery")
            reference_id = options.get("referencePipelineRunId")
            reference = None
            if reference_id is not None:
                reference = self.live_run(reference_id, now)
                if reference is None or reference.pipeline is not pipeline:
                    raise ApiError(
                        400,
                        "ReferencedPipelineRunNotValid",
                        f"Referenced pipeline run id {reference_id} is not a valid run id.",
                        target=f"pipeline/{pipeline_name}/",
                    )
                # With a reference, ADF reruns with the referenced run's parameters.
                parameters = dict(reference.parameters)
            else:
                values = {**pipeline.defaults, **(body or {})}
                parameters = _wire(values)
            first = self._first_activity(pipeline, reference, recovery, options)
            script, duration = self._choose(pipeline, parameters, first)
            start = now + timedelta(seconds=delay)
            rec = EmulatedRun(
                new_run_id(),
                pipeline,
                parameters,
                start,
                duration,
                self.scenario.scaled(self.scenario.queue_time),
                script,
                first,
            )
            if reference is not None and recovery:
                rec.group = reference.group
                # Groups are tracked once they have two members; a lone run is its own group.
                members = self._groups.setdefault(rec.group, [reference])
                for member in members:
                    member.is_latest = False
                members.append(rec)
            if delay > 0:
                self._unborn[rec.run_id] = rec
                self._push(start, rec.run_id, "appear")
                return rec.run_id
            self._add(rec, now)
            self.version += 1
            return rec.run_id

    def _first_activity(
        self, pipeline: Pipeline, reference: EmulatedRun | None, recovery: bool, options: Mapping[str, str]
    ) -> int:
        if reference is None or not recovery:
            return 0
        name = options.get("startActivityName")
        if name:
            try:
                return pipeline.activity_index(name)
            except KeyError:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"Activity {name} was not found in pipeline {pipeline.name}.",
                    target=f"pipeline/{pipeline.name}/",
                ) from None
        if _flag(options, "startFromFailure") and reference.status == "Failed":
            return max(reference.script.stop, reference.first)
        return 0

    def _choose(self, pipeline: Pipeline, parameters: dict[str, str], first: int) -> tuple[Script, timedelta]:
        last = len(pipeline.activities) - 1
        for index, rule in enumerate(self.scenario.outcomes):
            if rule.times is not None and self._uses[index] >= rule.times:
                continue
            if not rule.matches(pipeline.name, parameters):
                continue
            self._uses[index] += 1
            stop = last
            if rule.result != "succeed" and rule.activity is not None:
                stop = max(pipeline.activity_index(rule.activity), first)
            rows = pipeline.rows if rule.rows is None else rule.rows
            script = Script(
                rule.result, stop, rule.error_code, rule.message, rule.failure_type, rows, rule.rows_before_failure
            )
            return script, self.scenario.scaled(rule.duration or pipeline.duration)
        return Script("succeed", last, rows=pipeline.rows), self.scenario.scaled(pipeline.duration)

    def get_run(self, run_id: str, now: datetime) -> dict[str, Any]:
        with self.lock:
            self.advance(now)
            return self.run_json(self._require(run_id, now))

    def cancel_run(self, run_id: str, now: datetime) -> None:
        with self.lock:
            self.advance(now)
            rec = self._require(run_id, now)
            if rec.status in FINAL:
                raise ApiError(
                    400,
                    "PipelineRunNotRunning",
                    f"Pipeline run {run_id} is not running; its status is {rec.status}.",
                    target=run_id,
                )
            if rec.status == "Canceling":
                return
            rec.status, rec.cancel_at = "Canceling", now
            self._touch(rec, now)
            self._push(now + self.scenario.scaled(self.scenario.cancel_time), run_id, "cancelled")

    def _require(self, run_id: str, now: datetime) -> EmulatedRun:
        rec = self.live_run(run_id, now)
        if rec is None:
            raise ApiError(
                404,
                "PipelineRunNotFound",
                f"Pipeline run {run_id} was not found in factory {self.scenario.factory}.",
                target=run_id,
            )
        return rec

    def run_json(self, rec: EmulatedRun) -> dict[str, Any]:
        return {
            "id": run_resource_id(self.factory_id, rec.run_id),
            "runId": rec.run_id,
            "debugRunId": None,
            "runGroupId": rec.group,
            "pipelineName": rec.pipeline.name,
            "parameters": dict(rec.parameters),
            "invokedBy": invoked_by(rec.invoker_id, rec.invoked_by, rec.invoked_by_type),
            "runStart": adf_time(rec.start),
            "runEnd": adf_time(rec.end),
            "durationInMs": duration_ms(rec.start, rec.end),
            "status": rec.status,
            "message": rec.message,
            "lastUpdated": adf_time(rec.last_updated),
            "annotations": list(rec.pipeline.annotations),
            "runDimension": {},
            "isLatest": rec.is_latest,
        }


def _wire(values: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(name): value if type(value) is str else adf_string(value)
        for name, value in values.items()
        if value is not None
    }


def _flag(options: Mapping[str, str], name: str) -> bool:
    raw = options.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ApiError(400, "BadRequest", f"The query parameter {name} must be true or false, not {raw!r}.")
