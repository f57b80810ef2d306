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
_MS = timedelta(milliseconds=1)
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
        return run.duration // _MS
    if run.start is None:
        return None
    if run.end is not None:
        return (run.end - run.start) // _MS
    status = getattr(run, "status", None)
    last = getattr(run, "last_updated", None)
    if status is not None and getattr(status, "is_final", False) and isinstance(last, datetime):
        # ADF gives a cancelled run no end: it stopped at its last transition, not now.
        return max(0, (last - run.start) // _MS)
    return max(0, (now - run.start) // _MS)


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
    """The usual durations sharing one scope, sorted once they are all in."""

    __slots__ = ("ordered", "scope", "sorted", "usual_cache")

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self.ordered: list[int] = []
        self.scope = scope
        self.sorted = False
        self.usual_cache: Usual | None = None

    def ready(self) -> _Group:
        if not self.sorted:
            self.ordered.sort()
            self.sorted = True
            self.usual_cache = _usual_sorted(self.ordered, self.scope)
        return self

    def holds(self, duration: int) -> bool:
        index = bisect.bisect_left(self.ordered, duration)
        return index < len(self.ordered) and self.ordered[index] == duration

    def without(self, duration: int) -> Usual | None:
        """The usual duration with one run of ``duration`` left out (a run is never its own usual).

        When another run is at least as long, leaving it out moves the median a little and the
        longest not at all, so the verdict cannot change: the median is read off the list without
        it and the MAD kept. The one longest run is left out exactly."""
        ordered, usual = self.ordered, self.usual_cache
        if usual is not None and len(ordered) > MIN_USUAL and ordered[-2] >= duration:
            index = bisect.bisect_left(ordered, duration)
            rest = len(ordered) - 1
            middle = rest // 2

            def at(i: int) -> int:
                return ordered[i if i < index else i + 1]

            median = at(middle) if rest % 2 else (at(middle - 1) + at(middle)) / 2
            return Usual(float(median), usual.mad_ms, usual.longest_ms, rest, usual.scope)
        rest_list = list(ordered)
        del rest_list[bisect.bisect_left(rest_list, duration)]
        return _usual_sorted(rest_list, self.scope)


class UsualIndex:
    """The usual runs of one pipeline, grouped by the scope each asks for.

    ``candidates`` are the pipeline's succeeded runs; those that started within ``LOOKBACK`` of
    ``now`` and have a duration are kept, as a duration per scope: 200,000 runs are a few
    megabytes. Only runs with the same parameter names share a scope, which is how one
    pipeline's runs are."""

    def __init__(self, candidates: Iterable[Timed], now: datetime, *, match_on: Sequence[str] | None = None) -> None:
        self.now = now
        self.match_on = tuple(match_on) if match_on else None
        self._oldest = now - LOOKBACK
        self._all = _Group({})
        self._groups: dict[tuple[tuple[str, ...], tuple[Hashable, ...]], _Group] = {}
        self._fields: dict[tuple[str, ...], tuple[str, ...]] = {}
        for run in candidates:
            if not self._usual_run(run):
                continue
            assert run.duration is not None
            duration = run.duration // _MS
            self._all.ordered.append(duration)
            key = self._key(run.parameters)
            if key is not None:
                group = self._groups.get(key)
                if group is None:
                    group = self._groups[key] = _Group({f: run.parameters[f] for f in key[0]})
                group.ordered.append(duration)
        self._all.ready()

    def __len__(self) -> int:
        return len(self._all.ordered)

    def _usual_run(self, run: Timed) -> bool:
        return run.start is not None and self._oldest <= run.start <= self.now and run.duration is not None

    def _key(self, parameters: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[Hashable, ...]] | None:
        # One pipeline's runs carry the same parameters, and a window bound in one run is one in
        # all: the scope is worked out once per set of names, not for each of 200,000 runs.
        names = tuple(parameters)
        fields = self._fields.get(names)
        if fields is None:
            fields = self._fields[names] = scope_fields(parameters, self.match_on)
        if not fields:
            return None
        return fields, tuple(normalise(parameters[f]) for f in fields)

    def usual_for(self, run: Timed) -> Usual | None:
        """The usual duration of ``run``: of its scope when that holds enough runs, else of the
        pipeline; the run itself never counts."""
        own = self._own(run)
        key = self._key(run.parameters)
        group = self._groups.get(key) if key is not None else None
        if group is not None:
            group.ready()
            member = own is not None and group.holds(own)
            if len(group.ordered) - member >= MIN_SCOPED:
                return group.without(own) if member and own is not None else group.usual_cache
        whole = self._all
        if own is not None and whole.holds(own):
            return whole.without(own)
        return whole.usual_cache

    def _own(self, run: Timed) -> int | None:
        """The judged run's duration when it is one of the usual runs itself."""
        status = getattr(run, "status", None)
        succeeded = status is None or str(getattr(status, "value", status)) == "Succeeded"
        if not succeeded or not self._usual_run(run):
            return None
        assert run.duration is not None
        return run.duration // _MS

    def judge(self, run: Timed) -> Verdict:
        usual = self.usual_for(run)
        took = elapsed_ms(run, self.now)
        return Verdict(took, usual, is_outlier(took, usual))
