"""Plans and their preview: check a plan, sync its pipeline's history, and decide every window.

``preview_plan`` is the one preview of ``preview``, ``request`` and ``run``: sync the history,
load it, build the checks, compute the decisions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backfill.errors import ConfigError
from backfill.gcpause import paused_gc
from backfill.services.common import connect_factory, database_for
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from backfill.checks.base import Check
    from backfill.factory.protocol import Factory
    from backfill.history import SyncResult
    from backfill.plan.loader import LoadedPlan
    from backfill.preview import Preview
    from backfill.store.database import Database
    from backfill.store.history import HistoryView


def check_plan(path: str | Path, *, check_env: bool = False, env: Mapping[str, str] | None = None) -> LoadedPlan:
    """Load and validate PLAN, its checks' definitions included (nothing connects); with
    ``check_env``, also refuse the ``${VAR}``s it needs that ``env`` does not set."""
    from backfill.plan.loader import load_plan

    loaded = load_plan(path)
    verify_checks(loaded)
    if check_env:
        require_environment(loaded, os.environ if env is None else env)
    return loaded


def verify_checks(loaded: LoadedPlan) -> None:
    """Build every check as ``preview`` would (nothing connects): a refusal names file and check."""
    from backfill.checks.registry import build_checks
    from backfill.errors import CheckError, PlanError

    for index, spec in enumerate(loaded.check_specs):
        try:
            build_checks([spec], base_dir=loaded.path.parent)
        except CheckError as exc:
            raise PlanError(str(loaded.path), f"checks[{index}]", str(exc)) from None


def require_environment(loaded: LoadedPlan, env: Mapping[str, str]) -> None:
    """Refuse, in one line naming each and its first use, the ``${VAR}``s that are not set."""
    from backfill.plan.loader import plan_variables

    unset = [f"{name} ({where})" for name, where in plan_variables(loaded) if name not in env]
    if unset:
        noun = "variable is" if len(unset) == 1 else "variables are"
        raise ConfigError(f"{loaded.path}: environment {noun} not set: {', '.join(unset)}")


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of plan files (for editors)."""
    from backfill.plan.schema import Plan

    document = Plan.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "backfill plan"
    return document


# --- history and preview ---------------------------------------------------------------------


class Sync(Enum):
    """How ``preview_plan`` brings the history cache up to date first."""

    NONE = "none"  # the cache as it is (preview --no-sync)
    TARGET = "target"  # read the target pipeline (refusing a wrong plan), then sync: preview, request
    # Sync with the plan's secrets only: run; the target was read, and the pipeline's secure
    # parameters remembered, when the backfill was requested.
    HISTORY = "history"


@dataclass(frozen=True)
class PlanSync:
    pipeline: str
    result: SyncResult


@dataclass(frozen=True)
class PlanPreview:
    loaded: LoadedPlan
    preview: Preview
    history: HistoryView
    checks: Sequence[Check]
    synced: SyncResult | None  # None: not synced (Sync.NONE)
    synced_from: datetime  # when the sync began: the runner re-reads what changed since (spec §14)


def history_sync(path: str | Path, *, db: Database | None = None) -> PlanSync:
    """Fetch the runs of PLAN's pipeline that changed since the last sync into the cache."""
    from backfill.plan.loader import load_plan
    from backfill.target import sync_for_plan

    loaded = load_plan(path)
    with database_for(db) as database:
        result, _ = sync_for_plan(database, connect_factory(loaded.ref), loaded)
    return PlanSync(loaded.pipeline, result)


def preview_plan(
    loaded: LoadedPlan, *, sync: Sync = Sync.TARGET, db: Database | None = None, factory: Factory | None = None
) -> PlanPreview:
    """Sync the history, load it, build the checks and decide every window: the one preview of
    ``preview``, ``request`` and ``run``."""
    with paused_gc(freeze=True):  # imports: nothing for the collector to find (see backfill.cli.main)
        from backfill.checks.registry import build_checks
        from backfill.history import sync_history
        from backfill.masking import plan_secrets
        from backfill.matching import match_fields
        from backfill.preview import compute_preview
        from backfill.store.history import load_history
        from backfill.target import sync_for_plan

    # Built before any network call, so a wrong check definition fails fast.
    checks = build_checks(loaded.check_specs, base_dir=loaded.path.parent)
    with database_for(db) as database:
        synced_from = utcnow()
        synced: SyncResult | None = None
        if sync is Sync.TARGET:
            synced, _ = sync_for_plan(database, factory or connect_factory(loaded.ref), loaded)
        elif sync is Sync.HISTORY:
            secret = plan_secrets(loaded.plan.parameters)
            fields = match_fields(loaded.windows, loaded.match_on)
            synced = sync_history(
                database, factory or connect_factory(loaded.ref), loaded.pipeline, secret=secret, key_fields=fields
            )
        history = load_history(database, loaded.ref, loaded.pipeline)
        preview = compute_preview(loaded, history, checks)
    return PlanPreview(loaded, preview, history, checks, synced, synced_from)


def preview_plan_file(path: str | Path, *, sync: bool = True, db: Database | None = None) -> PlanPreview:
    """``preview_plan`` of the plan file at ``path`` (``sync=False``: the cache as it is)."""
    with paused_gc(freeze=True):  # pydantic's import, the plan's models
        from backfill.plan.loader import load_plan

    return preview_plan(load_plan(path), sync=Sync.TARGET if sync else Sync.NONE, db=db)
