"""The request sealed in the chain: the inputs that shape a ``createRun`` or a check (spec §15).

``request`` records, in its ``backfill.requested`` event, a hash of every input that can change
what a run sends or what a check answers without changing the plan file: each ``query_file``, each
``command`` check's program (and any script file its arguments name), and the value of each
``${VAR}`` the parameters use. ``run`` recomputes them from the plan named by the event (never by
the mutable ``backfills`` row) and refuses, naming the input, when any differs.

A ``${VAR}`` value is recorded as ``sha256(salt, name, value)`` with a random salt per request:
never the value, and no table of precomputed hashes matches it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backfill.errors import BackfillError, ConfigError
from backfill.secrets import Secret, variables_in

if TYPE_CHECKING:
    from backfill.checks.base import CheckSpec
    from backfill.plan.loader import LoadedPlan

# Option names that name a file a check reads, at the top level or inside ``expect``.
_FILE_OPTIONS = ("query_file",)


@dataclass(frozen=True)
class Seal:
    """What the request event holds: a salt and input name -> hash."""

    salt: str
    inputs: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        # A list of pairs, not a table keyed by input: the ledger masks values under keys named
        # like credentials, and ``${SOURCE_API_KEY} used by parameters`` is such a name.
        return {"salt": self.salt, "inputs": [{"input": k, "sha256": v} for k, v in self.inputs.items()]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Seal:
        items = data.get("inputs", [])
        inputs = (
            {str(i["input"]): str(i["sha256"]) for i in items if isinstance(i, Mapping)}
            if isinstance(items, list)
            else {}
        )
        return cls(str(data.get("salt", "")), inputs)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


def _resolve(spec: CheckSpec, written: str) -> Path:
    path = Path(written).expanduser()
    if not path.is_absolute() and spec.base_dir is not None:
        path = spec.base_dir / path
    return path


def _command_files(spec: CheckSpec) -> Iterator[tuple[str, Path]]:
    """The program a command check starts and the existing files its arguments name: replacing
    ``check.py`` in ``["python3", "check.py"]`` changes the check as much as replacing python."""
    value = spec.options.get("command")
    if isinstance(value, str):
        try:
            parts: list[Any] = shlex.split(value)
        except ValueError:
            return
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        return
    for index, part in enumerate(parts):
        if not isinstance(part, str) or not part or "{" in part:
            continue
        if index == 0 and os.sep not in part and not (os.altsep and os.altsep in part):
            found = shutil.which(part)
            if found:
                yield f"check {spec.name}: program {part}", Path(found).resolve()
            continue
        # The program resolves against the plan's folder (as the check starts it); an argument is
        # opened by the program itself, from the working directory.
        path = _resolve(spec, part) if index == 0 else Path(part).expanduser().absolute()
        if path.is_file():
            what = "program" if index == 0 else "file"
            yield f"check {spec.name}: {what} {part}", path.resolve()


def _check_files(spec: CheckSpec) -> Iterator[tuple[str, Path]]:
    options = spec.options
    tables: list[tuple[str, Mapping[str, Any]]] = [("", options)]
    expect = options.get("expect")
    if isinstance(expect, Mapping):
        tables.append(("expect.", expect))
    for prefix, table in tables:
        for option in _FILE_OPTIONS:
            written = table.get(option)
            if isinstance(written, str) and written.strip():
                yield f"check {spec.name}: {prefix}{option} {written}", _resolve(spec, written)
    if spec.kind == "command":
        yield from _command_files(spec)


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, Secret):
        yield value.template
    elif isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk_strings(item)


def parameter_variables(loaded: LoadedPlan) -> list[str]:
    """The ``${VAR}`` names the plan's parameters use, in first-use order."""
    names: dict[str, None] = {}
    for text in _walk_strings(dict(loaded.plan.parameters)):
        names.update(dict.fromkeys(variables_in(text)))
    return list(names)


PARTS = ("parameters", "checks")


def required_variables(loaded: LoadedPlan, parts: tuple[str, ...] = PARTS) -> dict[str, list[str]]:
    """Every ``${VAR}`` the plan needs (parameters, check connections and args), with where."""
    needed: dict[str, list[str]] = {}
    for name, value in loaded.plan.parameters.items() if "parameters" in parts else ():
        for text in _walk_strings(value):
            for var in variables_in(text):
                needed.setdefault(var, []).append(f"parameters.{name}")
    for spec in loaded.check_specs if "checks" in parts else ():
        for option, value in spec.options.items():
            for text in _walk_strings(value):
                for var in variables_in(text):
                    needed.setdefault(var, []).append(f"check {spec.name}: {option}")
    return needed


def require_variables(
    loaded: LoadedPlan, env: Mapping[str, str] | None = None, *, when: str, parts: tuple[str, ...] = PARTS
) -> None:
    """One ConfigError line naming every unset ``${VAR}`` the plan needs (issue 9 #10)."""
    source = os.environ if env is None else env
    missing = {name: where for name, where in required_variables(loaded, parts).items() if name not in source}
    if not missing:
        return
    listed = "; ".join(f"{name} (used by {', '.join(dict.fromkeys(where))})" for name, where in missing.items())
    noun = "variable" if len(missing) == 1 else "variables"
    raise ConfigError(f"{loaded.path}: {when}: environment {noun} not set: {listed}")


def _variable_digest(salt: str, name: str, value: str) -> str:
    return hashlib.sha256(f"{salt}\0{name}\0{value}".encode()).hexdigest()


def compute_inputs(loaded: LoadedPlan, salt: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Input name -> hash for everything sealed with a request (see the module docstring)."""
    source = os.environ if env is None else env
    inputs: dict[str, str] = {}
    for spec in loaded.check_specs:
        for name, path in _check_files(spec):
            inputs[name] = _file_digest(path)
    for var in parameter_variables(loaded):
        value = source.get(var)
        inputs[f"${{{var}}} used by parameters"] = "unset" if value is None else _variable_digest(salt, var, value)
    return inputs


def seal_request(loaded: LoadedPlan, env: Mapping[str, str] | None = None) -> Seal:
    """The seal ``request`` records with the request event."""
    salt = secrets.token_hex(16)
    return Seal(salt, compute_inputs(loaded, salt, env))


def verify_seal(backfill_id: str, seal: Seal, loaded: LoadedPlan, env: Mapping[str, str] | None = None) -> None:
    """Raise, naming the first changed input, unless every sealed input hashes as it did."""
    now = compute_inputs(loaded, seal.salt, env)
    for name in sorted(set(seal.inputs) | set(now)):
        if seal.inputs.get(name) != now.get(name):
            state = "is new" if name not in seal.inputs else "is gone" if name not in now else "changed"
            raise BackfillError(f"{backfill_id}: {name} {state} since the request was approved; make a new request")
