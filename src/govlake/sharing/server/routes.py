"""The routes of the Delta Sharing protocol, under `/delta-sharing`: list shares, get share,
list schemas, list tables (per schema and all), table version (with `startingTimestamp`),
metadata, query (a snapshot by `version` or `timestamp`, or the data changes from
`startingVersion` to `endingVersion`; `jsonPredicateHints` and `limitHint` skip files by
their statistics), changes (`startingVersion`/`endingVersion` or timestamps, from the table's
log while it still holds them, with `includeHistoricalMetadata`) and the local files'
downloads (data files and deletion vector files). Metadata, query and changes answer in the
parquet or the delta response format (`formats`); query and changes answer in pages
(`maxFiles`, `pageToken`) and end with the end-stream action when the client asks
(`includeendstreamaction`) or pages, the tokens it carries signed (`paging`).

Each route is short: names, versions and pages come from `tables`, file URLs and file
answers from `files`; the route journals its call and answers. A refusal is raised as a
domain error, which the application answers and journals (`gate.refused`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from govlake.lake.deltalog import DataFile, DeltaLog, VersionState, millis
from govlake.platform.database import Consumer
from govlake.sharing.access import SharedTable
from govlake.sharing.server.deps import ConsumerDep, DbDep, NowDep, TokenFirstRoute
from govlake.sharing.server.files import (
    SIGNATURE,
    FilePart,
    UrlSigner,
    delta_file_entry,
    file_entry,
    file_reply,
    granted_file,
)
from govlake.sharing.server.formats import (
    DELTA,
    HEADER,
    PARQUET,
    Capabilities,
    check_readable,
    needed_features,
    response_header,
)
from govlake.sharing.server.gate import journal_call
from govlake.sharing.server.paging import PAGE, REFRESH, Paging, Tokens, end_stream_action, page_of
from govlake.sharing.server.tables import (
    Changes,
    QueryBody,
    SharedTables,
    Snapshot,
    changed_files,
    changes_range,
    check_query,
    enough,
    hinted,
    page,
    queried_version,
    query_range,
    share_id,
    starting_version,
    table_item,
)

PREFIX = "/delta-sharing"
NDJSON = "application/x-ndjson"
#: The path of one table.
TABLE = "/shares/{share}/schemas/{schema}/tables/{name}"
PROTOCOL = {"protocol": {"minReaderVersion": 1}}
#: The table property that a table keeps a change data feed.
CDF = "delta.enableChangeDataFeed"

router = APIRouter(prefix=PREFIX, route_class=TokenFirstRoute)


async def shared(request: Request) -> SharedTables:
    found: SharedTables = request.app.state.tables
    return found


TablesDep = Annotated[SharedTables, Depends(shared)]
MaxResults = Query(default=None, alias="maxResults", ge=1)
PageToken = Query(default=None, alias="pageToken")


def _about(table: SharedTable, purpose: str | None) -> dict[str, Any]:
    return {"resource": table.resource.qualified_name, "table_name": table.full_name,
            "purpose": purpose}  # fmt: skip


def _ndjson(lines: Iterable[dict[str, Any]], version: int, format_: str, *,
            end_stream: bool = False) -> Response:  # fmt: skip
    # The lines are in memory already: one body, not a stream (a streamed body is sent a line
    # at a time, each through the thread pool).
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    headers = {"delta-table-version": str(version),
               **response_header(format_, end_stream=end_stream)}  # fmt: skip
    return Response(body, media_type=NDJSON, headers=headers)


def _capabilities(request: Request) -> Capabilities:
    return Capabilities.of(request.headers.get(HEADER))


def _head(state: VersionState, format_: str, **extra: Any) -> list[dict[str, Any]]:
    """The protocol and metaData lines of an answer in `format_`; `extra` goes into the
    metaData object (its `version`)."""
    if format_ == PARQUET:
        return [PROTOCOL, {"metaData": state.metadata | extra}]
    sizes = {"size": state.metadata["size"], "numFiles": state.metadata["numFiles"]}
    return [{"protocol": {"deltaProtocol": state.protocol}},
            {"metaData": {"deltaMetadata": state.delta_metadata} | sizes | extra}]  # fmt: skip


def _file_lines(request: Request, table: SharedTable, files: list[DataFile], consumer: str,
                format_: str, extra: Callable[[DataFile], dict[str, Any]], *,
                changes: bool) -> list[dict[str, Any]]:  # fmt: skip
    """One line per file in `format_`: delta's `file` wrapping the log's action, or parquet's
    `file` (a query) or `add`/`remove` (changes); `extra(f)` joins each entry."""
    if format_ == DELTA:
        return [{"file": delta_file_entry(request, table, f, consumer) | extra(f)} for f in files]
    key: Callable[[DataFile], str] = (lambda f: f.change) if changes else (lambda f: "file")
    return [{key(f): file_entry(request, table, f, consumer) | extra(f)} for f in files]


# -- listing --------------------------------------------------------------------------------
@router.get("/shares", name="list_shares")
def list_shares(request: Request, who: ConsumerDep, s: DbDep, at: NowDep, tables: TablesDep,
                max_results: int | None = MaxResults,
                page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
    shares = tables.shares(s, who, at)
    result = page([{"name": n, "id": share_id(n)} for n in shares], max_results, page_token)
    journal_call(request, detail={"shares": len(result["items"])})
    return result


@router.get("/shares/{share}", name="get_share")
def get_share(request: Request, share: str, who: ConsumerDep, s: DbDep, at: NowDep,
              tables: TablesDep) -> dict[str, Any]:  # fmt: skip
    tables.in_share(s, who, at, share)
    journal_call(request, detail={"share": share})
    return {"share": {"name": share, "id": share_id(share)}}


@router.get("/shares/{share}/schemas", name="list_schemas")
def list_schemas(request: Request, share: str, who: ConsumerDep, s: DbDep, at: NowDep,
                 tables: TablesDep, max_results: int | None = MaxResults,
                 page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
    schemas = sorted({t.schema for t in tables.in_share(s, who, at, share)})
    result = page([{"name": n, "share": share} for n in schemas], max_results, page_token)
    journal_call(request, detail={"share": share})
    return result


@router.get("/shares/{share}/schemas/{schema}/tables", name="list_tables")
def list_tables(request: Request, share: str, schema: str, who: ConsumerDep, s: DbDep,
                at: NowDep, tables: TablesDep, max_results: int | None = MaxResults,
                page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
    mine = tables.in_schema(s, who, at, share, schema)
    result = page([table_item(t) for t in mine], max_results, page_token)
    journal_call(request, detail={"share": share, "tables": len(result["items"])})
    return result


@router.get("/shares/{share}/all-tables", name="list_all_tables")
def list_all_tables(request: Request, share: str, who: ConsumerDep, s: DbDep, at: NowDep,
                    tables: TablesDep, max_results: int | None = MaxResults,
                    page_token: str | None = PageToken) -> dict[str, Any]:  # fmt: skip
    mine = sorted(tables.in_share(s, who, at, share), key=lambda t: (t.schema, t.name))
    result = page([table_item(t) for t in mine], max_results, page_token)
    journal_call(request, detail={"share": share, "tables": len(result["items"])})
    return result


# -- one table ------------------------------------------------------------------------------
def _tokens(request: Request, table: SharedTable, query: dict[str, Any], at: datetime) -> Tokens:
    """The page and refresh tokens of a call about `table` with the parameters `query`."""
    signer: UrlSigner = request.app.state.signer
    return Tokens.of(signer.key, signer.ttl, table.full_name, query, millis(at))


def _readable(request: Request, tables: SharedTables, who: Consumer, s: Session, at: datetime,
              share: str, schema: str, name: str) -> tuple[SharedTable, str | None]:  # fmt: skip
    """The table the path names, which the call is about (journaled also when refused)."""
    request.state.table = f"{share}.{schema}.{name}"
    return tables.readable(s, who, at, request.state.table)


@router.get(f"{TABLE}/version", name="table_version")
def table_version(request: Request, share: str, schema: str, name: str, who: ConsumerDep,
                  s: DbDep, at: NowDep, tables: TablesDep,
                  starting: str | None = Query(default=None, alias="startingTimestamp"),
                  ) -> Response:  # fmt: skip
    table, purpose = _readable(request, tables, who, s, at, share, schema, name)
    version = starting_version(tables.log(table), starting)
    journal_call(request, **_about(table, purpose), version=version)
    return Response(headers={"delta-table-version": str(version)})


@router.get(f"{TABLE}/metadata", name="table_metadata")
def table_metadata(request: Request, share: str, schema: str, name: str, who: ConsumerDep,
                   s: DbDep, at: NowDep, tables: TablesDep) -> Response:  # fmt: skip
    table, purpose = _readable(request, tables, who, s, at, share, schema, name)
    caps = _capabilities(request)
    delta = tables.log(table)
    version = delta.latest()
    state = delta.state(version)
    format_ = caps.respond_in(state.protocol)
    journal_call(request, **_about(table, purpose), version=version,
                 detail={"format": format_})  # fmt: skip
    return _ndjson(_head(state, format_), version, format_)


@router.post(f"{TABLE}/query", name="query_table")
def query_table(request: Request, share: str, schema: str, name: str, body: QueryBody,
                who: ConsumerDep, s: DbDep, at: NowDep, tables: TablesDep) -> Response:  # fmt: skip
    table, purpose = _readable(request, tables, who, s, at, share, schema, name)
    caps = _capabilities(request)
    check_query(body)
    delta = tables.log(table)
    tokens = _tokens(request, table, body.query(), at)
    resumed = None if body.pageToken is None else tokens.open(PAGE, body.pageToken)
    paging = Paging(body.maxFiles, resumed, caps.end_stream or body.pageToken is not None)
    if body.startingVersion is not None:
        wanted = Changes(resumed.start or 0, resumed.end) if resumed else query_range(delta, body)
        return _changes_answer(request, table, purpose, who, caps, delta, wanted, tokens, paging,
                               historical=True, query=True)  # fmt: skip
    if resumed is not None:
        snapshot = Snapshot(int(resumed.version or 0), resumed.pinned)
    elif body.refreshToken is not None:
        refreshed = tokens.open(REFRESH, body.refreshToken)
        snapshot = Snapshot(int(refreshed.version or 0), pinned=False)
    else:
        snapshot = queried_version(delta, body)
    state = delta.state(snapshot.version)
    # In path order, so that every page of a query cuts the same list.
    files, hint = hinted(sorted(state.files, key=lambda f: f.path), body.jsonPredicateHints)
    if body.limitHint is not None:  # enough files to cover the hint, when counts are known
        files = enough(files, body.limitHint)
    format_ = caps.respond_in(state.protocol)
    needed = needed_features(state.protocol, state.delta_metadata["configuration"], files)
    check_readable(caps, format_, needed, f"{table.full_name} at version {snapshot.version}")
    pinned: dict[str, Any] = {}
    if snapshot.pinned:
        pinned = {"version": snapshot.version, "timestamp": delta.timestamp_of(snapshot.version)}
    head = _head(state, format_, **({"version": snapshot.version} if snapshot.pinned else {}))
    page, following = page_of(files, paging.offset, paging.size)
    lines = _file_lines(request, table, list(page), who.code, format_, lambda f: pinned,
                        changes=False)  # fmt: skip
    end: dict[str, Any] | None = None
    if paging.end_stream:
        refresh = None
        if body.includeRefreshToken and resumed is None and not snapshot.pinned:
            refresh = tokens.issue(REFRESH, version=snapshot.version)
        following_token = None if following is None else tokens.issue(
            PAGE, version=snapshot.version, pinned=snapshot.pinned, offset=following)  # fmt: skip
        end = end_stream_action(lines, following_token, refresh)
    journal_call(request, **_about(table, purpose), version=snapshot.version,
                 rows=sum(f.rows or 0 for f in page), files=len(page),
                 detail={"limitHint": body.limitHint, "format": format_,
                         "jsonPredicateHints": hint, **paging.detail(following)})  # fmt: skip
    return _ndjson(head + lines + ([end] if end else []), snapshot.version, format_,
                   end_stream=end is not None)  # fmt: skip


@router.get(f"{TABLE}/changes", name="table_changes")
def table_changes(request: Request, share: str, schema: str, name: str, who: ConsumerDep,
                  s: DbDep, at: NowDep, tables: TablesDep,
                  starting_version: int | None = Query(None, alias="startingVersion", ge=0),
                  ending_version: int | None = Query(None, alias="endingVersion", ge=0),
                  starting_timestamp: str | None = Query(None, alias="startingTimestamp"),
                  ending_timestamp: str | None = Query(None, alias="endingTimestamp"),
                  historical: bool = Query(False, alias="includeHistoricalMetadata"),
                  max_files: int | None = Query(None, alias="maxFiles", ge=1),
                  page_token: str | None = PageToken) -> Response:  # fmt: skip
    table, purpose = _readable(request, tables, who, s, at, share, schema, name)
    caps = _capabilities(request)
    delta = tables.log(table)
    query = {"startingVersion": starting_version, "endingVersion": ending_version,
             "startingTimestamp": starting_timestamp, "endingTimestamp": ending_timestamp,
             "includeHistoricalMetadata": historical}  # fmt: skip
    tokens = _tokens(request, table, query, at)
    resumed = None if page_token is None else tokens.open(PAGE, page_token)
    if resumed is not None:
        wanted = Changes(resumed.start or 0, resumed.end)
    else:
        wanted = changes_range(delta, starting_version=starting_version,
                               ending_version=ending_version,
                               starting_timestamp=starting_timestamp,
                               ending_timestamp=ending_timestamp)  # fmt: skip
        # The end resolved to a number: later pages read the same range.
        wanted = Changes(wanted.start, delta.version() if wanted.end is None else wanted.end)
    paging = Paging(max_files, resumed, caps.end_stream or page_token is not None)
    return _changes_answer(request, table, purpose, who, caps, delta, wanted, tokens, paging,
                           historical=historical, query=False)  # fmt: skip


def _changes_answer(request: Request, table: SharedTable, purpose: str | None, who: Consumer,
                    caps: Capabilities, delta: DeltaLog, wanted: Changes, tokens: Tokens,
                    paging: Paging, *, historical: bool, query: bool) -> Response:  # fmt: skip
    """The files added and removed over `wanted`, with the metaData of the commits within it
    that changed the schema or properties (`historical`): a changes query's answer, or a
    query's from its `startingVersion` (`query`: plain metaData, not the change data feed's)."""
    changes = changed_files(delta, table, wanted)
    end = delta.state(wanted.end)
    format_ = caps.respond_in(end.protocol)
    needed = needed_features(end.protocol, end.delta_metadata["configuration"], changes)
    check_readable(caps, format_, needed,
                   f"changes of {table.full_name} from version {wanted.start}")  # fmt: skip
    start = delta.state(wanted.start)
    if not query:
        head = _changes_head(start, end, format_, wanted.start)
    else:  # the metaData the range starts from; in delta, the protocol that reads all of it
        head = _head(start, format_, version=wanted.start)
        if format_ == DELTA:
            head[0] = {"protocol": {"deltaProtocol": end.protocol}}
    items: list[DataFile | Historical] = list(changes)
    if historical:
        items += [Historical(v, m) for v, m in delta.metadata_changes(wanted.start, wanted.end)]
        # By version, a version's metaData before its files (a stable sort keeps log order).
        items.sort(key=lambda i: (i.version or 0, not isinstance(i, Historical)))
    page, following = page_of(items, paging.offset, paging.size)
    files = [i for i in page if isinstance(i, DataFile)]
    lines = [_historical_line(i, format_, cdf=not query) if isinstance(i, Historical) else
             _file_lines(request, table, [i], who.code, format_,
                         lambda f: {"version": f.version, "timestamp": f.timestamp},
                         changes=True)[0]
             for i in page]  # fmt: skip
    closing: dict[str, Any] | None = None
    if paging.end_stream:
        following_token = None if following is None else tokens.issue(
            PAGE, start=wanted.start, end=wanted.end, offset=following)  # fmt: skip
        closing = end_stream_action(lines, following_token, None)
    journal_call(request, **_about(table, purpose), version=wanted.end,
                 rows=sum(f.rows or 0 for f in files), files=len(files),
                 detail={"startingVersion": wanted.start, "endingVersion": wanted.end,
                         "format": format_, **paging.detail(following)})  # fmt: skip
    return _ndjson(head + lines + ([closing] if closing else []), wanted.start, format_,
                   end_stream=closing is not None)  # fmt: skip


@dataclass(frozen=True)
class Historical:
    """The metaData action a commit within a changes range wrote (a schema or properties
    change), with its version."""

    version: int
    metadata: dict[str, Any]


def _historical_line(item: Historical, format_: str, *, cdf: bool) -> dict[str, Any]:
    """A historical metaData line in `format_`: the protocol's Metadata object built from the
    log's action (parquet), or the action itself (delta; saying change data feed, as the
    head of a changes answer does, when `cdf`)."""
    meta = item.metadata
    if format_ == DELTA:
        return {"metaData": {"deltaMetadata": _with_cdf(meta) if cdf else meta,
                             "version": item.version}}  # fmt: skip
    found = {name: meta.get(name) for name in ("id", "name", "description", "schemaString")}
    return {"metaData": found | {"format": {"provider": "parquet", "options": {}},
                                 "partitionColumns": list(meta.get("partitionColumns") or []),
                                 "configuration": dict(meta.get("configuration") or {}),
                                 "version": item.version}}  # fmt: skip


def _changes_head(start: VersionState, end: VersionState, format_: str,
                  version: int) -> list[dict[str, Any]]:  # fmt: skip
    """The protocol and metaData lines of a changes answer: the metaData of the starting
    `version`, with its version (the client replays the changes from it). In delta format
    the protocol is the ending version's, and protocol and metaData say change data feed
    (writer feature and table property): the table keeps no change-data files (the engine
    cannot write them), so a Delta reader is to take each commit's added and removed files,
    deletion vectors applied, as its changes, which is what the parquet format serves too."""
    if format_ == PARQUET:
        return _head(start, format_, version=version)
    protocol = dict(end.protocol)
    if "writerFeatures" in protocol:  # a writer that lists features lists this one too
        protocol["writerFeatures"] = sorted({*protocol["writerFeatures"], "changeDataFeed"})
    else:
        protocol["minWriterVersion"] = max(4, int(protocol["minWriterVersion"]))
    head = _head(start, format_, version=version)
    head[0] = {"protocol": {"deltaProtocol": protocol}}
    head[1]["metaData"]["deltaMetadata"] = _with_cdf(start.delta_metadata)
    return head


def _with_cdf(metadata: dict[str, Any]) -> dict[str, Any]:
    """A Delta metaData action whose table properties say change data feed."""
    return metadata | {"configuration": dict(metadata.get("configuration") or {}) | {CDF: "true"}}


# -- files ----------------------------------------------------------------------------------
@router.api_route("/files/{token}", methods=["GET", "HEAD"], name="download_file")
def download_file(request: Request, token: str, s: DbDep, tables: TablesDep,
                  signature: str | None = Query(None, alias=SIGNATURE)) -> FilePart:  # fmt: skip
    """One data file or deletion vector file of a local table, whole or one byte range, to
    the consumer its URL was issued to, if that consumer may still read the table now. The
    URL's path holds the grant, its query the grant's MAC (`files.SIGNATURE`)."""
    at = request.app.state.clock()
    grant = request.app.state.signer.open(token if signature is None else f"{token}.{signature}")
    request.state.consumer = grant.consumer
    request.state.table = grant.table
    table = tables.by_name.get(grant.table)
    target, purpose = granted_file(s, grant, table, at)
    assert table is not None
    reply = file_reply(target, request.headers)
    whole = request.method == "GET"
    journal_call(request, **_about(table, purpose), files=1 if whole else 0,
                 detail={"file": grant.path, "status": reply.status,
                         "range": reply.part.content_range if reply.part else None,
                         "requested": request.headers.get("range"),
                         "bytes": reply.length if whole else 0})  # fmt: skip
    return reply
