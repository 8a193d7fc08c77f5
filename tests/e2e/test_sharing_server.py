"""The Delta Sharing server read with the official `delta-sharing` client: a lakehouse with two
published versions of each table, consumers with tokens, grants by sharing type, suspension,
refusals and the audit trail they leave."""

from __future__ import annotations

import datetime
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import delta_sharing
import httpx
import pandas as pd
import pytest
from deltalake import DeltaTable
from sqlalchemy import select, text
from support import Clock, consumers_with_tokens, deliver, lake_settings, write_profiles

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.lake.tables import TableSet
from govlake.platform import audit
from govlake.platform.database import AuditEntry, session
from govlake.sharing import access
from govlake.sharing.server.app import create_app
from govlake_app.cli.serve import running

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DAY1, DAY2 = datetime.date(2026, 11, 2), datetime.date(2026, 11, 3)
START = datetime.datetime(2026, 11, 4, 9)  # the server's clock when the tests begin
UNCONDITIONAL = "population.population.residents_unconditional"
CONDITIONAL = "population.population.residents_conditional"


@dataclass
class Sharing:
    settings: Settings
    catalog: Catalog
    endpoint: str
    clock: Clock
    tokens: dict[str, str]
    profiles: dict[str, str]

    def url(self, consumer: str, table: str) -> str:
        return f"{self.profiles[consumer]}#{table}"

    def get(self, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.endpoint}{path}", headers=headers, **kwargs)


@pytest.fixture(scope="module")
def sharing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sharing]:
    root = tmp_path_factory.mktemp("sharing")
    # The catalogue with geospatial.registered_addresses reclassified as not shared after it
    # was published: its old tables stay on disk and must never be exposed.
    catalog_dir = root / "schemas"
    shutil.copytree(REPO / "schemas", catalog_dir)
    settings = lake_settings(root)
    catalog = Catalog.load(settings.catalog_dir)
    spark = get_spark(settings, catalog, fresh=True)
    names = ["population.residents", "geospatial.registered_addresses", "legal_entity.enterprises"]
    for day in (DAY1, DAY2):
        end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(2),
                                        datetime.UTC)  # fmt: skip
        deliver(spark, settings, catalog, day=day, names=names, rows=600, end=end)
    addresses = catalog_dir / "geospatial" / "registered_addresses.yaml"
    original = addresses.read_text(encoding="utf-8").replace("base_item: true", "base_item: false")
    reclassified = re.sub(r"sharing: (un)?conditional", "sharing: not_shared", original)
    reclassified = reclassified.replace(
        "\nsharing: not_shared", "\nsharing: not_shared\nlegal_basis: a ruling for this test", 1
    )
    addresses.write_text(reclassified, encoding="utf-8")
    settings = settings.model_copy(update={"catalog_dir": catalog_dir})
    catalog = Catalog.load(catalog_dir)
    assert catalog.get("geospatial.registered_addresses").sharing_classes == []

    clock = Clock(START)
    codes = ("civil_affairs", "public_security", "market_regulation", "taxation")
    tokens = consumers_with_tokens(settings, catalog, codes, at=START, days=30)
    app = create_app(settings, catalog, clock=clock)
    with running(settings, app=app) as endpoint:
        profiles = write_profiles(root, endpoint, tokens)
        yield Sharing(settings, catalog, endpoint, clock, tokens, profiles)


def _published(sharing: Sharing, resource: str, cls: str) -> DeltaTable:
    table = TableSet(sharing.catalog.get(resource), sharing.settings.warehouse_location)
    return DeltaTable(table.published(cls).location.uri)  # type: ignore[arg-type]


def _sorted(df: pd.DataFrame, key: str = "citizen_id") -> pd.DataFrame:
    return df.sort_values(key).reset_index(drop=True)


def _entries(sharing: Sharing, action: str) -> list[AuditEntry]:
    with session(sharing.settings) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                              .order_by(AuditEntry.seq)))  # fmt: skip


