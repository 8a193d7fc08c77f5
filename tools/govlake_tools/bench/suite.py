"""The benchmark, step by step: each measured step in a process of its own, each compared
with a baseline measured in the same run."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from govlake.core.catalog import DEPARTMENTS_FILE, Catalog
from govlake.core.settings import Settings
from govlake_tools.bench import cycle, workloads
from govlake_tools.bench.process import settings_for
from govlake_tools.bench.results import Measurement, Report, peak_rss_of
from govlake_tools.bench.worker import run_task, spawn

DAY = date(2026, 11, 19)  # the extracts' as-of date
SHARED = "population.population.residents_unconditional"
CONSUMER = "civil_affairs"
#: Peak memory the cycle on the largest resource should stay under (the issue's 2 GB).
MEMORY_TARGET = 2e9


@dataclass(frozen=True)
class Options:
    rows: int = 1_000_000  # residents of the full ingest
    sizes: tuple[int, int, int] = (100_000, 1_000_000, 10_000_000)  # rows of the cycle's resources
    changes: int = 10_000  # records per change extract
    cycles: int = 2  # change extracts per resource; the best cycle counts
    cycle_budget: float = 60.0  # no further cycle on a resource after one longer than this
    read_changes: bool = False  # the client reads the change feed instead of the new version
    clients: int = 8
    load_seconds: float = 10.0
    repeat: int = 3
    quick: bool = False


@dataclass(frozen=True)
class Run:
    """One benchmark run: its options, scratch folder, log and voice."""

    options: Options
    catalog_dir: Path
    work: Path
    log: Path
    say: Callable[[str], Any]

    def task(self, task: str, arguments: dict[str, Any], name: str | None = None, *,
             mode: str = "local") -> dict[str, Any]:  # fmt: skip
        """Run `task` in a process of its own, its embedded engine in Sail's `mode`."""
        return run_task(task, arguments, self.work / "tasks" / (name or task), log=self.log,
                        env=engine_mode(mode))  # fmt: skip


def engine_mode(mode: str) -> dict[str, str]:
    """The environment that starts the embedded engine in Sail's `mode`: Sail's own variable
    and govlake's setting (which, when set, wins over Sail's), so a mode set around the
    benchmark does not leak into it."""
    return {"SAIL_MODE": mode, "GOVLAKE_SAIL_MODE": mode}


