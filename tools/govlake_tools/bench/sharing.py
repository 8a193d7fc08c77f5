"""The sharing part of the benchmark: a shared read through the server against reading the
same version directly, and the metadata and query endpoints under load against the bare
HTTP stack (FastAPI + uvicorn answering a fixed body) measured in the same run, with 8 and
32 clients, one server worker and several (the servers: `govlake_tools.bench.servers`);
after every load, the audit journal checked.

Names of the load figures: `<endpoint>_<figure>` for 8 clients and one worker (the names
earlier runs used), then `_32c` for 32 clients and `_<n>w` for `n` workers, e.g.
`query_p99_32c_2w`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from govlake.core.settings import Settings
from govlake_tools.bench import workloads
from govlake_tools.bench.results import Measurement, Report, cpu_seconds_of
from govlake_tools.bench.servers import Served, floor_serving, serving, several_workers_supported
from govlake_tools.bench.worker import TaskFailed, spawn

if TYPE_CHECKING:
    from govlake_tools.bench.options import Run

SHARED = "population.population.residents_unconditional"
ENDPOINTS = {"metadata": ("GET", "share.metadata"), "query": ("POST", "share.query")}
#: Targets (ratios to the bare stack, from the issue): throughput at least half the
#: baseline's (a "higher is better" ratio of at most 2), p99 at most 3 times.
RPS_TARGET, P99_TARGET = 2.0, 3.0
#: A read through the server at most 1.3 times the direct read.
READ_TARGET = 1.3


def table_location(ingest_dir: Path) -> Path:
    """Where the ingest's run folder keeps the shared table."""
    return ingest_dir / "lakehouse" / "population" / "residents_unconditional"


# -- the journal under load -----------------------------------------------------------------
def _last_seq(settings: Settings) -> int:
    from sqlalchemy import func, select

    from govlake.platform.database import AuditEntry, session

    with session(settings) as s:
        return int(s.scalar(select(func.max(AuditEntry.seq))) or 0)


def _journaled(settings: Settings, action: str, after: int) -> int:
    """Entries of `action` the journal holds past seq `after`."""
    from sqlalchemy import func, select

    from govlake.platform.database import AuditEntry, session

    with session(settings) as s:
        found = s.scalar(select(func.count()).select_from(AuditEntry)
                         .where(AuditEntry.seq > after, AuditEntry.action == action))  # fmt: skip
    return int(found or 0)


@dataclass(frozen=True)
class Verified:
    """`govlake audit verify` after a server's loads: entries checked and problems named."""

    entries: int
    problems: list[str]
    seconds: float


def _verify(settings: Settings) -> Verified:
    from govlake.platform import audit
    from govlake.platform.database import session

    started = time.perf_counter()
    with session(settings) as s:
        result = audit.verify(s, settings)
    return Verified(result.checked, list(result.problems), time.perf_counter() - started)


# -- load runs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One load setting: clients, server workers, and the load generator processes the
    clients are spread over (the same for the server and its baseline). The first client
    count carries the targets; with one worker, it keeps the historical figure names."""

    clients: int
    workers: int
    first_clients: int

    @property
    def generators(self) -> int:
        """One process up to 8 clients; beyond, two: on 2 cores one Python process with 32
        client threads would measure its own GIL rather than the server."""
        return 1 if self.clients <= 8 else 2

    @property
    def suffix(self) -> str:
        return ("" if self.clients == self.first_clients else f"_{self.clients}c") + (
            "" if self.workers == 1 else f"_{self.workers}w"
        )


@dataclass
class Measured:
    """The loads of one case on the server and on the bare stack, and the journal's count."""

    case: Case
    server: dict[str, workloads.Load] = field(default_factory=dict)
    floor: dict[str, workloads.Load] = field(default_factory=dict)
    journaled: dict[str, int] = field(default_factory=dict)


def _load(run: Run, url: str, method: str, headers: dict[str, str], case: Case,
          name: str) -> workloads.Load:  # fmt: skip
    result = spread_load(
        url, method=method, headers=headers, body={} if method == "POST" else None,
        clients=case.clients, seconds=run.options.load_seconds, processes=case.generators,
        scratch=run.work / "tasks" / f"load_{name}", log=run.log,
    )  # fmt: skip
    failed = f", {result.errors + result.failed} errors" if result.errors + result.failed else ""
    run.say(f"  {method} {url.rsplit('/', 1)[-1]}, {case.clients} clients: "
            f"{result.rps:,.0f} req/s, p50 {result.p50 * 1000:.1f} ms, "
            f"p99 {result.p99 * 1000:.1f} ms{failed}")  # fmt: skip
    return result


