"""The sharing server's monitoring routes (监控管理): Prometheus metrics on `/metrics` for the
configured addresses only (`Settings.sharing_metrics_allow`, loopback by default), and a
liveness / readiness pair for the orchestrator (`/livez`, `/readyz`).

Which calls are journaled: every call leaves one entry, except a probe or a scrape that is
answered (status below 400). Those come from the orchestrator and the metrics collector
every few seconds, carry no credential and read no department's data: journaling them
would bury the calls that matter under thousands of identical lines a day. A refused
scrape (403, an address not allowed) is journaled as every refusal is, and so is a
readiness failure (503), which is an outage the trail should show. The probes are never
rate limited (`limits.PROBES`). These routes are not part of the API's OpenAPI description.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

import pyarrow.fs as pafs
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from govlake.core.location import Location
from govlake.core.settings import Settings
from govlake.platform.database import session
from govlake.sharing.server.gate import journaled
from govlake.sharing.server.limits import client_address

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


def _unjournaled(request: Request) -> None:
    """Tell the gate that this answered probe or scrape needs no journal entry (see above)."""
    journaled(request)


class MetricsRefused(HTTPException):
    def __init__(self, address: str):
        super().__init__(403, f"metrics are not readable from {address}")


def _allowed(settings: Settings, address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP address (a test client's name, a Unix socket)
        return False
    # A dual-stack listener names an IPv4 caller as ::ffff:a.b.c.d.
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return any(ip in ipaddress.ip_network(n, strict=False) for n in settings.sharing_metrics_allow)


def _registry() -> CollectorRegistry:
    """This process's metrics, or, when the server runs several worker processes
    (`PROMETHEUS_MULTIPROC_DIR` set, see `govlake share serve --workers`), every worker's
    as the files in that directory hold them."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


@router.get("/metrics", name="metrics")
def metrics(request: Request) -> Response:
    """The metrics in Prometheus' text format, to an allowed address only."""
    address = client_address(request)
    if not _allowed(request.app.state.settings, address):
        raise MetricsRefused(address)
    _unjournaled(request)
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


@router.get("/livez", name="livez")
async def livez(request: Request) -> dict[str, str]:
    """Answers while the process serves (on the event loop: a loop that is stuck answers
    nothing, which is what the probe is for)."""
    _unjournaled(request)
    return {"status": "live"}


def _database(settings: Settings) -> None:
    with session(settings) as s:
        s.execute(text("SELECT 1"))


def _warehouse(settings: Settings) -> None:
    """The warehouse's root can be listed: on local disk it must be a directory; on S3 its
    bucket must be there and the listing succeed (an empty prefix is a new warehouse: object
    stores have no folders)."""
    location: Location = settings.warehouse_location
    if location.is_local:
        fs: pafs.FileSystem = pafs.LocalFileSystem()
        path = container = location.uri
    else:
        fs, path = pafs.FileSystem.from_uri(location.uri)
        container = path.split("/", 1)[0]  # the bucket
    if fs.get_file_info(container).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"the warehouse's {container} is not there")
    fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))


CHECKS = {"database": _database, "warehouse": _warehouse}


@router.get("/readyz", name="readyz")
def readyz(request: Request) -> JSONResponse:
    """200 when the platform database answers a trivial query and the warehouse's root is
    readable, else 503 naming the check that failed (its error goes to the log only: the
    probe is unauthenticated)."""
    settings = request.app.state.settings
    checks: dict[str, Any] = {}
    for name, check in CHECKS.items():
        try:
            check(settings)
            checks[name] = "ok"
        except (SQLAlchemyError, OSError) as exc:
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = "failed"
    ready = all(result == "ok" for result in checks.values())
    if ready:
        _unjournaled(request)
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)  # fmt: skip
