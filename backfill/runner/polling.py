"""When to ask ADF about a run in flight: adaptive polling from the pipeline's usual duration.

Pure code, no clock and no I/O: the runner asks ``next_poll(policy, elapsed)`` for the offset
(since the run started) of its next status call, so the schedule is tested without sleeping.

With history, the schedule is: one early look at a tenth of the usual duration (runs that fail at
once, on bad parameters or a missing linked service, are most failures), then one at the usual
duration, then gaps of a tenth of the time elapsed. A 60-minute run thus costs a handful of status
calls and its end is seen within a tenth of its duration. Without history the runner starts small
and grows faster (a quarter of the elapsed time). ``poll = "30s"`` fixes the interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from backfill.factory.run import Run, RunStatus

# The usual duration is the median of this many of the newest succeeded runs: recent enough to
# follow a pipeline that got slower, enough to ignore one odd run.
RECENT_RUNS = 20
_TINY = timedelta(milliseconds=10)


@dataclass(frozen=True)
class PollPolicy:
    """How to poll one run. ``usual`` is the pipeline's median succeeded duration (or None)."""

    usual: timedelta | None = None
    fixed: timedelta | None = None
    fraction: float = 0.1
    cold_fraction: float = 0.25
    floor: timedelta = timedelta(seconds=1)
    ceiling: timedelta = timedelta(minutes=10)

    @property
    def effective_floor(self) -> timedelta:
        # The emulator compresses durations to fractions of a second; a fixed one-second floor
        # would then dominate. The floor never exceeds a tenth of the usual duration.
        if self.usual is None:
            return self.floor
        return max(_TINY, min(self.floor, self.usual * self.fraction))


def usual_duration(runs: Iterable[Run], *, recent: int = RECENT_RUNS) -> timedelta | None:
    """The median duration of the newest ``recent`` succeeded runs that have one, or None."""
    done = [
        (r.start, r.duration)
        for r in runs
        if r.status is RunStatus.SUCCEEDED and r.duration is not None and r.start is not None
    ]
    if not done:
        return None
    done.sort(reverse=True)
    return median([duration for _, duration in done[:recent]])


def median(durations: Sequence[timedelta]) -> timedelta:
    """The median of some durations (the mean of the middle two for an even count)."""
    ordered = sorted(durations)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def policy_for(poll: str | timedelta | None, usual: timedelta | None) -> PollPolicy:
    """The policy for a plan's ``execution.poll`` ("auto" or a fixed interval)."""
    if isinstance(poll, timedelta):
        return PollPolicy(usual=usual, fixed=poll)
    return PollPolicy(usual=usual)


def next_poll(policy: PollPolicy, elapsed: timedelta) -> timedelta:
    """The offset since the run started at which to ask for its status next (> ``elapsed``).

    Depends on ``elapsed`` alone, so a runner resuming a run started long ago (after a crash)
    falls into the same schedule as the one that created it.
    """
    elapsed = max(elapsed, timedelta(0))
    if policy.fixed is not None:
        return elapsed + max(policy.fixed, _TINY)
    floor = policy.effective_floor
    usual = policy.usual
    if usual is None:
        gap = max(floor, min(policy.ceiling, elapsed * policy.cold_fraction))
        return elapsed + gap
    early = max(usual * policy.fraction, floor)
    if elapsed < early:
        return early
    if elapsed < usual:
        return usual
    return elapsed + max(floor, min(policy.ceiling, elapsed * policy.fraction))


def schedule(policy: PollPolicy, duration: timedelta, *, limit: int = 10_000) -> list[timedelta]:
    """Every poll offset for a run that ends after ``duration``, up to the one that sees its end."""
    offsets: list[timedelta] = []
    elapsed = timedelta(0)
    while len(offsets) < limit:
        elapsed = next_poll(policy, elapsed)
        offsets.append(elapsed)
        if elapsed >= duration:
            break
    return offsets
