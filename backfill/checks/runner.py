"""Evaluating checks: the guard that makes any check (built-in or plugin) keep the contract, and
``evaluate_all`` that runs checks for many windows with a bound on how many run at once.

The guard runs each evaluation in a daemon thread and stops waiting at the check's timeout (plus
a short grace, so a check that enforces its own timeout reports it in its own words). Python
cannot kill a thread: a check stuck past its timeout keeps its thread until it returns, but no
caller waits for it, and interpreter exit does not either.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from backfill.checks._support import Scrubber, describe, elapsed_ms, error_result, secret_values
from backfill.checks.base import Check, CheckResult, CheckStatus
from backfill.timeutil import format_duration
from backfill.windows import Window

DEFAULT_TIMEOUT = timedelta(seconds=30)
GRACE_SECONDS = 0.5


def _templates(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _templates(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _templates(item)


class GuardedCheck:
    """A check that always answers within its timeout with a well-formed, JSON-safe result,
    and never shows the value of a ``${VAR}`` its options name."""

    def __init__(self, check: Check, timeout: timedelta | None = None, options: Mapping[str, Any] | None = None):
        self.inner = check
        self.name = str(check.name)
        self.timeout = timeout if timeout is not None else getattr(check, "timeout", DEFAULT_TIMEOUT)
        self._templates = list(_templates(options or {}))

    def evaluate(self, window: Window) -> CheckResult:
        started = time.monotonic()
        box: list[object] = []

        def target() -> None:
            try:
                box.append(self.inner.evaluate(window))
            except BaseException as exc:
                box.append(exc)

        worker = threading.Thread(target=target, name=f"check {self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout.total_seconds() + GRACE_SECONDS)
        evidence = {"duration_ms": elapsed_ms(started)}
        if not box:
            reason = f"timed out after {format_duration(self.timeout)}"
            return error_result(self.name, reason, evidence)
        return self._checked(box[0], evidence)

    def _checked(self, outcome: object, evidence: dict[str, Any]) -> CheckResult:
        scrub = Scrubber()
        for text in self._templates:
            scrub.add(*secret_values(text, os.environ))
        if isinstance(outcome, BaseException):
            return error_result(self.name, scrub(f"check raised {describe(outcome)}"), evidence)
        if not isinstance(outcome, CheckResult) or not isinstance(outcome.status, CheckStatus):
            shown = type(outcome).__name__
            return error_result(self.name, f"check returned a {shown}, not a CheckResult", evidence)
        try:
            # Evidence goes to the ledger and to --json output: it must survive JSON encoding.
            safe = json.loads(scrub(json.dumps(dict(outcome.evidence), default=str)))
            reason = scrub(" ".join(str(outcome.reason).split()))
        except (TypeError, ValueError) as exc:
            return error_result(self.name, f"check returned evidence that is not JSON: {describe(exc)}", evidence)
        safe.setdefault("duration_ms", evidence["duration_ms"])
        return CheckResult(self.name, outcome.status, reason, safe)


def guard(check: Check) -> GuardedCheck:
    """``check`` itself when already guarded, else wrapped with its own ``timeout`` attribute."""
    return check if isinstance(check, GuardedCheck) else GuardedCheck(check)


def evaluate_all(
    checks: Sequence[Check], windows: Iterable[Window], concurrency: int = 8
) -> dict[str, tuple[CheckResult, ...]]:
    """Every check for every window, at most ``concurrency`` evaluations at once.

    The answer maps each window's key to its results in the order of ``checks``."""
    if concurrency < 1:
        raise ValueError(f"check concurrency must be at least 1, not {concurrency}")
    guarded = [guard(check) for check in checks]
    window_list = list(windows)
    tasks = [(window, check) for window in window_list for check in guarded]
    if not tasks:
        return {window.key: () for window in window_list}
    workers = min(concurrency, len(tasks))
    if workers == 1:
        results = [check.evaluate(window) for window, check in tasks]
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backfill-checks")
        try:
            results = list(pool.map(lambda task: task[1].evaluate(task[0]), tasks))
        finally:
            # On an interrupt, drop what has not started; what runs is bounded by its timeout.
            pool.shutdown(wait=True, cancel_futures=True)
    answers: dict[str, tuple[CheckResult, ...]] = {}
    per_window = len(guarded)
    for index, window in enumerate(window_list):
        answers[window.key] = tuple(results[index * per_window : (index + 1) * per_window])
    return answers
