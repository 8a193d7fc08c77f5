"""The sharing server's Prometheus metrics (监控管理): what the server counts while it answers.

Every metric is defined here, once, so the modules that count import them from one place:
the gate counts requests, their latency and the signed-URL downloads (`count_call`), the
caches their hits and misses, the journal how long an answer waited for its entry to be
committed. How they are exposed (`/metrics`, across worker processes, to which addresses)
is decided where the route is served (`govlake.sharing.server.monitoring`).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from starlette.requests import HTTPConnection

#: Calls answered, by route name (`unknown` when none matched), status and the consumer
#: department the call was journaled under (`anonymous` without one).
REQUESTS = Counter(
    "govlake_sharing_requests_total",
    "Calls the sharing server answered",
    ["route", "status", "consumer"],
)
#: Seconds from a call's arrival to the end of its answer, by route name.
LATENCY = Histogram(
    "govlake_sharing_request_seconds",
    "Time to answer a call",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
#: Cache lookups by cache (`token`, `decision`, `snapshot`, ...) and result (`hit`/`miss`).
CACHE_LOOKUPS = Counter(
    "govlake_sharing_cache_lookups_total",
    "Lookups in the sharing server's caches",
    ["cache", "result"],
)
#: Seconds a call waited for its journal entry to be committed (group commit included).
JOURNAL_LAG = Histogram(
    "govlake_sharing_journal_lag_seconds",
    "Time from a call's journal entry being handed over to its commit",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
#: Entries committed per journal transaction (the group commit's batch size).
JOURNAL_BATCH = Histogram(
    "govlake_sharing_journal_batch_entries",
    "Journal entries committed in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
#: Signed-URL downloads of data and deletion-vector files, by outcome (`ok`, `refused`).
DOWNLOADS = Counter(
    "govlake_sharing_file_downloads_total",
    "Downloads through the server's signed file URLs",
    ["outcome"],
)


def count_call(connection: HTTPConnection, status: int, seconds: float) -> None:
    """Count an answered call (`REQUESTS`, `LATENCY`) by its route's name and the department
    that its credential identified, and a signed-URL download by its outcome. Labels come
    from the routes and the registered consumers only, never from what the caller sent, so
    that a flood of made-up paths or tokens cannot grow the metrics without bound."""
    route = getattr(connection.scope.get("route"), "name", None) or "unknown"
    consumer = getattr(connection.state, "consumer", None) or "anonymous"
    REQUESTS.labels(route, str(status), consumer).inc()
    LATENCY.labels(route).observe(seconds)
    if route == "download_file":
        DOWNLOADS.labels("ok" if status < 400 else "refused").inc()
