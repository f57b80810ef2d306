"""API faults the emulator injects: throttling, server errors, latency and dropped connections.

Faults are declared in the scenario or added at runtime (``emu.faults.add(...)``). Each fault
matches an operation (or a group: ``read``, ``write``, ``*``), lets ``skip`` matching calls
through, then applies to the next ``count`` of them. ``when`` says whether it strikes before the
operation takes effect or after it (a createRun that created its run but whose answer is lost).

The kinds that test issue 7 (spec §14): ``malformed`` answers ``status`` with ``body`` (raw text,
truncated JSON by default); ``hang`` holds the connection ``latency`` seconds without an answer,
then closes it; ``repeat-token`` makes queryPipelineRuns hand back the same continuationToken for
ever; ``status`` rewrites the status of the runs a read returns (``of_status`` only, if given) to
``status_text``; ``records`` appends ``records`` (raw, possibly malformed run records) to a
queryPipelineRuns page. ``effect_delay`` (real seconds, like ``latency``: it races the client's
timeouts and settle, which are wall-clock) makes a createRun with a ``when = "after"`` fault take
effect that long after its answer was sent (or the connection closed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["throttle", "error", "latency", "drop", "malformed", "hang", "repeat-token", "status", "records"]
FaultWhen = Literal["before", "after"]
# The kinds a scenario file declares; the others take fields only ``FaultSet.add`` sets (tests).
SCENARIO_KINDS: tuple[str, ...] = ("throttle", "error", "latency", "drop")
KINDS: tuple[str, ...] = (*SCENARIO_KINDS, "malformed", "hang", "repeat-token", "status", "records")
# Kinds that rewrite a real answer, so they always strike after the operation ran.
REWRITES = ("repeat-token", "status", "records")
TRUNCATED = '{"runId": "6f1e'
HANG_LIMIT = 120.0

# The emulator's operation names; the SDK's operation ids are accepted as aliases.
OPERATIONS: dict[str, str] = {
    "createRun": "write",
    "cancelPipelineRun": "write",
    "queryPipelineRuns": "read",
    "getPipelineRun": "read",
    "queryActivityRuns": "read",
    "getPipeline": "read",
    "listPipelines": "read",
    "getFactory": "read",
}
ALIASES: dict[str, str] = {
    "Pipelines_CreateRun": "createRun",
    "PipelineRuns_Cancel": "cancelPipelineRun",
    "PipelineRuns_QueryByFactory": "queryPipelineRuns",
    "PipelineRuns_Get": "getPipelineRun",
    "ActivityRuns_QueryByPipelineRun": "queryActivityRuns",
    "Pipelines_Get": "getPipeline",
    "Pipelines_ListByFactory": "listPipelines",
    "Factories_Get": "getFactory",
}
GROUPS = ("*", "read", "write")


def canonical_operation(name: str) -> str:
    """The emulator's name for an operation or group; ValueError for anything unknown."""
    if name in OPERATIONS or name in GROUPS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    known = ", ".join([*GROUPS, *OPERATIONS])
    raise ValueError(f"unknown operation {name!r} (one of {known}, or an SDK operation id)")


@dataclass
class Fault:
    kind: FaultKind
    operation: str = "*"
    count: int | None = 1  # None: every matching call from then on
    skip: int = 0
    when: FaultWhen = "before"
    status: int = 500
    code: str = ""
    message: str = ""
    retry_after: float = 1.0  # seconds, for throttle
    latency: float = 0.0  # real seconds (not scaled by the clock speed: it is about client timeouts)
    body: str = TRUNCATED  # for malformed
    effect_delay: float = 0.0  # real seconds, createRun with when = "after"
    status_text: str = "Waiting"  # for status
    of_status: str = ""  # for status: only runs in this status ("" for all)
    records: list[Any] = field(default_factory=list)  # for records
    seen: int = field(default=0, compare=False)
    hits: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(SCENARIO_KINDS)})")
        self.operation = canonical_operation(self.operation)
        if self.when not in ("before", "after"):
            raise ValueError(f"when must be 'before' or 'after', not {self.when!r}")
        if self.kind == "throttle" and self.when == "after":
            raise ValueError("a throttle fault always strikes before the operation (when = 'before')")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (omit it for every call)")
        if self.skip < 0 or self.latency < 0 or self.retry_after < 0:
            raise ValueError("skip, latency and retry_after must not be negative")
        if self.kind == "error" and not 400 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP error status")
        if self.kind == "latency" and self.latency <= 0:
            raise ValueError("a latency fault needs latency > 0 (seconds)")
        if self.kind == "malformed" and not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if self.kind == "hang" and not 0 < self.latency <= HANG_LIMIT:
            raise ValueError(f"a hang fault needs 0 < latency <= {HANG_LIMIT:g} (seconds)")
        if self.kind in REWRITES:
            self.when = "after"
        if self.effect_delay < 0:
            raise ValueError("effect_delay must not be negative")
        if self.effect_delay and (self.when != "after" or self.operation not in ("createRun", "write", "*")):
            raise ValueError("effect_delay applies to createRun faults with when = 'after'")

    @property
    def spent(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def matches(self, operation: str) -> bool:
        if self.operation in ("*", operation):
            return True
        return OPERATIONS.get(operation) == self.operation


class FaultSet:
    """The emulator's faults, thread-safe. Each request asks once which fault (if any) hits it."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults or [])

    def add(
        self,
        kind: FaultKind,
        operation: str = "*",
        *,
        count: int | None = 1,
        skip: int = 0,
        when: FaultWhen = "before",
        status: int = 500,
        code: str = "",
        message: str = "",
        retry_after: float = 1.0,
        latency: float = 0.0,
        **more: Any,
    ) -> Fault:
        """Add a fault at runtime; it applies to requests that arrive from now on. ``more``: the
        fields of the issue-7 kinds (body, effect_delay, status_text, of_status, records)."""
        fault = Fault(
            kind=kind,
            operation=operation,
            count=count,
            skip=skip,
            when=when,
            status=status,
            code=code,
            message=message,
            retry_after=retry_after,
            latency=latency,
            **more,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def pending(self) -> list[Fault]:
        """Faults that will still strike."""
        with self._lock:
            return [f for f in self._faults if not f.spent]

    def take(self, operation: str) -> Fault | None:
        """The fault that strikes this request, counting it; None when the request goes through."""
        with self._lock:
            chosen: Fault | None = None
            for fault in self._faults:
                if fault.spent or not fault.matches(operation):
                    continue
                fault.seen += 1
                if chosen is None and fault.seen > fault.skip:
                    fault.hits += 1
                    chosen = fault
            return chosen
