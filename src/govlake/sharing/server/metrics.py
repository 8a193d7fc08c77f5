"""The sharing server's Prometheus metrics (监控管理): what the server counts while it answers.

Every metric is defined here, once, so the modules that count import them from one place:
the gate counts requests and their latency, the caches their hits and misses, the journal
how long an answer waited for its entry to be committed, the file route the signed-URL
downloads. How they are exposed (`/metrics`, across worker processes, to which addresses)
is decided where the route is served.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
