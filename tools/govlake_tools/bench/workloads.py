"""The benchmark's inputs and baselines, prepared in the driving process: generated extracts,
the pyarrow floors, silver tables of a given size with a change extract, and the HTTP load
generator for the sharing server."""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from govlake.core.catalog import Catalog, Resource
from govlake.core.location import Location
from govlake.lake.tables import TableSet
from govlake_tools.bench import peer
from govlake_tools.generate import generate

_ARROW_TYPES = {
    "string": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
}
#: A change every extract of the benchmark's change set carries: the resident moved.
MOVED = "（迁入新址）"


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


def silver_schema(resource: Resource, warehouse: Path) -> pa.Schema:
    table = TableSet(resource, Location.parse(str(warehouse))).silver
    return pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in table.columns])


@dataclass(frozen=True)
class SilverBuilt:
    rows: int
    files: int
    arrow_bytes: int  # the silver rows as an in-memory Arrow table
    changed: int
    change_rows: Path  # the changed rows in silver's schema (for the floor)
    seconds: float


def build_silver(
    catalog: Catalog,
    run_dir: Path,
    *,
    rows: int,
    changes: int,
    day: date,
    change_day: date,
    updated_at: datetime,
    seed: int = 11,
) -> SilverBuilt:
    """A silver table of `rows` residents written directly with delta-rs (what a full ingest
    would leave there, built without running one), and a public-security change extract of
    `changes` existing residents who moved, waiting in the run's landing zone."""
    started = time.perf_counter()
    resource = catalog.get("population.residents")
    scratch = run_dir / "source"
    extracts = generate_extracts(catalog, scratch, rows=rows, day=day, fmt="parquet", defects=0.0)
    warehouse = run_dir / "lakehouse"
    location = warehouse / resource.theme / resource.name
    silver = peer.silver_frame(resource, extracts, updated_at=updated_at).collect()
    schema = silver_schema(resource, warehouse)
    write_deltalake(str(location), silver.to_arrow().cast(schema), mode="overwrite")

    # The change set: `changes` residents the identity authority knows, each with a new address.
    security = pl.read_parquet(extracts["public_security"])
    picked = np.random.default_rng(seed).choice(security.height, size=changes, replace=False)
    moved = security[np.sort(picked)].with_columns(pl.col("residence_address") + pl.lit(MOVED))
    stamp = change_day.strftime("%Y%m%d")
    folder = run_dir / "landing" / resource.theme / resource.name / "public_security"
    folder.mkdir(parents=True, exist_ok=True)
    text = pa.schema([pa.field(name, pa.string()) for name in moved.columns])
    pacsv.write_csv(moved.to_arrow().cast(text), folder / f"residents_public_security_{stamp}.csv")
    keys = moved.select(resource.key)
    changed = (
        silver.join(keys, on=resource.key, how="semi")
        .with_columns(pl.col("residence_address") + pl.lit(MOVED))
        .to_arrow()
        .cast(schema)
    )
    change_rows = run_dir / "changes.parquet"
    pq.write_table(changed, change_rows)
    del silver, security
    shutil.rmtree(scratch)
    table = DeltaTable(str(location))
    arrow_bytes = table.to_pyarrow_dataset().to_table().nbytes
    return SilverBuilt(
        rows=rows,
        files=len(table.file_uris()),
        arrow_bytes=arrow_bytes,
        changed=changed.num_rows,
        change_rows=change_rows,
        seconds=time.perf_counter() - started,
    )


def merge_floor(location: Path, change_rows: Path, out: Path, key: str) -> dict[str, Any]:
    """The floor of a copy-on-write MERGE: find the table's files holding a changed key
    (reading the key column of every file), then read those files, replace the changed rows
    and write the result once, with pyarrow."""
    changed = pq.read_table(change_rows)
    keys = changed.column(key)
    started = time.perf_counter()
    files = DeltaTable(str(location)).file_uris()
    touched = [
        f for f in files if pc.any(pc.is_in(pq.read_table(f, columns=[key])[key], keys)).as_py()
    ]
    kept = pads.dataset(touched, format="parquet").to_table()
    kept = kept.filter(pc.invert(pc.is_in(kept[key], keys)))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables([kept, changed.cast(kept.schema)]), out / "rewritten.parquet")
    seconds = time.perf_counter() - started
    shutil.rmtree(out)
    return {
        "seconds": seconds,
        "files": len(files),
        "touched_files": len(touched),
        "rows_rewritten": kept.num_rows + changed.num_rows,
    }


def read_direct(location: Path) -> tuple[float, int]:
    """The floor of a shared read: pyarrow reading the table's current files into pandas."""
    started = time.perf_counter()
    files = DeltaTable(str(location)).file_uris()
    frame = pads.dataset(files, format="parquet").to_table().to_pandas()
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
