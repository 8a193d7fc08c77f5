"""The Delta Sharing server (`govlake share serve`): the open REST protocol over the published
tables, so that consumers read them with the official `delta-sharing` client, unchanged.

Shares are the themes, each with one schema of the same name; tables are the published
tables the consumer may read (see `govlake.sharing.access`). This module only assembles the
application: the protocol's routes (`routes`, resolving names through `tables` and file
URLs through `files`), the requests, subscriptions and open data APIs, the OAuth token
endpoint (`token_api`), the answers to refusals (`errors`, journaled by `gate.refused`) and
the gate every call passes through (`gate`: one audit journal entry per call, bounded
request sizes, unexpected errors).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.sharing.access import shared_tables
from govlake.sharing.receivers import allowed as allowed_receivers
from govlake.sharing.server import errors
from govlake.sharing.server.cache import TimedCache
from govlake.sharing.server.files import UrlSigner, keep_signatures_out_of_access_log
from govlake.sharing.server.gate import CallJournal, refused
from govlake.sharing.server.monitoring import router as monitoring_router
from govlake.sharing.server.open_api import router as open_router
from govlake.sharing.server.requests_api import router as requests_router
from govlake.sharing.server.routes import router as protocol_router
from govlake.sharing.server.subscriptions_api import router as subscriptions_router
from govlake.sharing.server.tables import SharedTables
from govlake.sharing.server.token_api import router as token_router


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def create_app(
    settings: Settings,
    catalog: Catalog | None = None,
    *,
    clock: Callable[[], datetime] = _utcnow,
    signing_key: bytes | None = None,
    url_ttl: timedelta = timedelta(minutes=15),
) -> FastAPI:
    """The sharing server over `settings`' lakehouse and platform database."""
    app = FastAPI(title="govlake sharing", docs_url="/docs", openapi_url="/openapi.json")
    # A malformed list of allowed webhook receivers is the operator's error: refuse to start
    # rather than answer every subscription with a server error.
    allowed_receivers(settings)
    app.state.settings = settings
    app.state.catalog = catalog or Catalog.load(settings.catalog_dir)
    app.state.clock = clock
    app.state.signer = UrlSigner(signing_key or secrets.token_bytes(32), url_ttl)
    # Tokens, access decisions and latest versions kept at most `sharing_cache_seconds`.
    app.state.token_cache = TimedCache("token", settings.sharing_cache_seconds)
    app.state.tables = SharedTables.of(shared_tables(app.state.catalog, settings),
                                       settings.sharing_cache_seconds)  # fmt: skip
    keep_signatures_out_of_access_log()
    # One journal entry per call, whatever answers it; bodies bounded while they stream in.
    app.add_middleware(CallJournal)
    for answered in errors.ANSWERED:
        app.add_exception_handler(answered, refused)
    app.include_router(monitoring_router)  # /metrics, /livez, /readyz
    app.include_router(requests_router)
    app.include_router(subscriptions_router)
    app.include_router(open_router)
    app.include_router(token_router)
    app.include_router(protocol_router)
    return app
