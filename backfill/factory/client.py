"""The one wrapper around azure-mgmt-datafactory (imported lazily: it costs about a second).

Reads go through azure-core's retry policy, which honours Retry-After. ``create_run`` and
``cancel_run`` are sent exactly once (``retry_total=0``): ADF has no idempotency key, and
azure-core would otherwise re-send a POST on 500/503/504 and create a second run
(shared/adf-rest-examples/README.md). Pages are read with the operation's own ``stream=True`` and
the JSON parsed directly: the SDK still builds, authenticates, retries and maps errors, but building
its response models would cost ~20 ms a page (about 40 s of CPU for 200,000 runs).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backfill.errors import FactoryError
from backfill.factory.protocol import FactoryRef
from backfill.factory.run import ActivityRun, MalformedRun, PipelineInfo, Run
from backfill.factory.settings import ConnectionSettings
from backfill.factory.slicing import MAX_PAGES, next_page
from backfill.gcpause import paused_gc
from backfill.timeutil import format_utc, require_utc, utcnow

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.mgmt.datafactory import DataFactoryManagementClient

    from backfill.factory.slicing import FetchStats

log = logging.getLogger("backfill.factory")


class StaticTokenCredential:
    """A fixed bearer token (BACKFILL_ADF_TOKEN), for emulators and CI."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int((utcnow() + timedelta(hours=1)).timestamp()))


def _as_factory_error(exc: BaseException, *, write: bool) -> FactoryError:
    """Map azure-core's exceptions to our one error type.

    For a write, "effect unknown" means the request may have reached the service: a 5xx, a
    response that never came back (dropped connection, read timeout). A connection that was never
    made, or a 4xx, is definitive.
    """
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code: str | None = None
        message = exc.message or str(exc)
        error = getattr(exc, "error", None)
        if error is not None and getattr(error, "code", None):
            code = str(error.code)
            message = str(getattr(error, "message", None) or message)
        elif exc.response is not None:
            code, message = _error_from_body(exc.response.text(), message)
        if isinstance(exc, ClientAuthenticationError) and not code:
            code = "AuthenticationFailed"
        message = message.splitlines()[0] if message else "no message"
        # A write that got an answer outside 4xx (a 5xx, or a 2xx whose body could not be read)
        # may have taken effect; a 4xx is a refusal, and the runner still looks at history
        # before it records one (spec §14).
        unknown = write and (status is None or not 400 <= status < 500)
        return FactoryError(
            message,
            code=code,
            status=status,
            effect_unknown=unknown,
            retry_after=_retry_after(exc.response) if status == 429 else None,
        )
    if isinstance(exc, ServiceResponseError):
        return FactoryError(f"no answer ({_first_line(exc)})", effect_unknown=write)
    if isinstance(exc, ServiceRequestError):
        return FactoryError(f"cannot reach the factory endpoint ({_first_line(exc)})")
    # Anything else during a write (a body cut short while read, say) may follow the effect.
    return FactoryError(f"{type(exc).__name__}: {_first_line(exc)}", effect_unknown=write)


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    text = str(headers.get("Retry-After") or headers.get("retry-after") or "").strip()
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error_from_body(body: str, fallback: str) -> tuple[str | None, str]:
    try:
        error = json.loads(body).get("error") or {}
        return error.get("code"), error.get("message") or fallback
    except (ValueError, AttributeError):
        return None, fallback


# Bytes per read of a response body (azure-core's default is 4 KB).
READ_BLOCK = 1 << 18


