"""Windows: half-open UTC intervals [start, end) and the parameters rendered from them.

A window's key is stable and readable: ``2026-11-03T02:00:00Z/2026-11-03T02:15:00Z``.
Templates: ``{start:%Y-%m-%d}`` and ``{end:FMT}`` take strftime formats; a bare ``{start}``
renders as ``2026-11-03T02:00:00Z``; ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backfill.secrets import Secret, redact
from backfill.timeutil import format_utc

FIELDS = ("start", "end")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}:]*)(?::([^{}]*))?\}")


class TemplateError(ValueError):
    pass


def template_fields(template: str) -> list[str]:
    """The field names a template uses (for validation: only start and end exist)."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(0) not in ("{{", "}}")]


def render(template: Any, start: datetime, end: datetime) -> Any:
    """Render a template string (or a list of them, or a Secret's template) for one window."""
    if isinstance(template, Secret):
        return Secret(render(template.template, start, end))
    if isinstance(template, list | tuple):
        return [render(t, start, end) for t in template]
    if not isinstance(template, str):
        return template
    values = {"start": start, "end": end}

    def substitute(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "{{":
            return "{"
        if text == "}}":
            return "}"
        name, fmt = match.group(1), match.group(2)
        if name not in values:
            raise TemplateError(f"unknown field {{{name}}} (only {{start}} and {{end}} exist)")
        return values[name].strftime(fmt) if fmt else format_utc(values[name])

    return _PLACEHOLDER.sub(substitute, template)


def window_key(start: datetime, end: datetime) -> str:
    return f"{format_utc(start)}/{format_utc(end)}"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    # Rendered parameters as they go to createRun; secure ones stay Secret until sent.
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return window_key(self.start, self.end)

    def public_parameters(self) -> dict[str, Any]:
        """The parameters with every Secret redacted: safe to print and record."""
        redacted: dict[str, Any] = redact(self.parameters)
        return redacted
