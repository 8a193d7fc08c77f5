"""What every call to the sharing server passes through: exactly one audit journal entry per
call, a bounded request body, refusals answered and journaled (`refused`), a JSON answer for
an unexpected error, and uvicorn's own refusals of malformed requests answered as JSON and
journaled too. The answers themselves are `govlake.sharing.server.errors`'.

A route journals its call itself (`journal_call`, `journal`, or `journaled` after a domain
function recorded the entry in the route's transaction); `CallJournal` writes the entry for
every call that left none: unknown paths, redirects, uncaught errors.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

import h11
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from govlake.core.settings import Settings
from govlake.platform import audit
from govlake.sharing.server import errors, limits, metrics
from govlake.sharing.server.deps import caller
from govlake.sharing.server.errors import BodyTooLarge, HeadersTooLarge, NulInPath, NulInQuery
from govlake.sharing.server.files import redact

log = logging.getLogger(__name__)

#: Journal action of a call that matched no route (or a redirect to one).
UNKNOWN = "share.unknown"
#: `request.state` key set once the call's entry is written.
_JOURNALED = "journaled"

#: Route name → audit action.
ACTIONS = {
    # the Delta Sharing protocol (govlake.sharing.server.routes)
    "list_shares": "share.list_shares", "get_share": "share.get_share",
    "list_schemas": "share.list_schemas", "list_tables": "share.list_tables",
    "list_all_tables": "share.list_tables", "table_version": "share.version",
    "table_metadata": "share.metadata", "query_table": "share.query",
    "table_changes": "share.changes", "download_file": "share.file",
    # the requests API (govlake.sharing.server.requests_api): its refusals are audited here
    "file_access_request": "request.file", "approve_access_request": "request.approve",
    "refuse_access_request": "request.refuse", "list_access_requests": "request.view",
    "get_access_request": "request.view", "file_verification_request": "verification.file",
    "answer_verification_request": "verification.answer",
    "list_verification_requests": "request.view", "get_verification_request": "request.view",
    # the subscriptions API (govlake.sharing.server.subscriptions_api)
    "create_subscription": "subscription.create", "cancel_subscription": "subscription.cancel",
    "list_subscriptions": "request.view", "get_subscription": "request.view",
    "list_deliveries": "request.view",
    # the open data routes (govlake.sharing.server.open_api)
    "open_catalog": "open.catalog", "open_download": "open.download",
    "open_notice": "open.notice", "open_schema": "open.notice",
    # the OAuth token endpoint (govlake.sharing.server.token_api)
    "oauth_token": "oauth.token",
}  # fmt: skip


def action_of(request: Request) -> str:
    """The journal action of the call's route (`UNKNOWN` if none matched)."""
    route = request.scope.get("route")
    return ACTIONS.get(getattr(route, "name", ""), UNKNOWN)


def journaled(request: Request) -> None:
    """Mark the call as journaled: its entry was recorded by the route (e.g. in its
    transaction by a domain function), so `CallJournal` adds none."""
    setattr(request.state, _JOURNALED, True)


def journal(request: Request, action: str, outcome: str = "ok", *, actor: str | None = None,
            **fields: Any) -> audit.AuditEntry:  # fmt: skip
    """Append the call's entry, with its method and path, and mark the call journaled. The
    consumer is the caller's (`deps.caller`) unless given; the actor is the one given, else
    the one the route named (`request.state.actor`), else the consumer, else `anonymous`."""
    consumer = fields.pop("consumer", None) or caller(request)
    actor = actor or getattr(request.state, "actor", None) or consumer or "anonymous"
    # A file URL's path is its credential: the journal keeps the grant, not the signature.
    detail = {"method": request.method, "path": redact(request.url.path),
              **fields.pop("detail", {})}  # fmt: skip
    # Group commit: the entry is committed (with other calls' entries) before this returns,
    # so no answer leaves without its entry; a failed commit raises, and the call is answered
    # as an internal error, never as a success.
    committed = audit.writer(request.app.state.settings).append(
        at=request.app.state.clock(), actor=actor, action=action, consumer=consumer,
        outcome=outcome, detail=detail, **fields)  # fmt: skip
    metrics.JOURNAL_LAG.observe(committed.waited)
    metrics.JOURNAL_BATCH.observe(committed.batch)
    journaled(request)
    return committed.entry