def _end(day: date) -> datetime:
    """The run's interval end: 02:00 UTC the day after the extract date."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=2)


def _millions(rows: int) -> str:
    return f"{rows / 1e6:g} M" if rows >= 1_000_000 else f"{rows / 1e3:g} k"


def _stages(stages: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items())


def run(options: Options, *, work: Path, out: Path, say: Callable[[str], Any]) -> Report:
    log = out / "bench.log"
    log.unlink(missing_ok=True)
    bench = Run(options, Settings().catalog_dir.resolve(), work, log, say)
    report = Report(parameters=asdict(options))
    _cycles(report, bench)
    ingest_dir = _ingest(report, bench)
    _sharing(report, bench, ingest_dir)
    return report


# -- the high-frequency cycle ------------------------------------------------------------
def _cycles(report: Report, run: Run) -> None:
    """The cycle on three sizes of one resource, and on the middle size with the engine in
    local-cluster mode."""
    small, mid, big = run.options.sizes
    bench = cycle.write_catalog(run.work / "catalog", run.catalog_dir / DEPARTMENTS_FILE)
    dirs = {size: run.work / f"cycle_{size}" for size in run.options.sizes}
    run.say(f"starting states of {', '.join(f'{s:,}' for s in dirs)} rows, each published once")
    started = time.perf_counter()
    seeded = run.task("seed", {"runs": {str(d): size for size, d in dirs.items()},
                               "catalog_dir": str(bench.directory),
                               "end": _end(DAY).isoformat()})  # fmt: skip
    run.say(f"  {time.perf_counter() - started:.0f} s; {bench.note}")
    clustered = run.work / f"cycle_{mid}_local_cluster"
    shutil.copytree(dirs[mid], clustered)  # the same starting state for the other mode
    results = {
        "small": _cycle_run(run, bench, dirs[small], small, "local"),
        "mid": _cycle_run(run, bench, dirs[mid], mid, "local"),
        "big": _cycle_run(run, bench, dirs[big], big, "local"),
        "local_cluster": _cycle_run(run, bench, clustered, mid, "local-cluster"),
    }
    _cycle_figures(report, run, bench, seeded, results)


def _cycle_run(
    run: Run, bench: cycle.BenchCatalog, run_dir: Path, rows: int, mode: str
) -> dict[str, Any]:
    options = run.options
    extracts = cycle.change_extracts(run_dir.parent / f"incoming_{run_dir.name}", rows=rows,
                                     changes=options.changes, cycles=options.cycles,
                                     removals=bench.removals, first_end=_end(DAY))  # fmt: skip
    run.say(f"cycle on {rows:,} rows, {mode} mode: {options.changes:,}-row change extracts")
    with _serving(run, run_dir, bench.directory, run_dir.name) as served:
        result = run.task(
            "cycle",
            {"run_dir": str(run_dir), "catalog_dir": str(bench.directory),
             "extracts": [asdict(e) for e in extracts], "profile": str(served.profile),
             "limit": options.changes, "budget": options.cycle_budget,
             "read_changes": options.read_changes},
            name=run_dir.name,
            mode=mode,
        )  # fmt: skip
    result["server_peak_rss_bytes"] = served.peak_rss_bytes
    seconds = [c["seconds"] for c in result["cycles"]]
    best = result["cycles"][seconds.index(min(seconds))]
    result["best"] = best
    run.say(f"  {' / '.join(f'{s:.1f}' for s in seconds)} s: {_stages(best['stages'])}")
    return result


def _cycle_notes(run: Run, bench: cycle.BenchCatalog, results: dict[str, Any]) -> str:
    extract = results["big"]["best"]["extract"]
    read = (
        "reads the change feed from the version it had (load_table_changes_as_pandas)"
        if run.options.read_changes
        else f"reads {run.options.changes:,} rows of that version (load_as_pandas with "
        "version and limit; the change feed would cost the table while a publication "
        "rewrites it)"
    )
    stages = "; ".join(
        f"{name} {_stages(results[name]['best']['stages'])} (Great Expectations "
        f"{results[name]['best']['gx_seconds']:.1f} s of it)"
        for name in ("small", "mid", "big")
    )
    written = ", ".join(
        f"{sharing_class} {shape['share_of_table_written']:.1%}"
        for sharing_class, shape in results["big"]["best"]["published"].items()
    )
    return (
        f"a change extract of {extract['updates']:,} updates, {extract['inserts']:,} inserts "
        f"and {extract['removals']:,} removals ({bench.note}) lands as CSV, then bronze → "
        "validate → silver → publish → announce through govlake_app.pipeline, then the "
        f"consumer's official client sees the new version and {read}; best of up to "
        f"{run.options.cycles} cycles per resource; engine started and Great Expectations "
        f"imported before timing; the publication on the largest resource wrote (new data "
        f"files and deletion vectors) {written} of each published table's bytes; by step: "
        f"{stages}"
    )


def _cycle_figures(report: Report, run: Run, bench: cycle.BenchCatalog,
                   seeded: dict[str, Any], results: dict[str, Any]) -> None:  # fmt: skip
    small, mid, big = run.options.sizes
    notes = _cycle_notes(run, bench, results)
    title = f"cycle of a {run.options.changes:,}-row change extract"
    for name, baseline, size, target in (("cycle_10m_vs_1m", "mid", mid, 1.5),
                                         ("cycle_10m_vs_100k", "small", small, 2.0)):  # fmt: skip
        report.add(Measurement(
            name, f"{title}: {_millions(big)} vs {_millions(size)} rows",
            results["big"]["seconds"], results[baseline]["seconds"], "s",
            f"the same cycle on {size:,} rows", rows=big, target=target,
            notes=f"tables {big / size:g}× apart: 1 means the cycle costs the change, "
            f"{big / size:g} that it costs the table; {notes}",
            details={"big": results["big"], baseline: results[baseline], "seeded": seeded},
        ))  # fmt: skip
    peaks = {k: results[k]["peak_rss_bytes"] for k in ("small", "mid", "big")}
    report.add(Measurement(
        "cycle_peak_memory", f"peak memory of the {_millions(big)}-row cycle",
        peaks["big"], peaks["small"], "bytes", f"the same process's peak on {small:,} rows",
        rows=big, target=MEMORY_TARGET, target_on="value",
        notes="peak RSS (VmHWM) of the process running the cycles, the embedded Sail engine "
        "and the client included (target: under 2 GB = 2e9 bytes); it held "
        f"{results['big']['rss_before_bytes'] / 2**20:,.0f} MiB before the first cycle, "
        f"{results['big']['best']['peak_rss_after_stages_bytes'] / 2**20:,.0f} MiB at the end "
        "of the stages; the sharing server process is apart (its peak in details)",
        details={"peak_rss_bytes": peaks,
                 "server_peak_rss_bytes": {k: r["server_peak_rss_bytes"]
                                           for k, r in results.items()}},
    ))  # fmt: skip
    clustered = results["local_cluster"]
    report.add(Measurement(
        "cycle_local_cluster_vs_local", f"{title} on {_millions(mid)} rows: local-cluster mode",
        clustered["seconds"], results["mid"]["seconds"], "s",
        f"the same cycle on {mid:,} rows in local mode", rows=mid, target=1.5,
        notes=f"SAIL_MODE={clustered['sail_mode']} (Sail's driver and workers as actors over "
        "RPC in one process, the code path of its kubernetes-cluster mode) against local; "
        f"same starting state and change extracts; by step: "
        f"{_stages(clustered['best']['stages'])}",
        details={"local_cluster": clustered},
    ))  # fmt: skip


# -- the full ingest ---------------------------------------------------------------------
def _ingest(report: Report, run: Run) -> Path:
    """Full ingest of the residents against the floor and the peer; GX's share of it."""
    rows, work, catalog_dir = run.options.rows, run.work, run.catalog_dir
    catalog = Catalog.load(catalog_dir)
    end = _end(DAY).isoformat()
    run.say(f"generating {rows:,} residents (three provider extracts)")
    source = work / "extracts"
    extracts = workloads.generate_extracts(catalog, source, rows=rows, day=DAY, defects=0.01)
    run.say("floor: pyarrow CSV → Parquet")
    floor = workloads.floor_ingest(extracts, work / "floor")
    run.say("govlake ingest (bronze → validate → silver → publish → announce), timed by step")
    ingest_dir = work / "ingest"
    workloads.copy_extracts(extracts, source, ingest_dir / "landing")
    ingest = run.task("ingest", {"run_dir": str(ingest_dir), "catalog_dir": str(catalog_dir),
                                 "end": end})  # fmt: skip
    run.say(f"  {ingest['seconds']:.1f} s: {_stages(ingest['stages'])}")
    run.say("peer: polars + delta-rs script")
    peer = run.task("peer", {"extracts": {p: str(f) for p, f in extracts.items()},
                             "warehouse": str(work / "peer"), "catalog_dir": str(catalog_dir),
                             "end": end})  # fmt: skip
    lines = sum(1 for path in extracts.values() for _ in path.open("rb")) - len(extracts)
    title = f"full ingest, {_millions(rows)} residents"
    report.add(Measurement(
        "ingest_vs_floor", f"{title} (CSV → published)", ingest["seconds"], floor, "s",
        "pyarrow reading the CSVs and writing Parquet", rows=lines, target=4.0,
        notes=f"by step: {_stages(ingest['stages'])}; GX imported before timing; the floor "
        "reads and writes each file once with pyarrow (multi-threaded), no Delta, no rules",
        details={k: v for k, v in ingest.items() if k != "peak_rss_bytes"}
        | {"floor_seconds": floor},
    ))  # fmt: skip
    report.add(Measurement(
        "ingest_vs_peer", f"{title}, against a peer script", ingest["seconds"], peer["seconds"],
        "s", "polars + delta-rs script, same in and out", rows=lines, target=3.0,
        notes="the peer types, drops duplicate keys, takes each item from its authority and "
        "publishes both classes; it keeps no bronze/lineage, applies no row rules, "
        "quarantines nothing, runs no GX, no cross-checks, no extract register, "
        "no audit journal, no re-send detection",
        details={"peer": peer},
    ))  # fmt: skip
    report.add(Measurement(
        "gx_share", "Great Expectations as a share of the ingest", ingest["gx_seconds"],
        ingest["seconds"], "share", "the whole ingest", ideal=None, rows=lines, target=0.25,
        notes=f"{ingest['gx_suites']} checkpoint runs; timed around every call into "
        "expectations.runner and GX's Checkpoint.run (the metric queries on the engine "
        "included), nested calls once",
    ))  # fmt: skip
    return ingest_dir


