"""How long a pipeline's runs usually take, and which run is far outside it (SPEC §12).

The usual runs of a run are the succeeded runs of its pipeline that started in the last 30 days,
the run itself left out; restricted to those with the same values of the matched parameters
minus the window bounds when that leaves at least ``MIN_SCOPED`` runs. A run is an **outlier**
when its duration (while it runs: the time since it started) is longer than
``median + 5 × MAD`` (MAD floored at 10 % of the median) *and* longer than the longest usual run.
Fewer than ``MIN_USUAL`` usual runs: no usual duration, never an outlier.

``runs list``, ``runs show``, ``runs cancel`` and ``incident`` all judge through ``UsualIndex``;
``usual_of`` and ``is_outlier`` are the rule itself, on plain durations.
"""

from __future__ import annotations

import bisect
import re
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from backfill.matching import normalise

LOOKBACK = timedelta(days=30)
MIN_USUAL = 5
MIN_SCOPED = 10
MAD_FACTOR = 5
MAD_FLOOR = 0.10
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Timed(Protocol):
    """What judging reads from a run: our ``Run`` and the history cache's documents alike."""

    @property
    def run_id(self) -> str: ...

    @property
    def parameters(self) -> Mapping[str, Any]: ...

    @property
    def start(self) -> datetime | None: ...

    @property
    def end(self) -> datetime | None: ...

    @property
    def duration(self) -> timedelta | None: ...


@dataclass(frozen=True)
class Usual:
    """The usual duration of some runs: median, MAD (floored), longest, and how many."""

    median_ms: float  # exact: the limit is computed from these, the JSON shows them rounded
    mad_ms: float
    longest_ms: int
    runs: int
    # The parameters the usual runs share with the judged run; empty: the whole pipeline.
    scope: Mapping[str, Any]

    @property
    def limit_ms(self) -> float:
        """``median + 5 × MAD``: an outlier is longer than this and than the longest usual run."""
        return self.median_ms + MAD_FACTOR * self.mad_ms

    def is_outlier(self, elapsed_ms: int | None) -> bool:
        return elapsed_ms is not None and elapsed_ms > self.limit_ms and elapsed_ms > self.longest_ms

    def describe(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.scope.items())
        of = f"runs with {where}" if where else "runs of the pipeline"
        return f"median {_ms(round(self.median_ms))}, longest {_ms(self.longest_ms)} over {self.runs} succeeded {of}"


def _ms(value: int) -> str:
    from backfill.timeutil import format_duration

    return format_duration(timedelta(milliseconds=value))


def usual_of(durations_ms: Iterable[int], scope: Mapping[str, Any] | None = None) -> Usual | None:
    """The usual duration of these durations; None for fewer than ``MIN_USUAL``."""
    ordered = sorted(durations_ms)
    return _usual_sorted(ordered, dict(scope or {}))


def _usual_sorted(ordered: Sequence[int], scope: Mapping[str, Any]) -> Usual | None:
    if len(ordered) < MIN_USUAL:
        return None
    median = statistics.median(ordered)
    mad = statistics.median(sorted(abs(d - median) for d in ordered))
    floored = max(mad, MAD_FLOOR * median)
    return Usual(float(median), float(floored), ordered[-1], len(ordered), scope)


def is_outlier(elapsed_ms: int | None, usual: Usual | None) -> bool:
    """The outlier rule; never an outlier without a usual duration."""
    return usual is not None and usual.is_outlier(elapsed_ms)


def elapsed_ms(run: Timed, now: datetime) -> int | None:
    """A run's duration, or while it runs the time since it started; None when neither is known."""
    if run.duration is not None:
        return int(run.duration.total_seconds() * 1000)
    if run.start is None:
        return None
    if run.end is not None:
        return int((run.end - run.start).total_seconds() * 1000)
    status = getattr(run, "status", None)
    last = getattr(run, "last_updated", None)
    if status is not None and getattr(status, "is_final", False) and isinstance(last, datetime):
        # ADF gives a cancelled run no end: it stopped at its last transition, not now.
        return max(0, int((last - run.start).total_seconds() * 1000))
    return max(0, int((now - run.start).total_seconds() * 1000))


def is_window_bound(value: Any) -> bool:
    """A parameter that moves with the window (a timestamp or a date): never a scope field."""
    if isinstance(value, str):
        if _DATE.match(value.strip()):
            return True
        normal = normalise(value)
        return isinstance(normal, tuple) and normal[:1] == ("t",)
    return isinstance(value, datetime)


def scope_fields(parameters: Mapping[str, Any], match_on: Sequence[str] | None) -> tuple[str, ...]:
    """The parameters the usual runs must share with a run: the plan's ``[match] on`` (all the
    run's parameters when no plan says) minus the window bounds."""
    names = list(match_on) if match_on else sorted(parameters)
    return tuple(n for n in names if n in parameters and not is_window_bound(parameters[n]))