def journal_call(request: Request, outcome: str = "ok", **fields: Any) -> audit.AuditEntry:
    """Append the call's entry under its route's action (`ACTIONS`)."""
    return journal(request, action_of(request), outcome, **fields)


def journal_answer(request: Request, status: int, outcome: str | None = None,
                   **detail: Any) -> audit.AuditEntry:  # fmt: skip
    """Append the entry of a call answered with `status` (a refusal, a failure), naming the
    table it asked for if known; its outcome is the status's unless given."""
    return journal_call(request, outcome or errors.outcome_of(status),
                        table_name=getattr(request.state, "table", None),
                        detail={"status": status, **detail})  # fmt: skip


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """The application's exception handler for the errors it answers (`errors.ANSWERED`):
    the call is journaled with the answer's status and message."""
    answer = errors.answer_for(exc)
    # Off the event loop: the entry waits for its commit (and a refused token's owner is
    # looked up), which would hold up every other connection of the worker meanwhile.
    await run_in_threadpool(journal_answer, request, answer.status, answer.outcome,
                            message=answer.message)  # fmt: skip
    return answer.response()


def _bounded(receive: Receive, scope: Scope, limit: int) -> Receive:
    """`receive` refusing (`BodyTooLarge`) a body over `limit` bytes: at once when its declared
    length is larger, else as soon as the bytes received pass it. Nothing happens until the
    route reads the body, which it does after checking the token."""
    declared = dict(scope["headers"]).get(b"content-length", b"")
    received = 0

    async def bounded() -> Message:
        nonlocal received
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return bounded


def _refusal(scope: Scope, header_limit: int) -> HTTPException | None:
    """Why a request is refused before routing, if it is: a request line and headers over
    `header_limit` bytes (uvicorn's h11 limit holds only while a request is still arriving,
    not for one read whole), or a NUL character in the path (a name with one names nothing)
    or the query: no name, id or value has one, and PostgreSQL could not store it."""
    size = len(scope["method"]) + len(scope.get("raw_path") or b"") + len(scope["query_string"])
    size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if size > header_limit:
        return HeadersTooLarge(header_limit)
    if "\x00" in scope["path"]:
        return NulInPath()
    if "%00" in scope["query_string"].decode("latin-1"):
        return NulInQuery()
    return None


class CallJournal:
    """ASGI middleware: refuses oversized headers and NUL characters (`_refusal`) and calls
    from an address over its rate without a valid credential (`limits.refusal`), bounds the
    request body (`_bounded`), makes sure each call leaves one journal entry, and counts it
    (`metrics.count_call`, `limits.charge_unauthenticated`). An uncaught error is logged with
    an incident id, journaled, and answered with that id and nothing of the error itself
    (`errors.internal_error`)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        request = Request(scope)
        began, status, ended = time.perf_counter(), errors.NO_ANSWER, None

        async def answered(message: Message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ended = time.perf_counter()  # the answer is out; its journal entry may follow

        try:
            await self._serve(request, scope, receive, answered)
        finally:
            # Counted and charged however the call ended; a rate refusal is not charged.
            metrics.count_call(request, status, (ended or time.perf_counter()) - began)
            limits.charge_unauthenticated(request, status)

    async def _serve(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        settings = request.app.state.settings
        refused = _refusal(scope, settings.sharing_max_header_bytes) or limits.refusal(request)
        if refused is not None:
            answer = errors.answer_for(refused)
            await run_in_threadpool(self._journal, request, answer.status,
                                    {"message": answer.message})  # fmt: skip
            await answer.response()(scope, receive, send)
            return

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                request.state.status = message["status"]
            await send(message)

        try:
            await self.app(scope, _bounded(receive, scope, settings.sharing_max_body_bytes),
                           watched)  # fmt: skip
        except Exception:
            incident = secrets.token_hex(8)
            log.exception("incident %s: %s %s failed", incident, scope["method"],
                          redact(scope["path"]))  # fmt: skip
            # The route may have journaled its call before it failed: the failure is journaled
            # too, so the trail does not end on a success the caller never got.
            failure = errors.internal_error(incident)
            await run_in_threadpool(self._journal, request, failure.status,
                                    {"incident": incident})  # fmt: skip
            if started:  # the answer is under way: only the connection can end now
                raise
            await failure.response()(scope, receive, send)
            return
        if not getattr(request.state, _JOURNALED, False):
            status = getattr(request.state, "status", errors.NO_ANSWER)
            await run_in_threadpool(self._journal, request, status, {})

    def _journal(self, request: Request, status: int, detail: dict[str, Any]) -> None:
        """The call's entry, by the action of its route if one matched."""
        try:
            journal_answer(request, status, **detail)
        except Exception:  # the journal itself is down: the caller still gets its answer
            log.exception("%s %s (status %s) could not be journaled", request.method,
                          redact(request.url.path), status)  # fmt: skip


