"""History read in concurrent last-updated slices, at the pace ARM allows (issue 14).

ARM meters reads per subscription (a bucket refilled at ~25 a second), and one query's pages are
sequential (each needs the previous page's continuationToken), so at 200 ms a request one query
reads 5 pages a second however fast the client is. Splitting ``[after, before]`` into slices by
last-updated time gives independent queries that page side by side.

Edges: the service's bounds are both inclusive, so adjacent slices share their edge; a run updated
exactly on it comes in both and the caller keeps one (the cache is keyed by run ID, newest wins).
Runs updated while we page: one query keeps a run it has not reached yet (pages are ordered by
run start, which does not change), but a run can leave a slice not yet read for one already
read. So the *tail*, ``[started - TAIL_MARGIN, before]``, is read only after every other slice is
done: whatever changed during the fetch is there (the margin covers the skew between our clock
and the service's). A run may therefore come twice, in its old and its new state, never not at all.

Pace: at most ``limit`` requests in flight, a limit that grows by one every ``limit`` answers and
halves on a 429; every worker waits out ``Retry-After`` before its next request (the bucket fills
meanwhile, so the wait loses nothing). Retries are ours (the SDK's retry policy is off for these
reads) so that a 429 reaches this pacing instead of sleeping inside one thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backfill.errors import FactoryError
from backfill.timeutil import format_utc

# Fetches one page for a request body (the SDK call); raises FactoryError.
PageFetch = Callable[[Mapping[str, Any]], Mapping[str, Any]]
SLICES = 32
TAIL_MARGIN = timedelta(minutes=5)
START_LIMIT = 4
MOST_IN_FLIGHT = 16
# A history this many pages long or less is paged in one query (one call a page).
PAGES_PER_SLICE = 8
# Reads of the tail at most (see _sliced).
TAIL_PASSES = 4
# Transient failures (5xx, no answer) retried per request, with a growing pause.
RETRIES = 4
_DONE = object()
# Pages one history query may follow: 45 days of a busy factory is far fewer (100 runs a page).
MAX_PAGES = 100_000


def slice_bounds(after: datetime, before: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """``count`` equal slices of ``[after, before]``, each sharing its end with the next's start
    (to the microsecond: the service reads our times to the microsecond)."""
    if before <= after or count <= 1:
        return [(after, before)]
    step = (before - after) / count
    edges = [after + step * i for i in range(count)] + [before]
    return [(edges[i], edges[i + 1]) for i in range(count) if edges[i] < edges[i + 1]]


@dataclass
class FetchStats:
    requests: int = 0
    throttled: int = 0
    retried: int = 0
    slices: int = 0
    most_in_flight: int = 0
    waited_seconds: float = 0.0
    tail_passes: int = 0


@dataclass
class _Pace:
    """The adaptive limit on requests in flight, and the pause a 429 asks for."""

    limit: float = START_LIMIT
    most: int = MOST_IN_FLIGHT
    stats: FetchStats = field(default_factory=FetchStats)
    _in_flight: int = 0
    _resume_at: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def acquire(self, stop: threading.Event) -> None:
        with self._cond:
            while not stop.is_set():
                wait = self._resume_at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                elif self._in_flight < int(self.limit):
                    self._in_flight += 1
                    self.stats.requests += 1
                    self.stats.most_in_flight = max(self.stats.most_in_flight, self._in_flight)
                    return
                else:
                    self._cond.wait(0.5)
            raise _Stopped

    def release(self, *, retry_after: float | None = None, throttled: bool = False) -> None:
        with self._cond:
            self._in_flight -= 1
            now = time.monotonic()
            if throttled:
                self.stats.throttled += 1
                if now >= self._resume_at:  # once per pause, not once per request caught in it
                    self.limit = max(1.0, self.limit / 2)
            elif retry_after is None:
                self.limit = min(float(self.most), self.limit + 1 / self.limit)
            if retry_after is not None and now + retry_after > self._resume_at:
                self.stats.waited_seconds += now + retry_after - max(now, self._resume_at)
                self._resume_at = now + retry_after
            self._cond.notify_all()


class _Stopped(Exception):
    pass


def fetch_slices(
    fetch: PageFetch,
    body: Mapping[str, Any],
    *,
    after: datetime,
    before: datetime,
    started: datetime,
    slices: int = SLICES,
    most_in_flight: int = MOST_IN_FLIGHT,
    stats: FetchStats | None = None,
    max_pages: int = 100_000,
    probe: bool = True,
) -> Iterator[list[Any]]:
    """Every page of records of ``body``'s query over ``[after, before]``; pages come in no
    particular order. ``started``: when the fetch began (the tail starts before it).

    With ``probe`` the first page of the whole range is read first: a history of a few pages is
    then simply paged on (as many calls as pages, as before slicing); a longer one is sliced, as
    many slices as its size calls for (estimated from how much of the range the first page's
    runs span: pages are in run-start order), at most ``slices``."""
    stats = stats if stats is not None else FetchStats()
    pace = _Pace(limit=min(START_LIMIT, most_in_flight), most=most_in_flight, stats=stats)
    if probe:
        request: dict[str, Any] = {
            **body,
            "lastUpdatedAfter": format_utc(after, precise=True),
            "lastUpdatedBefore": format_utc(before, precise=True),
        }
        never = threading.Event()
        first = _page(fetch, request, pace, never)
        records = first.get("value") or []
        yield records
        token = first.get("continuationToken")
        if not token:
            stats.slices = 1
            return
        wanted = _slices_for(records, after, started, slices)
        if wanted <= 1:
            stats.slices = 1
            seen: set[str] = set()
            counter = _Counter(max_pages)
            while token:
                counter.next_page(seen, token)
                request = {**request, "continuationToken": token}
                page = _page(fetch, request, pace, never)
                yield page.get("value") or []
                token = page.get("continuationToken")
            return
        slices = wanted
    yield from _sliced(
        fetch, body, pace, after=after, before=before, started=started, slices=slices, max_pages=max_pages
    )


def _slices_for(records: list[Any], after: datetime, started: datetime, most: int) -> int:
    """How many slices a history calls for: about PAGES_PER_SLICE pages each, from the share of
    the range the first page covers (its runs are the earliest started, so the span of their
    lastUpdated times is how long one page of history lasts)."""
    moments: list[datetime] = []
    for raw in records:
        text = raw.get("lastUpdated") if isinstance(raw, Mapping) else None
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                moment = datetime.fromisoformat(text)
                if moment.tzinfo is not None:
                    moments.append(moment)
    if len(moments) < 2:
        return most
    oldest, newest = max(after, min(moments)), max(moments)
    if newest <= oldest:
        return most
    pages = (started - oldest) / (newest - oldest)
    return max(1, min(most, math.ceil(pages / PAGES_PER_SLICE)))


def _sliced(
    fetch: PageFetch,
    body: Mapping[str, Any],
    pace: _Pace,
    *,
    after: datetime,
    before: datetime,
    started: datetime,
    slices: int,
    max_pages: int,
) -> Iterator[list[Any]]:
    most_in_flight = pace.most
    tail_from = max(after, started - TAIL_MARGIN)
    bounds = slice_bounds(after, tail_from, slices) if tail_from > after else []
    pace.stats.slices = len(bounds)
    pages: queue.Queue[Any] = queue.Queue(maxsize=4 * most_in_flight)
    stop = threading.Event()
    work: queue.Queue[tuple[datetime, datetime] | None] = queue.Queue()
    for bound in bounds:
        work.put(bound)
    counter = _Counter(max_pages)

    def read_slice(low: datetime, high: datetime) -> None:
        request: dict[str, Any] = {
            **body,
            "lastUpdatedAfter": format_utc(low, precise=True),
            "lastUpdatedBefore": format_utc(high, precise=True),
        }
        seen: set[str] = set()
        while True:
            page = _page(fetch, request, pace, stop)
            pages.put(page.get("value") or [])
            token = page.get("continuationToken")
            if not token:
                return
            counter.next_page(seen, token)
            request = {**request, "continuationToken": token}

    def worker() -> None:
        try:
            while (bound := work.get()) is not None:
                read_slice(*bound)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the reader, which raises it
            stop.set()
            pages.put(exc)
        finally:
            pages.put(_DONE)

    workers = min(most_in_flight, max(1, len(bounds)))
    threads = [threading.Thread(target=worker, name=f"history-slice-{n}", daemon=True) for n in range(workers)]
    for thread in threads:
        work.put(None)
        thread.start()
    newest: datetime | None = None  # the newest lastUpdated received: the service's clock
    try:
        ended = 0
        while ended < workers:
            item = pages.get()
            if item is _DONE:
                ended += 1
                continue
            if isinstance(item, BaseException):
                raise item
            newest = _newest(item, newest)
            yield item
        # The tail, after every other slice: what changed during the fetch is there. A run that
        # changes *while* the tail is paged can enter it behind its cursor, so the tail is read
        # again from the newest lastUpdated received before that pass began (the service's own
        # clock: no skew), until a pass fits in one page, an answer the service gives at once.
        low = tail_from
        for _ in range(TAIL_PASSES):
            pace.stats.tail_passes += 1
            before_pass = newest
            request: dict[str, Any] = {
                **body,
                "lastUpdatedAfter": format_utc(low, precise=True),
                "lastUpdatedBefore": format_utc(before, precise=True),
            }
            seen: set[str] = set()
            single = True
            while True:
                page = _page(fetch, request, pace, stop)
                records = page.get("value") or []
                newest = _newest(records, newest)
                yield records
                token = page.get("continuationToken")
                if not token:
                    break
                single = False
                counter.next_page(seen, token)
                request = {**request, "continuationToken": token}
            if single or before_pass is None:
                return
            low = max(low, before_pass)
        # Still changing after every pass: the next sync reads it (its overlap covers this).
    finally:
        stop.set()
        with pace._cond:
            pace._cond.notify_all()
        # Workers blocked handing a page over are let go, then waited for.
        while any(thread.is_alive() for thread in threads):
            with contextlib.suppress(queue.Empty):
                pages.get(timeout=0.05)


def _newest(records: list[Any], newest: datetime | None) -> datetime | None:
    """The newest lastUpdated of ``records`` and ``newest``. ADF writes them all alike, so the
    texts' maximum is the newest; a page written otherwise is parsed record by record."""
    texts: list[str] = []
    for raw in records:
        text = raw.get("lastUpdated") if isinstance(raw, Mapping) else None
        if isinstance(text, str) and text:
            texts.append(text)
    if not texts:
        return newest
    alike = all(len(text) == len(texts[0]) and text.endswith("Z") for text in texts)
    for text in [max(texts)] if alike else texts:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            continue
        if moment.tzinfo is not None and (newest is None or moment > newest):
            newest = moment
    return newest


