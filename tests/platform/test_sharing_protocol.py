"""The protocol as the clients speak it now (PROTOCOL.md and the reference server's query
request): the capabilities header answered, the end-stream action, query and changes pages
that read the version the first page read, a query from a starting version, historical
metadata on changes, the refresh token, and `jsonPredicateHints`/`limitHint` used to skip
files by their statistics; through the official client where it uses them, else by raw
requests checked against the protocol.

The tables are written with delta-rs (one file per write, with statistics), at the locations
the catalogue publishes them: what each file holds is kept here, as the test wrote it.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import delta_sharing
import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from sqlalchemy import func, select
from support import (
    Clock,
    SharingServer,
    consumers_with_tokens,
    lake_settings,
    ndjson_lines,
    write_profiles,
)

from govlake.core.catalog import Catalog
from govlake.lake.tables import TableSet
from govlake.platform.database import AuditEntry, session
from govlake.sharing.server.app import create_app
from govlake_app.cli.serve import running

START = datetime.datetime(2026, 11, 4, 9)  # the server's clock
RESIDENTS = "/shares/population/schemas/population/tables/residents_unconditional"
ENTERPRISES = "/shares/legal_entity/schemas/legal_entity/tables/enterprises_unconditional"
DIVISIONS = "/shares/geospatial/schemas/geospatial/tables/admin_divisions_unconditional"
HEADER = "delta-sharing-capabilities"
END_STREAM = {HEADER: "responseformat=parquet;includeendstreamaction=true"}
DELTA_END_STREAM = {HEADER: "responseformat=delta;includeendstreamaction=true"}
FILES = 6  # files of the residents' table, 40 rows each
ROWS = 40

#: Seconds the server keeps a table's latest version (`sharing_cache_seconds`).
CACHE_SECONDS = 0.2


def _residents(n: int) -> pa.Table:
    """The residents' file `n`: birth years 1950 + 10n to 1959 + 10n; file 2's names are all
    null."""
    ids = range(n * ROWS, (n + 1) * ROWS)
    return pa.table({
        "citizen_id": [f"6101{i:06d}" for i in ids],
        "name": [None if n == 2 else f"resident {i}" for i in ids],
        "birth_year": pa.array([1950 + 10 * n + i % 10 for i in ids], pa.int32()),
    })  # fmt: skip


def _enterprises(first: int, *, status: bool = False) -> pa.Table:
    columns: dict[str, Any] = {"credit_code": [f"9111{i}" for i in range(first, first + 5)],
                               "name": [f"firm {i}" for i in range(first, first + 5)]}  # fmt: skip
    if status:
        columns["status"] = ["active"] * 5
    return pa.table(columns)


def _divisions(n: int) -> pa.Table:
    return pa.table({"division_code": [str(110000 + 10 * n + i) for i in range(10)]})


@dataclass
class Served(SharingServer):
    profile: str
    locations: dict[str, str]  # table path -> location

    def post(self, table: str, body: dict[str, Any], headers: dict[str, str] | None = None,
             ) -> httpx.Response:  # fmt: skip
        return self.call(f"{table}/query", headers, body)

    def get(self, table: str, path: str, headers: dict[str, str] | None = None,
            ) -> httpx.Response:  # fmt: skip
        return self.call(f"{table}{path}", headers)

    def last(self, action: str) -> AuditEntry:
        with session(self.settings) as s:
            return s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                             .order_by(AuditEntry.seq.desc()).limit(1)).one()  # fmt: skip

    def entries(self) -> int:
        with session(self.settings) as s:
            return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("protocol")
    # A table's latest version is kept by the server for CACHE_SECONDS (fewer than the default).
    settings = lake_settings(root, sharing_cache_seconds=CACHE_SECONDS)
    catalog = Catalog.load(settings.catalog_dir)

    def location(resource: str) -> str:
        published = TableSet(catalog.get(resource), settings.warehouse_location).published(
            "unconditional"
        )
        return published.location.uri

    residents = location("population.residents")
    for n in range(FILES):
        write_deltalake(residents, _residents(n), mode="append")
    enterprises = location("legal_entity.enterprises")
    write_deltalake(enterprises, _enterprises(0))  # version 0
    write_deltalake(enterprises, _enterprises(5), mode="append")  # 1
    DeltaTable(enterprises).alter.set_table_properties(  # 2: a change of properties
        {"delta.logRetentionDuration": "interval 60 days"}
    )
    write_deltalake(enterprises, _enterprises(10, status=True), mode="append",
                    schema_mode="merge")  # 3: a new column  # fmt: skip
    write_deltalake(enterprises, _enterprises(15, status=True), mode="append")  # 4
    divisions = location("geospatial.admin_divisions")
    for n in range(5):
        write_deltalake(divisions, _divisions(n), mode="append")
    clock = Clock(START)
    tokens = consumers_with_tokens(settings, catalog, ["civil_affairs"], at=START, days=30)
    with running(settings, app=create_app(settings, catalog, clock=clock)) as endpoint:
        profile = write_profiles(root, endpoint, tokens)["civil_affairs"]
        yield Served(settings, endpoint, clock, tokens["civil_affairs"], profile,
                     {RESIDENTS: residents, ENTERPRISES: enterprises,
                      DIVISIONS: divisions})  # fmt: skip


@pytest.fixture(autouse=True)
def _at_start(served: Served) -> Iterator[None]:
    served.clock.at = START
    yield
    served.clock.at = START


def _files(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file entries of an answer, whatever their wrapper (file, add, remove)."""
    return [entry for line in lines for kind, entry in line.items()
            if kind in ("file", "add", "remove", "cdf")]  # fmt: skip


