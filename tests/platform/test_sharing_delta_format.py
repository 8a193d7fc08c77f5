"""A published table with deletion vectors, served by the sharing server and read with the
official `delta-sharing` client (delta response format, read by delta-kernel-rs) and with
raw requests checked against the protocol (PROTOCOL.md): the live rows of every version, by
number and by time, the changes between versions, the deletion vector files signed and
served, and the refusal of a client that can only take the parquet format.

The table is written through the engine as the pipeline writes published tables (deletion
vectors enabled, then a DELETE and a MERGE); the expected rows are kept here, in Python, as
the test wrote them."""

from __future__ import annotations

import datetime
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import delta_sharing
import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from govlake_tools.s3server import SeaweedS3
from sqlalchemy import select
from support import (
    Clock,
    SharingServer,
    consumers_with_tokens,
    lake_settings,
    ndjson_lines,
    write_profiles,
)

from govlake.core.catalog import Catalog
from govlake.core.location import Location
from govlake.core.settings import Settings
from govlake.lake.deltalog import DeltaLog
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.lake.tables import Table, TableSet, ops_tables, register
from govlake.platform.database import AuditEntry, session
from govlake.sharing.server.app import create_app
from govlake_app.cli.serve import running

START = datetime.datetime(2026, 11, 4, 9)  # the server's clock
RESIDENTS = "population.residents"
DIVISIONS = "geospatial.admin_divisions"
ENTERPRISES = "legal_entity.enterprises"
BUCKET = "govlake-delta-format"
UNCONDITIONAL = "population.population.residents_unconditional"
TABLE_PATH = "/shares/population/schemas/population/tables/residents_unconditional"
PARQUET_ONLY = {"delta-sharing-capabilities": "responseformat=parquet"}
DELTA = {"delta-sharing-capabilities": "responseformat=delta;readerfeatures=deletionvectors"}

Rows = dict[str, tuple[str, int]]  # citizen_id -> (name, birth_year)


@dataclass
class Served(SharingServer):
    url: str  # the official client's table URL
    location: str
    versions: dict[int, Rows]  # the live rows of each version, as written
    open_rows: set[str]  # the division codes the open table holds, as written

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return self.call(f"{TABLE_PATH}{path}", headers, body)

    def get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        return self.call(f"{TABLE_PATH}{path}", headers)

    def journal(self, action: str) -> list[AuditEntry]:
        with session(self.settings) as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                  .order_by(AuditEntry.seq)))  # fmt: skip


def _write(spark: Any, settings: Settings, catalog: Catalog) -> tuple[str, dict[int, Rows]]:
    """The residents' unconditional table with deletion vectors: two appends, a DELETE and
    a MERGE that updates; the rows each version holds."""
    published = TableSet(catalog.get(RESIDENTS), settings.warehouse_location).published(
        "unconditional"
    )
    table = Table(published.database, published.name, published.location,
                  (("citizen_id", "string"), ("name", "string"), ("birth_year", "int")),
                  "one row per resident", deletion_vectors=True)  # fmt: skip
    register(spark, table)
    rows: Rows = {}
    versions: dict[int, Rows] = {}
    for part in range(2):
        spark.sql(f"INSERT INTO {table.sql_name} SELECT concat('6101', lpad(id, 6, '0')), "
                  f"concat('resident ', id), CAST(1950 + id % 60 AS INT) "
                  f"FROM range({part * 300}, {part * 300 + 300})")  # fmt: skip
        numbers = range(part * 300, part * 300 + 300)
        rows |= {f"6101{n:06d}": (f"resident {n}", 1950 + n % 60) for n in numbers}
        versions[part + 1] = dict(rows)
    spark.sql(f"DELETE FROM {table.sql_name} WHERE birth_year % 7 = 0")
    rows = {k: v for k, v in rows.items() if v[1] % 7 != 0}
    versions[3] = dict(rows)
    spark.sql(
        "CREATE OR REPLACE TEMP VIEW corrections AS SELECT concat('6101', lpad(id, 6, "
        "'0')) AS citizen_id, concat('corrected ', id) AS name FROM range(0, 600, 5)"
    )
    spark.sql(
        f"MERGE INTO {table.sql_name} t USING corrections c ON t.citizen_id = "
        "c.citizen_id WHEN MATCHED THEN UPDATE SET name = c.name"
    )
    rows = {k: (f"corrected {int(k[4:])}", v[1]) if int(k[4:]) % 5 == 0 else v
            for k, v in rows.items()}  # fmt: skip
    versions[4] = dict(rows)
    return published.location.uri, versions


