"""The factory adapter: our Run values, the Factory protocol and the SDK-backed client."""

from backfill.factory.protocol import Factory, FactoryRef
from backfill.factory.run import ActivityRun, PipelineInfo, Run, RunStatus

__all__ = ["ActivityRun", "Factory", "FactoryRef", "PipelineInfo", "Run", "RunStatus"]
