"""Rows emulated runs write to a real sink table, so sink checks have something true to count.

A run of window [start, end) that writes N rows in all puts row ``i`` at ``start + i*(end-start)/N``
(whole seconds). A partial write is the first rows of that series, so a later complete run of
the same window writes the same timestamps again, as a replayed load would (duplicates are the
point: that is what the checks guard against).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backfill.emulator.scenario import Sink
from backfill.secrets import expand
from backfill.timeutil import parse_utc

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Engine

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def text_timestamp(value: datetime) -> str:
    # SQLite has no timestamp type: ISO text with Z compares correctly against the same form,
    # which is what a plan's "{start}" renders to.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SinkWriter:
    """Writes a pipeline's rows to its sink table; creates the table when it is missing."""

    def __init__(self, sink: Sink, env: Mapping[str, str] | None = None) -> None:
        self.sink = sink
        self._url = expand(sink.url, env)
        self._engine: Engine | None = None
        self._table: Table | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Connect, create the table if missing, and empty it when the sink says ``reset``."""
        from sqlalchemy import (
            Column,
            DateTime,
            Float,
            Integer,
            MetaData,
            String,
            Table,
            create_engine,
            delete,
        )

        connect_args: dict[str, Any] = {}
        if self._url.startswith("sqlite"):
            # Checks read the same file while runs write: wait for the lock instead of failing.
            connect_args["timeout"] = 30
        engine = create_engine(self._url, connect_args=connect_args)
        self._engine = engine
        timestamp_type: Any = String(32) if engine.dialect.name == "sqlite" else DateTime(timezone=True)
        columns: list[Column[Any]] = [Column(self.sink.timestamp_column, timestamp_type, nullable=False)]
        for name, template in self.sink.columns.items():
            if isinstance(template, bool) or not isinstance(template, int | float):
                columns.append(Column(name, String(200)))
            else:
                columns.append(Column(name, Integer if isinstance(template, int) else Float))
        if self.sink.run_id_column:
            columns.append(Column(self.sink.run_id_column, String(64)))
        table = Table(self.sink.table, MetaData(), *columns)
        table.create(engine, checkfirst=True)
        self._table = table
        if self.sink.reset:
            with engine.begin() as conn:
                conn.execute(delete(table))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def rows_for(
        self, run_id: str, parameters: Mapping[str, str], first: int, count: int, total: int
    ) -> list[dict[str, Any]]:
        """Rows ``first`` .. ``first+count-1`` of a run that writes ``total`` rows over its window."""
        try:
            start = parse_utc(parameters[self.sink.window_start], self.sink.window_start)
            end = parse_utc(parameters[self.sink.window_end], self.sink.window_end)
        except KeyError as exc:
            raise ValueError(f"run {run_id}: parameter {exc.args[0]} is missing; no rows written") from None
        except ValueError as exc:
            raise ValueError(f"run {run_id}: {exc}; no rows written") from None
        if end <= start:
            raise ValueError(f"run {run_id}: window end is not after its start; no rows written")
        extra: dict[str, Any] = {}
        for name, template in self.sink.columns.items():
            extra[name] = self._render(template, parameters, run_id) if isinstance(template, str) else template
        if self.sink.run_id_column:
            extra[self.sink.run_id_column] = run_id
        step = (end - start) / total
        rows = []
        for index in range(first, min(first + count, total)):
            moment = (start + step * index).replace(microsecond=0)
            rows.append({self.sink.timestamp_column: self._stamp(moment), **extra})
        return rows

    def write(self, run_id: str, parameters: Mapping[str, str], first: int, count: int, total: int) -> int:
        """Insert the rows; returns how many. Raises ValueError or a database error."""
        if self._engine is None or self._table is None or count <= 0 or total <= 0:
            return 0
        rows = self.rows_for(run_id, parameters, first, count, total)
        table = self._table
        with self._lock, self._engine.begin() as conn:
            if first == 0 and self.sink.write == "replace":
                conn.execute(self._window_delete(table, parameters, rows[0] if rows else {}))
            if rows:
                conn.execute(table.insert(), rows)
        return len(rows)

    def _window_delete(self, table: Table, parameters: Mapping[str, str], sample: Mapping[str, Any]) -> Any:
        from sqlalchemy import delete

        start = parse_utc(parameters[self.sink.window_start])
        end = parse_utc(parameters[self.sink.window_end])
        column = table.c[self.sink.timestamp_column]
        statement = delete(table).where(column >= self._stamp(start), column < self._stamp(end))
        for name in self.sink.columns:
            if name in sample:
                statement = statement.where(table.c[name] == sample[name])
        return statement

    def _stamp(self, moment: datetime) -> Any:
        dialect = self._engine.dialect.name if self._engine is not None else "sqlite"
        if dialect == "sqlite":
            return text_timestamp(moment)
        return moment.replace(tzinfo=None) if dialect in ("mysql", "mariadb") else moment

    @staticmethod
    def _render(template: str, parameters: Mapping[str, str], run_id: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in parameters:
                raise ValueError(f"run {run_id}: sink column template needs parameter {name}, which it lacks")
            return parameters[name]

        return _FIELD.sub(value, template)
