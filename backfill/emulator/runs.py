"""One emulated pipeline run: its script (what it will do) and its current, mutable state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backfill.emulator.scenario import Pipeline

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime) -> int:
    """Microseconds since the epoch: the index key (exact, unlike float timestamps)."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def new_run_id() -> str:
    """A random version-4 UUID string, about twice as fast as str(uuid.uuid4()) (seeding
    200,000 runs); the variant digit is fixed, 120 random bits remain."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


@dataclass(frozen=True)
class Script:
    """What a run will do: succeed, fail or hang in activity ``stop``, be cancelled, stay queued."""

    result: str
    stop: int  # index of the last activity that runs (the failing or hanging one)
    error_code: str = ""
    message: str = ""
    failure_type: str = ""
    rows: int = 0
    rows_before_failure: int = 0


class EmulatedRun:
    __slots__ = (
        "begin", "cancel_at", "end", "first", "group", "invoked_by", "invoked_by_type",
        "is_latest", "last_updated", "lu_key", "message", "parameters", "pipeline", "rows_written",
        "run_id", "script", "span_end", "start", "status",
    )  # fmt: skip

    def __init__(
        self,
        run_id: str,
        pipeline: Pipeline,
        parameters: dict[str, str],
        start: datetime,
        duration: timedelta,
        queue: timedelta,
        script: Script,
        first: int = 0,
    ) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.parameters = parameters
        self.group = run_id
        self.is_latest = True
        self.start = start
        self.begin = start + min(queue, duration / 4)
        # When the run would complete if nothing stopped it; activities share [begin, span_end).
        self.span_end = start + duration
        self.script = script
        self.first = first
        self.status = "Queued"
        self.end: datetime | None = None
        self.cancel_at: datetime | None = None
        self.last_updated = start
        self.lu_key = micros(start)
        self.message = ""
        self.invoked_by = "Manual"
        self.invoked_by_type = "Manual"
        self.rows_written = 0

    @property
    def invoker_id(self) -> str:
        # A stable ID for the manual invocation; the service shows a random 32-hex one.
        return self.run_id.replace("-", "")[::-1]

    @property
    def finish(self) -> datetime | None:
        """When the script's final event happens; None for a run that hangs or stays queued."""
        if self.script.result in ("hang", "queued"):
            return None
        if self.script.result == "cancel":
            return self.start + (self.span_end - self.start) / 2
        return self.span_end