def _read_environment_once(session: Any) -> None:
    """Let a requests session read the proxy settings of the environment once per origin
    instead of once per request: requests walks ``os.environ`` twice for every request
    (``get_environ_proxies``), about a tenth of a history page's CPU. The environment is the
    same throughout a process's calls; what is merged in is the same as requests computes."""
    merge = session.merge_environment_settings
    known: dict[tuple[Any, ...], dict[str, Any]] = {}
    lock = threading.Lock()

    def merged(url: str, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        parts = urlsplit(url)
        given = tuple(sorted(proxies.items())) if proxies else None
        key = (parts.scheme, parts.netloc, given, stream, verify, cert if not isinstance(cert, list) else tuple(cert))
        with lock:
            found = known.get(key)
        if found is None:
            found = merge(url, dict(proxies) if proxies else proxies, stream, verify, cert)
            with lock:
                known[key] = found
        # Copies: requests may add to the mappings it is given.
        return {name: dict(value) if isinstance(value, dict) else value for name, value in found.items()}

    session.merge_environment_settings = merged


class FactoryClient:
    """Implements backfill.factory.protocol.Factory over the real SDK."""

    def __init__(self, ref: FactoryRef, settings: ConnectionSettings | None = None) -> None:
        self.ref = ref
        self.settings = settings or ConnectionSettings.from_env()
        self._calls = 0
        self._lock = threading.Lock()
        # Run records skipped because they could not be read (MalformedRun), since creation.
        self.skipped_records = 0
        self._warned: set[str] = set()
        self._sdk: DataFactoryManagementClient | None = None

    @property
    def api_calls(self) -> int:
        return self._calls

    def _count(self, _request: Any) -> None:
        # Runs once per attempt (the hook policy sits after the retry policy), so retries count.
        with self._lock:
            self._calls += 1

    def credential(self) -> TokenCredential:
        if self.settings.token is not None:
            return StaticTokenCredential(self.settings.token)
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    @property
    def sdk(self) -> DataFactoryManagementClient:
        if self._sdk is None:
            self._sdk = self._new_sdk()
        return self._sdk

    def _new_sdk(self) -> DataFactoryManagementClient:
        # The SDK's import builds tens of thousands of long-lived objects (its models, 38,000 lines
        # of TypedDicts): collecting meanwhile finds no garbage and cost a third of the import;
        # frozen after it, they are not walked by the collections of the sync either.
        with paused_gc(freeze=True):
            from azure.core.pipeline.transport import RequestsTransport
            from azure.mgmt.datafactory import DataFactoryManagementClient

        connection: dict[str, Any] = {
            "connection_timeout": self.settings.connect_timeout,
            "read_timeout": self.settings.read_timeout,
            # A page of 100 runs is ~80 KB: read in one piece instead of twenty 4 KB reads, each
            # through urllib3's and azure-core's Python layers.
            "connection_data_block_size": READ_BLOCK,
        }
        if self.settings.ca_bundle:
            connection["connection_verify"] = self.settings.ca_bundle
        transport = RequestsTransport(**connection)
        transport.open()
        if transport.session is not None:
            _read_environment_once(transport.session)
        return DataFactoryManagementClient(
            self.credential(),
            self.ref.subscription_id,
            base_url=self.settings.endpoint,
            transport=transport,
            raw_request_hook=self._count,
        )

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()
            self._sdk = None

    # -- reads -----------------------------------------------------------------------------

    def query_runs(
        self,
        *,
        updated_after: datetime,
        updated_before: datetime,
        pipeline: str | None = None,
        statuses: Sequence[str] | None = None,
        run_group_id: str | None = None,
        latest_only: bool = False,
        newest_first: bool = False,
    ) -> Iterator[Run]:
        filters: list[dict[str, Any]] = []
        if pipeline:
            filters.append({"operand": "PipelineName", "operator": "Equals", "values": [pipeline]})
        if statuses:
            filters.append({"operand": "Status", "operator": "In", "values": list(statuses)})
        if run_group_id:
            filters.append({"operand": "RunGroupId", "operator": "Equals", "values": [run_group_id]})
        if latest_only:
            filters.append({"operand": "LatestOnly", "operator": "Equals", "values": ["true"]})
        body: dict[str, Any] = {
            "lastUpdatedAfter": format_utc(require_utc(updated_after), precise=True),
            "lastUpdatedBefore": format_utc(require_utc(updated_before), precise=True),
            "filters": filters,
            "orderBy": [{"orderBy": "RunStart", "order": "DESC" if newest_first else "ASC"}],
        }
        seen: set[str] = set()
        while True:
            page = self._read_json(
                lambda content: self.sdk.pipeline_runs.query_by_factory(
                    self.ref.resource_group, self.ref.factory, content, stream=True
                ),
                body,
            )
            for raw in _records(page):
                try:
                    run = Run.from_json(raw)
                except MalformedRun as exc:
                    self.record_skipped(exc)
                    continue
                yield run
            token = page.get("continuationToken")
            if not token:
                return
            next_page(seen, token)
            body = {**body, "continuationToken": token}

    def query_run_pages(
        self,
        *,
        updated_after: datetime,
        updated_before: datetime,
        pipeline: str | None = None,
        stats: FetchStats | None = None,
        slices: int | None = None,
        most_in_flight: int | None = None,
    ) -> Iterator[list[Any]]:
        """The raw run records of a history query, page by page, read in concurrent
        last-updated slices (backfill.factory.slicing): pages in no particular order, and a run
        updated during the fetch, or exactly on a slice's edge, may come twice (keep the newest).
        Each worker thread has its own SDK client; the SDK's retries are off (the slicer paces
        and retries, honouring Retry-After)."""
        from backfill.factory.slicing import MOST_IN_FLIGHT, SLICES, fetch_slices

        filters = [{"operand": "PipelineName", "operator": "Equals", "values": [pipeline]}] if pipeline else []
        body = {"filters": filters, "orderBy": [{"orderBy": "RunStart", "order": "ASC"}]}
        local = threading.local()
        clients: list[DataFactoryManagementClient] = []

        def fetch(request: Mapping[str, Any]) -> Mapping[str, Any]:
            sdk = getattr(local, "sdk", None)
            if sdk is None:
                sdk = local.sdk = self._new_sdk()
                with self._lock:
                    clients.append(sdk)
            return self._read_json(
                lambda content: sdk.pipeline_runs.query_by_factory(
                    self.ref.resource_group, self.ref.factory, content, stream=True, retry_total=0
                ),
                request,
            )

        try:
            yield from fetch_slices(
                fetch,
                body,
                after=require_utc(updated_after),
                before=require_utc(updated_before),
                started=utcnow(),
                slices=slices or SLICES,
                most_in_flight=most_in_flight or MOST_IN_FLIGHT,
                stats=stats,
                max_pages=MAX_PAGES,
            )
        finally:
            for sdk in clients:
                sdk.close()

    def record_skipped(self, exc: MalformedRun) -> None:
        """One record we cannot read must not stop every backfill; it is counted so that whoever
        must be sure (the re-read before createRun) can tell, and logged once."""
        with self._lock:
            self.skipped_records += 1
            first = str(exc) not in self._warned
            self._warned.add(str(exc))
        if first:  # each bad record once, however often history is read
            log.warning("warning: skipped a pipeline run record: %s", exc)

    def get_run(self, run_id: str) -> Run:
        try:
            run = self.sdk.pipeline_runs.get(self.ref.resource_group, self.ref.factory, run_id)
        except Exception as exc:
            raise _as_factory_error(exc, write=False) from None
        try:
            return Run.from_json(run.as_dict())
        except MalformedRun as exc:
            raise FactoryError(f"the factory answered with a run we cannot read: {exc}") from None

    def query_activity_runs(
        self, run_id: str, *, updated_after: datetime | None = None, updated_before: datetime | None = None
    ) -> list[ActivityRun]:
        # Activity runs are filtered on last-updated too; without bounds, take ADF's whole retention.
        now = utcnow()
        body: dict[str, Any] = {
            "lastUpdatedAfter": format_utc(updated_after or now - timedelta(days=45), precise=True),
            "lastUpdatedBefore": format_utc(updated_before or now + timedelta(days=1), precise=True),
        }
        result: list[ActivityRun] = []
        seen: set[str] = set()
        while True:
            page = self._read_json(
                lambda content: self.sdk.activity_runs.query_by_pipeline_run(
                    self.ref.resource_group, self.ref.factory, run_id, content, stream=True
                ),
                body,
            )
            result.extend(ActivityRun.from_json(raw) for raw in _records(page) if isinstance(raw, Mapping))
            token = page.get("continuationToken")
            if not token:
                return result
            next_page(seen, token)
            body = {**body, "continuationToken": token}

    def get_pipeline(self, pipeline: str) -> PipelineInfo:
        try:
            resource = self.sdk.pipelines.get(self.ref.resource_group, self.ref.factory, pipeline)
        except Exception as exc:
            raise _as_factory_error(exc, write=False) from None
        if resource is None:
            raise FactoryError(f"pipeline {pipeline} not found", code="NotFound", status=404)
        return PipelineInfo.from_json(resource.as_dict())

    def _read_json(self, call: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        content = json.dumps(body).encode()
        try:
            chunks = call(content)
            data = b"".join(chunks)
        except Exception as exc:
            raise _as_factory_error(exc, write=False) from None
        try:
            parsed = json.loads(data)
        except ValueError:
            raise FactoryError("the factory answered with a body that is not JSON") from None
        if not isinstance(parsed, dict):
            raise FactoryError("the factory answered with an unexpected JSON shape")
        return parsed

    # -- writes: sent once, never retried ---------------------------------------------------

    def create_run(
        self,
        pipeline: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        reference_run_id: str | None = None,
        is_recovery: bool | None = None,
        start_from_failure: bool | None = None,
        start_activity_name: str | None = None,
    ) -> str:
        try:
            chunks = self.sdk.pipelines.create_run(
                self.ref.resource_group,
                self.ref.factory,
                pipeline,
                dict(parameters) if parameters else None,
                reference_pipeline_run_id=reference_run_id,
                is_recovery=is_recovery,
                start_from_failure=start_from_failure,
                start_activity_name=start_activity_name,
                retry_total=0,
                stream=True,
            )
            data = b"".join(chunks)  # type: ignore[arg-type]  # stream=True: the body, in bytes
        except Exception as exc:
            raise _as_factory_error(exc, write=True) from None
        return _run_id_from(data)

    def cancel_run(self, run_id: str, *, recursive: bool = False) -> None:
        try:
            self.sdk.pipeline_runs.cancel(
                self.ref.resource_group, self.ref.factory, run_id, is_recursive=recursive or None, retry_total=0
            )
        except Exception as exc:
            raise _as_factory_error(exc, write=True) from None


def _records(page: Mapping[str, Any]) -> list[Any]:
    value = page.get("value")
    if value is None:
        return []
    if not isinstance(value, list):
        raise FactoryError(f"the factory answered a page whose value is a {type(value).__name__}, not a list")
    return value


def _run_id_from(data: bytes) -> str:
    """The runId of a createRun answer. The run may exist whatever the body says, so a body we
    cannot read is doubt (effect unknown), never a refusal and never a run ID we made up."""
    try:
        parsed = json.loads(data)
    except ValueError:
        start = data[:40].decode("utf-8", "replace").replace("\n", " ")
        raise FactoryError(
            f"createRun answered 200 with a body that is not JSON ({start!r})", status=200, effect_unknown=True
        ) from None
    run_id = parsed.get("runId") if isinstance(parsed, dict) else None
    if not isinstance(run_id, str) or not run_id.strip():
        raise FactoryError(
            f"createRun answered 200 without a usable runId (runId {run_id!r})", status=200, effect_unknown=True
        )
    return run_id


def connect(ref: FactoryRef, settings: ConnectionSettings | None = None) -> FactoryClient:
    return FactoryClient(ref, settings)
