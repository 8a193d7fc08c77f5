"""Open data for the public (开放数据, 石景山 ch. 6): no token, under `/open`.

- `GET /open/catalog.jsonld`: the open catalogue as DCAT-AP JSON-LD (`govlake.governance.dcat`);
- `GET /open/{theme}/{table}.csv`: an open table as UTF-8 CSV with a header row, streamed
  batch by batch: the version last recorded in `ops.publications` (header
  `delta-table-version`, a `Link` to the licence and to the notice); not found before the
  first;
- `GET /open/{theme}/{table}`: the table's notice: usage notice (使用须知), licence, columns
  with their de-identification rules, and the latest published version if any;
- `GET /open/{theme}/{table}/schema.json`: the CSV's Frictionless Table Schema.

Only the open tables (`<theme>.<resource>_open` of resources whose open attribute is open)
are served; any other name is not found (`OpenTableNotFound`), whatever exists in the
lakehouse. Every call, refusals included, goes into the audit journal with actor `public`:
`open.catalog`, `open.notice`, `open.download` (with the version and rows served).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from govlake.core.catalog import Catalog, Resource
from govlake.core.settings import Settings
from govlake.governance import dcat
from govlake.lake.deltalog import DeltaLog
from govlake.lake.reads import delta_schema, scan_delta
from govlake.lake.tables import Table, TableSet
from govlake.sharing.server.deps import CatalogDep, SettingsDep
from govlake.sharing.server.gate import journal
from govlake.sharing.server.tables import NameNotFound

PREFIX = "/open"
ACTOR = "public"
#: The audit actions of the public routes.
OPEN_ACTIONS = frozenset({"open.catalog", "open.notice", "open.download"})

router = APIRouter(prefix=PREFIX, tags=["open data"])


class OpenTableNotFound(NameNotFound):
    """A name that is no open table, or one not published yet."""


@dataclass(frozen=True)
class OpenTable:
    resource: Resource
    table: Table
    links: dcat.OpenLinks


def open_tables(catalog: Catalog, settings: Settings) -> dict[tuple[str, str], OpenTable]:
    """The open tables by (theme, table name)."""
    found = {}
    for resource in catalog:
        if resource.is_open:
            table = TableSet(resource, settings.warehouse_location).open
            found[(table.database, table.name)] = OpenTable(
                resource, table, dcat.links(resource, settings)
            )
    return found


def _record(request: Request, settings: Settings, action: str, outcome: str = "ok",
            **fields: Any) -> None:  # fmt: skip
    journal(request, action, outcome, actor=ACTOR, **fields)


def _lookup(request: Request, settings: Settings, catalog: Catalog, theme: str, name: str, *,
            published_only: bool) -> tuple[OpenTable, dcat.OpenPublication | None]:  # fmt: skip
    """The open table `theme.name` and its latest publication in `ops.publications` (None
    before the first), else `OpenTableNotFound` (journaled as the public's): not an open
    table, or, with `published_only`, not published yet."""
    found = open_tables(catalog, settings).get((theme, name))
    published = None
    if found is not None:
        published = dcat.open_publications(settings).get(found.resource.qualified_name)
    if found is None or (published_only and published is None):
        request.state.table, request.state.actor = f"{theme}.{name}", ACTOR
        if found is None:
            raise OpenTableNotFound(f"{theme}.{name} is not an open table")
        raise OpenTableNotFound(f"open table {theme}.{name} has not been published yet")
    return found, published


@router.get("/catalog.jsonld", name="open_catalog")
def open_catalog(request: Request, settings: SettingsDep, catalog: CatalogDep) -> Response:
    document = dcat.catalog_document(catalog, settings)
    _record(request, settings, "open.catalog", detail={"datasets": len(document["dcat:dataset"])})
    body = json.dumps(document, ensure_ascii=False, indent=2)
    return Response(body, media_type=dcat.MEDIA_TYPE)


@router.get("/{theme}/{name}.csv", name="open_download")
def open_download(request: Request, theme: str, name: str, settings: SettingsDep,
                  catalog: CatalogDep) -> Response:  # fmt: skip
    found, published = _lookup(request, settings, catalog, theme, name, published_only=True)
    assert published is not None
    # The version last recorded as published, whatever a publication under way has written.
    version = published.version
    delta = DeltaLog(found.table.location)
    _, files = delta.snapshot(version)
    table = delta.table(version)
    published_columns = delta_schema(table).names
    _record(request, settings, "open.download", resource=found.resource.qualified_name,
            table_name=found.table.qualified_name, version=version, rows=published.rows,
            files=len(files), detail={"format": "csv"})  # fmt: skip
    terms = found.resource.open
    assert terms is not None  # open resources have terms (catalogue rule)
    headers = {
        "delta-table-version": str(version),
        "Content-Disposition": f'attachment; filename="{theme}.{name}.v{version}.csv"',
        "Link": f'<{terms.licence_url}>; rel="license", <{found.links.page}>; rel="describedby"',
    }
    # What the catalogue opens now, of what was published: an item dropped since is not
    # served any more, even before the next publication rewrites the table.
    columns = [name for name in found.table.column_names if name in published_columns]
    # Read through delta-rs's engine, not a pyarrow dataset scan (which can make the process
    # abort at exit), in the table's own types: the CSV is written as before.
    return StreamingResponse(_csv(scan_delta(table, columns)),
                             media_type="text/csv; charset=utf-8", headers=headers)  # fmt: skip


def _csv(batches: pa.RecordBatchReader) -> Iterator[bytes]:
    """UTF-8 CSV with one header row (also for an empty table), one chunk per record batch."""
    buffer = io.BytesIO()
    writer = pacsv.CSVWriter(buffer, batches.schema)
    yield _drain(buffer)
    for batch in batches:
        writer.write_batch(batch)
        yield _drain(buffer)
    writer.close()
    if tail := _drain(buffer):
        yield tail


def _drain(buffer: io.BytesIO) -> bytes:
    chunk = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return chunk


def notice(found: OpenTable, published: dcat.OpenPublication | None) -> dict[str, Any]:
    """What the public is told about one open table."""
    resource, terms = found.resource, found.resource.open
    assert terms is not None
    latest: dict[str, Any] = {}
    if published is not None:
        latest = {
            "version": published.version,
            "rows": published.rows,
            "publishedAt": published.last.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    return {
        "table": found.table.qualified_name,
        "resource": resource.qualified_name,
        "title": resource.title,
        "grain": resource.grain,
        "provider": resource.provider,
        "updateCycle": resource.update_cycle,
        "licence": terms.licence,
        "licenceUrl": terms.licence_url,
        "notice": " ".join(terms.notice.split()),
        "columns": dcat.columns(resource),
        "download": found.links.download,
        "schema": found.links.schema,
        **latest,
    }


@router.get("/{theme}/{name}/schema.json", name="open_schema")
def open_schema(request: Request, theme: str, name: str, settings: SettingsDep,
                catalog: CatalogDep) -> Response:  # fmt: skip
    found, _ = _lookup(request, settings, catalog, theme, name, published_only=False)
    fields = [
        {"name": c["name"], "title": c["title"], "type": _frictionless(c["type"]),
         "description": c["description"]}
        for c in dcat.columns(found.resource)
    ]  # fmt: skip
    _record(request, settings, "open.notice", resource=found.resource.qualified_name,
            table_name=found.table.qualified_name, detail={"document": "schema"})  # fmt: skip
    return JSONResponse({"fields": fields})


@router.get("/{theme}/{name}", name="open_notice")
def open_notice(request: Request, theme: str, name: str, settings: SettingsDep,
                catalog: CatalogDep) -> Response:  # fmt: skip
    found, published = _lookup(request, settings, catalog, theme, name, published_only=False)
    body = notice(found, published)
    _record(request, settings, "open.notice", resource=found.resource.qualified_name,
            table_name=found.table.qualified_name, version=published and published.version,
            detail={"document": "notice"})  # fmt: skip
    return JSONResponse(body)


def _frictionless(kind: str) -> str:
    """An open column type as a Frictionless Table Schema type."""
    return "number" if kind.startswith("decimal") else _FRICTIONLESS.get(kind, "string")


_FRICTIONLESS = {
    "string": "string",
    "integer": "integer",
    "bigint": "integer",
    "double": "number",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "datetime",
}