def _server_loads(run: Run, served: Served, path: str, cases: list[Case]) -> list[Measured]:
    """Each case's loads on the server, each followed by the count of its journal entries."""
    measured = []
    for case in cases:
        done = Measured(case)
        for endpoint, (method, action) in ENDPOINTS.items():
            before = _last_seq(served.settings)
            url = served.endpoint + path + f"/{endpoint}"
            done.server[endpoint] = _load(run, url, method, served.headers, case,
                                          f"{endpoint}{case.suffix}")  # fmt: skip
            done.journaled[endpoint] = _journaled(served.settings, action, before)
        measured.append(done)
    return measured


def _floor_loads(run: Run, bodies: dict[str, str], path: str, measured: list[Measured],
                 workers: int) -> None:  # fmt: skip
    with floor_serving(run, bodies, path, workers=workers) as endpoint:
        for done in measured:
            for name, (method, _) in ENDPOINTS.items():
                done.floor[name] = _load(run, endpoint + path + f"/{name}", method, {}, done.case,
                                         f"floor_{name}{done.case.suffix}")  # fmt: skip


# -- the shared read ------------------------------------------------------------------------
def _file_downloads(settings: Settings, after: int) -> tuple[int, int]:
    """File downloads journaled past seq `after`, and the bytes they sent."""
    from sqlalchemy import select

    from govlake.platform.database import AuditEntry, session

    with session(settings) as s:
        details = s.scalars(select(AuditEntry.detail).where(
            AuditEntry.seq > after, AuditEntry.action == "share.file")).all()  # fmt: skip
    return len(details), sum(json.loads(d or "{}").get("bytes", 0) for d in details)


def _shared_read(report: Report, run: Run, served: Served, location: Path) -> None:
    """load_as_pandas through the server against delta-rs reading the same version, each
    read once untimed, then `repeat` times in turn, the best kept; what the server did for
    each read (its CPU time, the file downloads it journaled) and pyarrow reading the
    version's files alone in the details."""
    import delta_sharing

    reads: list[dict[str, Any]] = []
    direct, files = [], []
    rows = direct_rows = files_rows = 0
    delta_sharing.load_as_pandas(f"{served.profile}#{SHARED}")  # warm-up, both sides
    workloads.read_direct(location)
    for _ in range(run.options.repeat):
        before, cpu = _last_seq(served.settings), cpu_seconds_of(served.pid)
        started = time.perf_counter()
        rows = len(delta_sharing.load_as_pandas(f"{served.profile}#{SHARED}"))
        seconds = time.perf_counter() - started
        after = cpu_seconds_of(served.pid)
        downloads, sent = _file_downloads(served.settings, before)
        reads.append({"seconds": seconds, "downloads": downloads, "bytes": sent,
                      "server_cpu_seconds": None if cpu is None or after is None
                      else after - cpu})  # fmt: skip
        seconds, direct_rows = workloads.read_direct(location)
        direct.append(seconds)
        seconds, files_rows = workloads.read_files_pyarrow(location)
        files.append(seconds)
    best = min(reads, key=lambda r: r["seconds"])
    cpu_said = (f", {best['server_cpu_seconds']:.2f} s of server CPU"
                if best["server_cpu_seconds"] is not None else "")  # fmt: skip
    report.add(Measurement(
        "share_read_vs_pyarrow", f"load_as_pandas of {rows:,} rows through the server",
        best["seconds"], min(direct), "s", "delta-rs reading the same version into pandas",
        rows=rows, target=READ_TARGET,
        notes=f"best of {run.options.repeat}, reads in turn after one untimed read each (a "
        "server's first answers and a process's first read pay one-off costs); the client "
        "asks the metadata and query endpoints, then fetches each file over HTTP (signed "
        f"URLs) and converts with delta-kernel-rs; its best read fetched {best['downloads']} "
        f"files, {best['bytes'] / 2**20:,.1f} MiB{cpu_said}. The baseline stays delta-rs's "
        f"QueryBuilder reading the same version (deletion vectors applied, {direct_rows:,} "
        "rows): the rows the client gets. pyarrow reading the version's Parquet files alone "
        f"(no log, no deletion vector; {files_rows:,} rows) took {min(files):.3f} s, the "
        f"read {best['seconds'] / min(files):.2f}× that (details); target: at most 1.3×",
        details={"reads": reads, "direct": direct, "pyarrow_files": files,
                 "pyarrow_files_rows": files_rows},
    ))  # fmt: skip


