"""``rowfile``: an example backfill check kind counting the data rows of a window's CSV export."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from backfill.checks.base import CheckResult, CheckSpec, CheckStatus, classify
from backfill.errors import CheckError
from backfill.windows import FIELDS, Window, render, template_fields

__all__ = ["RowFileCheck"]

_OPTIONS = ("expect", "header", "path")


class RowFileCheck:
    """Counts non-blank lines (after an optional header) of the file ``path`` renders to."""

    def __init__(self, spec: CheckSpec) -> None:
        self.name = spec.name
        self.timeout = spec.timeout
        for option in spec.options:
            if option not in _OPTIONS:
                raise CheckError(
                    f"check {spec.name!r}: unknown option {option!r} for kind {spec.kind!r} "
                    f"(allowed: {', '.join(_OPTIONS)})"
                )
        path = spec.options.get("path")
        if not isinstance(path, str) or not path.strip():
            raise self._fail(spec, "path", "must be a file name template like exports/{start:%Y%m%d}.csv")
        unknown = [name for name in template_fields(path) if name not in FIELDS]
        if unknown:
            raise self._fail(spec, "path", f"unknown field {{{unknown[0]}}} (only {{start}} and {{end}} exist)")
        header = spec.options.get("header", True)
        if not isinstance(header, bool):
            raise self._fail(spec, "header", "must be true or false")
        expect = spec.options.get("expect")
        if expect is not None and (isinstance(expect, bool) or not isinstance(expect, int) or expect < 0):
            raise self._fail(spec, "expect", "must be a whole number >= 0")
        self._path = path
        self._base = spec.base_dir
        self._header = header
        self._expect: int | None = expect

    @staticmethod
    def _fail(spec: CheckSpec, option: str, expected: str) -> CheckError:
        return CheckError(f"check {spec.name!r}: option {option!r}: {expected}")

    def evaluate(self, window: Window) -> CheckResult:
        started = time.monotonic()
        written = render(self._path, window.start, window.end)
        path = Path(written)
        if not path.is_absolute() and self._base is not None:
            path = self._base / path
        evidence: dict[str, Any] = {"path": written}

        def took() -> dict[str, Any]:
            return {**evidence, "duration_ms": round((time.monotonic() - started) * 1000)}

        if not path.parent.is_dir():
            return CheckResult(self.name, CheckStatus.ERROR, f"folder {path.parent} does not exist", took())
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                lines = sum(1 for line in handle if line.strip())
        except FileNotFoundError:
            # One file per window: no file yet means nothing of the window was exported.
            return CheckResult(self.name, CheckStatus.CLEAN, f"{written} does not exist", took())
        except (OSError, UnicodeDecodeError) as exc:
            return CheckResult(self.name, CheckStatus.ERROR, f"cannot read {written}: {exc}", took())
        rows = max(0, lines - 1) if self._header else lines
        return classify(self.name, rows, self._expect, took())