def _pages(served: Served, table: str, body: dict[str, Any],
           headers: dict[str, str]) -> list[httpx.Response]:  # fmt: skip
    """Every page of a query, following the next page tokens."""
    replies = [served.post(table, body, headers)]
    while token := ndjson_lines(replies[-1])[-1]["endStreamAction"].get("nextPageToken"):
        replies.append(served.post(table, body | {"pageToken": token}, headers))
    return replies


# -- the capabilities header and the end-stream action ---------------------------------------
@pytest.mark.parametrize("headers", [END_STREAM, DELTA_END_STREAM], ids=["parquet", "delta"])
def test_the_end_stream_action_closes_query_and_changes_when_asked(
    served: Served, headers: dict[str, str]
) -> None:
    format_ = headers[HEADER].split(";")[0]
    for reply in (served.post(RESIDENTS, {}, headers),
                  served.get(RESIDENTS, "/changes?startingVersion=0", headers)):  # fmt: skip
        assert reply.headers[HEADER] == f"{format_};includeendstreamaction=true"
        lines = ndjson_lines(reply)
        assert list(lines[0]) == ["protocol"] and list(lines[1]) == ["metaData"]
        files, end = _files(lines[2:-1]), lines[-1]
        assert len(files) == FILES and list(end) == ["endStreamAction"]
        assert end["endStreamAction"] == {
            "minUrlExpirationTimestamp": min(f["expirationTimestamp"] for f in files)
        }
    # Not asked: no such line, and the header says the format only.
    plain = served.post(RESIDENTS, {}, {HEADER: headers[HEADER].split(";")[0]})
    assert plain.headers[HEADER] == format_
    assert all("endStreamAction" not in line for line in ndjson_lines(plain))
    # Metadata answers in the format asked, and has no end-stream action to give.
    metadata = served.get(RESIDENTS, "/metadata", headers)
    assert metadata.headers[HEADER] == format_ and len(ndjson_lines(metadata)) == 2


def test_capability_keys_and_values_are_case_insensitive(served: Served) -> None:
    shouted = {HEADER: "ResponseFormat=PARQUET;IncludeEndStreamAction=TRUE"}
    reply = served.post(RESIDENTS, {}, shouted)
    assert reply.headers[HEADER] == "responseformat=parquet;includeendstreamaction=true"
    assert "endStreamAction" in ndjson_lines(reply)[-1]


