"""The servers the sharing benchmark loads: the project's sharing server over a run folder
(one worker: the `serve` task; several: `govlake share serve --workers N`), with a
consumer's profile for it, and the bare HTTP stack it is compared with
(`govlake_tools.bench.floor`, as many workers)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake_tools.bench.process import settings_for
from govlake_tools.bench.results import peak_rss_of
from govlake_tools.bench.worker import spawn

if TYPE_CHECKING:
    from govlake_tools.bench.options import Run

CONSUMER = "civil_affairs"


def several_workers_supported() -> bool:
    """Whether `govlake share serve` takes `--workers` (the several-workers figures need it)."""
    from govlake_app.cli.serve import serve

    return "workers" in inspect.signature(serve).parameters


# -- the servers ----------------------------------------------------------------------------
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
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives `govlake` CLI commands `settings`' run folder."""
    named = ("warehouse", "landing", "database_url", "catalog_dir", "reports_dir",
             "sharing_rate_per_second", "sharing_anonymous_rate_per_second")  # fmt: skip
    return {f"GOVLAKE_{name.upper()}": str(getattr(settings, name)) for name in named}


def _cli_server(run: Run, settings: Settings, port: int, workers: int) -> subprocess.Popen[bytes]:
    """`govlake share serve --workers N` over `settings`' run folder (uvicorn's supervisor
    and its worker processes)."""
    env = {k: v for k, v in os.environ.items() if k != "GOVLAKE_SPARK_REMOTE"}
    with run.log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; from govlake_app.cli import app; "
             "sys.argv[0] = 'govlake'; app()", "share", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            stdout=sink, stderr=subprocess.STDOUT, env=env | _settings_env(settings),
        )  # fmt: skip


@dataclass
class Served:
    """A sharing server of one run folder, and the consumer's profile for it."""

    endpoint: str
    profile: Path
    headers: dict[str, str]
    settings: Settings
    workers: int = 1
    pid: int = 0  # the server's process (uvicorn's supervisor with several workers)
    peak_rss_bytes: int | None = None


@contextmanager
def serving(run: Run, run_dir: Path, catalog_dir: Path, name: str, *,
            workers: int = 1) -> Iterator[Served]:  # fmt: skip
    """The project's sharing server over `run_dir`'s lakehouse, in a process of its own (the
    `serve` task; `govlake share serve --workers N` for several workers), with the consumer
    registered and its profile written; its peak memory noted when it stops (the
    supervisor's alone with several workers)."""
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
    served = Served(endpoint, profile, {"Authorization": f"Bearer {token}"}, settings, workers)
    run.say(f"sharing server on {endpoint}, {workers} worker(s)")
    if workers > 1:
        server = _cli_server(run, settings, port, workers)
    else:
        server = spawn("serve", {"run_dir": str(run_dir), "catalog_dir": str(catalog_dir),
                                 "port": port}, run.work / "tasks" / f"serve_{name}",
                       log=run.log, wait=False)  # fmt: skip
    served.pid = server.pid
    try:
        _wait(f"{endpoint}/shares", served.headers, server)
        yield served
    finally:
        served.peak_rss_bytes = peak_rss_of(server.pid)
        _stop(server)


@contextmanager
def floor_serving(run: Run, bodies: dict[str, str], path: str, *, workers: int) -> Iterator[str]:
    """The bare HTTP stack answering the metadata and query paths with `bodies`, with
    `workers` uvicorn workers; its endpoint."""
    from govlake.core.net import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/delta-sharing"
    run.say(f"floor: the bare HTTP stack on {endpoint}, {workers} worker(s)")
    server = spawn("serve_floor", {"port": port, "workers": workers, **bodies},
                   run.work / "tasks" / f"serve_floor_{workers}w", log=run.log,
                   wait=False)  # fmt: skip
    try:
        _wait(endpoint + path + "/metadata", {}, server)
        yield endpoint
    finally:
        _stop(server)