def test_load_as_pandas_reads_the_latest_version_whole(sharing: Sharing) -> None:
    read = delta_sharing.load_as_pandas(sharing.url("civil_affairs", UNCONDITIONAL))
    expected = read_delta(_published(sharing, "population.residents", "unconditional")).to_pandas()
    assert len(read) == len(expected) > 0
    assert list(read.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(_sorted(read), _sorted(expected), check_dtype=False)
    query = _entries(sharing, "share.query")[-1]
    assert (query.consumer, query.table_name, query.rows) == ("civil_affairs", UNCONDITIONAL,
                                                              len(expected))  # fmt: skip
    assert query.version == _published(sharing, "population.residents", "unconditional").version()
    downloads = [e for e in _entries(sharing, "share.file") if e.consumer == "civil_affairs"]
    assert len(downloads) >= query.files


def test_an_older_version_by_number_and_by_timestamp(sharing: Sharing) -> None:
    table = _published(sharing, "population.residents", "unconditional")
    history = sorted(table.history(), key=lambda h: h["version"])
    writes = [h for h in history if h["operation"] != "CREATE TABLE"]
    first = writes[0]["version"]
    assert table.version() > first
    old = read_delta(DeltaTable(table.table_uri, version=first)).to_pandas()
    url = sharing.url("civil_affairs", UNCONDITIONAL)
    by_version = delta_sharing.load_as_pandas(url, version=first)
    pd.testing.assert_frame_equal(_sorted(by_version), _sorted(old), check_dtype=False)
    stamp = datetime.datetime.fromtimestamp(writes[0]["timestamp"] / 1000, datetime.UTC)
    by_time = delta_sharing.load_as_pandas(url, timestamp=stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    pd.testing.assert_frame_equal(_sorted(by_time), _sorted(old), check_dtype=False)
    assert delta_sharing.get_table_version(url) == table.version()
    assert delta_sharing.get_table_version(url, starting_timestamp=stamp.isoformat()) == first


def test_a_limit_reads_no_more_rows(sharing: Sharing) -> None:
    read = delta_sharing.load_as_pandas(sharing.url("civil_affairs", UNCONDITIONAL), limit=7)
    assert len(read) == 7
    assert json.loads(_entries(sharing, "share.query")[-1].detail)["limitHint"] == 7


def test_table_changes_between_versions(sharing: Sharing) -> None:
    table = _published(sharing, "population.residents", "unconditional")
    latest = table.version()
    changes = delta_sharing.load_table_changes_as_pandas(
        sharing.url("civil_affairs", UNCONDITIONAL), starting_version=latest, ending_version=latest
    )
    now = read_delta(table).to_pandas()
    inserted = changes[changes["_change_type"] == "insert"]
    assert set(inserted["citizen_id"]) <= set(now["citizen_id"])
    assert len(inserted) > 0 and set(changes["_commit_version"]) == {latest}


def test_each_consumer_lists_only_what_it_may_read(sharing: Sharing) -> None:
    client = delta_sharing.SharingClient(sharing.profiles["civil_affairs"])
    listed = {f"{t.share}.{t.schema}.{t.name}" for t in client.list_all_tables()}
    assert UNCONDITIONAL in listed and CONDITIONAL not in listed
    assert not any("registered_addresses" in name for name in listed)  # not shared
    assert {s.name for s in client.list_shares()} == {"population", "legal_entity"}
    # The responsible provider reads its own conditional table.
    own = delta_sharing.SharingClient(sharing.profiles["public_security"])
    assert CONDITIONAL in {f"{t.share}.{t.schema}.{t.name}" for t in own.list_all_tables()}


def test_pagination(sharing: Sharing) -> None:
    token = sharing.tokens["public_security"]  # reads both population tables
    first = sharing.get("/shares/population/all-tables?maxResults=1", token).json()
    assert len(first["items"]) == 1 and "nextPageToken" in first
    rest = sharing.get(f"/shares/population/all-tables?maxResults=1&pageToken="
                       f"{first['nextPageToken']}", token).json()  # fmt: skip
    assert rest["items"] != first["items"]
    bad = sharing.get("/shares?pageToken=not-a-token", token)
    assert bad.status_code == 400 and bad.json()["errorCode"] == "INVALID_PARAMETER_VALUE"


def test_tokens_missing_wrong_or_expired_are_refused(sharing: Sharing) -> None:
    for token in (None, "not-a-token"):
        reply = sharing.get("/shares", token)
        assert reply.status_code == 401 and reply.json()["errorCode"] == "UNAUTHENTICATED"
    with pytest.raises(Exception, match="401"):
        _read_with_token(sharing, "wrong-token")
    with session(sharing.settings) as s:
        short = access.issue_token(s, "taxation", at=START, days=1)
    assert sharing.get("/shares", short).status_code == 200
    sharing.clock.at = START + datetime.timedelta(days=2)
    try:
        reply = sharing.get("/shares", short)
        assert reply.status_code == 401 and "expired" in reply.json()["message"]
    finally:
        sharing.clock.at = START
    refused = [e for e in _entries(sharing, "share.list_shares") if e.outcome == "refused"]
    assert len(refused) >= 3


def _read_with_token(sharing: Sharing, token: str) -> pd.DataFrame:
    profile = Path(sharing.profiles["civil_affairs"]).with_name("wrong.share")
    profile.write_text(json.dumps({"shareCredentialsVersion": 1, "endpoint": sharing.endpoint,
                                   "bearerToken": token}))  # fmt: skip
    return delta_sharing.load_as_pandas(f"{profile}#{UNCONDITIONAL}")


def test_conditional_data_needs_a_grant_and_a_revoked_grant_refuses_again(sharing: Sharing) -> None:
    url = sharing.url("taxation", CONDITIONAL)
    with pytest.raises(Exception, match="403"):
        delta_sharing.load_as_pandas(url)
    with session(sharing.settings) as s:
        grant = access.grant(s, sharing.catalog, "taxation", "population.residents",
                             purpose="data_verification", by="public_security",
                             at=START)  # fmt: skip
        grant_id = grant.id
    read = delta_sharing.load_as_pandas(url)
    expected = read_delta(_published(sharing, "population.residents", "conditional")).to_pandas()
    assert len(read) == len(expected) > 0
    query = _entries(sharing, "share.query")[-1]
    assert (query.consumer, query.purpose, query.table_name) == ("taxation", "data_verification",
                                                                 CONDITIONAL)  # fmt: skip
    with session(sharing.settings) as s:
        access.revoke(s, grant_id, reason="purpose fulfilled", at=START)
    with pytest.raises(Exception, match="403"):
        delta_sharing.load_as_pandas(url)
    client = delta_sharing.SharingClient(sharing.profiles["taxation"])
    assert CONDITIONAL not in {f"{t.share}.{t.schema}.{t.name}" for t in client.list_all_tables()}


def test_a_suspended_department_reads_only_its_own_data_until_lifted(sharing: Sharing) -> None:
    with session(sharing.settings) as s:
        access.suspend(s, sharing.catalog, "market_regulation", by="big_data_bureau", at=START,
                       reason="catalogue not updated by the rectification deadline")  # fmt: skip
    others = sharing.url("market_regulation", UNCONDITIONAL)
    with pytest.raises(Exception, match="403"):
        delta_sharing.load_as_pandas(others)
    own = sharing.url("market_regulation", "legal_entity.legal_entity.enterprises_unconditional")
    assert len(delta_sharing.load_as_pandas(own)) > 0
    refused = [e for e in _entries(sharing, "share.metadata") + _entries(sharing, "share.query")
               if e.outcome == "refused" and e.consumer == "market_regulation"]  # fmt: skip
    assert refused and all("is suspended since" in e.detail for e in refused)
    with session(sharing.settings) as s:
        access.lift(s, "market_regulation", by="big_data_bureau", at=START)
    assert len(delta_sharing.load_as_pandas(others)) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/shares/population/schemas/population/tables/..%2F..%2Fops/metadata",
        "/shares/..%2F..%2Fetc/schemas/x/tables/passwd/metadata",
        "/shares/population/schemas/population/tables/residents_silver/metadata",
        "/shares/population/schemas/population/tables/residents/metadata",
        "/shares/geospatial/schemas/geospatial/tables/registered_addresses_unconditional/metadata",
        "/shares/population/schemas/population/tables/résidents%00/metadata",
        "/shares/population/schemas/../../../tables",
    ],
)
def test_odd_names_are_not_found_and_audited(sharing: Sharing, path: str) -> None:
    reply = sharing.get(path, sharing.tokens["civil_affairs"])
    assert reply.status_code == 404
    assert reply.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"
    with session(sharing.settings) as s:
        last = s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
    assert last is not None and last.outcome == "not_found"
    assert last.consumer in ("civil_affairs", None)


