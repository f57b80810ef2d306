"""``runs export``: every run of a range, streamed as JSONL or CSV (SPEC §12).

ADF holds runs whose last update is within its retention (45 days); older ones come from the
history cache, which outlives it. The range is split there: runs ADF no longer holds (last
updated before ``now - 45 days``) are read from the cache, oldest first, then ADF's, every page.
Rows are written as they arrive, so memory does not grow with the range; only the usual
durations of the last 30 days are held, a few bytes per run.

The output file is written beside its final name and renamed when complete: an export that
fails midway leaves no half file. The ledger records who exported which range, never the data.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from backfill import events as ev
from backfill.errors import BackfillError, UsageError
from backfill.factory.run import Run
from backfill.history import RETENTION
from backfill.runs_query import Mask, RunQuery, UsualDurations, activity_json, factory_runs, open_cache, run_row
from backfill.timeutil import format_utc

if TYPE_CHECKING:
    from backfill.factory.protocol import Factory
    from backfill.identity import Actor
    from backfill.store.database import Database

FORMATS = ("jsonl", "csv")
PROGRESS_EVERY = 10_000
FIELDS = (
    "run_id",
    "pipeline",
    "status",
    "parameters",
    "run_group_id",
    "is_latest",
    "start",
    "end",
    "last_updated",
    "duration_ms",
    "message",
    "invoked_by",
    "invoked_by_type",
    "usual_ms",
    "outlier",
)


@dataclass
class ExportResult:
    runs: int = 0
    from_adf: int = 0
    from_cache: int = 0
    output: str = "stdout"
    notes: list[str] = field(default_factory=list)

    @property
    def sources(self) -> str:
        return f"{self.from_cache:,} from the history cache, {self.from_adf:,} from ADF"


class _Writer:
    """One row at a time, as JSONL or CSV (parameters and activities as JSON columns)."""

    def __init__(self, out: TextIO, fmt: str, activities: bool) -> None:
        self.out, self.fmt, self.activities = out, fmt, activities
        self._csv: Any = None
        if fmt == "csv":
            columns = [*FIELDS, "activities"] if activities else list(FIELDS)
            self._csv = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
            self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is None:
            self.out.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str) + "\n")
            return
        flat = {
            name: json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            if isinstance(value, dict | list)
            else ("" if value is None else value)
            for name, value in row.items()
        }
        self._csv.writerow(flat)


@contextmanager
def _destination(output: str | None) -> Iterator[TextIO]:
    """stdout, or a file written beside ``output`` and renamed into place when complete."""
    if output is None or output == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(output)
    if target.is_dir():
        raise BackfillError(f"cannot write {output}: it is a folder")
    try:
        descriptor, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent or ".")
    except OSError as exc:
        raise BackfillError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            yield handle
        Path(temp).replace(target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def export_runs(
    factory: Factory,
    query: RunQuery,
    now: datetime,
    mask: Mask,
    *,
    fmt: str = "jsonl",
    activities: bool = False,
    output: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
    actor: Actor | None = None,
) -> ExportResult:
    """Write every run of ``query`` (the cache's part first, then ADF's), each judged like in
    ``runs list``; say on ``progress`` which part came from where; then, with ``actor``, record
    the export in the ledger (``runs.exported``)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    if query.span.since is None:
        raise UsageError("runs export needs --since")
    boundary = now - RETENTION
    result = ExportResult(output=output or "stdout")
    with open_cache() as db, _destination(output) as out:
        writer = _Writer(out, fmt, activities)
        usual = UsualDurations(factory, db, now)

        def emit(run: Run, source: str) -> None:
            row = run_row(mask(run), usual.judge(run))
            if activities:
                row["activities"] = (
                    [activity_json(a) for a in factory.query_activity_runs(run.run_id)] if source == "adf" else None
                )
            writer.write(row)
            result.runs += 1
            if source == "adf":
                result.from_adf += 1
            else:
                result.from_cache += 1
            if result.runs % PROGRESS_EVERY == 0:
                progress(f"exported {result.runs:,} runs so far ({result.sources})")

        if query.span.since < boundary:
            for run in _cached(factory, db, query, boundary, result):
                emit(run, "cache")
        adf_from = max(query.span.since, boundary)
        if query.span.until is None or query.span.until > boundary:
            progress(f"runs last updated since {format_utc(adf_from)}: from ADF")
            for run in factory_runs(factory, query, now, updated_after=adf_from):
                emit(run, "adf")
    if activities and result.from_cache:
        result.notes.append("activity runs of runs from the history cache are not kept: their activities are null")
    if actor is not None:
        from backfill.store.database import Database

        ledger_db = Database()
        try:
            _record(ledger_db, result, query, factory.ref.key, fmt, activities, actor)
        finally:
            ledger_db.dispose()
    return result


def _cached(
    factory: Factory,
    db: Database | None,
    query: RunQuery,
    boundary: datetime,
    result: ExportResult,
) -> Iterator[Run]:
    """The runs of the range ADF no longer holds, from the history cache; a note on what is missing."""
    from backfill.store import history_ranges

    since = query.span.since
    assert since is not None
    until = min(query.span.until, boundary) if query.span.until is not None else boundary
    gone = f"runs last updated before {format_utc(boundary)} (ADF keeps 45 days)"
    if db is None:
        result.notes.append(f"{gone}: no ledger database here, so no history cache; they are not exported")
        return
    key = factory.ref.key
    with db.reading() as conn:
        synced = history_ranges.synced_pipelines(conn, key)
    pipelines = [p for p in ([query.pipeline] if query.pipeline else synced) if p in synced]
    if not pipelines:
        what = query.pipeline or "any pipeline of this factory"
        result.notes.append(f"{gone}: the history cache holds none of {what}; they are not exported")
        return
    result.notes.append(f"{gone}: from the history cache ({', '.join(pipelines)})")
    statuses = list(query.statuses) or None
    after: tuple[int, str] | None = None
    while True:
        with db.reading() as conn:
            page = history_ranges.runs_between(
                conn, key, pipelines, since, until, statuses, updated_before=boundary, after=after
            )
        for _, run in page:
            if query.holds(run):
                yield run
        if len(page) < history_ranges.CHUNK:
            return
        after = page[-1][0]


def _record(
    db: Database, result: ExportResult, query: RunQuery, factory_key: str, fmt: str, activities: bool, actor: Actor
) -> None:
    """``runs.exported``: who exported which range, how many runs from where; never the data."""
    from backfill.store.ledger import Ledger

    payload = {
        "factory": factory_key,
        **query.to_json(),
        "format": fmt,
        "activities": activities,
        "output": result.output,
        "runs": result.runs,
        "from_adf": result.from_adf,
        "from_cache": result.from_cache,
    }
    Ledger(db).append(ev.RUNS_EXPORTED, payload, actor=actor)