def _write_open(spark: Any, settings: Settings, catalog: Catalog) -> set[str]:
    """The open variant of the administrative divisions with deletion vectors (rows written,
    some deleted), recorded in `ops.publications` as published: the codes it holds."""
    resource = catalog.get(DIVISIONS)
    table = TableSet(resource, settings.warehouse_location).open
    register(spark, table)
    spark.sql(f"INSERT INTO {table.sql_name} SELECT concat('r', id), CAST(110000 + id AS STRING), "
              "concat('division ', id), 'county', '110000', 116.0 + id / 1000, 39.9 "
              "FROM range(0, 200)")  # fmt: skip
    spark.sql(f"DELETE FROM {table.sql_name} WHERE CAST(division_code AS INT) % 3 = 0")
    codes = {str(110000 + n) for n in range(200) if (110000 + n) % 3 != 0}
    version = DeltaTable(table.location.uri).version()
    _, publications = ops_tables(settings.warehouse_location)
    register(spark, publications)
    spark.sql(f"INSERT INTO {publications.sql_name} VALUES ('{DIVISIONS}', 'open', "
              f"'{table.qualified_name}', {version}, TIMESTAMP '2026-11-03 02:00:00', "
              f"{len(codes)}, 0, '', '', {len(codes)})")  # fmt: skip
    return codes


def _write_evolving(spark: Any, settings: Settings, catalog: Catalog) -> str:
    """The enterprises' unconditional table with deletion vectors whose third version adds a
    column (a metaData action in the log): its location."""
    published = TableSet(catalog.get(ENTERPRISES), settings.warehouse_location).published(
        "unconditional"
    )
    table = Table(published.database, published.name, published.location,
                  (("credit_code", "string"), ("name", "string")), "one row per enterprise",
                  deletion_vectors=True)  # fmt: skip
    register(spark, table)
    spark.sql(f"INSERT INTO {table.sql_name} SELECT concat('9111', id), concat('firm ', id) "
              "FROM range(0, 20)")  # fmt: skip
    spark.sql(f"DELETE FROM {table.sql_name} WHERE credit_code = '91113'")
    spark.createDataFrame([("911199", "firm 99", "active")], "credit_code string, name string, "
                          "status string").write.format("delta").mode("append").option(
        "mergeSchema", "true").save(table.location.uri)  # fmt: skip
    return table.location.uri


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("delta_format")
    settings = lake_settings(root)
    catalog = Catalog.load(settings.catalog_dir)
    spark = get_spark(settings, fresh=True)
    location, versions = _write(spark, settings, catalog)
    open_rows = _write_open(spark, settings, catalog)
    assert DeltaTable(_write_evolving(spark, settings, catalog)).version() == 3
    assert DeltaTable(location).version() == 4
    clock = Clock(START)
    tokens = consumers_with_tokens(settings, catalog, ["civil_affairs"], at=START, days=30)
    app = create_app(settings, catalog, clock=clock)
    with running(settings, app=app) as endpoint:
        profiles = write_profiles(root, endpoint, tokens)
        url = f"{profiles['civil_affairs']}#{UNCONDITIONAL}"
        yield Served(settings, endpoint, clock, tokens["civil_affairs"], url, location, versions,
                     open_rows)  # fmt: skip


@pytest.fixture(autouse=True)
def _at_start(served: Served) -> Iterator[None]:
    served.clock.at = START
    yield
    served.clock.at = START


def _rows(frame: pd.DataFrame) -> Rows:
    return {r.citizen_id: (r.name, int(r.birth_year)) for r in frame.itertuples()}


