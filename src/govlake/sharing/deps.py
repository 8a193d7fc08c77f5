"""FastAPI dependencies shared by the sharing server's routers: settings, catalogue, a
database transaction, the clock, and the consumer behind the bearer token.

The application keeps `settings`, `catalog` and `clock` in `app.state`, so tests can run the
server at a fixed time (`app.state.clock = lambda: datetime(...)`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from govlake.catalog import Catalog
from govlake.settings import Settings
from govlake.sharing.access import authenticate
from govlake.sharing.state import Consumer, session


def settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def catalog(request: Request) -> Catalog:
    found: Catalog = request.app.state.catalog
    return found


def now(request: Request) -> datetime:
    """The request time, naive UTC (the app's clock)."""
    moment: datetime = request.app.state.clock()
    return moment


def db(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back if it
    raises."""
    with session(request.app.state.settings) as s:
        yield s


def current_consumer(
    request: Request,
    s: Annotated[Session, Depends(db)],
    at: Annotated[datetime, Depends(now)],
    authorization: Annotated[str | None, Header()] = None,
) -> Consumer:
    """The consumer of the bearer token; raises `Unauthenticated` (401) otherwise."""
    bearer = None
    if authorization and authorization.lower().startswith("bearer "):
        bearer = authorization[7:].strip()
    found = authenticate(s, bearer, at=at)
    request.state.consumer = found.code
    return found


SettingsDep = Annotated[Settings, Depends(settings)]
CatalogDep = Annotated[Catalog, Depends(catalog)]
NowDep = Annotated[datetime, Depends(now)]
DbDep = Annotated[Session, Depends(db)]
ConsumerDep = Annotated[Consumer, Depends(current_consumer)]