# -- the whole part -------------------------------------------------------------------------
def measure(report: Report, run: Run, ingest_dir: Path) -> None:
    """The shared read, then every load case on the server and on the bare stack, one worker
    and (`run.options.workers` > 1) several; then the journal's figures."""
    share, schema, name = SHARED.split(".")
    table_path = f"/shares/{share}/schemas/{schema}/tables/{name}"
    workers = [1]
    if run.options.workers > 1:
        if several_workers_supported():
            workers.append(run.options.workers)
        else:
            run.say(f"[yellow]`govlake share serve` has no --workers: no {run.options.workers}"
                    "-worker figures[/yellow]")  # fmt: skip
    measured: list[Measured] = []
    verified: dict[int, Verified] = {}
    bodies: dict[str, str] = {}
    for count in workers:
        cases = [Case(clients, count, run.options.clients[0]) for clients in run.options.clients]
        with serving(run, ingest_dir, run.catalog_dir, f"ingest_{count}w",
                     workers=count) as served:  # fmt: skip
            if count == 1:
                _shared_read(report, run, served, table_location(ingest_dir))
                url = served.endpoint + table_path
                bodies = {
                    "metadata": httpx.get(url + "/metadata", headers=served.headers).text,
                    "query": httpx.post(url + "/query", headers=served.headers, json={}).text,
                }
            loads = _server_loads(run, served, table_path, cases)
        verified[count] = _verify(served.settings)
        _floor_loads(run, bodies, table_path, loads, count)
        measured.extend(loads)
    for done in measured:
        for endpoint in ENDPOINTS:
            _load_figures(report, run, endpoint, done)
    _journal_figures(report, measured, verified)


def _load_figures(report: Report, run: Run, endpoint: str, done: Measured) -> None:
    case = done.case
    measured, floor = done.server[endpoint], done.floor[endpoint]
    setting = f"{case.clients} clients, {case.workers} worker{'s' if case.workers > 1 else ''}"
    spread = (
        f"; the clients are spread over {case.generators} load generator processes (one "
        "Python process cannot drive this many on 2 cores), the same for the baseline"
        if case.generators > 1 else ""
    )  # fmt: skip
    common = {
        "endpoint": endpoint,
        "clients": case.clients,
        "workers": case.workers,
        "generators": case.generators,
        "seconds": run.options.load_seconds,
        "server": asdict(measured),
        "floor": asdict(floor),
        "journaled": done.journaled[endpoint],
    }
    first = case.clients == case.first_clients  # the targets are for 8 clients
    baseline = (f"the same HTTP stack (FastAPI + uvicorn, {case.workers} "
                f"worker{'s' if case.workers > 1 else ''}) answering a fixed body")  # fmt: skip
    errors = measured.errors + measured.failed
    said = f"; {errors} errors" if errors else ""
    name = f"{endpoint}_{{}}{case.suffix}"
    report.add(Measurement(
        name.format("rps"), f"{endpoint} endpoint throughput, {setting}",
        measured.rps, floor.rps, "req/s", baseline, better="higher",
        target=RPS_TARGET if first else None,
        notes=f"{measured.requests:,} requests in {measured.seconds:.1f} s{said}; each call "
        "authenticates the token, checks access, reads the Delta log and appends to the "
        "audit journal; client and server share the 2 cores; the baseline runs uvicorn's "
        "default HTTP protocol (httptools), the server the h11 protocol it configures"
        f"{spread}" + ("; target: at least half the baseline's req/s" if first else ""),
        details=common,
    ))  # fmt: skip
    over = ("every answered request" if measured.requests
            else "the time each request took to fail (none answered)")  # fmt: skip
    for percentile in ("p50", "p99"):
        target = P99_TARGET if first and percentile == "p99" else None
        report.add(Measurement(
            name.format(percentile), f"{endpoint} endpoint {percentile} latency, {setting}",
            getattr(measured, percentile), getattr(floor, percentile), "s",
            f"{percentile} of the bare HTTP stack under the same load", target=target,
            notes=f"over {over}; {percentile} of the baseline "
            f"{getattr(floor, percentile) * 1000:.1f} ms{spread}"
            + ("; target: at most 3× the baseline's" if target else ""),
            details=common,
        ))  # fmt: skip
    if case.clients != case.first_clients:
        report.add(Measurement(
            name.format("errors"), f"{endpoint} endpoint errors, {setting}",
            errors, measured.requests + measured.failed, "count",
            "requests the clients sent", ideal=None, target=0, target_on="value",
            notes=f"answers other than 200 ({measured.errors}) and requests without an answer "
            f"({measured.failed}); the baseline had {floor.errors + floor.failed}; target: none",
            details=common,
        ))  # fmt: skip


