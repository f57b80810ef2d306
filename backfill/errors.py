"""The one error family of backfill, with the exit codes of the spec (§9).

Anything the user must fix raises a ``BackfillError``; the CLI's single handler turns it into one
line on stderr and ``exit_code``. Unexpected exceptions (bugs) exit 70 with one line on stderr and
their traceback in a log file.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    AWAITING_APPROVAL = 3
    BLOCKED = 4
    LEDGER_INVALID = 5
    # A business date missed, failed or not run, or duration drift detected (spec §13).
    SLA_AT_RISK = 6
    # A bug, not a refusal (sysexits' EX_SOFTWARE): scripts can tell the two apart.
    BUG = 70
    INTERRUPTED = 130


class BackfillError(Exception):
    """Refused or failed: a clear one-line reason, exit 1."""

    exit_code: ExitCode = ExitCode.FAILED
    label: str = "error"  # how the one line starts on stderr; "" for an expected stop that is no error

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(BackfillError):
    """The command line itself is wrong (bad option value, naive --since)."""

    exit_code = ExitCode.USAGE


class PlanError(BackfillError):
    """A plan file is malformed: names the file, the key and what is expected."""

    def __init__(self, path: str, key: str, expected: str) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {expected}")
        self.path = path
        self.key = key
        self.expected = expected


class ScenarioError(BackfillError):
    """An emulator scenario file is malformed."""


class ConfigError(BackfillError):
    """Connection or environment settings are missing or wrong."""


class FactoryError(BackfillError):
    """The factory (ADF or the emulator) answered with an error, or could not be reached.

    ``code`` is ADF's error code (``PipelineRunNotRunning``...), ``status`` the HTTP status, or None
    when no answer arrived at all (connection refused, dropped, timed out). ``effect_unknown`` is
    True when a write may have taken effect although we got no success answer: the caller must
    reconcile against history instead of retrying.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        effect_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        prefix = " ".join(p for p in (str(status) if status else "", code or "") if p)
        super().__init__(f"factory: {prefix}: {message}" if prefix else f"factory: {message}")
        self.code = code
        self.status = status
        self.effect_unknown = effect_unknown
        # Seconds the service asked us to wait (a 429's Retry-After), when it said.
        self.retry_after = retry_after

    @property
    def throttled(self) -> bool:
        """A 429: the service refused before doing anything, so the call may be sent again."""
        return self.status == 429


class CheckError(BackfillError):
    """A sink check's configuration is wrong (not an evaluation error, which is a CheckResult)."""


class LedgerError(BackfillError):
    """The ledger database refused an operation."""


class LedgerInvalid(BackfillError):
    """Ledger verification failed: names the first bad event."""

    exit_code = ExitCode.LEDGER_INVALID


class AwaitingApproval(BackfillError):
    exit_code = ExitCode.AWAITING_APPROVAL


class CanaryPause(AwaitingApproval):
    """The pause the plan asked for after its canary windows: exit 3, but not an error."""

    label = ""


class BlockedWindows(BackfillError):
    exit_code = ExitCode.BLOCKED