# -- the official client --------------------------------------------------------------------
def test_the_client_reads_exactly_the_live_rows(served: Served) -> None:
    read = delta_sharing.load_as_pandas(served.url)
    assert len(read) == len(served.versions[4]) and _rows(read) == served.versions[4]
    # delta-rs's own reader agrees with what the test wrote
    assert _rows(read_delta(DeltaTable(served.location)).to_pandas()) == served.versions[4]
    query = served.journal("share.query")[-1]
    assert json.loads(query.detail or "{}")["format"] == "delta"
    assert query.rows == len(served.versions[4])


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_each_version_reads_as_it_was_by_number_and_by_time(served: Served, version: int) -> None:
    by_number = delta_sharing.load_as_pandas(served.url, version=version)
    assert _rows(by_number) == served.versions[version]
    moment = {h["version"]: h["timestamp"] for h in DeltaTable(served.location).history()}
    stamp = datetime.datetime.fromtimestamp(moment[version] / 1000, datetime.UTC)
    by_time = delta_sharing.load_as_pandas(served.url, timestamp=stamp.isoformat())
    assert _rows(by_time) == served.versions[version]


def test_a_limit_counts_live_rows(served: Served) -> None:
    read = delta_sharing.load_as_pandas(served.url, limit=500)
    assert len(read) == 500 and set(_rows(read).items()) <= set(served.versions[4].items())


def test_changes_in_delta_format_are_the_rows_deleted_and_written(served: Served) -> None:
    changes = delta_sharing.load_table_changes_as_pandas(
        served.url, starting_version=3, ending_version=4, use_delta_format=True
    )
    deleted = changes[(changes["_change_type"] == "delete") & (changes["_commit_version"] == 3)]
    gone = {k: v for k, v in served.versions[2].items() if k not in served.versions[3]}
    assert _rows(deleted) == gone
    at4 = changes[changes["_commit_version"] == 4]
    before, after = served.versions[3], served.versions[4]
    changed = {k for k in after if after[k] != before[k]}
    assert _rows(at4[at4["_change_type"] == "delete"]) == {k: before[k] for k in changed}
    assert _rows(at4[at4["_change_type"] == "insert"]) == {k: after[k] for k in changed}


def test_changes_without_deletion_vectors_still_read_in_parquet(served: Served) -> None:
    changes = delta_sharing.load_table_changes_as_pandas(
        served.url, starting_version=2, ending_version=2
    )
    added = {k: v for k, v in served.versions[2].items() if k not in served.versions[1]}
    assert set(changes["_change_type"]) == {"insert"} and _rows(changes) == added


# -- raw requests against PROTOCOL.md -------------------------------------------------------
def test_the_delta_format_answer_wraps_the_log_actions(served: Served) -> None:
    reply = served.post("/query", {}, DELTA)
    assert reply.headers["delta-sharing-capabilities"] == "responseformat=delta"
    assert reply.headers["delta-table-version"] == "4"
    protocol, metadata, *files = ndjson_lines(reply)
    assert protocol["protocol"]["deltaProtocol"]["minReaderVersion"] == 3
    assert "deletionVectors" in protocol["protocol"]["deltaProtocol"]["readerFeatures"]
    assert metadata["metaData"]["deltaMetadata"]["configuration"][
        "delta.enableDeletionVectors"] == "true"  # fmt: skip
    adds = [f["file"]["deltaSingleAction"]["add"] for f in files]
    vectors = [a["deletionVector"] for a in adds if a.get("deletionVector")]
    assert vectors and all(v["storageType"] == "p" for v in vectors)
    live = sum(json.loads(a["stats"])["numRecords"] - (a.get("deletionVector") or {}).get(
        "cardinality", 0) for a in adds)  # fmt: skip
    assert live == len(served.versions[4])


@pytest.mark.parametrize("headers", [PARQUET_ONLY, {}], ids=["parquet-only", "no-header"])
def test_a_parquet_only_client_is_refused_not_given_deleted_rows(
    served: Served, headers: dict[str, str]
) -> None:
    for version in (3, 4):
        reply = served.post("/query", {"version": version}, headers)
        assert reply.status_code == 400, reply.text
        body = reply.json()
        assert body["errorCode"] == "UNSUPPORTED_OPERATION"
        assert "deletionVectors" in body["message"] and "responseformat=delta" in body["message"]
        entry = served.journal("share.query")[-1]
        assert (entry.outcome, entry.consumer, entry.table_name) == ("refused", "civil_affairs",
                                                                     UNCONDITIONAL)  # fmt: skip
    changes = served.get("/changes?startingVersion=3", headers)
    assert changes.status_code == 400 and changes.json()["errorCode"] == "UNSUPPORTED_OPERATION"


