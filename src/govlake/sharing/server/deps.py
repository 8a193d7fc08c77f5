"""FastAPI dependencies shared by the sharing server's routers: settings, catalogue, a
database transaction, the clock, and the consumer behind the bearer token (checked before
the body is read: `TokenFirstRoute`), and who a call is journaled under (`caller`); and the
route class of the `/govlake/v1` APIs (`InvalidParameterRoute`).

The application keeps `settings`, `catalog` and `clock` in `app.state` (and, for the
protocol's routes, the URL `signer` and the shared `tables`), so tests can run the server
at a fixed time (`app.state.clock = lambda: datetime(...)`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.platform.database import Consumer, Token, session, sessions
from govlake.sharing.access import SharingError, authenticated, hash_token
from govlake.sharing.server.cache import TimedCache, started
from govlake.sharing.server.errors import validation_problems
from govlake.sharing.server.limits import admit_consumer

#: `request.state` key of the consumer the call's bearer token authenticated.
_AUTHENTICATED = "authenticated"


# The dependencies that do no I/O are coroutines: FastAPI runs a plain function dependency in
# its thread pool, a hop per dependency per call.
async def settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


async def catalog(request: Request) -> Catalog:
    found: Catalog = request.app.state.catalog
    return found


def now(request: Request) -> datetime:
    """The request time, naive UTC (the app's clock)."""
    moment: datetime = request.app.state.clock()
    return moment


async def request_time(request: Request) -> datetime:
    """`now`, as a dependency."""
    return now(request)


async def db(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back if it
    raises. The session connects only when first used (a call answered from the caches does
    not use it), and only then is its end a database round trip, made off the event loop."""
    s = sessions(request.app.state.settings.database_url)()
    try:
        yield s
    except Exception:
        await run_in_threadpool(_end, s, commit=False)
        raise
    if s.in_transaction():
        await run_in_threadpool(_end, s, commit=True)
    else:
        s.close()


def _end(s: Session, *, commit: bool) -> None:
    with s:
        if commit:
            s.commit()
        else:
            s.rollback()


def bearer_tokens(request: Request) -> list[str]:
    """The bearer tokens of the call's `Authorization` headers, as given."""
    found = []
    for value in request.headers.getlist("authorization"):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found.append(token.strip())
    return found


def bearer_token(request: Request) -> str | None:
    """The call's one bearer token, None without one; two `Authorization` headers are a bad
    request (`SharingError`), whichever comes first."""
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        raise SharingError(f"give one Authorization header, not {len(headers)}")
    tokens = bearer_tokens(request)
    return tokens[0] if tokens else None


def token_owner(settings: Settings, tokens: list[str]) -> str | None:
    """The department `tokens` were issued to, valid or not (expired, revoked), so that a
    refused call is journaled under its owner: None for no token, tokens nobody was issued,
    or tokens of two departments."""
    if not tokens:
        return None
    with session(settings) as s:
        owners = set(s.scalars(
            select(Token.consumer).where(Token.token_hash.in_([hash_token(t) for t in tokens]))
        ))  # fmt: skip
    return owners.pop() if len(owners) == 1 else None


def caller(request: Request) -> str | None:
    """The consumer a call is journaled under: the one its token or signed URL authenticated,
    else the owner of the token it presented (see `token_owner`)."""
    known: str | None = getattr(request.state, "consumer", None)
    if known is not None:
        return known
    return token_owner(request.app.state.settings, bearer_tokens(request))


#: The token cache of an app that keeps none (a router mounted on its own): always a miss.
_NO_CACHE: TimedCache[str, Consumer] = TimedCache("token", 0)


def _token_cache(request: Request) -> TimedCache[str, Consumer]:
    found: TimedCache[str, Consumer] = getattr(request.app.state, "token_cache", _NO_CACHE)
    return found


def _cached_consumer(request: Request) -> Consumer | None:
    """The consumer of the call's bearer token from the token cache, if it may answer now;
    a malformed `Authorization` is left to `_authenticate` to refuse."""
    headers = request.headers.getlist("authorization")
    tokens = bearer_tokens(request)
    if len(headers) != 1 or len(tokens) != 1:
        return None
    found = _token_cache(request).get(hash_token(tokens[0]), now(request))
    if found is not None:
        _authenticated_as(request, found)
    return found


def _authenticate(request: Request) -> Consumer:
    """The consumer of the call's bearer token, looked up in a transaction of its own and
    kept in the token cache until the token's expiry (or set revocation) or the cache's
    time; raises `Unauthenticated`."""
    bearer, at = bearer_token(request), now(request)
    lookup = started()
    with session(request.app.state.settings) as s:
        found, until = authenticated(s, bearer, at=at)
    assert bearer is not None
    _token_cache(request).keep(hash_token(bearer), found, lookup, at=at, until=until)
    _authenticated_as(request, found)
    return found


def _authenticated_as(request: Request, found: Consumer) -> None:
    request.state.consumer = found.code
    admit_consumer(request, found.code)  # a refusal is journaled under the consumer
    setattr(request.state, _AUTHENTICATED, found)


async def current_consumer(request: Request) -> Consumer:
    """The consumer of the bearer token; raises `Unauthenticated` otherwise. A token
    `TokenFirstRoute` has checked already is not checked again."""
    found: Consumer | None = getattr(request.state, _AUTHENTICATED, None)
    if found is not None:
        return found
    cached = _cached_consumer(request)
    return cached if cached is not None else await run_in_threadpool(_authenticate, request)


def _needs_token(dependant: Dependant) -> bool:
    return any(d.call is current_consumer or _needs_token(d) for d in dependant.dependencies)


class TokenFirstRoute(APIRoute):
    """A route that checks the bearer token before FastAPI reads the request body, when the
    endpoint depends on `current_consumer`: a caller without a valid token is refused
    before any of its body is read or parsed. (FastAPI reads the body before it solves any
    dependency.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not _needs_token(self.dependant):
            return handler

        async def route_handler(request: Request) -> Response:
            # A token in the cache is checked on the event loop; only a miss goes to the
            # database, off the loop.
            if _cached_consumer(request) is None:
                await run_in_threadpool(_authenticate, request)
            return await handler(request)

        return route_handler


class InvalidParameterRoute(TokenFirstRoute):
    """Reports a body or parameter that fails validation as `SharingError` (answered as the
    sharing protocol answers an invalid parameter), not as FastAPI's 422; checks the bearer
    token before the body is read (`TokenFirstRoute`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise SharingError(f"invalid request: {validation_problems(exc)}") from exc

        return route_handler


SettingsDep = Annotated[Settings, Depends(settings)]
CatalogDep = Annotated[Catalog, Depends(catalog)]
NowDep = Annotated[datetime, Depends(request_time)]
DbDep = Annotated[Session, Depends(db)]
ConsumerDep = Annotated[Consumer, Depends(current_consumer)]
