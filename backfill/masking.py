"""Secret run parameters never reach the history cache or a screen (issue 9, item 3).

ADF echoes every parameter a run was created with, so a value sent as ``{ secret = "${VAR}" }``
comes back in run history. A parameter is secret when any plan marks it so (the names are kept
per pipeline in the history cache, see ``backfill.store.history``) or when the pipeline declares
it ``SecureString``. Its value is replaced by ``***`` before a run is cached, listed, shown,
exported or reported. Secrets are never matched on (the plan refuses that), so masking the
cached copy loses nothing a preview needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from backfill.factory.run import PipelineInfo, Run
from backfill.secrets import REDACTED, Secret

# ADF's types for values it keeps out of its own logs.
SECURE_TYPES = frozenset({"securestring", "secureobject"})


def declared_secrets(info: PipelineInfo | None) -> frozenset[str]:
    """The parameters the pipeline declares secure."""
    if info is None:
        return frozenset()
    return frozenset(name for name, kind in info.parameters.items() if kind.lower() in SECURE_TYPES)


def plan_secrets(parameters: Mapping[str, Any]) -> frozenset[str]:
    """The parameters a plan sends as ``{ secret = ... }``."""
    return frozenset(name for name, value in parameters.items() if isinstance(value, Secret))


def mask_parameters(parameters: Mapping[str, Any], secret: Collection[str]) -> dict[str, Any]:
    return {name: REDACTED if name in secret else value for name, value in parameters.items()}


def mask_run(run: Run, secret: Collection[str]) -> Run:
    """The run with the values of its secret parameters replaced (the same run when none are)."""
    if not secret or not any(name in secret and value != REDACTED for name, value in run.parameters.items()):
        return run
    return dataclasses.replace(run, parameters=mask_parameters(run.parameters, secret))
