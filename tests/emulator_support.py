"""Raw HTTPS requests to the emulator (no SDK), for conformance and protocol tests."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any, Protocol
from urllib.parse import urlencode

from backfill.emulator import Scenario
from backfill.emulator.wire import factory_path


class Target(Protocol):
    """An Emulator, or the settings a ``serve`` process printed."""

    @property
    def ca_file(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def scenario(self) -> Scenario: ...


def factory_url(emu: Target, rest: str = "") -> str:
    scenario = emu.scenario
    base = factory_path(scenario.subscription_id, scenario.resource_group, scenario.factory)
    return f"{base}/{rest}" if rest else base


def call(
    emu: Target,
    method: str,
    path: str,
    body: Any = None,
    *,
    query: dict[str, str] | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    api_version: str | None = "2018-06-01",
) -> tuple[int, dict[str, str], Any]:
    """Send one request over HTTPS, trusting only the emulator's CA; returns status, headers, JSON."""
    context = ssl.create_default_context(cafile=emu.ca_file)
    connection = http.client.HTTPSConnection("127.0.0.1", emu.port, context=context, timeout=10)
    params = dict(query or {})
    if api_version is not None:
        params["api-version"] = api_version
    target = f"{path}?{urlencode(params)}" if params else path
    sent = {"Authorization": f"Bearer {emu.token if token is None else token}", **(headers or {})}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    try:
        connection.request(method, target, body=payload, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        answer = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    return response.status, answer, json.loads(raw) if raw else None


def shape(value: Any) -> Any:
    """Keys and value types of a JSON value, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


# Objects whose keys are the user's or the activity's own: only their type is compared.
FREE_FORM = {
    "parameters",
    "runDimension",
    "input",
    "output",
    "userProperties",
    "typeProperties",
    "variables",
    "activities",
}


def shape_differences(expected: Any, actual: Any, allowed_extra: set[str] | None = None, where: str = "") -> list[str]:
    """Where ``actual`` lacks a key of ``expected`` or has another type; extra keys are reported
    unless listed in ``allowed_extra`` (by name, at any depth)."""
    problems: list[str] = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{where}.{key} missing")
            elif key in FREE_FORM:
                if type(actual[key]) is not type(value):
                    problems.append(f"{where}.{key}: {shape(actual[key])} where the service sends {shape(value)}")
            else:
                problems += shape_differences(value, actual[key], allowed_extra, f"{where}.{key}")
        for key in actual.keys() - expected.keys():
            if allowed_extra is None or key not in allowed_extra:
                problems.append(f"{where}.{key} not sent by the service")
        return problems
    if isinstance(expected, list) and isinstance(actual, list):
        if expected and actual:
            problems += shape_differences(expected[0], actual[0], allowed_extra, f"{where}[0]")
        return problems
    if shape(expected) != shape(actual):
        problems.append(f"{where}: {shape(actual)} where the service sends {shape(expected)}")
    return problems
