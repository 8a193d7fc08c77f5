"""The one place where the sharing server's errors become HTTP answers: each domain error
(which knows nothing of HTTP) gets its status, the protocol's error code and a JSON body
`{"errorCode": ..., "message": ...}`; so do the refusals of malformed or oversized requests
and an unexpected error's incident. The application's exception handlers and the call
gate (`govlake.sharing.server.gate`) answer through `answer_for`, and the journal names a
call's outcome by its status (`outcome_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import h11
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from govlake.lake.deltalog import VersionError
from govlake.sharing.access import AccessError, SharingError, Unauthenticated
from govlake.sharing.requests import RequestNotFound
from govlake.sharing.server.files import (
    DataFileNotFound,
    MalformedRange,
    UnsatisfiableRange,
    UnservableDeletionVector,
)
from govlake.sharing.server.formats import InvalidCapabilities, UnsupportedFormat
from govlake.sharing.server.tables import InvalidParameter, NameNotFound
from govlake.sharing.subscriptions import SubscriptionNotFound

INVALID = "INVALID_PARAMETER_VALUE"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
TOO_LARGE = "REQUEST_TOO_LARGE"
#: A call the server refuses to answer in a form the client could read right (the reference
#: server's code for it).
UNSUPPORTED = "UNSUPPORTED_OPERATION"

#: Status and error code of each domain error, the most specific class first.
STATUSES: dict[type[Exception], tuple[int, str]] = {
    Unauthenticated: (401, "UNAUTHENTICATED"),
    RequestNotFound: (404, NOT_FOUND),
    SubscriptionNotFound: (404, NOT_FOUND),
    NameNotFound: (404, NOT_FOUND),
    DataFileNotFound: (404, NOT_FOUND),
    AccessError: (403, "PERMISSION_DENIED"),
    UnsatisfiableRange: (416, INVALID),
    UnsupportedFormat: (400, UNSUPPORTED),
    UnservableDeletionVector: (400, UNSUPPORTED),
    InvalidCapabilities: (400, INVALID),
    SharingError: (400, INVALID),
    VersionError: (400, INVALID),
    InvalidParameter: (400, INVALID),
    MalformedRange: (400, INVALID),
}
#: Error codes of HTTP's own errors (a refused caller, an unknown path, too many calls, an
#: oversized body or headers); any other is `INVALID_PARAMETER_VALUE`.
HTTP_CODES = {403: "PERMISSION_DENIED", 404: NOT_FOUND, 413: TOO_LARGE,
              429: "REQUEST_LIMIT_EXCEEDED", 431: TOO_LARGE}  # fmt: skip
#: The status journaled for a call whose application neither answered nor raised.
NO_ANSWER = 500
#: The errors the application answers with `answer_for`; any other is an incident.
ANSWERED: tuple[type[Exception], ...] = (*STATUSES, RequestValidationError, HTTPException)


@dataclass(frozen=True)
class Answer:
    """A refusal as the protocol answers it."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return outcome_of(self.status, self.code)

    def body(self) -> dict[str, str]:
        return {"errorCode": self.code, "message": self.message}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=dict(self.headers))


def outcome_of(status: int, code: str | None = None) -> str:
    """The journal outcome of an HTTP status (and error code: a format the client cannot
    read is refused)."""
    if status < 400:
        return "ok"
    if code == UNSUPPORTED:
        return "refused"
    return {401: "refused", 403: "refused", 404: "not_found", 429: "refused"}.get(status, "error")


def validation_problems(exc: RequestValidationError) -> str:
    """What is wrong with a request's parameters or body, one `location: problem` each."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def answer_for(exc: Exception) -> Answer:
    """The answer to `exc`, one of `ANSWERED`."""
    if isinstance(exc, RequestValidationError):
        return Answer(400, INVALID, validation_problems(exc))
    if isinstance(exc, HTTPException):
        return Answer(exc.status_code, HTTP_CODES.get(exc.status_code, INVALID), str(exc.detail),
                      exc.headers or {})  # fmt: skip
    status, code = next(STATUSES[kind] for kind in type(exc).__mro__ if kind in STATUSES)
    if isinstance(exc, UnsatisfiableRange):
        return Answer(status, code, str(exc), {"Content-Range": exc.content_range})
    return Answer(status, code, str(exc))


def internal_error(incident: str) -> Answer:
    """The answer to an unexpected error: its incident id, nothing of the error itself."""
    message = f"internal error (incident {incident}); the operators have its details"
    return Answer(500, "INTERNAL_ERROR", message)


# -- refusals of the request itself ---------------------------------------------------------
class BodyTooLarge(HTTPException):
    """A request body over the limit. An HTTP error, not a domain one: FastAPI answers any
    other error raised while it reads a body as a malformed body."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


class HeadersTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(431, f"the request line and headers are larger than {limit} bytes")


class NulInPath(HTTPException):
    def __init__(self) -> None:
        super().__init__(404, "no such path: it holds a NUL character")


class NulInQuery(HTTPException):
    def __init__(self) -> None:
        super().__init__(400, "the query holds a NUL character")


def malformed_http(error: BaseException | None, header_limit: int) -> Answer:
    """The answer to a request uvicorn's h11 refused (`error`): oversized headers, or not
    HTTP at all."""
    if isinstance(error, h11.RemoteProtocolError) and error.error_status_hint == 431:
        return answer_for(HeadersTooLarge(header_limit))
    return Answer(400, INVALID, f"not a valid HTTP request: {error}")
