"""`govlake share serve` and `govlake share profile`: run the Delta Sharing server, and give
a consumer the profile file the official client reads (a bearer token, format version 1, or
an OAuth client, format version 2)."""

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
from govlake.sharing import access, oauth
from govlake_app.cli.console import By, console, fail, user

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
    return _write_private(path, {
        "shareCredentialsVersion": 1,
        "endpoint": endpoint or settings.sharing_endpoint,
        "bearerToken": token,
        "expirationTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    })  # fmt: skip


def write_oauth_profile(settings: Settings, consumer: str, path: Path, *, by: str,
                        at: datetime, endpoint: str | None = None) -> str:  # fmt: skip
    """Issue `consumer` a new OAuth client and write its profile file (format version 2,
    client credentials); the client's id."""
    with session(settings) as s:
        client, secret = oauth.issue_client(s, consumer, by=by, at=at)
        audit.record(s, at=at, actor="platform", action="oauth.client_issue", consumer=consumer,
                     detail={"client_id": client.client_id, "by": by,
                             "profile": path.name})  # fmt: skip
    _write_private(path, oauth.profile(endpoint or settings.sharing_endpoint,
                                       client.client_id, secret))  # fmt: skip
    return client.client_id


def _write_private(path: Path, profile: dict[str, object]) -> Path:
    """Write a profile file readable by its owner only, from its first byte on (it holds a
    credential)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through os.open
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(json.dumps(profile, indent=2) + "\n")
    return path


def profile(
    consumer: Annotated[str, typer.Option(help="the consumer department's code")],
    out: Annotated[Path | None, typer.Option(help="profile file to write")] = None,
    days: Annotated[int, typer.Option(help="days the token stays valid")] = 90,
    endpoint: Annotated[str | None, typer.Option(help="server endpoint to name")] = None,
    oauth_client: Annotated[
        bool,
        typer.Option(
            "--oauth",
            help="issue an OAuth client instead of a token: a version-2 profile whose "
            "client fetches and renews short-lived access tokens itself (--days unused)",
        ),
    ] = False,
    by: By = None,
) -> None:
    """Issue a consumer a token (or an OAuth client) and write its profile file."""
    settings = get_settings()
    catalog = Catalog.load(settings.catalog_dir)
    path = out or Path(f"{consumer}.share")
    at = datetime.now(UTC).replace(tzinfo=None)
    try:
        if oauth_client:
            client_id = write_oauth_profile(settings, consumer, path, by=by or user(), at=at,
                                            endpoint=endpoint)  # fmt: skip
            valid = (f"OAuth client {client_id}, access tokens valid "
                     f"{settings.sharing_oauth_token_seconds} s")  # fmt: skip
        else:
            write_profile(settings, catalog, consumer, path, days=days, at=at, endpoint=endpoint)
            valid = f"token valid {days} days"
    except access.SharingError as exc:
        raise fail(str(exc)) from exc
    console.print(f"wrote {path} ({valid}); read with "
                  f'delta_sharing.load_as_pandas("{path}#population.population.'
                  'residents_unconditional")', highlight=False)  # fmt: skip
