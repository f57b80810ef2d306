"""The JSON shapes the emulator answers with, as the live service sends them.

Field names, nesting and value types follow ``../shared/adf-rest-examples`` (the published
examples and the recorded live exchanges): a run read by ID carries ``id``, ``debugRunId``,
``runGroupId``, ``isLatest`` and ``invokedBy.invokedByType``; activity runs carry
``iterationHash``, ``recoveryStatus``, ``integrationRuntimeNames``, ``executionDetails``, ``id``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class ApiError(Exception):
    """An answer with ADF's error shape: ``{"error": {"code", "message", "target", "details"}}``."""

    def __init__(
        self, status: int, code: str, message: str, target: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.target)


def error_body(code: str, message: str, target: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "target": target, "details": None}}


def adf_time(value: datetime | None) -> str | None:
    """ADF's timestamps: UTC, seven fractional digits, ``Z`` (``2018-06-16T00:37:44.6257014Z``)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    # isoformat (several times faster than strftime; a page has 300 times) spells the same
    # digits, and leaves the fraction out when it is zero.
    text = value.isoformat()
    return text[:-6] + "0Z" if value.microsecond else text[:-6] + ".0000000Z"


def duration_ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return int((end - start).total_seconds() * 1000)


def factory_path(subscription: str, resource_group: str, factory: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.DataFactory/factories/{factory}"
    )


def run_resource_id(factory_id: str, run_id: str) -> str:
    # The live service upper-cases everything up to the factory name in run and activity run IDs.
    return f"{factory_id.upper()}/pipelineruns/{run_id}"


def invoked_by(invoker_id: str, name: str, kind: str) -> dict[str, str]:
    return {"id": invoker_id, "name": name, "invokedByType": kind}


def activity_error(name: str, code: str = "", message: str = "", failure_type: str = "") -> dict[str, Any]:
    return {"errorCode": code, "message": message, "failureType": failure_type, "target": name, "details": ""}


def activity_run(
    *,
    factory_id: str,
    pipeline: str,
    run_id: str,
    activity_run_id: str,
    name: str,
    activity_type: str,
    status: str,
    start: datetime,
    end: datetime | None,
    error: dict[str, Any],
    output: dict[str, Any],
    recovery_status: str = "None",
) -> dict[str, Any]:
    return {
        "activityRunEnd": adf_time(end),
        "activityName": name,
        "activityRunStart": adf_time(start),
        "activityType": activity_type,
        "durationInMs": duration_ms(start, end),
        "retryAttempt": None,
        "error": error,
        "activityRunId": activity_run_id,
        "iterationHash": "",
        "input": {},
        "linkedServiceName": "",
        "output": output,
        "userProperties": {},
        "pipelineName": pipeline,
        "pipelineRunId": run_id,
        "status": status,
        "recoveryStatus": recovery_status,
        "integrationRuntimeNames": None,
        "executionDetails": None,
        "id": f"{run_resource_id(factory_id, run_id)}/activityruns/{activity_run_id}",
    }


def pipeline_resource(
    *,
    factory_id: str,
    name: str,
    activities: list[tuple[str, str]],
    parameters: dict[str, dict[str, Any]],
    description: str,
    annotations: list[str],
    concurrency: int | None,
    etag: str,
) -> dict[str, Any]:
    """A pipeline as ``pipelines/{name}`` GET returns it; activities run one after another."""
    steps: list[dict[str, Any]] = []
    for index, (activity, kind) in enumerate(activities):
        depends = [] if index == 0 else [{"activity": activities[index - 1][0], "dependencyConditions": ["Succeeded"]}]
        steps.append({"name": activity, "type": kind, "dependsOn": depends, "userProperties": [], "typeProperties": {}})
    properties: dict[str, Any] = {"activities": steps, "parameters": parameters, "variables": {}}
    if annotations:
        properties["annotations"] = annotations
    if description:
        properties["description"] = description
    if concurrency is not None:
        properties["concurrency"] = concurrency
    return {
        "id": f"{factory_id}/pipelines/{name}",
        "name": name,
        "type": "Microsoft.DataFactory/factories/pipelines",
        "properties": properties,
        "etag": etag,
    }


def factory_resource(factory_id: str, name: str, created: datetime) -> dict[str, Any]:
    return {
        "id": factory_id,
        "name": name,
        "type": "Microsoft.DataFactory/factories",
        "location": "eastus",
        "tags": {},
        "properties": {"provisioningState": "Succeeded", "createTime": adf_time(created), "version": "2018-06-01"},
        "eTag": '"00000000-0000-0000-0000-000000000000"',
    }
