"""The small protocol the rest of backfill uses to talk to a factory.

``FactoryClient`` (the real SDK, client.py) implements it; tests point the runner at the emulator
through the same client, or at a deliberately broken factory, without mocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from backfill.factory.run import ActivityRun, PipelineInfo, Run


@dataclass(frozen=True)
class FactoryRef:
    subscription_id: str
    resource_group: str
    factory: str

    @property
    def key(self) -> str:
        """Identifies the factory in the history cache and the ledger."""
        return f"{self.subscription_id}/{self.resource_group}/{self.factory}".lower()


class Factory(Protocol):
    ref: FactoryRef

    @property
    def api_calls(self) -> int:
        """How many HTTP requests this client sent (reads, writes), for benchmarks and tests."""
        ...

    def query_runs(
        self,
        *,
        updated_after: datetime,
        updated_before: datetime,
        pipeline: str | None = None,
        statuses: Sequence[str] | None = None,
        run_group_id: str | None = None,
        latest_only: bool = False,
        newest_first: bool = False,
    ) -> Iterator[Run]:
        """Every run last updated in [after, before], following every continuationToken page."""
        ...

    def get_run(self, run_id: str) -> Run: ...

    def query_activity_runs(
        self, run_id: str, *, updated_after: datetime | None = None, updated_before: datetime | None = None
    ) -> list[ActivityRun]: ...

    def get_pipeline(self, pipeline: str) -> PipelineInfo: ...

    def create_run(
        self,
        pipeline: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        reference_run_id: str | None = None,
        is_recovery: bool | None = None,
        start_from_failure: bool | None = None,
        start_activity_name: str | None = None,
    ) -> str:
        """Create a run and return its run ID. Sent once, never retried: on any doubt it raises
        FactoryError with ``effect_unknown=True`` and the caller reconciles against history."""
        ...

    def cancel_run(self, run_id: str, *, recursive: bool = False) -> None: ...
