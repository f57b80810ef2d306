"""What the ``odbc`` and ``sql`` kinds share: a counting query, and an optional expected count
given as a number or as a second query against the source.

Both queries of one evaluation share the check's time budget. A statement that is not a plain
query is refused before anything connects (``backfill.checks.readonly``); the kinds open their
connections read-only. The connection template is expanded only inside ``_count``; the evidence
holds the statements and the rendered arguments, never the connection.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from backfill.checks._support import (
    Scrubber,
    check_options,
    check_timeout,
    describe,
    elapsed_ms,
    error_result,
    expect_number,
    fail,
    read_statement,
    require_text,
)
from backfill.checks.base import CheckResult, CheckSpec, classify
from backfill.checks.readonly import NotAQuery, refusal
from backfill.errors import CheckError
from backfill.timeutil import format_duration
from backfill.windows import Window


class CheckTimeout(Exception):
    """The check's own deadline passed (the query was cancelled or never started)."""


@dataclass(frozen=True)
class CountQuery:
    connection: str  # the template as written, ``${VAR}`` unexpanded
    text: str
    source: str | None  # the query_file as written, when the text came from one
    args: Any  # the kind's argument templates: a list (odbc) or a table (sql)
    refused: str | None = None  # why the statement is not a read-only query (never sent then)


class CountingCheck(ABC):
    """Base of the counting kinds; subclasses bind arguments and run one count."""

    connection_option: ClassVar[str]
    args_default: ClassVar[Any]

    def __init__(self, spec: CheckSpec) -> None:
        self.name = spec.name
        self.timeout = spec.timeout
        conn = self.connection_option
        check_options(spec, {conn, "query", "query_file", "args", "expect"}, {conn})
        self._seconds = check_timeout(spec)
        self._main = self._query(spec, spec.options, "", spec.options[conn])
        self._expect = self._parse_expect(spec, spec.options.get("expect"))

    def _query(self, spec: CheckSpec, options: Mapping[str, Any], prefix: str, connection: Any) -> CountQuery:
        connection = require_text(spec, f"{prefix}{self.connection_option}", connection)
        self._check_connection(spec, f"{prefix}{self.connection_option}", connection)
        text, source = read_statement(spec, options, prefix)
        args = self._parse_args(spec, f"{prefix}args", options.get("args", self.args_default), text)
        return CountQuery(connection, text, source, args, refusal(text))

    def _parse_expect(self, spec: CheckSpec, value: Any) -> int | CountQuery | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            return expect_number(spec, value)
        conn = self.connection_option
        allowed = sorted({"query", "query_file", "args", conn})
        for key in value:
            if key not in allowed:
                raise CheckError(f"check {spec.name!r}: unknown option 'expect.{key}' (allowed: {', '.join(allowed)})")
        return self._query(spec, value, "expect.", value.get(conn, self._main.connection))

    def evaluate(self, window: Window) -> CheckResult:
        started = time.monotonic()
        deadline = started + self._seconds
        scrub = Scrubber()
        evidence: dict[str, Any] = {}
        stage = "count query"
        try:
            evidence.update(self._describe(self._main, window, "statement", "args"))
            committed = self._guarded_count(self._main, evidence["args"], deadline, scrub)
            expected: int | None
            if isinstance(self._expect, CountQuery):
                stage = "expected-count query"
                evidence.update(self._describe(self._expect, window, "expected_statement", "expected_args"))
                expected = self._guarded_count(self._expect, evidence["expected_args"], deadline, scrub)
            else:
                expected = self._expect
        except NotAQuery as exc:
            evidence["duration_ms"] = elapsed_ms(started)
            return error_result(self.name, f"{stage} refused before it was sent: {exc}", evidence)
        except CheckTimeout:
            evidence["duration_ms"] = elapsed_ms(started)
            reason = f"{stage} timed out after {format_duration(self.timeout)}"
            return error_result(self.name, reason, evidence)
        except Exception as exc:
            evidence["duration_ms"] = elapsed_ms(started)
            return error_result(self.name, scrub(f"{stage} failed: {self._explain(exc)}"), evidence)
        evidence["duration_ms"] = elapsed_ms(started)
        return classify(self.name, committed, expected, evidence)

    def _guarded_count(self, query: CountQuery, args: Any, deadline: float, scrub: Scrubber) -> int:
        if query.refused is not None:
            raise NotAQuery(query.refused)
        return self._count(query, args, deadline, scrub)

    def _describe(self, query: CountQuery, window: Window, statement: str, args: str) -> dict[str, Any]:
        described: dict[str, Any] = {statement: query.text, args: self._render(query.args, window)}
        if query.source is not None:
            described[f"{statement}_file"] = query.source
        return described

    @staticmethod
    def remaining(deadline: float) -> float:
        """Seconds left before ``deadline``; CheckTimeout when none are."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise CheckTimeout
        return left

    @staticmethod
    def environment() -> Mapping[str, str]:
        return os.environ

    def _explain(self, exc: BaseException) -> str:
        return describe(exc)

    def _check_connection(self, spec: CheckSpec, option: str, connection: str) -> None:
        """Validate a connection template at construction (only the parts without ``${VAR}``)."""
        del spec, option, connection

    @abstractmethod
    def _parse_args(self, spec: CheckSpec, option: str, value: Any, query: str) -> Any: ...

    @abstractmethod
    def _render(self, args: Any, window: Window) -> Any: ...

    @abstractmethod
    def _count(self, query: CountQuery, args: Any, deadline: float, scrub: Scrubber) -> int:
        """Run one count; add every secret to ``scrub`` before anything can fail with it."""


def require_mapping(spec: CheckSpec, option: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise fail(spec, option, "must be a table of name = template")
    return value
