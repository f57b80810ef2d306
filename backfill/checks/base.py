"""The Check protocol: how much of one window is already committed in the sink (spec §5).

Every kind of check, built-in or third-party, is a class registered in the entry-point group
``backfill.checks`` and constructed with a ``CheckSpec``. ``evaluate`` never raises for a
problem with the sink: an exception, a timeout or garbage becomes status ``error`` with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from backfill.windows import Window


class CheckStatus(StrEnum):
    CLEAN = "clean"
    COMPLETE = "complete"
    PARTIAL = "partial"
    ERROR = "error"


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: CheckStatus
    reason: str
    # Counts, the statement (never the connection string), duration: safe to print and record.
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status.value,
            "reason": self.reason,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class CheckSpec:
    """One ``[[checks]]`` table of a plan. ``options`` holds every other key, as written
    (``${VAR}`` templates unexpanded). ``base_dir`` is the folder relative paths in options
    (``query_file``, a command's program) resolve against: the plan file's folder; None means
    the working directory."""

    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: timedelta = timedelta(seconds=30)
    base_dir: Path | None = None


class Check(Protocol):
    name: str

    def evaluate(self, window: Window) -> CheckResult: ...


class CheckKind(Protocol):
    """What an entry point in ``backfill.checks`` names: a class (or factory) taking a CheckSpec.

    Construction validates the options and raises CheckError for a bad definition."""

    def __call__(self, spec: CheckSpec) -> Check: ...


def classify(check: str, committed: int, expected: int | None, evidence: Mapping[str, Any]) -> CheckResult:
    """The rule shared by every counting check: nothing is clean; without ``expect`` any
    committed row is partial; with it, reaching the expected count is complete."""
    details = {"committed": committed, "expected": expected, **evidence}
    if committed == 0:
        return CheckResult(check, CheckStatus.CLEAN, "nothing committed", details)
    if expected is None:
        return CheckResult(check, CheckStatus.PARTIAL, f"{committed} rows committed, no expected count", details)
    if committed >= expected:
        return CheckResult(check, CheckStatus.COMPLETE, f"{committed} of {expected} rows committed", details)
    return CheckResult(check, CheckStatus.PARTIAL, f"{committed} of {expected} rows committed", details)