# -- pages ----------------------------------------------------------------------------------
def test_query_pages_read_the_version_the_first_page_read(served: Served) -> None:
    body = {"maxFiles": 2, "includeRefreshToken": True}
    first = served.post(DIVISIONS, body, END_STREAM)
    version = first.headers["delta-table-version"]
    head = ndjson_lines(first)[:2]
    end = ndjson_lines(first)[-1]["endStreamAction"]
    assert len(_files(ndjson_lines(first))) == 2 and end["nextPageToken"]
    # A new version is committed between the pages.
    write_deltalake(served.locations[DIVISIONS], _divisions(99), mode="append")
    rest = [served.post(DIVISIONS, {"maxFiles": 2, "pageToken": end["nextPageToken"]},
                        END_STREAM)]  # fmt: skip
    while token := ndjson_lines(rest[-1])[-1]["endStreamAction"].get("nextPageToken"):
        rest.append(served.post(DIVISIONS, {"maxFiles": 2, "pageToken": token}, END_STREAM))
    pages = [first, *rest]
    for page in pages:
        lines = ndjson_lines(page)
        assert page.headers["delta-table-version"] == version and lines[:2] == head
        assert len(_files(lines)) <= 2
    ids = [f["id"] for page in pages for f in _files(ndjson_lines(page))]
    assert len(ids) == len(set(ids)) == int(version) + 1  # one file per version, none twice
    assert "nextPageToken" not in ndjson_lines(pages[-1])[-1]["endStreamAction"]
    assert "refreshToken" not in ndjson_lines(pages[1])[-1]["endStreamAction"]
    entry = served.last("share.query")
    assert entry.version == int(version) and entry.files == len(_files(ndjson_lines(pages[-1])))
    # The refresh token of the first page gives the same files again, with new URLs once
    # the first ones have expired; a new query sees more.
    served.clock.at = START + datetime.timedelta(minutes=30)
    refreshed = served.post(DIVISIONS, {"refreshToken": end["refreshToken"]}, END_STREAM)
    assert refreshed.headers["delta-table-version"] == version
    assert sorted(f["id"] for f in _files(ndjson_lines(refreshed))) == sorted(ids)
    time.sleep(CACHE_SECONDS)  # the version written outside the server is seen after it
    latest = served.post(DIVISIONS, {}, END_STREAM)
    assert len(_files(ndjson_lines(latest))) == len(ids) + 1


def test_changes_pages_hold_the_whole_answer_once(served: Served) -> None:
    query = "/changes?startingVersion=0&endingVersion=4&includeHistoricalMetadata=true"
    whole = ndjson_lines(served.get(ENTERPRISES, query, END_STREAM))

    def key(line: dict[str, Any]) -> tuple[str, Any, Any]:
        ((kind, entry),) = line.items()
        return kind, entry.get("id"), entry.get("version")

    paged: list[dict[str, Any]] = []
    url = f"{query}&maxFiles=2"
    while True:
        reply = served.get(ENTERPRISES, url, END_STREAM)
        assert reply.headers["delta-table-version"] == "0"
        lines = ndjson_lines(reply)
        assert lines[:2] == whole[:2] and len(lines) <= 2 + 2 + 1
        paged += lines[2:-1]
        token = lines[-1]["endStreamAction"].get("nextPageToken")
        if not token:
            break
        url = f"{query}&maxFiles=2&pageToken={token}"
    assert [key(line) for line in paged] == [key(line) for line in whole[2:-1]]
    assert len(_files(paged)) == 4  # the four writes, one file each


