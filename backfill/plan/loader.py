"""Plans: load a TOML (or JSON) file, validate it, hash it, and cut it into windows (spec §3).

Every way a plan can be wrong ends in one ``PlanError`` line naming the file, the dotted key and
what is expected. ``${VAR}`` references stay unexpanded here: they are read at use time only, so
neither loading nor the hash depends on the environment.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from backfill.checks.base import CheckSpec
from backfill.errors import PlanError
from backfill.factory.protocol import FactoryRef
from backfill.plan.fields import max_windows_limit, show
from backfill.plan.relative import resolve_relative_windows
from backfill.plan.schema import (
    Approval,
    CheckModel,
    Execution,
    MatchSpec,
    Plan,
    Target,
    WindowsSpec,
)
from backfill.secrets import Secret, variables_in
from backfill.timeutil import utcnow
from backfill.windows import Window, explicit_windows, generate_windows

__all__ = [
    "LoadedPlan",
    "Plan",
    "canonical_json",
    "load_plan",
    "plan_from_data",
    "plan_hash",
    "plan_variables",
    "read_plan_file",
]

_SECTIONS: dict[str, type[BaseModel]] = {
    "": Plan,
    "target": Target,
    "windows": WindowsSpec,
    "match": MatchSpec,
    "approval": Approval,
    "execution": Execution,
}


@dataclass(frozen=True)
class LoadedPlan:
    """A validated plan, its canonical hash and its windows (sorted by start)."""

    path: Path
    plan: Plan
    hash: str
    windows: tuple[Window, ...]
    match_on: tuple[str, ...]
    check_specs: tuple[CheckSpec, ...]
    ref: FactoryRef
    pipeline: str
    # Window bounds written relative to now ("windows.start" -> "yesterday 00:00Z"), resolved
    # against ``resolved_at``; empty for a plan of absolute times.
    relative: Mapping[str, str] = field(default_factory=dict)
    resolved_at: datetime | None = None

    @cached_property
    def windows_by_key(self) -> dict[str, Window]:
        return {window.key: window for window in self.windows}


def load_plan(
    path: str | Path,
    *,
    max_windows: int | None = None,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> LoadedPlan:
    """Read, validate and window a plan file; raise PlanError naming file, key and expectation.

    ``max_windows`` defaults to ``BACKFILL_MAX_WINDOWS`` from ``env`` (the process environment
    when None), else 100,000. Window bounds written relative to now (``"yesterday 00:00Z"``)
    resolve against ``now`` (default: the current time); ``run`` passes the request's time.
    """
    data = read_plan_file(path)
    return plan_from_data(
        data, path=path, max_windows=max_windows, env=env, base_dir=Path(path).resolve().parent, now=now
    )


def read_plan_file(path: str | Path) -> dict[str, Any]:
    """The raw table of a ``.toml`` or ``.json`` plan file."""
    where = str(path)
    file = Path(path)
    if file.suffix.lower() not in (".toml", ".json"):
        raise PlanError(where, "", "expected a .toml or .json plan file")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(where, "", "no such file") from None
    except IsADirectoryError:
        raise PlanError(where, "", "is a directory, expected a plan file") from None
    except UnicodeDecodeError:
        raise PlanError(where, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise PlanError(where, "", f"cannot be read ({exc.strerror or exc})") from None
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(where, "", f"invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PlanError(where, "", "expected a JSON object at the top level")
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(where, "", f"invalid TOML: {exc}") from None


def plan_from_data(
    data: Mapping[str, Any],
    *,
    path: str | Path = "<plan>",
    max_windows: int | None = None,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    now: datetime | None = None,
) -> LoadedPlan:
    """Validate an already parsed plan table (TOML types, or JSON with times as strings).

    ``base_dir`` is where checks resolve relative files (``query_file``); None: the working
    directory."""
    where = str(path)
    limit = max_windows_limit(max_windows, env)
    resolved_at = now or utcnow()
    data, relative = resolve_relative_windows(where, data, resolved_at)
    try:
        plan = Plan.model_validate(dict(data), context={"max_windows": limit})
    except ValidationError as exc:
        key, expected = _first_error(exc)
        # Keys may be quoted TOML keys with any character; the message must stay one line.
        raise PlanError(where, _one_line(key), _one_line(expected)) from None
    windows = _windows(plan)
    match_on = plan.match_on
    _require_distinct(where, windows, match_on, plan.parameters)
    target = plan.target
    return LoadedPlan(
        path=Path(path),
        plan=plan,
        hash=plan_hash(plan, _query_file_digests(where, plan, base_dir), relative),
        windows=tuple(windows),
        match_on=match_on,
        check_specs=tuple(_check_spec(check, base_dir) for check in plan.checks),
        ref=FactoryRef(target.subscription_id, target.resource_group, target.factory),
        pipeline=target.pipeline,
        relative=relative,
        resolved_at=resolved_at if relative else None,
    )


def plan_variables(loaded: LoadedPlan) -> list[tuple[str, str]]:
    """Every ``${VAR}`` the plan needs, with the first key that uses it, in file order."""
    found: dict[str, str] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, Secret):
            value = value.template
        if isinstance(value, str):
            for name in variables_in(value):
                found.setdefault(name, where)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    for name, value in loaded.plan.parameters.items():
        walk(value, f"parameters.{name}")
    for index, spec in enumerate(loaded.check_specs):
        walk(dict(spec.options), f"checks[{index}]")
    return list(found.items())


def canonical_json(plan: Plan) -> str:
    """The plan's semantic content as compact JSON: sorted keys, UTC ``Z`` times, durations in
    their exact short form, order-free lists sorted. Also a valid ``.json`` plan."""
    data = plan.model_dump(mode="json", by_alias=True)
    data["match"]["on"] = sorted(plan.match_on)
    data["approval"]["approvers"] = sorted(data["approval"]["approvers"])
    # Added with spec §15: a plan without aliases keeps the hash it had before they existed.
    if not data["approval"].get("aliases"):
        data["approval"].pop("aliases", None)
    else:
        data["approval"]["aliases"] = {k: sorted(v) for k, v in data["approval"]["aliases"].items()}
    if data["execution"].get("settle") is None:
        # Unset, it is not part of the meaning: plans written before the key keep their hash.
        data["execution"].pop("settle", None)
    if not data.get("notify", {}).get("targets"):
        # Added with issue 15: a plan naming no webhook keeps the hash it had before [notify].
        data.pop("notify", None)
    if data["windows"]["list"] is not None:
        data["windows"]["list"] = sorted(data["windows"]["list"])
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def plan_hash(
    plan: Plan, query_files: Mapping[str, str] | None = None, relative: Mapping[str, str] | None = None
) -> str:
    """sha256 hex of ``canonical_json``: comments, layout, key order and ``15m`` vs ``900s`` do
    not change it; any change of meaning does. ``query_files`` (check key -> sha256 of the file's
    bytes) joins the hashed JSON, so editing a check's SQL file after approval changes the hash."""
    text = canonical_json(plan)
    if relative:
        # The hash is of what the file says: "yesterday 00:00Z", not the day it resolved to, so
        # the same text hashes the same on any day. The request records the resolved windows.
        text = _with_relative_text(text, relative)
    if query_files:
        # Only plans that name query files get the extra key: every other plan keeps its hash.
        data = json.loads(text)
        data["query_files"] = dict(query_files)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _with_relative_text(text: str, relative: Mapping[str, str]) -> str:
    data = json.loads(text)
    for dotted, written in relative.items():
        data["windows"][dotted.split(".", 1)[1]] = written
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _query_file_digests(where: str, plan: Plan, base_dir: Path | None) -> dict[str, str]:
    """sha256 of every ``query_file`` (and ``expect.query_file``) the checks name, by plan key."""
    digests: dict[str, str] = {}
    for index, check in enumerate(plan.checks):
        options = check.options
        expect = options.get("expect")
        named = [(f"checks[{index}].query_file", options.get("query_file"))]
        if isinstance(expect, dict):
            named.append((f"checks[{index}].expect.query_file", expect.get("query_file")))
        for key, written in named:
            # A non-string value is left to the check kind's own validation (CheckError).
            if not isinstance(written, str) or not written.strip():
                continue
            file = Path(written).expanduser()
            if not file.is_absolute() and base_dir is not None:
                file = base_dir / file
            try:
                digests[key] = hashlib.sha256(file.read_bytes()).hexdigest()
            except FileNotFoundError:
                raise PlanError(where, key, f"{file} does not exist; expected a SQL file") from None
            except OSError as exc:
                raise PlanError(where, key, f"{file} cannot be read ({exc.strerror or exc})") from None
    return digests


