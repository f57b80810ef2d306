"""The plan's target pipeline as the factory declares it (issue 9, items 3 and 5).

``preview`` and ``request`` read the pipeline once (one API call) before anything else talks to
the factory: a plan naming a pipeline that does not exist, a parameter the pipeline does not
declare, or a required parameter the plan leaves out is refused here, not at ``run`` after
approval. The pipeline's ``SecureString`` parameters join the plan's secrets for masking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backfill.errors import FactoryError, PlanError
from backfill.factory.protocol import Factory
from backfill.factory.run import PipelineInfo
from backfill.masking import declared_secrets, plan_secrets

if TYPE_CHECKING:
    from backfill.history import SyncResult
    from backfill.plan.loader import LoadedPlan
    from backfill.store.database import Database

_NOT_FOUND = {"EntityNotFound", "NotFound", "ResourceNotFound", "PipelineNotFound"}


def read_target(factory: Factory, loaded: LoadedPlan) -> PipelineInfo:
    """Get the plan's pipeline and compare its declared parameters with the plan's."""
    where = str(loaded.path)
    try:
        info = factory.get_pipeline(loaded.pipeline)
    except FactoryError as exc:
        if exc.status == 404 or exc.code in _NOT_FOUND:
            raise PlanError(
                where,
                "target.pipeline",
                f"pipeline {loaded.pipeline!r} does not exist in factory {factory.ref.factory!r} "
                f"(resource group {factory.ref.resource_group!r})",
            ) from None
        raise
    compare_parameters(where, loaded.pipeline, loaded.plan.parameters, info)
    return info


def compare_parameters(where: str, pipeline: str, parameters: Mapping[str, Any], info: PipelineInfo) -> None:
    """Unknown names refused; a declared parameter without a default that the plan omits refused."""
    names = list(parameters)
    declared = info.parameters
    shown = ", ".join(sorted(declared)) or "none"
    for name in names:
        if name not in declared:
            expected = f"pipeline {pipeline!r} declares no parameter {name!r} (it declares: {shown})"
            raise PlanError(where, f"parameters.{name}", expected)
    missing = sorted(name for name in declared if name not in info.defaults and name not in names)
    if missing:
        raise PlanError(
            where,
            "parameters",
            f"pipeline {pipeline!r} requires {', '.join(repr(m) for m in missing)} (no default value), "
            "which the plan does not set",
        )


def secret_parameters(loaded: LoadedPlan, info: PipelineInfo | None) -> frozenset[str]:
    """Names whose values are masked: the plan's secrets and the pipeline's secure parameters."""
    return plan_secrets(loaded.plan.parameters) | declared_secrets(info)


def sync_for_plan(db: Database, factory: Factory, loaded: LoadedPlan) -> tuple[SyncResult, PipelineInfo]:
    """Check the target pipeline, then sync its history with every secret parameter masked."""
    from backfill.history import sync_history
    from backfill.matching import match_fields

    info = read_target(factory, loaded)
    # The preview's key set, so the sync writes each batch's keys (issue 14).
    fields = match_fields(loaded.windows, loaded.match_on)
    secret = secret_parameters(loaded, info)
    return sync_history(db, factory, loaded.pipeline, secret=secret, key_fields=fields), info
