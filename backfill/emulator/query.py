"""Reads over the emulated runs: ``queryPipelineRuns`` (filters, order, pages) and activity runs.

``queryPipelineRuns`` selects on the run's *last updated* time (both bounds required and
inclusive), never returns runs past the retention, and pages ``page_size`` runs at a time with an
opaque ``continuationToken``. The runs are indexed by lastUpdated; a query's sorted result is
kept while the state does not change, so paging through 200,000 runs costs a slice per page.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from backfill.emulator.runs import EmulatedRun, micros
from backfill.emulator.state import FactoryState
from backfill.emulator.wire import ApiError, activity_error, activity_run
from backfill.timeutil import parse_utc

OPERANDS = ("PipelineName", "Status", "RunStart", "RunEnd", "RunGroupId", "LatestOnly")
OPERATORS = ("Equals", "NotEquals", "In", "NotIn")
ORDER_FIELDS = ("RunStart", "RunEnd", "PipelineName", "Status")
_CACHE_SIZE = 16
_CACHE_SECONDS = 120.0
_LAST = 1 << 62  # sorts runs without an end after every real end

Predicate = Callable[[EmulatedRun], bool]


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _time(body: dict[str, Any], key: str) -> datetime:
    raw = body.get(key)
    if not isinstance(raw, str):
        raise _bad(f"The {key} filter parameter is required.")
    try:
        return parse_utc(raw, key)
    except ValueError as exc:
        raise _bad(str(exc)) from None


def _status(text: str) -> str:
    return "cancelled" if text.lower() == "canceled" else text.lower()


def _predicate(raw: Any) -> Predicate | None:
    if not isinstance(raw, dict):
        raise _bad("Each filter must be an object with operand, operator and values.")
    operand, operator, values = raw.get("operand"), raw.get("operator"), raw.get("values")
    operand = next((o for o in OPERANDS if isinstance(operand, str) and o.lower() == operand.lower()), None)
    if operand is None:
        raise _bad(
            f"Filter operand {raw.get('operand')!r} is not supported for pipeline runs (use {', '.join(OPERANDS)})."
        )
    operator = next((o for o in OPERATORS if isinstance(operator, str) and o.lower() == operator.lower()), None)
    if operator is None:
        raise _bad(f"Filter operator {raw.get('operator')!r} is not supported (use {', '.join(OPERATORS)}).")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _bad(f"Filter {operand} needs a non-empty list of string values.")
    negate = operator in ("NotEquals", "NotIn")
    if operand == "LatestOnly":
        wanted = values[0].lower() == "true"
        if wanted == negate:
            return None  # "all runs": no restriction
        return lambda r: r.is_latest
    if operand == "RunGroupId" and len(values) != 1:
        raise _bad("The RunGroupId filter takes exactly one value.")
    test = _test(operand, values)
    if negate:
        return lambda r: not test(r)
    return test


def _test(operand: str, values: list[str]) -> Predicate:
    if operand == "PipelineName":
        names = {v.lower() for v in values}
        return lambda r: r.pipeline.name.lower() in names
    if operand == "Status":
        statuses = {_status(v) for v in values}
        return lambda r: r.status.lower() in statuses
    if operand == "RunGroupId":
        group = values[0]
        return lambda r: r.group == group
    try:
        moments = {parse_utc(v) for v in values}
    except ValueError as exc:
        raise _bad(f"Filter {operand}: {exc}") from None
    if operand == "RunStart":
        return lambda r: r.start in moments
    return lambda r: r.end in moments


def _sort_key(field: str) -> Callable[[EmulatedRun], Any]:
    if field == "RunStart":
        return lambda r: micros(r.start)
    if field == "RunEnd":
        return lambda r: micros(r.end) if r.end is not None else _LAST
    if field == "PipelineName":
        return lambda r: r.pipeline.name
    return lambda r: r.status


def _orders(raw: Any) -> list[tuple[str, bool]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("orderBy must be a list.")
    orders = []
    for entry in raw:
        name = entry.get("orderBy") if isinstance(entry, dict) else None
        field = next((f for f in ORDER_FIELDS if isinstance(name, str) and f.lower() == name.lower()), None)
        if field is None:
            raise _bad(f"orderBy {name!r} is not supported for pipeline runs (use {', '.join(ORDER_FIELDS)}).")
        order = str(entry.get("order") or "ASC").upper()
        if order not in ("ASC", "DESC"):
            raise _bad(f"order {entry.get('order')!r} must be ASC or DESC.")
        orders.append((field, order == "DESC"))
    return orders


class _Descending:
    """One component of a position key sorted in descending order (it inverts ``<``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


def _position(values: list[Any], orders: list[tuple[str, bool]]) -> tuple[Any, ...]:
    """The comparable key of a run's place in a sorted selection: the orderBy fields (each in
    its direction), then the lastUpdated index's own order (lastUpdated, run ID)."""
    head = [_Descending(v) if descending else v for v, (_, descending) in zip(values, orders, strict=False)]
    return (*head, *values[len(orders) :])


def _values(run: EmulatedRun, orders: list[tuple[str, bool]]) -> list[Any]:
    """What a continuation token remembers of the last run sent: its sort values at that time."""
    return [*(_sort_key(field)(run) for field, _ in orders), run.lu_key, run.run_id]


def _encode_token(digest: str, last: list[Any]) -> str:
    raw = json.dumps({"h": digest, "k": last}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: Any, digest: str, orders: list[tuple[str, bool]]) -> list[Any]:
    try:
        if not isinstance(token, str):
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        last = data["k"]
        if not isinstance(last, list) or len(last) != len(orders) + 2:
            raise ValueError
        matches = data["h"] == digest
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _bad("The continuationToken is not valid.") from None
    if not matches:
        raise _bad("The continuationToken belongs to a different query; send the same filter with it.")
    return last


class RunQueries:
    """``queryPipelineRuns`` over a FactoryState, with a small cache of sorted results."""

    def __init__(self, state: FactoryState) -> None:
        self.state = state
        self._cache: OrderedDict[str, tuple[int, float, list[EmulatedRun], list[str]]] = OrderedDict()

    def query(self, body: Any, now: datetime) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad("The request body must be a RunFilterParameters object.")
        after, before = _time(body, "lastUpdatedAfter"), _time(body, "lastUpdatedBefore")
        filters = body.get("filters") or []
        if not isinstance(filters, list):
            raise _bad("filters must be a list.")
        predicates = [p for p in (_predicate(f) for f in filters) if p is not None]
        orders = _orders(body.get("orderBy"))
        shape = {k: v for k, v in body.items() if k != "continuationToken"}
        digest = hashlib.sha1(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]
        state = self.state
        with state.lock:
            state.advance(now)
            runs, _ = self._selection(digest, after, before, predicates, orders, now)
            offset = 0
            if body.get("continuationToken") is not None:
                # Keyset paging: continue after the place the last run sent had WHEN it was sent.
                # Finding that run by its ID instead skipped every unchanged run between its old
                # and its new place when it was updated between two pages (a cancel, a status).
                # A run that moves behind the cursor is not re-sent here: it changed, so a reader
                # of lastUpdated ranges meets it again in the range it moved to.
                last = _position(_decode_token(body["continuationToken"], digest, orders), orders)
                offset = bisect.bisect_right(runs, last, key=lambda r: _position(_values(r, orders), orders))
            size = state.scenario.page_size
            page = runs[offset : offset + size]
            answer: dict[str, Any] = {"value": [state.run_json(r) for r in page]}
            if offset + size < len(runs):
                answer["continuationToken"] = _encode_token(digest, _values(page[-1], orders))
            return answer

    def _selection(
        self,
        digest: str,
        after: datetime,
        before: datetime,
        predicates: list[Predicate],
        orders: list[tuple[str, bool]],
        now: datetime,
    ) -> tuple[list[EmulatedRun], list[str]]:
        state = self.state
        cached = self._cache.get(digest)
        if cached is not None and cached[0] == state.version and time.monotonic() - cached[1] < _CACHE_SECONDS:
            self._cache.move_to_end(digest)
            return cached[2], cached[3]
        # Older than the retention, runs are gone from queries as from the service.
        low = max(micros(after), micros(now - state.scenario.retention))
        index = state.by_updated
        lo = bisect.bisect_left(index, (low, ""))
        hi = bisect.bisect_right(index, (micros(before), "\uffff"))
        every = state.runs
        runs = [every[run_id] for _, run_id in index[lo:hi]]
        for predicate in predicates:
            runs = [r for r in runs if predicate(r)]
        for field, descending in reversed(orders):
            runs.sort(key=_sort_key(field), reverse=descending)
        ids = [r.run_id for r in runs]
        self._cache[digest] = (state.version, time.monotonic(), runs, ids)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return runs, ids


def activity_runs(state: FactoryState, run_id: str, body: Any, now: datetime) -> dict[str, Any]:
    """``pipelineruns/{id}/queryActivityruns``: one entry per activity that has started.

    As the live service does (recorded exchange), an unknown run gives an empty list, not 404.
    """
    if not isinstance(body, dict):
        raise _bad("The request body must be a RunFilterParameters object.")
    after, before = _time(body, "lastUpdatedAfter"), _time(body, "lastUpdatedBefore")
    with state.lock:
        state.advance(now)
        rec = state.live_run(run_id, now)
        if rec is None or rec.status == "Queued":
            return {"value": []}
        entries = [e for e in _activities(state, rec, now) if after <= e[0] <= before]
        return {"value": [e[1] for e in entries]}


def _activities(state: FactoryState, rec: EmulatedRun, now: datetime) -> list[tuple[datetime, dict[str, Any]]]:
    script = rec.script
    activities = rec.pipeline.activities
    stop = max(script.stop, rec.first) if script.result in ("fail", "hang") else len(activities) - 1
    count = stop - rec.first + 1
    unit = (rec.span_end - rec.begin) / count
    status = rec.status
    # The moment that decides which activities had started: now for a live run, else its end.
    horizon = now if status in ("InProgress", "Canceling") else (rec.cancel_at or rec.end or rec.last_updated)
    entries: list[tuple[datetime, dict[str, Any]]] = []
    for step, index in enumerate(range(rec.first, stop + 1)):
        activity = activities[index]
        start = rec.begin + unit * step
        planned_end = rec.span_end if index == stop else start + unit
        if start > horizon:
            break
        hangs = script.result == "hang" and index == stop
        end: datetime | None = planned_end
        error = activity_error(activity.name)
        if status == "Failed" and index == stop:
            state_name, end = "Failed", rec.end
            error = activity_error(activity.name, script.error_code, script.message, script.failure_type)
        elif planned_end <= horizon and not hangs:
            state_name = "Succeeded"
        elif status == "Cancelled":
            state_name, end = "Cancelled", rec.last_updated
            error = activity_error(activity.name, "", "Operation cancelled", "UserError")
        else:
            state_name, end = "InProgress", None
        output: dict[str, Any] = {}
        if activity.type == "Copy" and end is not None:
            output = {"rowsRead": rec.rows_written, "rowsCopied": rec.rows_written}
        body = activity_run(
            factory_id=state.factory_id,
            pipeline=rec.pipeline.name,
            run_id=rec.run_id,
            activity_run_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{rec.run_id}/{index}")),
            name=activity.name,
            activity_type=activity.type,
            status=state_name,
            start=start,
            end=end,
            error=error,
            output=output,
        )
        entries.append((end or start, body))
    return entries
