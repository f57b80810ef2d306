"""``Emulator``: the ADF emulator in-process, on a background thread, over real HTTPS.

    with Emulator(scenario) as emu:
        client = emu.client()            # a FactoryClient pointed at it
        os.environ.update(emu.env())     # or point any command at it

The certificate and key live in a temporary folder removed on stop; the port is chosen free
unless given. A ticker thread applies run transitions when they are due, so sink rows appear on
time even when nobody is polling.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from backfill.emulator.certs import generate as generate_certificate
from backfill.emulator.faults import FaultSet
from backfill.emulator.http import EmulatorServer, LoggedRequest
from backfill.emulator.scenario import Scenario
from backfill.emulator.state import FactoryState
from backfill.emulator.tokens import TokenIssuer
from backfill.errors import BackfillError, ScenarioError
from backfill.factory.protocol import FactoryRef
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from backfill.factory.client import FactoryClient


class Emulator:
    def __init__(
        self, scenario: Scenario | None = None, *, port: int = 0, env: Mapping[str, str] | None = None
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario.default()
        # Copies: a fault's counters belong to this emulator, not to a scenario reused elsewhere.
        self.faults = FaultSet([replace(f, seen=0, hits=0) for f in self.scenario.faults])
        self.token = self.scenario.token or secrets.token_urlsafe(24)
        self._port = port
        self._env = env
        self._folder: Path | None = None
        self._server: EmulatorServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.state: FactoryState | None = None
        self.ca_file = ""
        # Signs RS256 tokens whose keys the server publishes (identity tests; spec §15).
        self.issuer = TokenIssuer()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Emulator:
        try:
            self.scenario.validate()
        except ValueError as exc:
            raise ScenarioError(f"{self.scenario.source}: {exc}") from None
        state = FactoryState(self.scenario, self._env)
        try:
            state.load()
        except BaseException:
            state.close()
            raise
        self.state = state
        self._folder = Path(tempfile.mkdtemp(prefix="backfill-emulator-"))
        try:
            files = generate_certificate(self._folder)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(files.cert_file, files.key_file)
            self.ca_file = str(files.ca_file)
            self._server = EmulatorServer(self._port, state, self.faults, self.token, context)
            self.issuer.base = f"https://127.0.0.1:{self._server.server_address[1]}"
            self._server.issuer = self.issuer
        except OSError as exc:
            self._cleanup()
            raise BackfillError(f"emulator: cannot listen on 127.0.0.1:{self._port}: {exc.strerror or exc}") from None
        server = self._server
        self._threads = [
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="emulator-http", daemon=True
            ),
            threading.Thread(target=self._tick, name="emulator-clock", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self.state is not None:
            with self.state.changed:
                self.state.changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self._cleanup()

    def _cleanup(self) -> None:
        if self.state is not None:
            self.state.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _tick(self) -> None:
        state = self.state
        assert state is not None
        while not self._stopping.is_set():
            with state.changed:
                upcoming = state.next_event()
                wait = 0.5 if upcoming is None else (upcoming - utcnow()).total_seconds()
                if wait > 0:
                    state.changed.wait(min(wait, 0.5))
            if not self._stopping.is_set():
                state.advance(utcnow())

    # --- where it is -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ref(self) -> FactoryRef:
        return self.scenario.ref

    def env(self) -> dict[str, str]:
        """The six settings that point any backfill command at this emulator (spec §9)."""
        return {
            "BACKFILL_ADF_ENDPOINT": self.endpoint,
            "BACKFILL_ADF_CA_BUNDLE": self.ca_file,
            "BACKFILL_ADF_TOKEN": self.token,
            "AZURE_SUBSCRIPTION_ID": self.scenario.subscription_id,
            "BACKFILL_RESOURCE_GROUP": self.scenario.resource_group,
            "BACKFILL_FACTORY": self.scenario.factory,
        }

    def token_env(self) -> dict[str, str]:
        """The settings that make ``backfill`` verify tokens against this emulator's issuer."""
        return {**self.issuer.env(), "BACKFILL_TOKEN_CA_BUNDLE": self.ca_file}

    def issue_token(self, upn: str, **options: Any) -> str:
        """An RS256 access token for ``upn`` from the emulator's issuer (``TokenIssuer.issue``)."""
        return self.issuer.issue(upn, **options)

    def client(self) -> FactoryClient:
        """A FactoryClient (the real SDK) pointed at this emulator."""
        from backfill.factory.client import FactoryClient
        from backfill.factory.settings import ConnectionSettings

        settings = ConnectionSettings(endpoint=self.endpoint, ca_bundle=self.ca_file, token=self.token)
        return FactoryClient(self.ref, settings)

    # --- what happened ---------------------------------------------------------------------------

    @property
    def request_log(self) -> list[LoggedRequest]:
        if self._server is None:
            return []
        return self._server.log.entries()

    def requests(self, operation: str | None = None) -> list[LoggedRequest]:
        return self._server.log.entries(operation) if self._server is not None else []

    def create_run_calls(self) -> list[LoggedRequest]:
        """Every createRun request, faulted ones included (``effect`` says if a run was created)."""
        return self.requests("createRun")

    def clear_log(self) -> None:
        if self._server is not None:
            self._server.log.clear()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests the emulator failed itself (answered 500); empty unless a bug."""
        return list(self._server.errors) if self._server is not None else []

    @property
    def sink_errors(self) -> list[str]:
        return list(self.state.sink_errors) if self.state is not None else []

    def run(self, run_id: str) -> dict[str, Any]:
        """A run as ``pipelineruns/{id}`` GET answers it, without HTTP (for assertions)."""
        state = self._require_state()
        return state.get_run(run_id, utcnow())

    def runs(self) -> list[dict[str, Any]]:
        """Every run the emulator holds, oldest start first, as the service would show them."""
        state = self._require_state()
        with state.lock:
            state.advance(utcnow())
            ordered = sorted(state.runs.values(), key=lambda r: (r.start, r.run_id))
            return [state.run_json(r) for r in ordered]

    def _require_state(self) -> FactoryState:
        if self.state is None:
            raise RuntimeError("the emulator is not running")
        return self.state
