"""Connection settings for a factory: endpoint, CA bundle, token (spec §9)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from backfill.errors import ConfigError, UsageError
from backfill.factory.protocol import FactoryRef

AZURE_PUBLIC_ENDPOINT = "https://management.azure.com"


@dataclass(frozen=True)
class ConnectionSettings:
    endpoint: str = AZURE_PUBLIC_ENDPOINT
    ca_bundle: str | None = None
    # A static bearer token (emulators); None means DefaultAzureCredential.
    token: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls) -> ConnectionSettings:
        endpoint = os.environ.get("BACKFILL_ADF_ENDPOINT", "").strip() or AZURE_PUBLIC_ENDPOINT
        if not endpoint.startswith("https://"):
            # azure-core refuses to send a bearer token over plain HTTP; say so up front.
            raise ConfigError(f"BACKFILL_ADF_ENDPOINT must be an https:// URL, got {endpoint!r}")
        ca_bundle = os.environ.get("BACKFILL_ADF_CA_BUNDLE", "").strip() or None
        if ca_bundle and not Path(ca_bundle).is_file():
            raise ConfigError(f"BACKFILL_ADF_CA_BUNDLE {ca_bundle!r} is not a readable file")
        return cls(
            endpoint=endpoint.rstrip("/"),
            ca_bundle=ca_bundle,
            token=_token(os.environ.get("BACKFILL_ADF_TOKEN")),
            read_timeout=_timeout(os.environ.get("BACKFILL_ADF_TIMEOUT", "").strip()),
        )

    @property
    def uses_azure_credentials(self) -> bool:
        return self.token is None


def _timeout(text: str) -> float:
    if not text:
        return 60.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    # 0 would make every request fail at once; inf or nan would wait forever.
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"BACKFILL_ADF_TIMEOUT must be a positive number of seconds (e.g. 60), got {text!r}")
    return seconds


def _token(value: str | None) -> str | None:
    if value is None:
        return None
    token = value.strip()
    if not token:
        # Set but empty is a mistake (an unexpanded variable), not a request for Azure
        # credentials: falling back would print a dozen lines of credential probing.
        raise ConfigError(
            "BACKFILL_ADF_TOKEN is set but empty: give the token, or unset it to sign in with Azure credentials"
        )
    return token


def factory_ref_from_options(subscription: str | None, resource_group: str | None, factory: str | None) -> FactoryRef:
    """The factory for commands that take no plan: options, else AZURE_SUBSCRIPTION_ID,
    BACKFILL_RESOURCE_GROUP, BACKFILL_FACTORY."""
    values = {
        "--subscription / AZURE_SUBSCRIPTION_ID": subscription or os.environ.get("AZURE_SUBSCRIPTION_ID"),
        "--resource-group / BACKFILL_RESOURCE_GROUP": resource_group or os.environ.get("BACKFILL_RESOURCE_GROUP"),
        "--factory / BACKFILL_FACTORY": factory or os.environ.get("BACKFILL_FACTORY"),
    }
    absent = [name for name, value in values.items() if not value]
    if absent:
        raise UsageError(f"no factory named: set {', '.join(absent)}")
    sub, rg, name = (str(v) for v in values.values())
    return FactoryRef(sub, rg, name)