# -- sharing: a shared read and the protocol endpoints under load --------------------------
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


@dataclass
class Served:
    """A sharing server of one run folder, and the consumer's profile for it."""

    endpoint: str
    profile: Path
    headers: dict[str, str]
    peak_rss_bytes: int | None = None


@contextmanager
def _serving(run: Run, run_dir: Path, catalog_dir: Path, name: str) -> Iterator[Served]:
    """The project's sharing server over `run_dir`'s lakehouse, in a process of its own, with
    the consumer registered and its profile written; its peak memory noted when it stops."""
    from govlake.core.net import free_port
    from govlake.platform.database import Consumer, session
    from govlake.sharing import access
    from govlake_app.cli.serve import write_profile

    settings = settings_for(run_dir, catalog_dir)
    catalog = Catalog.load(catalog_dir)
    at = datetime.now(UTC).replace(tzinfo=None)
    with session(settings) as s:
        if s.get(Consumer, CONSUMER) is None:
            access.register_consumer(s, catalog, CONSUMER, email=None, at=at)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/delta-sharing"
    profile = write_profile(settings, catalog, CONSUMER, run.work / "profiles" / f"{name}.share",
                            days=1, at=at, endpoint=endpoint)  # fmt: skip
    token = json.loads(profile.read_text())["bearerToken"]
    served = Served(endpoint, profile, {"Authorization": f"Bearer {token}"})
    run.say(f"sharing server on {endpoint}")
    server = spawn("serve", {"run_dir": str(run_dir), "catalog_dir": str(catalog_dir),
                             "port": port}, run.work / "tasks" / f"serve_{name}", log=run.log,
                   wait=False)  # fmt: skip
    try:
        _wait(f"{endpoint}/shares", served.headers, server)
        yield served
    finally:
        served.peak_rss_bytes = peak_rss_of(server.pid)
        _stop(server)


