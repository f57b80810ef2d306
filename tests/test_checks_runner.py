"""The guard every check runs behind, and evaluate_all's bound on concurrent evaluations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.checks._support import Scrubber, as_count
from backfill.checks.base import Check, CheckResult, CheckStatus
from backfill.checks.runner import GuardedCheck, evaluate_all
from backfill.windows import Window

T0 = datetime(2026, 11, 3, tzinfo=UTC)
WINDOWS = [Window(T0 + i * timedelta(minutes=15), T0 + (i + 1) * timedelta(minutes=15)) for i in range(10)]


class Counting:
    """Answers clean after a short pause, recording how many evaluations overlap."""

    def __init__(self, name: str, tracker: dict[str, int], lock: threading.Lock) -> None:
        self.name = name
        self.timeout = timedelta(seconds=5)
        self._tracker, self._lock = tracker, lock

    def evaluate(self, window: Window) -> CheckResult:
        with self._lock:
            self._tracker["now"] += 1
            self._tracker["max"] = max(self._tracker["max"], self._tracker["now"])
        time.sleep(0.02)
        with self._lock:
            self._tracker["now"] -= 1
        return CheckResult(self.name, CheckStatus.CLEAN, f"{window.key} by {self.name}")


class Misbehaving:
    def __init__(self, name: str, outcome: Any, timeout: float = 5) -> None:
        self.name = name
        self.timeout = timedelta(seconds=timeout)
        self._outcome = outcome

    def evaluate(self, window: Window) -> CheckResult:
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        if isinstance(self._outcome, threading.Event):
            self._outcome.wait(10)
        result: CheckResult = self._outcome
        return result


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("concurrency", [1, 3, 5])
def test_evaluate_all_runs_at_most_concurrency_at_once(concurrency: int) -> None:
    tracker, lock = {"now": 0, "max": 0}, threading.Lock()
    checks = [Counting("a", tracker, lock), Counting("b", tracker, lock), Counting("c", tracker, lock)]
    results = evaluate_all(checks, WINDOWS, concurrency=concurrency)
    assert tracker["max"] == concurrency
    assert list(results) == [w.key for w in WINDOWS]
    for window in WINDOWS:
        assert [r.reason for r in results[window.key]] == [f"{window.key} by {n}" for n in "abc"]


def test_evaluate_all_edges() -> None:
    assert evaluate_all([], WINDOWS[:2]) == {WINDOWS[0].key: (), WINDOWS[1].key: ()}
    assert evaluate_all([Misbehaving("x", RuntimeError())], []) == {}
    with pytest.raises(ValueError, match="check concurrency must be at least 1, not 0"):
        evaluate_all([], WINDOWS, concurrency=0)


def test_a_raising_check_is_an_error_with_the_reason() -> None:
    results = evaluate_all([Misbehaving("boom", RuntimeError("sink said no\nsecond line"))], WINDOWS[:1])
    (result,) = results[WINDOWS[0].key]
    assert (result.check, result.status) == ("boom", CheckStatus.ERROR)
    assert result.reason == "check raised RuntimeError: sink said no second line"
    assert isinstance(result.evidence["duration_ms"], int)


def test_a_hanging_check_times_out(release: threading.Event) -> None:
    started = time.monotonic()
    (result,) = evaluate_all([Misbehaving("stuck", release, timeout=0.2)], WINDOWS[:1])[WINDOWS[0].key]
    assert time.monotonic() - started < 1.5
    assert (result.status, result.reason) == (CheckStatus.ERROR, "timed out after 0.2s")


def test_hanging_checks_do_not_hold_the_others(release: threading.Event) -> None:
    tracker, lock = {"now": 0, "max": 0}, threading.Lock()
    checks: list[Check] = [Misbehaving("stuck", release, timeout=0.2), Counting("ok", tracker, lock)]
    results = evaluate_all(checks, WINDOWS[:2], concurrency=2)
    assert [r.status for rs in results.values() for r in rs] == [CheckStatus.ERROR, CheckStatus.CLEAN] * 2


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ("clean", "check returned a str, not a CheckResult"),
        (None, "check returned a NoneType, not a CheckResult"),
        (CheckResult("x", "clean", "text status"), "check returned a CheckResult, not a CheckResult"),  # type: ignore[arg-type]
    ],
)
def test_garbage_results_are_errors(outcome: Any, reason: str) -> None:
    result = GuardedCheck(Misbehaving("junk", outcome)).evaluate(WINDOWS[0])
    assert (result.status, result.reason) == (CheckStatus.ERROR, reason)


def test_evidence_is_made_json_safe_and_the_name_is_the_checks() -> None:
    odd = CheckResult("other-name", CheckStatus.PARTIAL, "2 rows\nof 4", {"at": T0, "rows": 2})
    result = GuardedCheck(Misbehaving("sink", odd)).evaluate(WINDOWS[0])
    assert (result.check, result.status, result.reason) == ("sink", CheckStatus.PARTIAL, "2 rows of 4")
    assert result.evidence["at"] == "2026-11-03 00:00:00+00:00" and result.evidence["rows"] == 2
    loop: dict[str, Any] = {}
    loop["self"] = loop
    circular = GuardedCheck(Misbehaving("sink", CheckResult("sink", CheckStatus.CLEAN, "", loop))).evaluate(WINDOWS[0])
    assert circular.status is CheckStatus.ERROR
    assert circular.reason == "check returned evidence that is not JSON: ValueError: Circular reference detected"


def test_the_guard_hides_values_of_variables_the_options_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINK_TOKEN", "tok-123456")
    leaky = Misbehaving("leaky", CheckResult("leaky", CheckStatus.CLEAN, "used tok-123456", {"t": "tok-123456"}))
    result = GuardedCheck(leaky, options={"nested": {"url": ["https://x/?t=${SINK_TOKEN}"]}}).evaluate(WINDOWS[0])
    assert (result.reason, result.evidence["t"]) == ("used ***", "***")
    raising = Misbehaving("leaky", RuntimeError("bad token tok-123456"))
    assert GuardedCheck(raising, options={"token": "${SINK_TOKEN}"}).evaluate(WINDOWS[0]).reason == (
        "check raised RuntimeError: bad token ***"
    )


@given(st.text(min_size=3, max_size=20), st.text(max_size=30), st.text(max_size=30))
def test_scrubber_never_lets_a_secret_through(secret: str, before: str, after: str) -> None:
    scrubbed = Scrubber([secret])(before + secret + after)
    assert secret not in scrubbed


@given(st.integers(min_value=0) | st.integers(max_value=-1) | st.text(max_size=6) | st.floats() | st.booleans())
def test_as_count_accepts_only_whole_non_negative_numbers(value: Any) -> None:
    try:
        count = as_count(value)
    except ValueError:
        assert isinstance(value, bool | float | str) or value < 0
    else:
        assert count >= 0 and not isinstance(value, bool)
        assert count == (int(value.strip()) if isinstance(value, str) else value)
