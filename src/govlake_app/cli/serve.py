"""`govlake share serve` and `govlake share profile`: run the Delta Sharing server, and give
a consumer the profile file the official client reads."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from fastapi import FastAPI

from govlake.core.catalog import Catalog
from govlake.core.net import free_port
from govlake.core.settings import Settings, get_settings
from govlake.platform import audit
from govlake.platform.database import session
from govlake.sharing import access
from govlake_app.cli.console import console, fail

#: The environment variable of the URL-signing key (`Settings.sharing_signing_key`).
SIGNING_KEY_VARIABLE = "GOVLAKE_SHARING_SIGNING_KEY"
#: Where prometheus-client's worker processes write their metrics, to be read together.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def app_for(settings: Settings) -> FastAPI:
    from govlake.sharing.server.app import create_app

    key = settings.sharing_signing_key
    return create_app(
        settings,
        signing_key=key.get_secret_value().encode() if key else None,
        url_ttl=timedelta(minutes=settings.sharing_url_minutes),
    )


@contextmanager
def running(
    settings: Settings, *, port: int = 0, app: FastAPI | None = None, log_level: str = "warning"
) -> Iterator[str]:
    """The server (`app`, by default the one `settings` describe) in a background thread on
    loopback (a free port by default); yields its endpoint and stops it when the block ends.
    Its access log, at `log_level` info, names file URLs without their signatures."""
    import threading
    import time

    import uvicorn

    from govlake.sharing.server.gate import uvicorn_options

    port = port or free_port()
    app = app or app_for(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level=log_level, **uvicorn_options(app)
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the sharing server did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/delta-sharing"
    finally:
        server.should_exit = True
        thread.join(10)


def worker_app() -> FastAPI:
    """The app factory of each worker process of `serve --workers N`: the server the
    environment's settings describe, named as the one the worker's protocol journals into."""
    from govlake.sharing.server.gate import serving

    return serving(app_for(get_settings()))


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port", min=1, max=65535)] = 8765,
    workers: Annotated[int, typer.Option(help="server processes answering calls", min=1)] = 1,
) -> None:
    """Serve the published tables over the Delta Sharing protocol until Ctrl-C."""
    import uvicorn

    from govlake.sharing.server.gate import uvicorn_options, worker_options

    settings = get_settings()
    console.print(f"Delta Sharing endpoint: http://{host}:{port}/delta-sharing "
                  f"(profiles name {settings.sharing_endpoint})"
                  + (f", {workers} workers" if workers > 1 else ""))  # fmt: skip
    if workers == 1:
        app = app_for(settings)
        uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_options(app))
        return
    # The workers read their settings from this environment: one URL-signing key for all of
    # them (a file URL one issued downloads from any other), and one directory where their
    # Prometheus metrics meet, made fresh for this server and removed when it stops.
    if settings.sharing_signing_key is None:
        os.environ[SIGNING_KEY_VARIABLE] = secrets.token_urlsafe(32)
    metrics_dir = tempfile.mkdtemp(prefix="govlake-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir
    try:
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, host=host,
                    port=port, log_level="info", **worker_options(settings))  # fmt: skip
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def write_profile(settings: Settings, catalog: Catalog, consumer: str, path: Path, *,
                  days: int, at: datetime, endpoint: str | None = None) -> Path:  # fmt: skip
    """Issue a new token for `consumer` and write the profile file holding it."""
    expires = at + timedelta(days=days)
    with session(settings) as s:
        token = access.issue_token(s, consumer, at=at, days=days)
        audit.record(s, at=at, actor="platform", action="token.issue", consumer=consumer,
                     detail={"expires_at": expires.isoformat(), "profile": path.name})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "shareCredentialsVersion": 1,
        "endpoint": endpoint or settings.sharing_endpoint,
        "bearerToken": token,
        "expirationTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }, indent=2) + "\n", encoding="utf-8")  # fmt: skip
    path.chmod(0o600)
    return path


def profile(
    consumer: Annotated[str, typer.Option(help="the consumer department's code")],
    out: Annotated[Path | None, typer.Option(help="profile file to write")] = None,
    days: Annotated[int, typer.Option(help="days the token stays valid")] = 90,
    endpoint: Annotated[str | None, typer.Option(help="server endpoint to name")] = None,
) -> None:
    """Issue a token for a consumer and write its profile file (`<consumer>.share`)."""
    settings = get_settings()
    catalog = Catalog.load(settings.catalog_dir)
    path = out or Path(f"{consumer}.share")
    try:
        write_profile(settings, catalog, consumer, path, days=days,
                      at=datetime.now(UTC).replace(tzinfo=None), endpoint=endpoint)  # fmt: skip
    except access.SharingError as exc:
        raise fail(str(exc)) from exc
    console.print(f"wrote {path} (token valid {days} days); read with "
                  f'delta_sharing.load_as_pandas("{path}#population.population.'
                  'residents_unconditional")')  # fmt: skip
