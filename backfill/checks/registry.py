"""Check kinds come from the entry-point group ``backfill.checks``, built-ins included.

``BACKFILL_CHECKS`` may limit which kinds load: a comma-separated list of kind names (an empty
value enables none). A kind's module is imported only when a plan uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from backfill.checks._support import describe
from backfill.checks.base import Check, CheckKind, CheckSpec
from backfill.checks.runner import GuardedCheck
from backfill.errors import CheckError

GROUP = "backfill.checks"
LIMIT_VARIABLE = "BACKFILL_CHECKS"


def enabled_kinds(env: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The kinds ``BACKFILL_CHECKS`` allows, or None when it is not set (all installed kinds)."""
    raw = (os.environ if env is None else env).get(LIMIT_VARIABLE)
    if raw is None:
        return None
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def installed_kinds() -> dict[str, list[EntryPoint]]:
    """Every kind registered in the entry-point group, with each registration (normally one)."""
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=GROUP):
        registered = found.setdefault(entry.name, [])
        # The same distribution seen twice on sys.path registers the same target twice.
        if all(other.value != entry.value for other in registered):
            registered.append(entry)
    return found


def known_kinds(env: Mapping[str, str] | None = None) -> list[str]:
    """The kinds a plan may use here: installed and enabled."""
    limit = enabled_kinds(env)
    return sorted(name for name in installed_kinds() if limit is None or name in limit)


def _origin(entry: EntryPoint) -> str:
    dist = entry.dist
    return f"{dist.name} ({entry.value})" if dist is not None else entry.value


def load_kind(kind: str, check: str, env: Mapping[str, str] | None = None) -> CheckKind:
    """The class (or factory) registered for ``kind``; CheckError naming the check otherwise."""
    installed = installed_kinds()
    limit = enabled_kinds(env)
    known = sorted(name for name in installed if limit is None or name in limit)
    if kind not in installed:
        listed = ", ".join(known) or "none"
        raise CheckError(f"check {check!r}: unknown kind {kind!r} (known kinds: {listed})")
    if limit is not None and kind not in limit:
        raise CheckError(
            f"check {check!r}: kind {kind!r} is installed but {LIMIT_VARIABLE}={','.join(sorted(limit))} "
            f"does not enable it"
        )
    registered = installed[kind]
    if len(registered) > 1:
        # Refuse rather than guess: a shadowed check could answer "clean" for a committed window.
        origins = "; ".join(_origin(entry) for entry in registered)
        raise CheckError(f"check {check!r}: kind {kind!r} is registered more than once: {origins}")
    entry = registered[0]
    try:
        target = entry.load()
    except Exception as exc:
        raise CheckError(
            f"check {check!r}: kind {kind!r} from {_origin(entry)} failed to load: {describe(exc)}"
        ) from None
    if not callable(target):
        raise CheckError(f"check {check!r}: kind {kind!r} from {_origin(entry)} is not a class")
    kind_class: CheckKind = target
    return kind_class


def build_check(spec: CheckSpec, env: Mapping[str, str] | None = None) -> GuardedCheck:
    """Construct one check (validating its options) and guard it with its timeout."""
    kind = load_kind(spec.kind, spec.name, env)
    try:
        check = kind(spec)
    except CheckError:
        raise
    except Exception as exc:
        raise CheckError(f"check {spec.name!r}: kind {spec.kind!r} refused its options: {describe(exc)}") from None
    if not callable(getattr(check, "evaluate", None)):
        raise CheckError(f"check {spec.name!r}: kind {spec.kind!r} built an object without evaluate(window)")
    if getattr(check, "name", None) != spec.name:
        raise CheckError(f"check {spec.name!r}: kind {spec.kind!r} built a check without the name {spec.name!r}")
    return GuardedCheck(check, spec.timeout, spec.options)


def build_checks(
    specs: Iterable[CheckSpec], *, base_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> list[Check]:
    """Construct every check of a plan. ``base_dir`` (the plan's folder) applies to specs that
    do not carry their own, for ``query_file`` and command paths."""
    checks: list[Check] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise CheckError(f"check {spec.name!r} is defined twice; check names must be unique")
        seen.add(spec.name)
        if spec.base_dir is None and base_dir is not None:
            spec = replace(spec, base_dir=base_dir)
        checks.append(build_check(spec, env))
    return checks
