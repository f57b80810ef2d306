"""Windows: half-open UTC intervals [start, end) and the parameters rendered from them.

A window's key is stable and readable: ``2026-11-03T02:00:00Z/2026-11-03T02:15:00Z``.
Templates: ``{start:%Y-%m-%d}`` and ``{end:FMT}`` take strftime formats; a bare ``{start}``
renders as ``2026-11-03T02:00:00Z``; ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backfill.gcpause import paused_gc
from backfill.secrets import Secret, redact
from backfill.timeutil import format_utc

FIELDS = ("start", "end")
# ``${VAR}`` is an environment reference expanded at use time (backfill.secrets), never a field:
# the lookbehind keeps ``${SOURCE_API_KEY}`` out of template rendering and validation.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|(?<!\$)\{([^{}:]*)(?::([^{}]*))?\}")


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


# Slots: a year of 15-minute windows is 35,040 of them; no per-window __dict__ to allocate or
# for the garbage collector to walk.
@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    # Rendered parameters as they go to createRun; secure ones stay Secret until sent.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # The key, formatted on first use: previews, ledgers and reports ask for it many times.
    _key: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        if self._key is None:
            object.__setattr__(self, "_key", window_key(self.start, self.end))
        assert self._key is not None
        return self._key

    def public_parameters(self) -> dict[str, Any]:
        """The parameters with every Secret redacted: safe to print and record."""
        # Plain strings (nearly every parameter) need no walk through redact.
        return {str(name): value if type(value) is str else redact(value) for name, value in self.parameters.items()}


# --- generation ---------------------------------------------------------------------------------

_UNIT_TEXT = (
    ("w", timedelta(weeks=1)),
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
    ("ms", timedelta(milliseconds=1)),
)
_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


class WindowError(ValueError):
    """Bounds that cannot make windows. ``field`` is ``end``, ``every`` or ``list``; ``index`` the
    position of the offending pair in an explicit list, as written."""

    def __init__(self, message: str, *, field: str, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index


def duration_text(value: timedelta) -> str:
    """The exact, parseable short form of a duration: ``15m`` (also for 900s), ``36h``, ``1500ms``."""
    for unit, size in _UNIT_TEXT:
        if value % size == timedelta(0):
            return f"{value // size}{unit}"
    return f"{value // timedelta(microseconds=1)}us"


def count_windows(start: datetime, end: datetime, every: timedelta) -> int:
    """How many windows ``every`` cuts [start, end) into; refuses ranges it does not divide."""
    if end <= start:
        raise WindowError(f"{format_utc(end)} is not after the start {format_utc(start)}", field="end")
    if every <= timedelta(0):
        raise WindowError(f"{duration_text(every)} is not a positive duration", field="every")
    span = end - start
    if span % every:
        raise WindowError(
            f'"{duration_text(every)}" does not divide the range {format_utc(start)} to {format_utc(end)}'
            f" ({duration_text(span)})",
            field="every",
        )
    return span // every


def generate_windows(
    start: datetime,
    end: datetime,
    every: timedelta,
    parameters: Mapping[str, Any] | None = None,
) -> list[Window]:
    """Contiguous windows of length ``every`` covering [start, end), parameters rendered."""
    count = count_windows(start, end, every)
    # Window i runs from bound i to bound i + 1: adjacent windows share one datetime object.
    moments = [start + i * every for i in range(count + 1)]
    return _with_parameters(moments, [(i, i + 1) for i in range(count)], parameters)


def explicit_windows(
    bounds: Iterable[tuple[datetime, datetime]],
    parameters: Mapping[str, Any] | None = None,
) -> list[Window]:
    """Windows from ``[[start, end], ...]``, sorted by start; empty or overlapping ones refused."""
    pairs = list(bounds)
    for index, (start, end) in enumerate(pairs):
        if end <= start:
            raise WindowError(
                f"{format_utc(end)} is not after the start {format_utc(start)}", field="list", index=index
            )
    order = sorted(range(len(pairs)), key=lambda i: pairs[i])
    for before, current in itertools.pairwise(order):
        # Half-open: a window may start exactly where the previous one ends.
        if pairs[current][0] < pairs[before][1]:
            first, second = sorted((before, current))
            raise WindowError(
                f"{window_key(*pairs[second])} overlaps list[{first}] ({window_key(*pairs[first])})",
                field="list",
                index=second,
            )
    # Number the distinct bounds (a window may start exactly where the previous one ends); the
    # zone is part of a bound's identity, since it may be formatted.
    points: dict[tuple[datetime, Any], int] = {}
    moments: list[datetime] = []
    numbered: list[tuple[int, int]] = []
    for start, end in (pairs[i] for i in order):
        numbers = []
        for moment in (start, end):
            number = points.setdefault((moment, moment.tzinfo), len(moments))
            if number == len(moments):
                moments.append(moment)
            numbers.append(number)
        numbered.append((numbers[0], numbers[1]))
    return _with_parameters(moments, numbered, parameters)


def _with_parameters(
    moments: list[datetime], bounds: list[tuple[int, int]], parameters: Mapping[str, Any] | None
) -> list[Window]:
    """Windows from ``moments[first]`` to ``moments[last]`` for each pair of ``bounds``, their
    parameters rendered a whole column at a time: each bound is formatted once per format, and a
    parameter that is the bare ``{start}`` or a literal costs a list index or nothing per window."""
    if not bounds:
        return []
    formatted: dict[str | None, list[str]] = {}

    def texts(fmt: str | None) -> list[str]:
        found = formatted.get(fmt)
        if found is None:
            found = formatted[fmt] = [_format_text(moment, fmt) for moment in moments]
        return found

    names = list(parameters or ())
    with paused_gc():
        columns = [_column(template, texts, bounds) for template in (parameters or {}).values()]
        rows = zip(*columns, strict=True) if columns else itertools.repeat(())
        windows = [
            Window(moments[first], moments[last], dict(zip(names, row, strict=True)))
            for (first, last), row in zip(bounds, rows, strict=False)
        ]
        # Every preview prints or looks up each key: formatted here from the bounds, each bound
        # once (a bare {start} parameter has formatted them already), instead of twice per
        # window on first use.
        bound_texts = texts(None)
        for window, (first, last) in zip(windows, bounds, strict=True):
            object.__setattr__(window, "_key", f"{bound_texts[first]}/{bound_texts[last]}")
        return windows


def _column(template: Any, texts: Callable[[str | None], list[str]], bounds: list[tuple[int, int]]) -> list[Any]:
    """One parameter rendered for every window (what ``_render_fast`` computes for one)."""
    if isinstance(template, Secret):
        return [Secret(text) for text in _column(template.template, texts, bounds)]
    if isinstance(template, list | tuple):
        items = [_column(item, texts, bounds) for item in template]
        return [list(row) for row in zip(*items, strict=True)] if items else [[] for _ in bounds]
    if not isinstance(template, str):
        return [template] * len(bounds)
    parts = _compile(template)
    if not any(isinstance(part, tuple) for part in parts):
        return ["".join(part for part in parts if isinstance(part, str))] * len(bounds)
    if len(parts) == 1 and isinstance(parts[0], tuple):
        # The common template: one bound, nothing around it.
        values = texts(parts[0][1])
        if parts[0][0] == "start":
            return [values[first] for first, _ in bounds]
        return [values[last] for _, last in bounds]
    pieces = [
        (part, None, False) if isinstance(part, str) else ("", texts(part[1]), part[0] == "start") for part in parts
    ]
    return [
        "".join([text if values is None else values[first if is_start else last] for text, values, is_start in pieces])
        for first, last in bounds
    ]


# --- rendering ----------------------------------------------------------------------------------

# A compiled template: literal text and (field, strftime format or None) placeholders.
_Part = str | tuple[str, str | None]


@functools.lru_cache(maxsize=4096)
def _compile(template: str) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(template[position : match.start()])
        text = match.group(0)
        if text in ("{{", "}}"):
            parts.append(text[0])
        else:
            name, fmt = match.group(1), match.group(2)
            if name not in FIELDS:
                raise TemplateError(f"unknown field {{{name}}} (only {{start}} and {{end}} exist)")
            parts.append((name, fmt or None))
        position = match.end()
    parts.append(template[position:])
    return tuple(p for p in parts if p != "")


def _format(value: datetime, fmt: str | None, memo: dict[tuple[datetime, str | None], str]) -> str:
    key = (value, fmt)
    text = memo.get(key)
    if text is None:
        text = memo[key] = _format_text(value, fmt)
    return text


def _format_text(value: datetime, fmt: str | None) -> str:
    if not fmt:
        return format_utc(value)
    if "%z" in fmt or "%Z" in fmt or "%:z" in fmt:
        return value.strftime(fmt)
    # Bounds are UTC; strftime on the naive equivalent is three times faster.
    return value.replace(tzinfo=None).strftime(fmt)


def _render_fast(template: Any, start: datetime, end: datetime, memo: dict[tuple[datetime, str | None], str]) -> Any:
    if isinstance(template, str):
        pieces: list[str] = []
        for part in _compile(template):
            if isinstance(part, str):
                pieces.append(part)
            else:
                pieces.append(_format(start if part[0] == "start" else end, part[1], memo))
        return "".join(pieces)
    if isinstance(template, Secret):
        return Secret(_render_fast(template.template, start, end, memo))
    if isinstance(template, list | tuple):
        return [_render_fast(t, start, end, memo) for t in template]
    return template


def render_parameters(templates: Mapping[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    """Every parameter rendered for the window [start, end); literals pass through, Secrets stay
    Secrets (their template rendered, ``${VAR}`` left for use time)."""
    memo: dict[tuple[datetime, str | None], str] = {}
    return {name: _render_fast(template, start, end, memo) for name, template in templates.items()}


# strftime directives that render something on every platform Python documents, plus the
# common C-library ones; glibc copies any other ("%Q") literally into the parameter, silently.
STRFTIME_DIRECTIVES = frozenset("aAwdbBmyYHIpMSfzZjUWcxXGuV%" + "eCDFTRrhgklsPnt")
_DIRECTIVE = re.compile(r"%([-_0^#]?)(:?.?)", re.DOTALL)


def check_formats(template: str) -> None:
    """Raise TemplateError when a ``{start:FMT}``/``{end:FMT}`` format uses an unknown directive."""
    for match in _PLACEHOLDER.finditer(template):
        fmt = match.group(2)
        if not fmt or match.group(0) in ("{{", "}}"):
            continue
        for directive in _DIRECTIVE.finditer(fmt):
            code = directive.group(2)
            if code == "" or code == ":":
                raise TemplateError(f"a lone % at the end of the format {fmt!r}; write %% for a literal %")
            if code == ":z":
                continue
            if code not in STRFTIME_DIRECTIVES:
                raise TemplateError(
                    f"unknown strftime directive %{code} in {{{match.group(1)}:{fmt}}} "
                    "(e.g. %Y-%m-%dT%H:%M:%SZ; write %% for a literal %)"
                )


def check_template(template: str) -> None:
    """Raise TemplateError when a template names a field other than start/end, has a lone brace
    or uses an unknown strftime directive."""
    for name in template_fields(template):
        if name not in FIELDS:
            raise TemplateError(f"unknown field {{{name}}} (only {{start}} and {{end}} exist)")
    check_formats(template)
    rest = _PLACEHOLDER.sub("", _ENV_REFERENCE.sub("", template))
    if "{" in rest or "}" in rest:
        raise TemplateError("a lone { or }; write {{ or }} for a literal brace")