def _shared_read(report: Report, run: Run, served: Served, location: Path) -> None:
    import delta_sharing

    reads, direct = [], []
    rows = direct_rows = 0
    for _ in range(run.options.repeat):
        started = time.perf_counter()
        rows = len(delta_sharing.load_as_pandas(f"{served.profile}#{SHARED}"))
        reads.append(time.perf_counter() - started)
        seconds, direct_rows = workloads.read_direct(location)
        direct.append(seconds)
    report.add(Measurement(
        "share_read_vs_pyarrow", f"load_as_pandas of {rows:,} rows through the server",
        min(reads), min(direct), "s", "delta-rs reading the same version into pandas",
        rows=rows,
        notes=f"best of {run.options.repeat}; the client asks the query endpoint, then fetches "
        "each file over HTTP (signed URLs, Range) and converts; the direct read goes through "
        f"delta-rs's QueryBuilder (deletion vectors applied), {direct_rows:,} rows",
        details={"reads": reads, "direct": direct},
    ))  # fmt: skip


def _sharing(report: Report, run: Run, ingest_dir: Path) -> None:
    options = run.options
    share, schema, name = SHARED.split(".")
    path = f"/shares/{share}/schemas/{schema}/tables/{name}"
    location = ingest_dir / "lakehouse" / "population" / "residents_unconditional"
    with _serving(run, ingest_dir, run.catalog_dir, "ingest") as served:
        _shared_read(report, run, served, location)
        url = served.endpoint + path
        bodies = {
            "metadata": httpx.get(url + "/metadata", headers=served.headers).text,
            "query": httpx.post(url + "/query", headers=served.headers, json={}).text,
        }
        loads = {
            "metadata": _load(url + "/metadata", "GET", served.headers, run),
            "query": _load(url + "/query", "POST", served.headers, run),
        }
    from govlake.core.net import free_port

    floor_port = free_port()
    floor_endpoint = f"http://127.0.0.1:{floor_port}/delta-sharing"
    run.say(f"floor: the bare HTTP stack on {floor_endpoint}")
    floor_server = spawn("serve_floor", {"port": floor_port, **bodies},
                         run.work / "tasks" / "serve_floor", log=run.log,
                         wait=False)  # fmt: skip
    try:
        _wait(floor_endpoint + path + "/metadata", {}, floor_server)
        floors = {
            "metadata": _load(floor_endpoint + path + "/metadata", "GET", {}, run),
            "query": _load(floor_endpoint + path + "/query", "POST", {}, run),
        }
    finally:
        _stop(floor_server)
    for endpoint_name in ("metadata", "query"):
        _load_figures(report, options, endpoint_name, loads[endpoint_name], floors[endpoint_name])