# -- uvicorn --------------------------------------------------------------------------------
def uvicorn_options(app: FastAPI) -> dict[str, Any]:
    """uvicorn settings for the sharing server `app`: the h11 protocol with the header limit
    (`sharing_max_header_bytes`), refusing malformed requests as JSON, journaled."""
    settings = app.state.settings
    return {"http": _journaling_h11(lambda: app),
            "h11_max_incomplete_event_size": settings.sharing_max_header_bytes}  # fmt: skip


#: The application this worker process serves (`serving`): what `WorkerH11` journals into.
_served: list[FastAPI] = []


def serving(app: FastAPI) -> FastAPI:
    """Name `app` as the one this worker process serves (its app factory calls this), for
    the protocol of `worker_options`; returns it."""
    _served[:] = [app]
    return app


def worker_options(settings: Settings) -> dict[str, Any]:
    """`uvicorn_options` for several worker processes, each making its own app (uvicorn's
    app factory) and naming it with `serving`: the same journaling h11 protocol, named by
    import path, since the options reach the workers before any app exists."""
    return {"http": f"{__name__}:WorkerH11",
            "h11_max_incomplete_event_size": settings.sharing_max_header_bytes}  # fmt: skip


def _append_quietly(settings: Settings, entry: dict[str, Any]) -> None:
    try:
        audit.writer(settings).append(**entry)
    except Exception:  # nobody is left to answer: the log is all there is
        log.exception("a refused request could not be journaled: %s", entry)


def _journaling_h11(served: Callable[[], FastAPI]) -> type[H11Protocol]:
    class JournalingH11(H11Protocol):
        """uvicorn's h11 protocol, whose own refusals (a request that is not HTTP, a request
        line or headers over the limit) never reach the application: answered here as JSON
        and journaled, anonymously (nothing of the request was parsed)."""

        def send_400_response(self, msg: str) -> None:
            # Called inside uvicorn's `except h11.RemoteProtocolError`: the error is at hand.
            app = served()
            answer = errors.malformed_http(sys.exc_info()[1],
                                           app.state.settings.sharing_max_header_bytes)  # fmt: skip
            entry = {"at": app.state.clock(), "actor": "anonymous", "action": UNKNOWN,
                     "outcome": answer.outcome,
                     "detail": {"status": answer.status, "message": answer.message,
                                "client": self.client[0] if self.client else None}}  # fmt: skip
            # Off the event loop, as the application journals: a database write (or a wait for
            # SQLite's lock) here would hold up every other connection. The answer leaves once
            # the entry is committed (or could not be: then it is logged), and nothing more is
            # read from the connection meanwhile.
            self.transport.pause_reading()
            journaled = self.loop.run_in_executor(None, _append_quietly, app.state.settings,
                                                  entry)  # fmt: skip
            journaled.add_done_callback(lambda _: self._refuse(answer))

        def _refuse(self, answer: errors.Answer) -> None:
            if self.transport.is_closing():  # the client left meanwhile
                return
            body = json.dumps(answer.body()).encode()
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            status = answer.status
            for event in (
                h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.close()

    return JournalingH11


#: The journaling protocol of a worker process, for the app it serves (`serving`).
WorkerH11 = _journaling_h11(lambda: _served[0])
