"""The benchmark, step by step: each measured step in a process of its own, each compared
with a baseline that does the least the step must do."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake_tools.bench import workloads
from govlake_tools.bench.results import Measurement, Report
from govlake_tools.bench.tasks import settings_for
from govlake_tools.bench.worker import run_task, spawn

DAY = date(2026, 11, 19)  # the extracts' as-of date
CHANGE_DAY = DAY + timedelta(days=1)
SHARED = "population.population.residents_unconditional"
CONSUMER = "civil_affairs"


@dataclass(frozen=True)
class Options:
    rows: int = 1_000_000
    big_rows: int = 10_000_000
    changes: int = 10_000
    clients: int = 8
    load_seconds: float = 10.0
    repeat: int = 3
    quick: bool = False


def _end(day: date) -> datetime:
    """The run's interval end: 02:00 UTC the day after the extract date."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=2)


def _millions(rows: int) -> str:
    return f"{rows / 1e6:g} M" if rows >= 1_000_000 else f"{rows / 1e3:g} k"


def run(options: Options, *, work: Path, out: Path, say: Callable[[str], Any]) -> Report:
    catalog_dir = Settings().catalog_dir.resolve()
    catalog = Catalog.load(catalog_dir)
    log = out / "bench.log"
    log.unlink(missing_ok=True)
    report = Report(parameters=asdict(options))
    end = _end(DAY).isoformat()
    rows, big, changes = options.rows, options.big_rows, options.changes

    # -- silver tables of two sizes, each with a change extract waiting (merged later) -------
    merges: dict[int, dict[str, Any]] = {}
    for size in (rows, big):
        run_dir = work / f"merge_{size}"
        say(f"building a {size:,}-row silver table and a {changes:,}-row change extract")
        built = workloads.build_silver(
            catalog,
            run_dir,
            rows=size,
            changes=changes,
            day=DAY,
            change_day=CHANGE_DAY,
            updated_at=_end(DAY),
        )
        location = run_dir / "lakehouse" / "population" / "residents"
        floor_merge = workloads.merge_floor(
            location, built.change_rows, run_dir / "floor", "citizen_id"
        )
        merges[size] = {"run_dir": str(run_dir), "built": asdict(built), "floor": floor_merge}

    # -- full ingest: govlake, the pyarrow floor, the polars + delta-rs peer ----------------
    say(f"generating {rows:,} residents (three provider extracts)")
    source = work / "extracts"
    extracts = workloads.generate_extracts(catalog, source, rows=rows, day=DAY, defects=0.01)
    say("floor: pyarrow CSV → Parquet")
    floor = workloads.floor_ingest(extracts, work / "floor")
    say("govlake ingest (bronze → validate → silver → publish), timed by stage")
    ingest_dir = work / "ingest"
    workloads.copy_extracts(extracts, source, ingest_dir / "landing")
    ingest = run_task(
        "ingest",
        {
            "run_dir": str(ingest_dir),
            "catalog_dir": str(catalog_dir),
            "end": end,
            # Not measured: the change extracts through bronze and validation.
            "prepare": [m["run_dir"] for m in merges.values()],
            "prepare_end": _end(CHANGE_DAY).isoformat(),
        },
        work / "tasks" / "ingest",
        log=log,
    )
    say(
        f"  {ingest['seconds']:.1f} s: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in ingest["stages"].items())
    )
    say("peer: polars + delta-rs script")
    peer = run_task(
        "peer",
        {
            "extracts": {p: str(f) for p, f in extracts.items()},
            "warehouse": str(work / "peer"),
            "catalog_dir": str(catalog_dir),
            "end": end,
        },
        work / "tasks" / "peer",
        log=log,
    )
    lines = sum(1 for path in extracts.values() for _ in path.open("rb")) - len(extracts)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in ingest["stages"].items())
    report.add(
        Measurement(
            "ingest_vs_floor",
            f"full ingest, {_millions(rows)} residents (CSV → published)",
            ingest["seconds"],
            floor,
            "s",
            "pyarrow reading the CSVs and writing Parquet",
            rows=lines,
            notes=f"stages: {stages}; GX imported before timing; floor reads and writes each "
            "file once with pyarrow (multi-threaded), no Delta, no rules",
            details={k: v for k, v in ingest.items() if k not in ("peak_rss_bytes", "prepared")}
            | {"floor_seconds": floor},
        )
    )
    report.add(
        Measurement(
            "ingest_vs_peer",
            f"full ingest, {_millions(rows)} residents, against a peer script",
            ingest["seconds"],
            peer["seconds"],
            "s",
            "polars + delta-rs script, same in and out",
            rows=lines,
            notes="the peer types, drops duplicate keys, takes each item from its authority and "
            "publishes both classes; it keeps no bronze/lineage, applies no row rules, "
            "quarantines nothing, runs no GX, no cross-checks, no extract register, "
            "no audit journal, no re-send detection",
            details={"peer": peer},
        )
    )
    report.add(
        Measurement(
            "gx_share",
            "Great Expectations validation as a share of the ingest",
            ingest["gx_seconds"],
            ingest["seconds"],
            "share",
            "the whole ingest",
            ideal=None,
            rows=lines,
            notes=f"{ingest['gx_suites']} suite runs (one per extract, one per publication), "
            "timed around jobs.quality.run_suite (the metric queries on the engine included)",
        )
    )

    for size, merge in merges.items():
        say(f"silver MERGE of {changes:,} changed rows into {size:,} rows")
        merge["prepared"] = ingest["prepared"][merge["run_dir"]]
        merge["result"] = run_task(
            "merge",
            {
                "run_dir": merge["run_dir"],
                "catalog_dir": str(catalog_dir),
                "end": _end(CHANGE_DAY).isoformat(),
            },
            work / "tasks" / f"merge_{size}",
            log=log,
        )
        say(f"  {merge['result']['seconds']:.1f} s (floor {merge['floor']['seconds']:.2f} s)")
    small, large = merges[rows], merges[big]
    report.add(
        Measurement(
            "merge_big_vs_small",
            f"silver MERGE of {changes:,} changes: {_millions(big)} vs {_millions(rows)} rows",
            large["result"]["seconds"],
            small["result"]["seconds"],
            "s",
            f"the same MERGE into {rows:,} rows",
            rows=big,
            notes=f"table sizes {big / rows:g}× apart: 1 means the cost follows the change, "
            f"{big / rows:g} that it follows the table; silver written by delta-rs "
            f"({large['built']['files']} vs {small['built']['files']} files); timed: "
            "jobs.silver.run",
            details={"small": small, "large": large},
        )
    )
    for name, size, merge in (
        ("merge_small_vs_floor", rows, small),
        ("merge_big_vs_floor", big, large),
    ):
        floor_merge = merge["floor"]
        report.add(
            Measurement(
                name,
                f"silver MERGE of {changes:,} changes into {_millions(size)} rows",
                merge["result"]["seconds"],
                floor_merge["seconds"],
                "s",
                "pyarrow rewriting just the touched files",
                rows=size,
                notes=f"floor: scan the key column of all {floor_merge['files']} files, rewrite "
                f"the {floor_merge['touched_files']} holding a changed key "
                f"({floor_merge['rows_rewritten']:,} rows) once; MERGE metrics: "
                + json.dumps(merge["result"].get("merge_metrics", {})),
                details=merge,
            )
        )
    report.add(
        Measurement(
            "peak_memory_big",
            f"peak memory of the {_millions(big)}-row MERGE run",
            large["result"]["peak_rss_bytes"],
            large["built"]["arrow_bytes"],
            "bytes",
            f"the {_millions(big)} silver rows as an in-memory Arrow table",
            rows=big,
            notes="peak RSS (VmHWM) of the process running jobs.silver.run, the embedded Sail "
            "engine included; it held "
            f"{large['result']['rss_before_bytes'] / 2**20:,.0f} MiB before the MERGE "
            "(Python, PySpark client, idle engine)",
        )
    )

    # -- sharing: a shared read and the protocol endpoints under load ------------------------
    _sharing(report, options, catalog, catalog_dir, ingest_dir, work, log, say)
    return report