def _windows(plan: Plan) -> list[Window]:
    spec = plan.windows
    if spec.list_ is not None:
        return explicit_windows(spec.list_, plan.parameters)
    assert spec.start is not None and spec.end is not None and spec.every is not None
    return generate_windows(spec.start, spec.end, spec.every, plan.parameters)


def _require_distinct(
    where: str, windows: list[Window], match_on: tuple[str, ...], templates: Mapping[str, Any]
) -> None:
    # Two windows with equal matched parameters would claim each other's runs in history.
    if any(templates.get(name) in ("{start}", "{end}") for name in match_on) and not any(
        window.start.microsecond or window.end.microsecond for window in windows
    ):
        # Windows never share a start or an end (they would overlap), and a bare {start} or {end}
        # renders a whole-second bound as its own text: nothing to compare.
        return
    try:
        # Plain values (the usual strings) are checked in one pass; lists and secrets, and any
        # duplicate, take the loop below, which names the two windows.
        identities = {tuple([window.parameters[name] for name in match_on]) for window in windows}
        if len(identities) == len(windows):
            return
    except TypeError:
        pass
    seen: dict[tuple[Any, ...], Window] = {}
    for window in windows:
        identity = tuple(_hashable(window.parameters[name]) for name in match_on)
        other = seen.setdefault(identity, window)
        if other is not window:
            if not match_on:
                raise PlanError(where, "match.on", "expected at least one parameter that differs between windows")
            names = ", ".join(match_on)
            raise PlanError(
                where,
                "match.on",
                f"windows {other.key} and {window.key} render the same matched parameters ({names}); "
                "match on a parameter that differs per window",
            )


