"""The benchmark's inputs and baselines, prepared in the driving process: generated extracts,
the pyarrow floor of an ingest, the direct read a shared read is compared with, and the HTTP
load generator for the sharing server."""

from __future__ import annotations

import math
import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from deltalake import DeltaTable

from govlake.core.catalog import Catalog
from govlake.core.location import Location
from govlake.lake.reads import read_delta
from govlake_tools.generate import generate


def generate_extracts(
    catalog: Catalog, landing: Path, *, rows: int, day: date, fmt: str = "csv", defects: float
) -> dict[str, Path]:
    """One extract per provider of the residents resource; provider → file."""
    made = generate(
        catalog,
        Location.parse(str(landing)),
        rows=rows,
        as_of=day,
        resources=["population.residents"],
        fmt=fmt,  # type: ignore[arg-type]
        defects=defects,
    )
    return {e.provider: Path(e.location.uri) for e in made}


def copy_extracts(extracts: dict[str, Path], source_landing: Path, landing: Path) -> None:
    """The same files into another landing zone (ingestion moves them to its archive)."""
    for path in extracts.values():
        target = landing / path.relative_to(source_landing)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def floor_ingest(extracts: dict[str, Path], out: Path) -> float:
    """The floor of an ingest: pyarrow reading each CSV (typed by inference, multi-threaded)
    and writing it as Parquet."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for provider, path in extracts.items():
        pq.write_table(pacsv.read_csv(path), out / f"{provider}.parquet")
    return time.perf_counter() - started


def read_direct(location: Path) -> tuple[float, int]:
    """The floor of a shared read: delta-rs reading the table's current version (deletion
    vectors applied) straight from storage into pandas."""
    started = time.perf_counter()
    frame = read_delta(DeltaTable(str(location))).to_pandas()
    return time.perf_counter() - started, len(frame)


#: Seconds a load generator's client waits for an answer before it counts the request as
#: failed (never answered): ten times the run's length, within these bounds.
TIMEOUTS = (5.0, 20.0)


def read_files_pyarrow(location: Path) -> tuple[float, int]:
    """pyarrow reading the Parquet files of the table's current version, each whole, into
    one pandas frame: no Delta log replay, and no deletion vector applied."""
    uris = DeltaTable(str(location)).file_uris()
    started = time.perf_counter()
    frame = pa.concat_tables([pq.read_table(uri.removeprefix("file://")) for uri in uris])
    rows = len(frame.to_pandas())
    return time.perf_counter() - started, rows


@dataclass(frozen=True)
class Load:
    requests: int  # answered, any status
    errors: int  # answered with another status than 200
    seconds: float
    p50: float
    p99: float
    failed: int = 0  # sent and never answered (connection refused, reset, timed out)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def percentiles(latencies: list[float]) -> tuple[float, float]:
    every = sorted(latencies)
    if not every:  # not one request ended, in the whole run
        return math.nan, math.nan
    return statistics.median(every), every[min(len(every) - 1, int(0.99 * len(every)))]


def _await(go: Path) -> None:
    while not go.exists():
        time.sleep(0.001)


def load(
    url: str,
    *,
    method: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
    clients: int,
    seconds: float,
    go: Path | None = None,
    ready: Path | None = None,
) -> tuple[Load, list[float]]:
    """`clients` concurrent keep-alive clients (threads) calling `url` back to back for
    `seconds`; every answer read to the end. With `ready` and `go`, the clients start once
    the file `go` exists, after this process wrote `ready` (so that several processes start
    together). The load and every answered request's latency (when none was answered, the
    time each took to fail: the percentiles then say how long the clients waited)."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop = threading.Event()
    timeout = min(max(TIMEOUTS[0], 10 * seconds), TIMEOUTS[1])

    def client(index: int) -> None:
        with httpx.Client(headers=headers, timeout=timeout) as http:
            start.wait()
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    answer = http.request(method, url, json=body)
                    answer.read()
                except httpx.TransportError:
                    failures[index].append(time.perf_counter() - began)
                    continue
                latencies[index].append(time.perf_counter() - began)
                if answer.status_code != 200:
                    errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    if ready is not None and go is not None:
        ready.write_text("ready")
        _await(go)
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [x for per in latencies for x in per]
    failed = [x for per in failures for x in per]
    p50, p99 = percentiles(every or failed)
    return Load(len(every), sum(errors), elapsed, p50, p99, len(failed)), every or failed