def _wait(url: str, headers: dict[str, str], process: Any, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server process exited ({process.returncode})")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _stop(process: Any) -> None:
    process.terminate()
    try:
        process.wait(15)
    except Exception:
        process.kill()
        process.wait()


def _sharing(
    report: Report,
    options: Options,
    catalog: Catalog,
    catalog_dir: Path,
    ingest_dir: Path,
    work: Path,
    log: Path,
    say: Callable[[str], Any],
) -> None:
    import delta_sharing

    from govlake.core.net import free_ports
    from govlake.platform.database import Consumer, session
    from govlake.sharing import access
    from govlake_app.cli.serve import write_profile

    settings = settings_for(ingest_dir, catalog_dir)
    at = datetime.now(UTC).replace(tzinfo=None)
    with session(settings) as s:
        if s.get(Consumer, CONSUMER) is None:
            access.register_consumer(s, catalog, CONSUMER, email=None, at=at)
    port, floor_port = free_ports(2)
    endpoint = f"http://127.0.0.1:{port}/delta-sharing"
    profile = write_profile(
        settings, catalog, CONSUMER, work / f"{CONSUMER}.share", days=1, at=at, endpoint=endpoint
    )
    token = json.loads(profile.read_text())["bearerToken"]
    headers = {"Authorization": f"Bearer {token}"}
    share, schema, name = SHARED.split(".")
    path = f"/shares/{share}/schemas/{schema}/tables/{name}"
    location = ingest_dir / "lakehouse" / "population" / "residents_unconditional"
    say(f"sharing server on {endpoint}")
    server = spawn(
        "serve",
        {"run_dir": str(ingest_dir), "catalog_dir": str(catalog_dir), "port": port},
        work / "tasks" / "serve",
        log=log,
        wait=False,
    )
    try:
        _wait(f"{endpoint}/shares", headers, server)
        reads, direct = [], []
        rows = 0
        for _ in range(options.repeat):
            started = time.perf_counter()
            rows = len(delta_sharing.load_as_pandas(f"{profile}#{SHARED}"))
            reads.append(time.perf_counter() - started)
            seconds, direct_rows = workloads.read_direct(location)
            direct.append(seconds)
        report.add(
            Measurement(
                "share_read_vs_pyarrow",
                f"load_as_pandas of {rows:,} rows through the server",
                min(reads),
                min(direct),
                "s",
                "pyarrow reading the same files into pandas",
                rows=rows,
                notes=f"best of {options.repeat}; the client asks the query endpoint, then fetches "
                f"each file over HTTP (signed URLs, Range) and converts; direct read "
                f"{direct_rows:,} rows",
                details={"reads": reads, "direct": direct},
            )
        )
        bodies = {
            "metadata": httpx.get(endpoint + path + "/metadata", headers=headers).text,
            "query": httpx.post(endpoint + path + "/query", headers=headers, json={}).text,
        }
        loads = {
            "metadata": _load(endpoint + path + "/metadata", "GET", headers, options, say),
            "query": _load(endpoint + path + "/query", "POST", headers, options, say),
        }
    finally:
        _stop(server)
    floor_endpoint = f"http://127.0.0.1:{floor_port}/delta-sharing"
    say(f"floor: the bare HTTP stack on {floor_endpoint}")
    floor_server = spawn(
        "serve_floor",
        {"port": floor_port, **bodies},
        work / "tasks" / "serve_floor",
        log=log,
        wait=False,
    )
    try:
        _wait(floor_endpoint + path + "/metadata", {}, floor_server)
        floors = {
            "metadata": _load(floor_endpoint + path + "/metadata", "GET", {}, options, say),
            "query": _load(floor_endpoint + path + "/query", "POST", {}, options, say),
        }
    finally:
        _stop(floor_server)
    for endpoint_name in ("metadata", "query"):
        measured, floor = loads[endpoint_name], floors[endpoint_name]
        common = {
            "endpoint": endpoint_name,
            "clients": options.clients,
            "seconds": options.load_seconds,
            "server": asdict(measured),
            "floor": asdict(floor),
        }
        errors = f"; {measured.errors} non-200 answers" if measured.errors else ""
        report.add(
            Measurement(
                f"{endpoint_name}_rps",
                f"{endpoint_name} endpoint throughput, {options.clients} clients",
                measured.rps,
                floor.rps,
                "req/s",
                "the same HTTP stack (FastAPI + uvicorn) answering a fixed body",
                better="higher",
                notes=f"{measured.requests:,} requests in {measured.seconds:.1f} s{errors}; each "
                "call authenticates the token, checks access, reads the Delta log and "
                "appends to the audit journal; client and server share the 2 cores",
                details=common,
            )
        )
        report.add(
            Measurement(
                f"{endpoint_name}_p99",
                f"{endpoint_name} endpoint p99 latency, {options.clients} clients",
                measured.p99,
                floor.p99,
                "s",
                "p99 of the bare HTTP stack under the same load",
                notes=f"p50 {measured.p50 * 1000:.1f} ms (floor {floor.p50 * 1000:.1f} ms)",
                details=common,
            )
        )


def _load(
    url: str, method: str, headers: dict[str, str], options: Options, say: Callable[[str], Any]
) -> workloads.Load:
    result = workloads.load(
        url,
        method=method,
        headers=headers,
        body={} if method == "POST" else None,
        clients=options.clients,
        seconds=options.load_seconds,
    )
    say(
        f"  {method} {url.rsplit('/', 1)[-1]}: {result.rps:,.0f} req/s, "
        f"p99 {result.p99 * 1000:.1f} ms"
    )
    return result