def _hashable(value: Any) -> Any:
    return tuple(_hashable(item) for item in value) if isinstance(value, list | tuple) else value


def _check_spec(check: CheckModel, base_dir: Path | None) -> CheckSpec:
    return CheckSpec(name=check.name, kind=check.kind, options=check.options, timeout=check.timeout, base_dir=base_dir)


# --- pydantic errors as one line ----------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def _first_error(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "plan_rule":
        return _dotted((*loc, ctx["key"])) if loc else ctx["key"], str(ctx["detail"])
    key = _dotted(loc)
    if kind == "plan_value":
        return key, str(ctx["detail"])
    if kind == "missing":
        return key, "is required"
    if kind == "extra_forbidden":
        model = _SECTIONS.get(_dotted(loc[:-1]))
        if model is None:
            return key, "unknown key"
        names = ", ".join(sorted(f.alias or name for name, f in model.model_fields.items()))
        return key, f"unknown key; expected one of {names}"
    return key, f"expected {_expectation(kind, ctx, error['msg'])}, got {show(value)}"


def _expectation(kind: str, ctx: Mapping[str, Any], message: str) -> str:
    if kind == "literal_error":
        return str(ctx["expected"]).replace("'", '"')
    if kind in ("greater_than_equal", "greater_than"):
        sign = ">=" if kind == "greater_than_equal" else ">"
        bound = ctx.get("ge", ctx.get("gt"))
        return f"a whole number {sign} {bound}"
    if kind == "string_too_short":
        return "a non-empty string"
    simple = {
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "string_type": "a string",
        "bool_type": "true or false",
        "list_type": "an array",
        "dict_type": "a table",
        "model_type": "a table",
        "model_attributes_type": "a table",
    }
    if kind in simple:
        return simple[kind]
    prefix = "Input should be "
    return message[len(prefix) :] if message.startswith(prefix) else message[:1].lower() + message[1:]
