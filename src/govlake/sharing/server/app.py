"""The Delta Sharing server (`govlake share serve`): the open REST protocol over the published
tables, so that consumers read them with the official `delta-sharing` client, unchanged.

Shares are the themes, each with one schema of the same name; tables are the published
tables the consumer may read (see `govlake.sharing.access`). Endpoints, under
`/delta-sharing`: list shares, get share, list schemas, list tables (per schema and all),
table version (with `startingTimestamp`), metadata, query (`version`, `timestamp`,
`limitHint`) and changes (`startingVersion`/`endingVersion` or timestamps, from the
table's log while it still holds them). File URLs are presigned with SigV4 for S3 and
HMAC-signed with an expiry for local storage, served here with Range support.

Every call, refused ones included, is appended to the audit journal with the consumer,
the grant's purpose, the table, version, rows and files served; `govlake.sharing.server.gate` sees
that each call leaves exactly one entry, bounds request sizes and answers unexpected errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from govlake.core.catalog import Catalog
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings
from govlake.lake.deltalog import ChangesUnavailable, DataFile, DeltaLog, VersionError, millis
from govlake.platform.database import Consumer
from govlake.sharing.access import (
    AccessError,
    SharedTable,
    SharingError,
    decide,
    shared_tables,
)
from govlake.sharing.receivers import allowed as allowed_receivers
from govlake.sharing.server.deps import ConsumerDep, DbDep, NowDep, TokenFirstRoute
from govlake.sharing.server.files import (
    ExpiredFileUrl,
    FileGrant,
    FilePart,
    MalformedRange,
    UnsatisfiableRange,
    UrlSigner,
    byte_range,
    keep_signatures_out_of_access_log,
)
from govlake.sharing.server.gate import CallJournal, journal, outcome_of
from govlake.sharing.server.open_api import router as open_router
from govlake.sharing.server.requests_api import router as requests_router
from govlake.sharing.server.subscriptions_api import router as subscriptions_router

log = logging.getLogger(__name__)

PREFIX = "/delta-sharing"
NDJSON = "application/x-ndjson"
MAX_PAGE = 1000

#: Route name → audit action.
ACTIONS = {
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
}  # fmt: skip


#: Error codes of Starlette's own HTTP errors (unknown path, method, oversized body).
HTTP_CODES = {404: "RESOURCE_DOES_NOT_EXIST", 413: "REQUEST_TOO_LARGE"}


class NotFound(Exception):
    status = 404
    code = "RESOURCE_DOES_NOT_EXIST"


class BadRequest(Exception):
    status = 400
    code = "INVALID_PARAMETER_VALUE"


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# -- request bodies -------------------------------------------------------------------------
class QueryBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    predicateHints: list[str] | None = None
    jsonPredicateHints: str | None = None
    limitHint: int | None = Field(default=None, ge=0)
    version: int | None = Field(default=None, ge=0)
    timestamp: str | None = None
    startingVersion: int | None = None
    endingVersion: int | None = None


def _parse_time(value: str, name: str) -> datetime:
    try:
        # In UTC, a time on the first or last day of the calendar may leave it (OverflowError).
        return naive_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"{name} must be an ISO 8601 timestamp, got {value!r}") from exc


# -- the application ------------------------------------------------------------------------
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
    # rather than answer every subscription with a 500.
    allowed_receivers(settings)
    app.state.settings = settings
    app.state.catalog = catalog or Catalog.load(settings.catalog_dir)
    app.state.clock = clock
    app.state.signer = UrlSigner(signing_key or secrets.token_bytes(32), url_ttl)
    keep_signatures_out_of_access_log()
    # One journal entry per call, whatever answers it; bodies bounded while they stream in.
    app.add_middleware(CallJournal, actions=ACTIONS)
    # The routes below check the bearer token before they read a body.
    app.router.route_class = TokenFirstRoute
    tables = {t.full_name: t for t in shared_tables(app.state.catalog, settings)}
    app.include_router(requests_router)
    app.include_router(subscriptions_router)
    app.include_router(open_router)

    def audit_call(request: Request, outcome: str, **fields: Any) -> None:
        """Journal the call under its route's action, attributed to the caller, also when
        its token was refused (`deps.caller`)."""
        route = request.scope.get("route")
        action = ACTIONS.get(getattr(route, "name", ""), "share.unknown")
        journal(request, action, outcome, **fields)

    def refusal(request: Request, status: int, code: str, message: str) -> JSONResponse:
        audit_call(request, outcome_of(status), table_name=getattr(request.state, "table", None),
                   detail={"status": status, "message": message})  # fmt: skip
        return JSONResponse({"errorCode": code, "message": message}, status_code=status)

    @app.exception_handler(AccessError)
    async def _access(request: Request, exc: AccessError) -> JSONResponse:
        return refusal(request, exc.status, exc.code, str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return refusal(request, 404, exc.code, str(exc))

    @app.exception_handler(BadRequest)
    @app.exception_handler(SharingError)
    @app.exception_handler(VersionError)
    async def _bad(request: Request, exc: Exception) -> JSONResponse:
        return refusal(request, 400, "INVALID_PARAMETER_VALUE", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return refusal(request, 400, "INVALID_PARAMETER_VALUE", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "INVALID_PARAMETER_VALUE")
        return refusal(request, exc.status_code, code, str(exc.detail))

    # -- lookups --------------------------------------------------------------------------
    def visible(s: Any, who: Consumer, at: datetime) -> list[SharedTable]:
        return [
            t for t in tables.values()
            if t.location.is_delta_table() and decide(s, who, t, at=at).allowed
        ]  # fmt: skip

    def lookup(request: Request, s: Any, who: Consumer, at: datetime, share: str, schema: str,
               name: str) -> tuple[SharedTable, str | None]:  # fmt: skip
        full = f"{share}.{schema}.{name}"
        request.state.table = full
        table = tables.get(full)
        if table is None or not table.location.is_delta_table():
            raise NotFound(f"table {full!r} does not exist")
        decision = decide(s, who, table, at=at)
        if not decision.allowed:
            raise AccessError(decision.reason)
        return table, decision.purpose

    def page(items: list[dict[str, Any]], max_results: int | None,
             token: str | None) -> dict[str, Any]:  # fmt: skip
        start = 0
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
            # binascii.Error is a ValueError; deeply nested JSON raises RecursionError
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                raise BadRequest(f"pageToken {token!r} is not valid") from exc
            # Only offsets this server hands out: a whole number, not negative.
            if type(start) is not int or start < 0:
                raise BadRequest(f"pageToken {token!r} is not valid")
        size = min(max_results or MAX_PAGE, MAX_PAGE)
        chunk = items[start : start + size]
        result: dict[str, Any] = {"items": chunk}
        if start + size < len(items):
            offset = json.dumps({"offset": start + size}).encode()
            result["nextPageToken"] = base64.urlsafe_b64encode(offset).decode()
        return result

    def share_id(share: str) -> str:
        return hashlib.sha256(f"share:{share}".encode()).hexdigest()[:32]

    def table_item(t: SharedTable) -> dict[str, Any]:
        table_id = DeltaLog(t.location).table().metadata().id
        return {"name": t.name, "schema": t.schema, "share": t.share,
                "shareId": share_id(t.share), "id": table_id}  # fmt: skip

    MaxResults = Query(default=None, alias="maxResults", ge=1)
    PageToken = Query(default=None, alias="pageToken")

    # -- listing --------------------------------------------------------------------------
    @app.get(f"{PREFIX}/shares", name="list_shares")
    def list_shares(request: Request, who: ConsumerDep, s: DbDep, at: NowDep,
                    max_results: int | None = MaxResults,
                    page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
        shares = sorted({t.share for t in visible(s, who, at)})
        result = page([{"name": n, "id": share_id(n)} for n in shares], max_results, page_token)
        audit_call(request, "ok", detail={"shares": len(result["items"])})
        return result

    @app.get(f"{PREFIX}/shares/{{share}}", name="get_share")
    def get_share(request: Request, share: str, who: ConsumerDep, s: DbDep,
                  at: NowDep) -> dict[str, Any]:  # fmt: skip
        if share not in {t.share for t in visible(s, who, at)}:
            raise NotFound(f"share {share!r} does not exist")
        audit_call(request, "ok", detail={"share": share})
        return {"share": {"name": share, "id": share_id(share)}}

    @app.get(f"{PREFIX}/shares/{{share}}/schemas", name="list_schemas")
    def list_schemas(request: Request, share: str, who: ConsumerDep, s: DbDep, at: NowDep,
                     max_results: int | None = MaxResults,
                     page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
        mine = [t for t in visible(s, who, at) if t.share == share]
        if not mine:
            raise NotFound(f"share {share!r} does not exist")
        schemas = sorted({t.schema for t in mine})
        result = page([{"name": n, "share": share} for n in schemas], max_results, page_token)
        audit_call(request, "ok", detail={"share": share})
        return result

    @app.get(f"{PREFIX}/shares/{{share}}/schemas/{{schema}}/tables", name="list_tables")
    def list_tables(request: Request, share: str, schema: str, who: ConsumerDep, s: DbDep,
                    at: NowDep, max_results: int | None = MaxResults,
                    page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
        mine = [t for t in visible(s, who, at) if t.share == share and t.schema == schema]
        if not mine:
            raise NotFound(f"schema {share}.{schema} does not exist")
        result = page([table_item(t) for t in sorted(mine, key=lambda t: t.name)], max_results,
                      page_token)  # fmt: skip
        audit_call(request, "ok", detail={"share": share, "tables": len(result["items"])})
        return result

    @app.get(f"{PREFIX}/shares/{{share}}/all-tables", name="list_all_tables")
    def list_all_tables(request: Request, share: str, who: ConsumerDep, s: DbDep, at: NowDep,
                        max_results: int | None = MaxResults,
                        page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
        mine = [t for t in visible(s, who, at) if t.share == share]
        if not mine:
            raise NotFound(f"share {share!r} does not exist")
        items = [table_item(t) for t in sorted(mine, key=lambda t: (t.schema, t.name))]
        result = page(items, max_results, page_token)
        audit_call(request, "ok", detail={"share": share, "tables": len(result["items"])})
        return result

    # -- one table ------------------------------------------------------------------------
    TABLE = f"{PREFIX}/shares/{{share}}/schemas/{{schema}}/tables/{{name}}"

    @app.get(f"{TABLE}/version", name="table_version")
    def table_version(request: Request, share: str, schema: str, name: str, who: ConsumerDep,
                      s: DbDep, at: NowDep,
                      starting: str | None = Query(default=None, alias="startingTimestamp"),
                      ) -> Response:  # fmt: skip
        table, purpose = lookup(request, s, who, at, share, schema, name)
        delta = DeltaLog(table.location)
        if starting:
            version = delta.version_at(_parse_time(starting, "startingTimestamp"), starting=True)
        else:
            version = delta.version()
        audit_call(request, "ok", **_about(table, purpose), version=version)
        return Response(headers={"delta-table-version": str(version)})

    @app.get(f"{TABLE}/metadata", name="table_metadata")
    def table_metadata(request: Request, share: str, schema: str, name: str, who: ConsumerDep,
                       s: DbDep, at: NowDep) -> Response:  # fmt: skip
        table, purpose = lookup(request, s, who, at, share, schema, name)
        version, meta = DeltaLog(table.location).latest_metadata()
        lines = [{"protocol": {"minReaderVersion": 1}}, {"metaData": meta}]
        audit_call(request, "ok", **_about(table, purpose), version=version)
        return _ndjson(lines, version)

    @app.post(f"{TABLE}/query", name="query_table")
    def query_table(request: Request, share: str, schema: str, name: str, body: QueryBody,
                    who: ConsumerDep, s: DbDep, at: NowDep) -> Response:  # fmt: skip
        table, purpose = lookup(request, s, who, at, share, schema, name)
        if body.startingVersion is not None or body.endingVersion is not None:
            raise BadRequest("startingVersion/endingVersion: use the changes endpoint")
        if body.version is not None and body.timestamp is not None:
            raise BadRequest("give version or timestamp, not both")
        delta = DeltaLog(table.location)
        pinned = body.version is not None or body.timestamp is not None
        if body.timestamp is not None:
            version = delta.version_at(_parse_time(body.timestamp, "timestamp"), starting=False)
        else:
            version = delta.version() if body.version is None else body.version
        meta, files = delta.snapshot(version)
        if body.limitHint is not None:  # enough files to cover the hint, when counts are known
            files = _enough(files, body.limitHint)
        stamp = delta.timestamp_of(version) if pinned else None
        lines: list[dict[str, Any]] = [
            {"protocol": {"minReaderVersion": 1}}, {"metaData": meta},
        ]  # fmt: skip
        for f in files:
            entry = file_entry(request, table, f, who)
            if pinned:
                entry |= {"version": version, "timestamp": stamp}
            lines.append({"file": entry})
        rows = sum(f.records or 0 for f in files)
        audit_call(request, "ok", **_about(table, purpose), version=version, rows=rows,
                   files=len(files), detail={"limitHint": body.limitHint})  # fmt: skip
        return _ndjson(lines, version)

    @app.get(f"{TABLE}/changes", name="table_changes")
    def table_changes(request: Request, share: str, schema: str, name: str, who: ConsumerDep,
                      s: DbDep, at: NowDep,
                      starting_version: int | None = Query(None, alias="startingVersion", ge=0),
                      ending_version: int | None = Query(None, alias="endingVersion", ge=0),
                      starting_timestamp: str | None = Query(None, alias="startingTimestamp"),
                      ending_timestamp: str | None = Query(None, alias="endingTimestamp"),
                      ) -> Response:  # fmt: skip
        table, purpose = lookup(request, s, who, at, share, schema, name)
        delta = DeltaLog(table.location)
        if (starting_version is None) == (starting_timestamp is None):
            raise BadRequest("give exactly one of startingVersion and startingTimestamp")
        start = starting_version
        if starting_timestamp is not None:
            start = delta.version_at(_parse_time(starting_timestamp, "startingTimestamp"),
                                     starting=True)  # fmt: skip
        end = ending_version
        if ending_timestamp is not None:
            end = delta.version_at(_parse_time(ending_timestamp, "endingTimestamp"),
                                   starting=False)  # fmt: skip
        assert start is not None
        try:
            changes = delta.changes(start, end)
        except ChangesUnavailable as exc:
            raise BadRequest(f"changes of {table.full_name} from version {start}: {exc}") from exc
        meta = delta.metadata(start) | {"version": start}
        lines: list[dict[str, Any]] = [{"protocol": {"minReaderVersion": 1}}, {"metaData": meta}]
        for f in changes:
            entry = file_entry(request, table, f, who) | {"version": f.version,
                                                          "timestamp": f.timestamp}  # fmt: skip
            lines.append({f.change: entry})
        rows = sum(f.records or 0 for f in changes)
        audit_call(request, "ok", **_about(table, purpose), version=end or delta.version(),
                   rows=rows, files=len(changes),
                   detail={"startingVersion": start, "endingVersion": end})  # fmt: skip
        return _ndjson(lines, start)

    def file_entry(request: Request, table: SharedTable, f: DataFile,
                   who: Consumer) -> dict[str, Any]:  # fmt: skip
        expires = millis(app.state.clock() + app.state.signer.ttl)
        if table.location.is_local:
            token = app.state.signer.sign(FileGrant(table.full_name, f.path, who.code, expires))
            url = str(request.url_for("download_file", token=token))
        else:
            url = _presign(table, f.path, app.state.signer.ttl, settings.sharing_s3_endpoint)
        entry: dict[str, Any] = {
            "url": url,
            "id": hashlib.sha256(f"{table.full_name}/{f.path}".encode()).hexdigest(),
            "partitionValues": {},
            "size": f.size,
            "expirationTimestamp": expires,
        }
        if f.records is not None:
            entry["stats"] = json.dumps({"numRecords": f.records})
        return entry

    # -- files ----------------------------------------------------------------------------
    @app.api_route(f"{PREFIX}/files/{{token}}", methods=["GET", "HEAD"], name="download_file")
    def download_file(request: Request, token: str, s: DbDep) -> FilePart:
        """One data file of a local table, whole or one byte range, to the consumer its URL
        was issued to, if that consumer may still read the table now."""
        at = app.state.clock()
        grant = app.state.signer.open(token)
        request.state.consumer = grant.consumer
        request.state.table = grant.table
        if grant.expired(at):
            raise ExpiredFileUrl()
        table = tables.get(grant.table)
        if table is None or ".." in grant.path.split("/"):
            raise NotFound("no such file")
        who = s.get(Consumer, grant.consumer)
        if who is None or not who.active:
            raise AccessError(f"consumer {grant.consumer} is not active")
        decision = decide(s, who, table, at=at)
        if not decision.allowed:
            raise AccessError(decision.reason)
        target = table.location.child(grant.path).uri
        if not os.path.isfile(target):
            raise NotFound("the file is no longer in the table (vacuumed)")
        stat = os.stat(target)
        reply = FilePart(target, None, stat_result=stat, media_type="application/octet-stream")
        requested = request.headers.get("range")
        try:
            part = byte_range(requested, stat.st_size)
        except MalformedRange as exc:
            raise BadRequest(str(exc)) from exc
        if_range = request.headers.get("if-range")
        validators = (reply.headers["etag"], reply.headers["last-modified"])
        if part is not None and if_range is not None and if_range not in validators:
            part = None  # the file changed since the client's first part: all of it (RFC 9110)
        reply.part = part
        sent = part.length if part else stat.st_size
        audit_call(request, "ok", **_about(table, decision.purpose),
                   files=1 if request.method == "GET" else 0,
                   detail={"file": grant.path, "status": 206 if part else 200,
                           "range": part.content_range if part else None,
                           "requested": requested,
                           "bytes": sent if request.method == "GET" else 0})  # fmt: skip
        return reply

    @app.exception_handler(UnsatisfiableRange)
    async def _unsatisfiable(request: Request, exc: UnsatisfiableRange) -> JSONResponse:
        reply = refusal(request, exc.status, exc.code, str(exc))
        reply.headers["Content-Range"] = exc.content_range
        return reply

    return app


def _about(table: SharedTable, purpose: str | None) -> dict[str, Any]:
    return {"resource": table.resource.qualified_name, "table_name": table.full_name,
            "purpose": purpose}  # fmt: skip


def _enough(files: list[DataFile], limit: int) -> list[DataFile]:
    if any(f.records is None for f in files):
        return files
    chosen, total = [], 0
    for f in files:
        if total >= limit:
            break
        chosen.append(f)
        total += f.records or 0
    return chosen


def _ndjson(lines: Iterable[dict[str, Any]], version: int) -> StreamingResponse:
    def body() -> Iterator[bytes]:
        for line in lines:
            yield (json.dumps(line, ensure_ascii=False) + "\n").encode()

    return StreamingResponse(body(), media_type=NDJSON,
                             headers={"delta-table-version": str(version)})  # fmt: skip


@lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, access_key: str | None) -> Any:
    """One boto3 client per endpoint and key: building one costs more than presigning a
    thousand URLs. Credentials come from the `AWS_*` variables, as for the engine.
    SigV4 (boto3 presigns SigV2 unless told, and the client then fails); path-style keys."""
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def _presign(table: SharedTable, path: str, ttl: timedelta, endpoint: str | None) -> str:
    """A SigV4 presigned GET of one file of an S3 table, valid for `ttl`, on `endpoint` (the
    store as consumers reach it) or else the platform's own `AWS_ENDPOINT_URL`."""
    import os

    bucket, _, prefix = table.location.uri.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{path}" if prefix else path
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    client = _s3_client(endpoint, os.environ.get("AWS_ACCESS_KEY_ID"))
    return str(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                             ExpiresIn=int(ttl.total_seconds())))  # fmt: skip