def test_a_version_without_deletion_vectors_still_answers_in_parquet(served: Served) -> None:
    reply = served.post("/query", {"version": 2}, PARQUET_ONLY)
    assert reply.headers["delta-sharing-capabilities"] == "responseformat=parquet"
    protocol, _, *files = ndjson_lines(reply)
    assert protocol == {"protocol": {"minReaderVersion": 1}}
    frames = [pq.read_table(pa.BufferReader(httpx.get(f["file"]["url"]).content)) for f in files]
    assert _rows(pa.concat_tables(frames).to_pandas()) == served.versions[2]


def test_a_client_that_takes_both_formats_gets_delta_for_this_table(served: Served) -> None:
    both = {"delta-sharing-capabilities": "responseformat=delta,parquet;"
            "readerfeatures=deletionvectors,columnmapping,timestampntz"}  # fmt: skip
    reply = served.get("/metadata", both)
    assert reply.headers["delta-sharing-capabilities"] == "responseformat=delta"
    assert "deltaMetadata" in ndjson_lines(reply)[1]["metaData"]
    assert served.get("/metadata", {}).headers["delta-sharing-capabilities"] == (
        "responseformat=parquet"
    )
    missing = served.post("/query", {}, {"delta-sharing-capabilities": "responseformat=delta"})
    assert missing.status_code == 400 and "deletionVectors" in missing.json()["message"]
    odd = served.post("/query", {}, {"delta-sharing-capabilities": "responseformat=csv"})
    assert odd.status_code == 400 and odd.json()["errorCode"] == "INVALID_PARAMETER_VALUE"


def _vector_urls(served: Served) -> list[tuple[str, dict[str, Any]]]:
    files = ndjson_lines(served.post("/query", {}, DELTA))[2:]
    found = []
    for f in files:
        vector = f["file"]["deltaSingleAction"]["add"].get("deletionVector")
        if vector:
            found.append((vector["pathOrInlineDv"], vector))
    return found


def test_deletion_vector_files_are_signed_served_and_refused_when_tampered_or_expired(
    served: Served,
) -> None:
    urls = _vector_urls(served)
    assert urls
    for url, vector in urls:
        whole = httpx.get(url)
        assert whole.status_code == 200
        part = httpx.get(url, headers={"Range": f"bytes={vector['offset']}-"})
        assert part.status_code == 206 and part.content == whole.content[vector["offset"] :]
        # the vector's size, then its bytes (Delta protocol, "Deletion Vector Format")
        assert int.from_bytes(part.content[:4], "big") == vector["sizeInBytes"]
    entry = served.journal("share.file")[-1]
    assert entry.outcome == "ok" and "deletion_vector_" in (entry.detail or "")
    url = urls[0][0]
    tampered = url[:-3] + ("000" if not url.endswith("000") else "111")
    assert httpx.get(tampered).status_code == 403
    served.clock.at = START + datetime.timedelta(hours=1)
    expired = httpx.get(url)
    assert expired.status_code == 403 and "expired" in expired.json()["message"]


def test_signatures_stay_out_of_the_journal(served: Served) -> None:
    url = _vector_urls(served)[0][0]
    mac = url.rsplit("=", 1)[1]
    assert httpx.get(url).status_code == 200
    recorded = "\n".join(e.detail or "" for e in served.journal("share.file"))
    assert mac not in recorded and Path(url.split("?")[0]).name[:20] in recorded


# -- the open CSV route ---------------------------------------------------------------------
def test_the_open_csv_of_a_table_with_deletion_vectors_omits_the_deleted_rows(
    served: Served,
) -> None:
    reply = httpx.get(f"{served.endpoint.removesuffix('/delta-sharing')}"
                      "/open/geospatial/admin_divisions_open.csv")  # fmt: skip
    assert reply.status_code == 200, reply.text
    read = pd.read_csv(io.StringIO(reply.text), dtype=str)
    assert set(read["division_code"]) == served.open_rows
    assert len(read) == len(served.open_rows)


