"""The emulator's HTTPS server: ARM routing, bearer-token check, faults and the request log.

One thread per connection (keep-alive, as the SDK's connection pool expects); TLS is negotiated
in that thread so a slow client never blocks the accept loop. Every request is logged, including
the ones a fault answered or dropped, with whether a write took effect.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from backfill.emulator.faults import Fault, FaultSet
from backfill.emulator.query import RunQueries, activity_runs
from backfill.emulator.state import FactoryState
from backfill.emulator.throttle import ServiceLimits, retry_after
from backfill.emulator.tokens import TokenIssuer
from backfill.emulator.wire import ApiError, error_body, factory_resource, pipeline_resource
from backfill.timeutil import utcnow

API_VERSION = "2018-06-01"
_ARM = re.compile(
    r"^/subscriptions/([^/]+)/resourcegroups/([^/]+)/providers/microsoft\.datafactory/factories/([^/]+)(?:/(.*))?$",
    re.IGNORECASE,
)
# The continuationToken a repeat-token fault hands back: the same one, page after page.
LOOP_TOKEN = "emulator-repeating-token"
_ERROR_CODES = {
    400: "BadRequest",
    404: "NotFound",
    409: "Conflict",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass(frozen=True)
class LoggedRequest:
    at: datetime
    method: str
    operation: str
    path: str
    query: dict[str, str]
    body: Any
    status: int | None  # None: the connection was dropped without an answer
    fault: str | None = None  # the kind of fault injected, if any
    effect: bool | None = None  # for writes: whether it took effect (a run was created, cancelled)
    run_id: str | None = None
    elapsed_ms: float = 0.0


class RequestLog:
    """Every request the emulator saw, oldest first (bounded, for long-running servers)."""

    def __init__(self, limit: int = 500_000) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, operation: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [e for e in self._entries if operation is None or e.operation == operation]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def route(method: str, rest: str) -> tuple[str, list[str]] | None:
    """The operation for a path below the factory, and its path arguments."""
    parts = [unquote(p) for p in rest.split("/")] if rest else []
    lowered = [p.lower() for p in parts]
    table: list[tuple[str, list[str | None], str]] = [
        ("GET", [], "getFactory"),
        ("GET", ["pipelines"], "listPipelines"),
        ("GET", ["pipelines", None], "getPipeline"),
        ("POST", ["pipelines", None, "createrun"], "createRun"),
        ("POST", ["querypipelineruns"], "queryPipelineRuns"),
        ("GET", ["pipelineruns", None], "getPipelineRun"),
        ("POST", ["pipelineruns", None, "cancel"], "cancelPipelineRun"),
        ("POST", ["pipelineruns", None, "queryactivityruns"], "queryActivityRuns"),
    ]
    for verb, shape, name in table:
        if (
            verb == method
            and len(shape) == len(parts)
            and all(s is None or s == p for s, p in zip(shape, lowered, strict=True))
        ):
            return name, [parts[i] for i, s in enumerate(shape) if s is None]
    return None


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    effect: bool | None = None
    run_id: str | None = None
    raw: bytes | None = None  # a body sent as is (a malformed answer), instead of ``body`` as JSON


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, state: FactoryState, faults: FaultSet, token: str, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.state = state
        self.queries = RunQueries(state)
        self.faults = faults
        self.token = token
        self.context = context
        self.log = RequestLog()
        self.limits: ServiceLimits = state.scenario.limits
        self.reads = self.limits.bucket()
        # The token issuer's discovery documents, served without a bearer token (emulator.tokens).
        self.issuer: TokenIssuer | None = None
        self.errors: list[str] = []  # tracebacks of requests the emulator itself failed
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(10)
            # Without it Nagle holds a response's last segment until the client's delayed ACK
            # (~40 ms a request): every figure measured against the emulator would be that stall.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self._connections_lock:
            self._connections.add(connection)
        try:
            Handler(connection, client_address, self)
        except (OSError, ssl.SSLError):
            pass  # the client went away; nothing to answer
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connection-level errors are the client's business; requests are logged

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "backfill-emulator"
    sys_version = ""
    # Idle keep-alive connections close after this. Long, because a client whose pooled connection
    # is closed just as it sends a createRun would see a lost answer (effect unknown).
    timeout = 600
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log records everything

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        began = time.monotonic()
        at = utcnow()
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            # The client died mid-request (kill -9 between headers and body): the service never
            # sees a request cut short, so neither do we (nor our request log).
            self.close_connection = True
            return
        issued = self.server.issuer.answer(url.path) if self.server.issuer and method == "GET" else None
        if issued is not None:
            self._send(Answer(200, issued))
            return
        operation, args = "unknown", list[str]()
        match = _ARM.match(url.path)
        if match:
            found = route(method, match.group(4) or "")
            if found:
                operation, args = found
        body: Any = None
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        fault: Fault | None = None
        answer: Answer | None = None
        dropped = False
        try:
            self._check(match, operation, query)
            if self.server.limits.latency:
                time.sleep(self.server.limits.latency)
            throttled = self._throttled(operation)
            if throttled is not None:
                raise throttled
            fault = self.server.faults.take(operation)
            if fault is not None and fault.when == "before":
                dropped = fault.kind in ("drop", "hang")
                if fault.kind == "hang":
                    time.sleep(fault.latency)
                answer = None if dropped else self._before(fault, operation)
            if not dropped and answer is None:
                if isinstance(body, dict) and body.get("continuationToken") == LOOP_TOKEN:
                    body = {k: v for k, v in body.items() if k != "continuationToken"}
                delay = 0.0
                if fault is not None and fault.when == "after" and fault.effect_delay:
                    # The service applies the request late: after its answer went out, or after
                    # the connection it held was given up.
                    delay = fault.effect_delay + (fault.latency if fault.kind in ("latency", "hang") else 0.0)
                answer = self._execute(operation, args, body, query, delay)
                if fault is not None and fault.when == "after":
                    dropped = fault.kind in ("drop", "hang")
                    if fault.kind == "hang":
                        time.sleep(fault.latency)
                    if not dropped:
                        answer = self._after(fault, answer)
        except ApiError as exc:
            answer = Answer(exc.status, exc.body(), exc.headers)
        except Exception as exc:
            # An emulator bug must not look like a dropped connection: answer 500 and keep it.
            self.server.errors.append(traceback.format_exc())
            answer = Answer(500, error_body("InternalServerError", f"emulator error: {type(exc).__name__}: {exc}"))
        is_write = operation in ("createRun", "cancelPipelineRun")
        effect = answer.effect if answer is not None else (False if is_write else None)
        # Logged before the answer goes out, so a client that has its answer finds it in the log.
        self.server.log.append(
            LoggedRequest(
                at=at,
                method=method,
                operation=operation,
                path=url.path,
                query=query,
                body=body,
                status=None if dropped else (answer.status if answer else None),
                fault=fault.kind if fault else None,
                effect=effect,
                run_id=answer.run_id if answer else None,
                elapsed_ms=(time.monotonic() - began) * 1000,
            )
        )
        if dropped:
            # Close without an answer, as a connection lost mid-call would.
            self.close_connection = True
        elif answer is not None:
            self._send(answer)

    def _check(self, match: re.Match[str] | None, operation: str, query: dict[str, str]) -> None:
        authorization = self.headers.get("Authorization", "")
        issuer = self.server.issuer
        bearer = authorization.startswith("Bearer ")
        if authorization != f"Bearer {self.server.token}" and not (
            issuer is not None and bearer and issuer.accepts(authorization.removeprefix("Bearer "))
        ):
            missing = not self.headers.get("Authorization")
            raise ApiError(
                401,
                "AuthenticationFailed" if missing else "InvalidAuthenticationToken",
                "Authentication failed. The 'Authorization' header is missing."
                if missing
                else "The access token is invalid.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                    'error="invalid_token", error_description="The access token is invalid."'
                },
            )
        if match is None or operation == "unknown":
            raise ApiError(
                404,
                "InvalidResourceType",
                f"The resource type could not be found for path {self.path.split('?')[0]!r} "
                f"in the namespace 'Microsoft.DataFactory' for api version '{API_VERSION}'.",
            )
        version = query.get("api-version")
        if version is None:
            raise ApiError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version != API_VERSION:
            raise ApiError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{API_VERSION}'.",
            )
        scenario = self.server.state.scenario
        subscription, group, factory = match.group(1), match.group(2), match.group(3)
        if subscription.lower() != scenario.subscription_id.lower():
            raise ApiError(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")
        if group.lower() != scenario.resource_group.lower():
            raise ApiError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        if factory.lower() != scenario.factory.lower():
            raise ApiError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.DataFactory/factories/{factory}' under resource group "
                f"'{group}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )

    def _throttled(self, operation: str) -> ApiError | None:
        """ARM's 429 when the subscription's read bucket is empty (writes are not metered here)."""
        bucket = self.server.reads
        if bucket is None or kind_of(operation) != "read":
            return None
        wait = bucket.take()
        if not wait:
            return None
        seconds = retry_after(wait)
        return ApiError(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of 'read' requests for subscription '{self.server.state.scenario.subscription_id}' "
            f"exceeded. Please try again after '{seconds}' seconds after additional tickets are available.",
            headers={"Retry-After": seconds, "x-ms-ratelimit-remaining-subscription-reads": "0"},
        )

    def _before(self, fault: Fault, operation: str) -> Answer | None:
        # A fault's answer instead of the operation's; None lets the operation run.
        if fault.kind == "latency":
            time.sleep(fault.latency)
            return None
        if fault.kind == "throttle":
            seconds = f"{fault.retry_after:g}"
            kind = "write" if operation in ("createRun", "cancelPipelineRun") else "read"
            message = fault.message or (
                f"Number of '{kind}' requests for subscription '{self.server.state.scenario.subscription_id}' "
                f"exceeded. Please try again after '{seconds}' seconds after additional tickets are available."
            )
            return Answer(
                429,
                error_body(fault.code or "SubscriptionRequestsThrottled", message),
                {"Retry-After": seconds, f"x-ms-ratelimit-remaining-subscription-{kind}s": "0"},
                effect=False if kind == "write" else None,
            )
        if fault.kind == "malformed":
            return _malformed(fault, effect=False if kind_of(operation) == "write" else None)
        return _fault_error(fault, operation)

    @staticmethod
    def _after(fault: Fault, answer: Answer) -> Answer:
        if fault.kind == "latency":
            time.sleep(fault.latency)
            return answer
        if fault.kind == "malformed":
            return _malformed(fault, effect=answer.effect, run_id=answer.run_id)
        if fault.kind in ("repeat-token", "status", "records"):
            return _rewrite(fault, answer)
        failed = _fault_error(fault, "")
        failed.effect, failed.run_id = answer.effect, answer.run_id
        return failed

    def _execute(self, operation: str, args: list[str], body: Any, query: dict[str, str], delay: float = 0.0) -> Answer:
        state = self.server.state
        now = utcnow()
        if operation == "createRun":
            run_id = state.create_run(args[0], body, query, now, delay=delay)
            return Answer(200, {"runId": run_id}, effect=True, run_id=run_id)
        if operation == "queryPipelineRuns":
            return Answer(200, self.server.queries.query(body, now))
        if operation == "getPipelineRun":
            return Answer(200, state.get_run(args[0], now), run_id=args[0])
        if operation == "cancelPipelineRun":
            state.cancel_run(args[0], now)
            return Answer(200, None, effect=True, run_id=args[0])
        if operation == "queryActivityRuns":
            return Answer(200, activity_runs(state, args[0], body, now), run_id=args[0])
        if operation == "getPipeline":
            resource = _pipeline_json(state, args[0])
            if self.headers.get("If-None-Match") in (resource["etag"], f'"{resource["etag"]}"'):
                return Answer(304)
            return Answer(200, resource)
        if operation == "listPipelines":
            return Answer(200, {"value": [_pipeline_json(state, name) for name in state.pipelines]})
        return Answer(200, factory_resource(state.factory_id, state.scenario.factory, state.started))

    def _send(self, answer: Answer) -> None:
        payload = b"" if answer.body is None else json.dumps(answer.body).encode()
        if answer.raw is not None:
            payload = answer.raw
        request_id = str(uuid.uuid4())
        self.send_response(answer.status)
        if payload:
            html = answer.raw is not None and answer.raw.lstrip()[:1] == b"<"
            self.send_header("Content-Type", "text/html" if html else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Pragma", "no-cache")
        self.send_header("Expires", "-1")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("x-ms-request-id", request_id)
        self.send_header("x-ms-correlation-request-id", request_id)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        # Headers and body in one write (end_headers would send the headers on their own): one
        # TLS record stream, no small segment waiting for an ACK.
        buffered: list[bytes] = getattr(self, "_headers_buffer", [])
        self.wfile.write(b"".join([*buffered, b"\r\n", payload]))
        buffered.clear()


def _fault_error(fault: Fault, operation: str) -> Answer:
    code = fault.code or _ERROR_CODES.get(fault.status, "InternalServerError")
    message = fault.message or "An internal server error occurred. Please retry later."
    effect = False if operation in ("createRun", "cancelPipelineRun") else None
    return Answer(fault.status, error_body(code, message), effect=effect)


def kind_of(operation: str) -> str:
    return "write" if operation in ("createRun", "cancelPipelineRun") else "read"


def _malformed(fault: Fault, *, effect: bool | None, run_id: str | None = None) -> Answer:
    return Answer(fault.status, None, effect=effect, run_id=run_id, raw=fault.body.encode())


def _rewrite(fault: Fault, answer: Answer) -> Answer:
    body = answer.body
    if answer.status != 200 or not isinstance(body, dict):
        return answer
    if fault.kind == "repeat-token":
        return Answer(
            answer.status, {**body, "continuationToken": LOOP_TOKEN}, answer.headers, answer.effect, answer.run_id
        )
    if fault.kind == "records":
        if not isinstance(body.get("value"), list):
            return answer
        return Answer(
            answer.status,
            {**body, "value": [*body["value"], *fault.records]},
            answer.headers,
            answer.effect,
            answer.run_id,
        )

    def restate(run: Any) -> Any:
        if isinstance(run, dict) and "runId" in run and (not fault.of_status or run.get("status") == fault.of_status):
            return {**run, "status": fault.status_text}
        return run

    if isinstance(body.get("value"), list):
        body = {**body, "value": [restate(run) for run in body["value"]]}
    else:
        body = restate(body)
    return Answer(answer.status, body, answer.headers, answer.effect, answer.run_id)


def _pipeline_json(state: FactoryState, name: str) -> dict[str, Any]:
    pipeline = state.pipeline(name)
    parameters: dict[str, dict[str, Any]] = {}
    for parameter, kind in pipeline.parameters.items():
        parameters[parameter] = {"type": kind}
        if parameter in pipeline.defaults:
            parameters[parameter]["defaultValue"] = pipeline.defaults[parameter]
    return pipeline_resource(
        factory_id=state.factory_id,
        name=pipeline.name,
        activities=[(a.name, a.type) for a in pipeline.activities],
        parameters=parameters,
        description=pipeline.description,
        annotations=list(pipeline.annotations),
        concurrency=pipeline.concurrency,
        etag=str(uuid.uuid5(uuid.NAMESPACE_URL, state.factory_id + name)),
    )
