"""The OAuth token endpoint of the sharing server, `POST /delta-sharing/oauth/token`: the
client credentials grant (RFC 6749 §4.4) that version-2 profiles name as `tokenEndpoint`.

The client authenticates with HTTP Basic (as the official client does) or with `client_id`
and `client_secret` in the form, not both (§2.3.1). The form is
`application/x-www-form-urlencoded`, at most `FORM_LIMIT` bytes, each parameter at most once
(§3.2); a parameter without a value counts as omitted. The answer is §5.1's JSON with
`Cache-Control: no-store`; a refusal is §5.2's `{"error", "error_description"}`: 401 with
`WWW-Authenticate: Basic` for `invalid_client`, 413 for a form over the limit, else 400.

Every call leaves one journal entry (`oauth.token`): an issuance in the transaction that
issues the token, a refusal under the department owning the client the call named, if any.
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from govlake.platform import audit
from govlake.platform.database import session
from govlake.sharing import oauth
from govlake.sharing.oauth import InvalidClient, InvalidRequest, OAuthError
from govlake.sharing.server import errors
from govlake.sharing.server.errors import BodyTooLarge
from govlake.sharing.server.gate import journal_call, journaled

PREFIX = "/delta-sharing"
FORM = "application/x-www-form-urlencoded"
#: The largest token request body read: four short parameters need a few hundred bytes.
FORM_LIMIT = 4096
#: The most parameters a token request may have.
MAX_FIELDS = 16
#: RFC 6749 §5.1: token answers are not to be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: The scheme a refused client authenticates with (RFC 6749 §5.2, RFC 7617).
CHALLENGE = {"WWW-Authenticate": 'Basic realm="govlake sharing", charset="UTF-8"'}

router = APIRouter(prefix=PREFIX, tags=["oauth"])


class FormTooLarge(InvalidRequest):
    """A token request body over `FORM_LIMIT` bytes."""


class TokenAnswer(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    scope: str


class ErrorAnswer(BaseModel):
    error: Literal["invalid_request", "invalid_client", "unsupported_grant_type",
                   "invalid_scope"]  # fmt: skip
    error_description: str


#: The form, described for the OpenAPI document (the route reads the body itself).
_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {FORM: {"schema": {
            "type": "object",
            "required": ["grant_type"],
            "properties": {
                "grant_type": {"type": "string", "enum": [oauth.CLIENT_CREDENTIALS]},
                "scope": {"type": "string", "enum": [oauth.SCOPE]},
                "client_id": {"type": "string", "description": "with client_secret, instead "
                              "of HTTP Basic authentication"},
                "client_secret": {"type": "string"},
            },
        }}},
    }
}  # fmt: skip


def _status(exc: OAuthError) -> int:
    if isinstance(exc, InvalidClient):
        return 401
    return 413 if isinstance(exc, FormTooLarge) else 400


def _refusal(exc: OAuthError) -> JSONResponse:
    headers = NO_STORE | (CHALLENGE if isinstance(exc, InvalidClient) else {})
    return JSONResponse({"error": exc.code, "error_description": str(exc)},
                        status_code=_status(exc), headers=headers)  # fmt: skip


# -- reading the request --------------------------------------------------------------------
async def _form(request: Request) -> dict[str, str]:
    """The token request's parameters with a value, each given once."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != FORM:
        raise InvalidRequest(f"a token request is a form ({FORM})")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > FORM_LIMIT:
        raise FormTooLarge(f"the form is larger than {FORM_LIMIT} bytes")
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_LIMIT:
                raise FormTooLarge(f"the form is larger than {FORM_LIMIT} bytes")
    except BodyTooLarge as exc:  # the server's own limit, lower than the form's
        raise FormTooLarge(str(exc.detail)) from exc
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=MAX_FIELDS)  # fmt: skip
    except ValueError as exc:  # not UTF-8, or too many parameters
        raise InvalidRequest(f"the form cannot be read: {exc}") from exc
    given = [(name, value) for name, value in pairs if value]
    repeated = sorted(name for name, count in Counter(n for n, _ in given).items() if count > 1)
    if repeated:
        raise InvalidRequest(f"parameters given more than once: {', '.join(repeated)[:200]}")
    return dict(given)


def _basic(request: Request) -> tuple[str, str] | None:
    """The client id and secret of the call's HTTP Basic credentials; None without any."""
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        raise InvalidRequest(f"give one Authorization header, not {len(headers)}")
    scheme, _, encoded = (headers[0] if headers else "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError as exc:  # not base64 (binascii.Error), not ASCII, not UTF-8
        raise InvalidClient("the Basic credentials cannot be read") from exc
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise InvalidClient("the Basic credentials cannot be read")
    # RFC 6749 §2.3.1: both are form-encoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


def _credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """The client id and secret the call authenticates with, by exactly one method."""
    basic = _basic(request)
    if basic is not None:
        if "client_secret" in form:
            raise InvalidRequest("authenticate the client one way: Basic or the form, not both")
        if form.get("client_id", basic[0]) != basic[0]:
            raise InvalidRequest("client_id differs from the Basic credentials' client")
        return basic
    if "client_id" not in form or "client_secret" not in form:
        raise InvalidClient("client authentication is required (HTTP Basic)")
    return form["client_id"], form["client_secret"]


def _named_client(request: Request, form: dict[str, str] | None) -> str | None:
    """The client a call named, however malformed the call, for its journal entry."""
    try:
        basic = _basic(request)
    except OAuthError:
        basic = None
    return basic[0] if basic else (form or {}).get("client_id")


# -- the route ------------------------------------------------------------------------------
@router.post(
    oauth.TOKEN_PATH,
    name="oauth_token",
    response_model=TokenAnswer,
    responses={
        400: {"model": ErrorAnswer},
        401: {"model": ErrorAnswer},
        413: {"model": ErrorAnswer},
    },
    openapi_extra=_FORM_BODY,
)
async def oauth_token(request: Request) -> JSONResponse:
    """An access token for a client's credentials (RFC 6749 §4.4)."""
    form: dict[str, str] | None = None
    try:
        form = await _form(request)
        client_id, secret = _credentials(request, form)
        answer = await run_in_threadpool(_issue, request, client_id, secret, form)
    except OAuthError as exc:
        await run_in_threadpool(_journal_refusal, request, exc, _named_client(request, form))
        return _refusal(exc)
    return JSONResponse(answer, headers=NO_STORE)


def _issue(request: Request, client_id: str, secret: str, form: dict[str, str]) -> dict[str, Any]:
    """Issue the access token and journal it, in one transaction."""
    settings, at = request.app.state.settings, request.app.state.clock()
    with session(settings) as s:
        token = oauth.exchange(s, client_id=client_id, secret=secret,
                               grant_type=form.get("grant_type"), scope=form.get("scope"),
                               at=at, seconds=settings.sharing_oauth_token_seconds)  # fmt: skip
        audit.record(s, at=at, actor=token.consumer, action="oauth.token",
                     consumer=token.consumer,
                     detail={"method": request.method, "path": request.url.path,
                             "client_id": token.client_id, "token_id": token.token_id,
                             "expires_in": token.expires_in})  # fmt: skip
    journaled(request)
    return token.answer()


def _journal_refusal(request: Request, exc: OAuthError, named: str | None) -> None:
    with session(request.app.state.settings) as s:
        owner = oauth.client_owner(s, named)
    status = _status(exc)
    journal_call(request, errors.outcome_of(status), consumer=owner,
                 detail={"status": status, "error": exc.code, "message": str(exc),
                         "client_id": None if named is None else named[:100]})  # fmt: skip