def _journal_figures(
    report: Report, measured: list[Measured], verified: dict[int, Verified]
) -> None:
    runs: list[dict[str, Any]] = [
        {"endpoint": endpoint, "clients": done.case.clients, "workers": done.case.workers,
         "answered": done.server[endpoint].requests, "journaled": done.journaled[endpoint]}
        for done in measured for endpoint in ENDPOINTS
    ]  # fmt: skip
    answered = sum(r["answered"] for r in runs)
    lost = sum(max(0, r["answered"] - r["journaled"]) for r in runs)
    extra = sum(max(0, r["journaled"] - r["answered"]) for r in runs)
    report.add(Measurement(
        "journal_lost", "answered requests without their journal entry, every load run",
        lost, answered, "count", "requests answered (any status)", ideal=None, target=0,
        target_on="value",
        notes=f"after each load run, the entries of the route's action (share.metadata, "
        f"share.query) added during it counted against the answers the clients got; "
        f"{extra} entries more than answers (requests the server journaled whose answer the "
        "client did not get); target: none lost",
        details={"runs": runs},
    ))  # fmt: skip
    problems = [p for v in verified.values() for p in v.problems]
    entries = sum(v.entries for v in verified.values())
    report.add(Measurement(
        "journal_verify_problems", "`govlake audit verify` after the loads",
        len(problems), entries, "count", "journal entries verified", ideal=None, target=0,
        target_on="value",
        notes="audit.verify (hashes, chain links, the Delta archive) run after each server's "
        "load runs, over the whole journal"
        + (f": {'; '.join(problems[:5])}" if problems else ": clean"),
        details={f"{workers}w": asdict(v) for workers, v in verified.items()},
    ))  # fmt: skip


def spread_load(
    url: str,
    *,
    method: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    clients: int,
    seconds: float,
    processes: int,
    scratch: Path,
    log: Path,
) -> workloads.Load:
    """`load` with the clients spread over `processes` load generator processes started
    together (each its share of the clients); percentiles over every answered request."""
    scratch.mkdir(parents=True, exist_ok=True)
    go = scratch / "go"
    go.unlink(missing_ok=True)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    started = []
    for index, share in enumerate(shares):
        ready = scratch / f"ready_{index}"
        ready.unlink(missing_ok=True)
        arguments = {"url": url, "method": method, "headers": headers, "body": body,
                     "clients": share, "seconds": seconds, "go": str(go),
                     "ready": str(ready)}  # fmt: skip
        started.append((spawn("load", arguments, scratch / str(index), log=log, wait=False),
                        ready, scratch / str(index) / "load.out.json"))  # fmt: skip
    while not all(ready.exists() for _, ready, _ in started):
        if any(process.poll() is not None for process, _, _ in started):
            break
        time.sleep(0.01)
    go.write_text("go")
    results = []
    for process, _, out in started:
        process.wait()
        if process.returncode != 0 or not out.exists():
            raise TaskFailed(f"a load generator failed (exit {process.returncode}); see {log}")
        results.append(json.loads(out.read_text()))
    answered = [x for result in results if result["requests"] for x in result["latencies"]]
    p50, p99 = workloads.percentiles(
        answered or [x for result in results for x in result["latencies"]]
    )
    return workloads.Load(
        requests=sum(r["requests"] for r in results),
        errors=sum(r["errors"] for r in results),
        seconds=max(r["seconds"] for r in results),
        p50=p50,
        p99=p99,
        failed=sum(r["failed"] for r in results),
    )