def test_forged_or_foreign_page_tokens_are_refused_and_journaled(served: Served) -> None:
    first = served.post(RESIDENTS, {"maxFiles": 2}, END_STREAM)
    token = ndjson_lines(first)[-1]["endStreamAction"]["nextPageToken"]
    body, _, mac = token.rpartition(".")
    tampered = json.loads(base64.urlsafe_b64decode(body)) | {"offset": 0}
    forged = base64.urlsafe_b64encode(json.dumps(tampered).encode()).decode()
    cases = {
        "forged": (RESIDENTS, {"maxFiles": 2, "pageToken": f"{forged}.{mac}"}),
        "garbage": (RESIDENTS, {"maxFiles": 2, "pageToken": "not-a-token"}),
        "another table": (ENTERPRISES, {"maxFiles": 2, "pageToken": token}),
        "another query": (RESIDENTS, {"maxFiles": 2, "limitHint": 1, "pageToken": token}),
    }
    for case, (table, request) in cases.items():
        before = served.entries()
        reply = served.post(table, request, END_STREAM)
        assert reply.status_code == 400, case
        assert reply.json()["errorCode"] == "INVALID_PARAMETER_VALUE", case
        assert served.entries() == before + 1, case
        assert HEADER not in reply.headers  # an error answer is JSON only (PROTOCOL.md)
        entry = served.last("share.query")
        assert entry.outcome == "error" and "pageToken" in (entry.detail or ""), case
    served.clock.at = START + datetime.timedelta(hours=1)
    expired = served.post(RESIDENTS, {"maxFiles": 2, "pageToken": token}, END_STREAM)
    assert expired.status_code == 400 and "expired" in expired.json()["message"]
    changes = served.get(RESIDENTS, f"/changes?startingVersion=0&pageToken={token}")
    assert changes.status_code == 400  # a query's token is not a changes query's


# -- a query from a starting version, and historical metadata --------------------------------
def test_a_query_from_a_starting_version_answers_the_data_changes(served: Served) -> None:
    reply = served.post(ENTERPRISES, {"startingVersion": 1, "endingVersion": 3})
    assert reply.headers["delta-table-version"] == "1"
    lines = ndjson_lines(reply)
    assert lines[0] == {"protocol": {"minReaderVersion": 1}}
    assert lines[1]["metaData"]["version"] == 1
    assert [(kind, e["version"]) for line in lines[2:] for kind, e in line.items()] == [
        ("add", 1), ("metaData", 2), ("metaData", 3), ("add", 3)]  # fmt: skip
    assert "status" in lines[-2]["metaData"]["schemaString"]
    delta = ndjson_lines(served.post(ENTERPRISES, {"startingVersion": 1, "endingVersion": 3},
                                     {HEADER: "responseformat=delta"}))  # fmt: skip
    assert delta[0]["protocol"]["deltaProtocol"]["minReaderVersion"] >= 1
    assert delta[1]["metaData"]["version"] == 1 and "deltaMetadata" in delta[1]["metaData"]
    assert [(e["version"], *e["deltaSingleAction"]) for e in _files(delta)] == [
        (1, "add"), (3, "add")]  # fmt: skip
    # endingVersion is a hint: past the latest reads to the latest.
    beyond = ndjson_lines(served.post(ENTERPRISES, {"startingVersion": 3, "endingVersion": 99}))
    assert [e["version"] for e in _files(beyond)] == [3, 4]
    for wrong in ({"startingVersion": 3, "endingVersion": 2},
                  {"startingVersion": 1, "version": 2}, {"startingVersion": 9}):  # fmt: skip
        refused = served.post(ENTERPRISES, wrong)
        assert refused.status_code == 400, wrong
        assert served.last("share.query").outcome == "error"


@pytest.mark.parametrize("headers", [{}, {HEADER: "responseformat=delta"}],
                         ids=["parquet", "delta"])  # fmt: skip
def test_changes_name_the_metadata_changed_within_their_range(
    served: Served, headers: dict[str, str]
) -> None:
    asked = served.get(ENTERPRISES, "/changes?startingVersion=1&includeHistoricalMetadata=true",
                       headers)  # fmt: skip
    metadata = [line["metaData"] for line in ndjson_lines(asked) if "metaData" in line]
    assert [m["version"] for m in metadata] == [1, 2, 3]
    actions = [m.get("deltaMetadata", m) for m in metadata]
    assert [a["configuration"].get("delta.logRetentionDuration") for a in actions] == [
        None, "interval 60 days", "interval 60 days"]  # fmt: skip
    assert ["status" in a["schemaString"] for a in actions] == [False, False, True]
    not_asked = served.get(ENTERPRISES, "/changes?startingVersion=1", headers)
    assert [line for line in ndjson_lines(not_asked) if "metaData" in line] == [
        {"metaData": ndjson_lines(not_asked)[1]["metaData"]}]  # fmt: skip


