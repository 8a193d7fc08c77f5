"""Rate limits of the sharing server: a token bucket per consumer department, charged once
its bearer token is authenticated (`admit_consumer`), and one per client address for the
calls that end without a valid credential (`admit_address` before, `charge_address` after).
A call beyond its bucket is refused with 429 and `Retry-After` (whole seconds), and
journaled as every refusal is.

Why per address after the fact: whether a token is valid is known only once it is checked,
which is the work an unauthenticated flood costs. So the address bucket is charged by the
calls that ended without a valid credential, and an address whose bucket is empty is refused
before anything else is done. A department behind the same address as a runaway anonymous
client waits with it until the flood stops; a department's own calls never drain its
address's bucket, and signed file URLs (a valid credential) never do either.

Each worker process holds its own buckets: with N workers a client may get up to N times
the configured rate. The limit is there to stop a runaway client, not to meter a fair share;
dividing the rate by N instead would refuse a keep-alive client that the kernel happens to
hand always to the same worker at 1/N of its due. The defaults (`Settings`) leave a factor
of more than ten between a department that polls and one that loops.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from govlake.core.settings import Settings

#: Paths never limited: the liveness and readiness probes (`monitoring`), which a refusal
#: would turn into a restart of a healthy server.
PROBES = frozenset({"/livez", "/readyz"})
#: `app.state` key of the application's `Limits`.
_STATE = "limits"
#: Buckets kept per kind before the full ones (as good as new) are dropped.
_KEPT = 10_000
_CREATE = threading.Lock()


class RateLimited(HTTPException):
    """A call beyond its caller's rate: 429 with `Retry-After`, in whole seconds."""

    def __init__(self, who: str, wait: float):
        seconds = max(1, math.ceil(wait))
        super().__init__(429, f"too many calls from {who}; retry after {seconds} s",
                         headers={"Retry-After": str(seconds)})  # fmt: skip


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Token buckets by key, each holding up to `burst` calls and refilled at `rate` calls a
    second on `clock` (monotonic seconds; a test sets its own). A rate of 0 admits all."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _KEPT:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.at) * self.rate >= self.burst:
                del self._buckets[key]

    def wait(self, key: str) -> float:
        """Seconds before `key` may call again (0: now), taking nothing."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            bucket = self._refilled(key, self.clock())
            return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def take(self, key: str) -> float:
        """Take one call from `key`'s bucket: 0 if it had one, else the seconds to wait (and
        nothing is taken)."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            bucket = self._refilled(key, self.clock())
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate


class Limits:
    """The server's buckets: per consumer department and per client address."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic):
        self.consumers = TokenBuckets(settings.sharing_rate_per_second,
                                      settings.sharing_rate_burst, clock)  # fmt: skip
        self.addresses = TokenBuckets(settings.sharing_anonymous_rate_per_second,
                                      settings.sharing_anonymous_burst, clock)  # fmt: skip


def limits_of(connection: HTTPConnection) -> Limits:
    """The application's `Limits`, made from its settings on first use (a test may put its
    own, on a settable clock, in `app.state.limits`)."""
    state = connection.app.state
    found: Limits | None = getattr(state, _STATE, None)
    if found is None:
        with _CREATE:
            found = getattr(state, _STATE, None) or Limits(state.settings)
            setattr(state, _STATE, found)
    return found


def client_address(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def admit_consumer(connection: HTTPConnection, consumer: str) -> None:
    """Charge an authenticated call to its department; `RateLimited` beyond its rate."""
    wait = limits_of(connection).consumers.take(consumer)
    if wait > 0:
        raise RateLimited(f"consumer {consumer}", wait)


def refusal(connection: HTTPConnection) -> RateLimited | None:
    """The refusal of a call from an address whose calls without a valid credential have
    used up its bucket, if it is; takes nothing (`charge_unauthenticated` does, after the
    call). The probes are never refused."""
    if connection.scope["path"] in PROBES:
        return None
    address = client_address(connection)
    wait = limits_of(connection).addresses.wait(address)
    return RateLimited(f"address {address} without a valid credential", wait) if wait else None


def charge_unauthenticated(connection: HTTPConnection, status: int) -> None:
    """Charge a call that ended without a valid credential (no consumer identified) to its
    client address; a call refused for its rate, and a probe, are not charged."""
    if status == 429 or connection.scope["path"] in PROBES:
        return
    if getattr(connection.state, "consumer", None) is None:
        limits_of(connection).addresses.take(client_address(connection))