def test_an_expired_file_url_is_refused(sharing: Sharing) -> None:
    token = sharing.tokens["civil_affairs"]
    reply = httpx.post(f"{sharing.endpoint}/shares/population/schemas/population/tables/"
                       "residents_unconditional/query", json={},
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    files = [json.loads(line)["file"] for line in reply.text.splitlines() if '"file"' in line]
    url = files[0]["url"]
    ranged = httpx.get(url, headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b"PAR1"
    tampered = url[:-3] + ("000" if not url.endswith("000") else "111")
    assert httpx.get(tampered).status_code == 403
    sharing.clock.at = START + datetime.timedelta(hours=1)
    try:
        expired = httpx.get(url)
        assert expired.status_code == 403 and "expired" in expired.json()["message"]
    finally:
        sharing.clock.at = START


def test_audit_verify_catches_a_tampered_entry(sharing: Sharing) -> None:
    with session(sharing.settings) as s:
        assert audit.verify(s, sharing.settings).ok
        seq = s.scalar(select(AuditEntry.seq).where(AuditEntry.action == "share.query")
                       .order_by(AuditEntry.seq))  # fmt: skip
        s.execute(text("UPDATE audit_journal SET rows = rows + 1 WHERE seq = :seq"), {"seq": seq})
    with session(sharing.settings) as s:
        result = audit.verify(s, sharing.settings)
        assert not result.ok and any(str(seq) in p for p in result.problems)
        s.execute(text("UPDATE audit_journal SET rows = rows - 1 WHERE seq = :seq"), {"seq": seq})
    with session(sharing.settings) as s:
        assert audit.verify(s, sharing.settings).ok


def test_each_publication_is_in_the_journal(sharing: Sharing) -> None:
    published = [e for e in _entries(sharing, "pipeline.publish")
                 if e.table_name == "population.residents_unconditional"]  # fmt: skip
    table = _published(sharing, "population.residents", "unconditional")
    assert [e.version for e in published] == [
        h["version"] for h in sorted(table.history(), key=lambda h: h["version"])
        if h["operation"] != "CREATE TABLE"
    ]  # fmt: skip
    assert published[-1].rows == len(read_delta(table))