def test_changes_name_a_schema_change_within_their_range(served: Served) -> None:
    path = "/shares/legal_entity/schemas/legal_entity/tables/enterprises_unconditional/changes"
    headers = {"Authorization": f"Bearer {served.token}"} | DELTA
    query = "?startingVersion=1&includeHistoricalMetadata=true"
    reply = httpx.get(f"{served.endpoint}{path}{query}", headers=headers)
    metadata = [line["metaData"] for line in ndjson_lines(reply) if "metaData" in line]
    assert [m["version"] for m in metadata] == [1, 3]
    assert "status" not in metadata[0]["deltaMetadata"]["schemaString"]
    assert "status" in metadata[1]["deltaMetadata"]["schemaString"]
    url = served.url.replace(UNCONDITIONAL, "legal_entity.legal_entity.enterprises_unconditional")
    # The client's reader refuses changes across a schema change rather than misread them,
    # and reads those after it.
    with pytest.raises(ValueError, match="schemas are different"):
        delta_sharing.load_table_changes_as_pandas(url, starting_version=1, use_delta_format=True)
    after = delta_sharing.load_table_changes_as_pandas(url, starting_version=3,
                                                       use_delta_format=True)  # fmt: skip
    assert after[["credit_code", "status", "_change_type"]].values.tolist() == [
        ["911199", "active", "insert"]
    ]


# -- the Delta log reader -------------------------------------------------------------------
def test_deletion_vectors_are_found_through_a_checkpoint(served: Served, tmp_path: Path) -> None:
    """A copy of the table with a checkpoint at its latest version: the reader finds each
    file's deletion vector in the checkpoint as in the commits, and its file on disk."""
    copy = tmp_path / "copy"
    shutil.copytree(served.location.removeprefix("file://"), copy)
    DeltaTable(str(copy)).create_checkpoint()
    assert any(p.name.endswith(".checkpoint.parquet") for p in (copy / "_delta_log").iterdir())
    original = DeltaLog(Location.parse(served.location)).files(4)
    through = DeltaLog(Location.parse(str(copy))).files(4)
    vectors = {f.path: f.deletion_vector for f in through}
    assert vectors == {f.path: f.deletion_vector for f in original}
    assert any(vectors.values())
    for f in through:
        if f.deletion_vector:
            assert f.records is not None
            assert f.rows == f.records - f.deletion_vector.cardinality
            assert (copy / str(f.deletion_vector.relative_path)).is_file()
    assert sum(f.rows or 0 for f in through) == len(served.versions[4])


# -- the same table on S3 -------------------------------------------------------------------
@pytest.fixture(scope="module")
def on_s3(s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The residents' table of `served`, written to a real S3 server and served from there:
    files and deletion vector files get SigV4 presigned URLs."""
    root = tmp_path_factory.mktemp("delta_format_s3")
    s3.create_bucket(BUCKET)
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3.environment().items():
            env.setenv(name, value)
        settings = lake_settings(root, warehouse=f"s3://{BUCKET}/lakehouse",
                                 landing=f"s3://{BUCKET}/landing")  # fmt: skip
        catalog = Catalog.load(settings.catalog_dir)
        location, versions = _write(get_spark(settings, fresh=True), settings, catalog)
        clock = Clock(START)
        tokens = consumers_with_tokens(settings, catalog, ["civil_affairs"], at=START, days=30)
        with running(settings, app=create_app(settings, catalog, clock=clock)) as endpoint:
            profiles = write_profiles(root, endpoint, tokens)
            url = f"{profiles['civil_affairs']}#{UNCONDITIONAL}"
            yield Served(settings, endpoint, clock, tokens["civil_affairs"], url, location,
                         versions, set())  # fmt: skip


def test_on_s3_deletion_vectors_are_read_through_presigned_urls(on_s3: Served) -> None:
    assert _rows(delta_sharing.load_as_pandas(on_s3.url)) == on_s3.versions[4]
    assert _rows(delta_sharing.load_as_pandas(on_s3.url, version=2)) == on_s3.versions[2]
    urls = _vector_urls(on_s3)
    assert urls
    for url, vector in urls:
        assert parse_qs(urlsplit(url).query)["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        part = httpx.get(url, headers={"Range": f"bytes={vector['offset']}-"})
        assert part.status_code == 206
        assert int.from_bytes(part.content[:4], "big") == vector["sizeInBytes"]
        assert httpx.get(url.split("?")[0]).status_code == 403  # no signature, no file
    refused = on_s3.post("/query", {}, PARQUET_ONLY)
    assert refused.status_code == 400 and refused.json()["errorCode"] == "UNSUPPORTED_OPERATION"
