"""ARM's read throttling and the network's latency, as the emulator models them (issue 14).

Azure Resource Manager meters reads per subscription with a token bucket: 250 tokens, refilled at
25 a second; a request that finds the bucket empty is answered 429 with ``Retry-After`` (whole
seconds) and spends no token. ``ServiceLimits`` is off unless a scenario (``[service] throttle``,
``burst``, ``latency``) or ``backfill emulator serve --throttle/--latency`` asks for it: the tests
and the demo want the emulator as fast as it goes.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

# ARM's subscription read bucket (learn.microsoft.com: "Understand how Azure Resource Manager
# throttles requests"): refill 25 a second, bucket of 250.
DEFAULT_READ_RATE = 25.0
DEFAULT_READ_BURST = 250


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; thread-safe."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0:
            raise ValueError("a throttle rate must be positive (reads a second)")
        if burst < 1:
            raise ValueError("a throttle burst must be at least 1")
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a token was taken; otherwise the seconds until one is due (nothing taken)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


@dataclass(frozen=True)
class ServiceLimits:
    """What a scenario or the serve command set: reads a second (None: no throttling), the
    bucket's size, and latency added to every answer (real seconds)."""

    read_rate: float | None = None
    read_burst: int = DEFAULT_READ_BURST
    latency: float = 0.0

    def __post_init__(self) -> None:
        if self.read_rate is not None and self.read_rate <= 0:
            raise ValueError("throttle must be a positive number of reads a second")
        if self.read_burst < 1:
            raise ValueError("burst must be at least 1")
        if self.latency < 0:
            raise ValueError("latency must not be negative")

    def bucket(self) -> TokenBucket | None:
        return TokenBucket(self.read_rate, self.read_burst) if self.read_rate is not None else None


def retry_after(wait: float) -> str:
    """ARM's Retry-After: whole seconds, at least one."""
    return str(max(1, math.ceil(wait)))
