"""The benchmark's inputs and baselines, prepared in the driving process: generated extracts,
the pyarrow floor of an ingest, the direct read a shared read is compared with, and the HTTP
load generator for the sharing server."""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Load:
    requests: int
    errors: int
    seconds: float
    p50: float
    p99: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def load(
    url: str,
    *,
    method: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
    clients: int,
    seconds: float,
) -> Load:
    """`clients` concurrent keep-alive clients calling `url` back to back for `seconds`;
    every answer read to the end. Latency percentiles are over every request."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(headers=headers, timeout=60) as http:
            start.wait()
            while not stop.is_set():
                began = time.perf_counter()
                answer = http.request(method, url, json=body)
                answer.read()
                latencies[index].append(time.perf_counter() - began)
                if answer.status_code != 200:
                    errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = sorted(x for per in latencies for x in per)
    if not every:
        raise RuntimeError(f"no request to {url} completed in {seconds} s")
    p99 = every[min(len(every) - 1, int(0.99 * len(every)))]
    return Load(len(every), sum(errors), elapsed, statistics.median(every), p99)
