"""What every call to the sharing server passes through: exactly one audit journal entry per
call, a bounded request body, a JSON answer for an unexpected error, and uvicorn's own
refusals of malformed requests answered as JSON and journaled too.

A route journals its call itself (`journal`, or `journaled` after a domain function recorded
the entry in the route's transaction); `CallJournal` writes the entry for every call that
left none: unknown paths, redirects, uncaught errors.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Mapping
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
from govlake.sharing.server.deps import caller
from govlake.sharing.server.files import redact

log = logging.getLogger(__name__)

#: Journal action of a call that matched no route (or a redirect to one).
UNKNOWN = "share.unknown"
#: `request.state` key set once the call's entry is written.
_JOURNALED = "journaled"


def outcome_of(status: int) -> str:
    """The journal outcome of an HTTP status."""
    if status < 400:
        return "ok"
    return {401: "refused", 403: "refused", 404: "not_found"}.get(status, "error")


def journaled(request: Request) -> None:
    """Mark the call as journaled: its entry was recorded by the route (e.g. in its
    transaction by a domain function), so `CallJournal` adds none."""
    setattr(request.state, _JOURNALED, True)


def journal(request: Request, action: str, outcome: str = "ok", *, actor: str | None = None,
            **fields: Any) -> audit.AuditEntry:  # fmt: skip
    """Append the call's entry, with its method and path, and mark the call journaled. The
    consumer is the caller's (`deps.caller`) unless given; the actor is the consumer, else
    `anonymous`."""
    consumer = fields.pop("consumer", None) or caller(request)
    # A file URL's path is its credential: the journal keeps the grant, not the signature.
    detail = {"method": request.method, "path": redact(request.url.path),
              **fields.pop("detail", {})}  # fmt: skip
    entry = audit.append(request.app.state.settings, at=request.app.state.clock(),
                         actor=actor or consumer or "anonymous", action=action,
                         consumer=consumer, outcome=outcome, detail=detail, **fields)  # fmt: skip
    journaled(request)
    return entry


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


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


def _refusal(scope: Scope, header_limit: int) -> tuple[int, str, str] | None:
    """Status, error code and message of a request refused before routing, if it is: a
    request line and headers over `header_limit` bytes (uvicorn's h11 limit holds only while a
    request is still arriving, not for one read whole), or a NUL character in the path (404)
    or the query (400): no name, id or value has one, and PostgreSQL could not store it."""
    size = len(scope["method"]) + len(scope.get("raw_path") or b"") + len(scope["query_string"])
    size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if size > header_limit:
        return 431, "REQUEST_TOO_LARGE", headers_too_large(header_limit)
    if "\x00" in scope["path"]:  # a name with a NUL names nothing
        return 404, "RESOURCE_DOES_NOT_EXIST", "no such path: it holds a NUL character"
    if "%00" in scope["query_string"].decode("latin-1"):
        return 400, "INVALID_PARAMETER_VALUE", "the query holds a NUL character"
    return None


def headers_too_large(limit: int) -> str:
    return f"the request line and headers are larger than {limit} bytes"


class CallJournal:
    """ASGI middleware: refuses oversized headers and NUL characters (`_refusal`), bounds the
    request body (`_bounded`) and makes sure each call leaves one journal entry. An uncaught
    error is logged with an incident id, journaled, and answered 500 `INTERNAL_ERROR` with
    that id and nothing of the error itself."""

    def __init__(self, app: ASGIApp, *, actions: Mapping[str, str]):
        self.app, self.actions = app, actions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        request = Request(scope)
        settings = request.app.state.settings
        refused = _refusal(scope, settings.sharing_max_header_bytes)
        if refused is not None:
            status, code, message = refused
            await run_in_threadpool(self._journal, request, status, {"message": message})
            await _error(status, code, message)(scope, receive, send)
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
            await run_in_threadpool(self._journal, request, 500, {"incident": incident})
            if started:  # the answer is under way: only the connection can end now
                raise
            message = f"internal error (incident {incident}); the operators have its details"
            await _error(500, "INTERNAL_ERROR", message)(scope, receive, send)
            return
        if not getattr(request.state, _JOURNALED, False):
            status = getattr(request.state, "status", 500)
            await run_in_threadpool(self._journal, request, status, {})

    def _journal(self, request: Request, status: int, detail: dict[str, Any]) -> None:
        """The call's entry, by the action of its route if one matched."""
        route = request.scope.get("route")
        action = self.actions.get(getattr(route, "name", ""), UNKNOWN)
        try:
            journal(request, action, outcome_of(status),
                    table_name=getattr(request.state, "table", None),
                    detail={"status": status, **detail})  # fmt: skip
        except Exception:  # the journal itself is down: the caller still gets its answer
            log.exception("%s %s (status %s) could not be journaled", request.method,
                          redact(request.url.path), status)  # fmt: skip


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errorCode": code, "message": message}, status_code=status)


# -- uvicorn --------------------------------------------------------------------------------
def uvicorn_options(app: FastAPI) -> dict[str, Any]:
    """uvicorn settings for the sharing server `app`: the h11 protocol with the header limit
    (`sharing_max_header_bytes`), refusing malformed requests as JSON, journaled."""
    settings = app.state.settings
    return {"http": _journaling_h11(app),
            "h11_max_incomplete_event_size": settings.sharing_max_header_bytes}  # fmt: skip


def _append_quietly(settings: Settings, entry: dict[str, Any]) -> None:
    try:
        audit.append(settings, **entry)
    except Exception:  # nobody is left to answer: the log is all there is
        log.exception("a refused request could not be journaled: %s", entry)


def _journaling_h11(app: FastAPI) -> type[H11Protocol]:
    class JournalingH11(H11Protocol):
        """uvicorn's h11 protocol, whose own refusals (a request that is not HTTP, a request
        line or headers over the limit) never reach the application: answered here as JSON
        and journaled, anonymously (nothing of the request was parsed)."""

        def send_400_response(self, msg: str) -> None:
            # Called inside uvicorn's `except h11.RemoteProtocolError`: the error is at hand.
            error = sys.exc_info()[1]
            status = error.error_status_hint if isinstance(error, h11.RemoteProtocolError) else 400
            if status == 431:
                code = "REQUEST_TOO_LARGE"
                message = headers_too_large(app.state.settings.sharing_max_header_bytes)
            else:
                status = 400
                code, message = "INVALID_PARAMETER_VALUE", f"not a valid HTTP request: {error}"
            entry = {"at": app.state.clock(), "actor": "anonymous", "action": UNKNOWN,
                     "outcome": outcome_of(status),
                     "detail": {"status": status, "message": message,
                                "client": self.client[0] if self.client else None}}  # fmt: skip
            # Off the event loop, as the application journals: a database write (or a wait for
            # SQLite's lock) here would hold up every other connection.
            self.loop.run_in_executor(None, _append_quietly, app.state.settings, entry)
            body = json.dumps({"errorCode": code, "message": message}).encode()
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            for event in (
                h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.close()

    return JournalingH11