@dataclass(frozen=True)
class Verdict:
    """A run judged: its elapsed time, its usual duration (None: none), whether it is an outlier."""

    elapsed_ms: int | None
    usual: Usual | None
    outlier: bool

    @property
    def usual_ms(self) -> int | None:
        return round(self.usual.median_ms) if self.usual is not None else None


class _Group:
    """The usual runs sharing one scope: sorted durations and who they are."""

    __slots__ = ("ids", "ordered", "scope", "usual")

    def __init__(self, members: list[tuple[int, str]], scope: Mapping[str, Any]) -> None:
        members.sort()
        self.ordered = [d for d, _ in members]
        self.ids = {run_id: d for d, run_id in members}
        self.scope = scope
        self.usual = _usual_sorted(self.ordered, scope)

    def without(self, run_id: str) -> Usual | None:
        """The usual duration with ``run_id`` left out (a run is never its own usual)."""
        duration = self.ids.get(run_id)
        if duration is None:
            return self.usual
        ordered = list(self.ordered)
        del ordered[bisect.bisect_left(ordered, duration)]
        return _usual_sorted(ordered, self.scope)


class UsualIndex:
    """The usual runs of one pipeline, grouped on demand by the scope each judged run asks for.

    ``candidates`` are the pipeline's succeeded runs; those that started within ``LOOKBACK`` of
    ``now`` and have a duration are kept (with their parameters)."""

    def __init__(
        self,
        candidates: Iterable[Timed],
        now: datetime,
        *,
        match_on: Sequence[str] | None = None,
    ) -> None:
        self.now = now
        self.match_on = tuple(match_on) if match_on else None
        oldest = now - LOOKBACK
        self._runs: list[tuple[int, str, Mapping[str, Any]]] = []
        for run in candidates:
            if run.start is None or run.start < oldest or run.start > now or run.duration is None:
                continue
            self._runs.append((int(run.duration.total_seconds() * 1000), run.run_id, run.parameters))
        self._all = _Group([(d, r) for d, r, _ in self._runs], {})
        self._groups: dict[tuple[tuple[str, ...], tuple[Hashable, ...]], _Group] = {}
        self._by_fields: dict[tuple[str, ...], dict[tuple[Hashable, ...], list[tuple[int, str]]]] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def _group(self, fields: tuple[str, ...], parameters: Mapping[str, Any]) -> _Group | None:
        try:
            key = tuple(normalise(parameters[f]) for f in fields)
        except KeyError:
            return None
        found = self._groups.get((fields, key))
        if found is None:
            buckets = self._by_fields.get(fields)
            if buckets is None:
                buckets = self._by_fields[fields] = {}
                for duration, run_id, params in self._runs:
                    try:
                        member = tuple(normalise(params[f]) for f in fields)
                    except KeyError:
                        continue
                    buckets.setdefault(member, []).append((duration, run_id))
            scope = {f: parameters[f] for f in fields}
            found = self._groups[(fields, key)] = _Group(list(buckets.get(key, [])), scope)
        return found

    def usual_for(self, run: Timed) -> Usual | None:
        """The usual duration of ``run``: of its scope when that holds enough runs, else of the
        pipeline; the run itself never counts."""
        fields = scope_fields(run.parameters, self.match_on)
        group = self._group(fields, run.parameters) if fields else None
        if group is not None:
            scoped = len(group.ordered) - (1 if run.run_id in group.ids else 0)
            if scoped >= MIN_SCOPED:
                return self._usual(group, run)
        return self._usual(self._all, run)

    def _usual(self, group: _Group, run: Timed) -> Usual | None:
        own = group.ids.get(run.run_id)
        if own is None:
            return group.usual
        usual = group.usual
        if usual is not None and own < usual.longest_ms and len(group.ordered) > MIN_USUAL:
            # Not the longest: leaving it out moves the median a little and the longest not at
            # all, so the verdict cannot change; the median is read off the list without it.
            ordered = group.ordered
            index = bisect.bisect_left(ordered, own)
            rest = len(ordered) - 1
            middle = rest // 2

            def at(i: int) -> int:
                return ordered[i if i < index else i + 1]

            median = at(middle) if rest % 2 else (at(middle - 1) + at(middle)) / 2
            return Usual(float(median), usual.mad_ms, usual.longest_ms, rest, usual.scope)
        return group.without(run.run_id)

    def judge(self, run: Timed) -> Verdict:
        usual = self.usual_for(run)
        took = elapsed_ms(run, self.now)
        return Verdict(took, usual, is_outlier(took, usual))