def _load_figures(report: Report, options: Options, endpoint: str, measured: workloads.Load,
                  floor: workloads.Load) -> None:  # fmt: skip
    common = {
        "endpoint": endpoint,
        "clients": options.clients,
        "seconds": options.load_seconds,
        "server": asdict(measured),
        "floor": asdict(floor),
    }
    errors = f"; {measured.errors} non-200 answers" if measured.errors else ""
    report.add(Measurement(
        f"{endpoint}_rps", f"{endpoint} endpoint throughput, {options.clients} clients",
        measured.rps, floor.rps, "req/s",
        "the same HTTP stack (FastAPI + uvicorn) answering a fixed body", better="higher",
        notes=f"{measured.requests:,} requests in {measured.seconds:.1f} s{errors}; each "
        "call authenticates the token, checks access, reads the Delta log and "
        "appends to the audit journal; client and server share the 2 cores",
        details=common,
    ))  # fmt: skip
    report.add(Measurement(
        f"{endpoint}_p99", f"{endpoint} endpoint p99 latency, {options.clients} clients",
        measured.p99, floor.p99, "s", "p99 of the bare HTTP stack under the same load",
        notes=f"p50 {measured.p50 * 1000:.1f} ms (floor {floor.p50 * 1000:.1f} ms)",
        details=common,
    ))  # fmt: skip


def _load(url: str, method: str, headers: dict[str, str], run: Run) -> workloads.Load:
    result = workloads.load(
        url,
        method=method,
        headers=headers,
        body={} if method == "POST" else None,
        clients=run.options.clients,
        seconds=run.options.load_seconds,
    )
    run.say(
        f"  {method} {url.rsplit('/', 1)[-1]}: {result.rps:,.0f} req/s, "
        f"p99 {result.p99 * 1000:.1f} ms"
    )
    return result