# -- skipping files by their statistics -------------------------------------------------------
def _column(op: str, value: Any, value_type: str = "int", name: str = "birth_year") -> dict:
    return {
        "op": op,
        "children": [
            {"op": "column", "name": name, "valueType": value_type},
            {"op": "literal", "value": value, "valueType": value_type},
        ],
    }


def test_json_predicate_hints_skip_files_and_the_client_still_reads_right(
    served: Served,
) -> None:
    url = f"{served.profile}#population.population.residents_unconditional"
    every = {f"6101{i:06d}": 1950 + 10 * (i // ROWS) + i % 10 for i in range(FILES * ROWS)}
    between = {"op": "and", "children": [_column("greaterThanOrEqual", "1975"),
                                         _column("lessThan", "1985")]}  # fmt: skip
    read = delta_sharing.load_as_pandas(url, jsonPredicateHints=json.dumps(between))
    entry = served.last("share.query")
    assert (entry.files, entry.rows) == (2, 2 * ROWS)  # the 1970s' file and the 1980s'
    assert "skipped 4 of 6 files" in (entry.detail or "")
    wanted = {k for k, year in every.items() if 1975 <= year < 1985}
    selected = read[(read["birth_year"] >= 1975) & (read["birth_year"] < 1985)]
    assert set(selected["citizen_id"]) == wanted and len(selected) == len(wanted)
    # Not null: the file whose names are all null is skipped; null: only that one is kept.
    not_null = {"op": "not", "children": [{"op": "isNull", "children": [
        {"op": "column", "name": "name", "valueType": "string"}]}]}  # fmt: skip
    read = delta_sharing.load_as_pandas(url, jsonPredicateHints=json.dumps(not_null))
    assert served.last("share.query").files == FILES - 1
    assert read["name"].notna().sum() == (FILES - 1) * ROWS
    only_null = not_null["children"][0]
    read = delta_sharing.load_as_pandas(url, jsonPredicateHints=json.dumps(only_null))
    assert served.last("share.query").files == 1 and read["name"].isna().all()


@pytest.mark.parametrize("hint", ["{not json", json.dumps({"op": "equal", "children": []}),
                                  json.dumps(_column("regexMatch", "19.*")),
                                  json.dumps(_column("lessThan", "soon", "date"))])  # fmt: skip
def test_a_hint_the_server_cannot_use_keeps_every_file(served: Served, hint: str) -> None:
    reply = served.post(RESIDENTS, {"jsonPredicateHints": hint})
    assert len(_files(ndjson_lines(reply))) == FILES
    assert served.last("share.query").files == FILES


def test_limit_hint_answers_enough_files_after_the_predicate(served: Served) -> None:
    late = _column("greaterThanOrEqual", "1980")  # the files of the 1980s, 1990s and 2000s
    reply = served.post(RESIDENTS, {"jsonPredicateHints": json.dumps(late), "limitHint": 50})
    files = _files(ndjson_lines(reply))
    assert len(files) == 2  # 40 rows are not enough for 50, 80 are
    assert all(json.loads(f["stats"])["numRecords"] == ROWS for f in files)
    entry = served.last("share.query")
    assert (entry.files, entry.rows) == (2, 2 * ROWS)
    url = f"{served.profile}#population.population.residents_unconditional"
    assert len(delta_sharing.load_as_pandas(url, limit=50)) == 50


MALFORMED = [{"maxFiles": 0}, {"maxFiles": "two"}, {"pageToken": 5},
             {"jsonPredicateHints": {"op": "equal"}}, {"includeRefreshToken": True, "version": 1},
             {"refreshToken": "x", "timestamp": "2026-11-04T09:00:00Z"}]  # fmt: skip


@pytest.mark.parametrize("body", MALFORMED)
def test_a_malformed_query_body_is_refused_and_journaled(
    served: Served, body: dict[str, Any]
) -> None:
    before = served.entries()
    reply = served.post(RESIDENTS, body, END_STREAM)
    assert reply.status_code == 400 and reply.json()["errorCode"] == "INVALID_PARAMETER_VALUE"
    assert served.entries() == before + 1 and served.last("share.query").outcome == "error"