def _page(fetch: PageFetch, request: Mapping[str, Any], pace: _Pace, stop: threading.Event) -> Mapping[str, Any]:
    attempt = 0
    while True:
        pace.acquire(stop)
        try:
            page = fetch(request)
        except FactoryError as exc:
            if exc.status == 429:
                pace.release(retry_after=exc.retry_after if exc.retry_after is not None else 1.0, throttled=True)
                continue
            transient = exc.status is None or exc.status >= 500
            if transient and attempt < RETRIES and not str(exc).startswith("the factory repeated"):
                attempt += 1
                pace.stats.retried += 1
                pace.release(retry_after=0.2 * 2**attempt)
                continue
            pace.release(retry_after=0.0)
            raise
        except BaseException:
            pace.release(retry_after=0.0)
            raise
        pace.release()
        return page


class _Counter:
    """Pages followed by every slice together, and the repeated-token guard (spec §14)."""

    def __init__(self, most: int) -> None:
        self._most, self._pages = most, 0
        self._lock = threading.Lock()

    def next_page(self, seen: set[str], token: Any) -> None:
        next_page(seen, token)
        with self._lock:
            self._pages += 1
            if self._pages >= self._most:
                raise FactoryError(f"the history query was stopped after {self._most} pages")


def next_page(seen: set[str], token: Any) -> int:
    """Remember a continuationToken; a token seen before would loop for ever (spec §14)."""
    text = token if isinstance(token, str) else json.dumps(token, sort_keys=True)
    if text in seen:
        pages = f"{len(seen) + 1} page" + ("s" if len(seen) else "")
        raise FactoryError(
            f"the factory repeated a continuationToken after {pages}; "
            "the history query was stopped (it would loop for ever)"
        )
    if len(seen) >= MAX_PAGES:
        raise FactoryError(f"the history query was stopped after {MAX_PAGES} pages")
    seen.add(text)
    return len(seen)
