"""The whole platform on object storage: warehouse and landing zone as `s3://` URIs on a real
S3 server (SeaweedFS, credentials enforced). Every job, table maintenance, the audit archive
and the sharing server (SigV4 presigned file URLs, read with the official client) run on it,
and nothing is written to local disk but the platform database."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import delta_sharing
import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from govlake_tools.generate import generate
from govlake_tools.s3server import SeaweedS3

from govlake.core.catalog import Catalog
from govlake.core.location import Location
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.reads import query_delta, read_delta
from govlake.lake.tables import TableSet, ops_tables
from govlake.platform import audit
from govlake.platform.database import session
from govlake.sharing import access
from govlake_app import pipeline as ingest
from govlake_app.cli.serve import running, write_profile
from jobs import maintenance

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUCKET = "govlake-test"
DAY1, DAY2 = datetime.date(2026, 11, 2), datetime.date(2026, 11, 3)
RESIDENTS, ENTERPRISES = "population.residents", "legal_entity.enterprises"
AT = datetime.datetime(2026, 11, 4, 9)


@dataclass
class Lake:
    settings: Settings
    catalog: Catalog
    s3: SeaweedS3
    root: Path
    runs: dict[tuple[str, datetime.date], StageCounts]

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.client().get_paginator("list_objects_v2")
        # Keys ending in "/" are the directory markers pyarrow leaves; only objects count.
        return [o["Key"] for p in pages.paginate(Bucket=BUCKET, Prefix=prefix)
                for o in p.get("Contents", []) if not o["Key"].endswith("/")]  # fmt: skip

    def delta(self, resource: str, cls: str | None = None, **kwargs: int) -> DeltaTable:
        tables = TableSet(self.catalog.get(resource), self.settings.warehouse_location)
        location = tables.published(cls).location if cls else tables.silver.location
        return DeltaTable(location.uri, storage_options=location.storage_options(), **kwargs)  # type: ignore[arg-type]


def _day_end(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(2),
                                     datetime.UTC)  # fmt: skip


@pytest.fixture(scope="module")
def lake(s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    root = tmp_path_factory.mktemp("s3lake")
    s3.create_bucket(BUCKET)
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3.environment().items():
            env.setenv(name, value)
        settings = Settings(warehouse=f"s3://{BUCKET}/lakehouse", landing=f"s3://{BUCKET}/landing",
                            database_url=f"sqlite:///{root / 'govlake.db'}",
                            reports_dir=root / "reports", catalog_dir=REPO / "schemas",
                            spark_remote=None)  # fmt: skip
        catalog = Catalog.load(settings.catalog_dir)
        spark = get_spark(settings, catalog, fresh=True)
        runs = {}
        for day, names in ((DAY1, [RESIDENTS, ENTERPRISES]), (DAY2, [RESIDENTS])):
            generate(catalog, settings.landing_location, rows=800, seed=day.day, defects=0.01,
                     as_of=day, resources=names)  # fmt: skip
            if day == DAY1:  # a file no engine can read, delivered next to the good ones
                settings.landing_location.child(
                    "legal_entity", "enterprises", "taxation", "enterprises_taxation_broken.csv"
                ).write_text("credit_code,name\n\x00\x01 not an extract", encoding="latin-1")
            for name in names:
                runs[(name, day)] = ingest.run(spark, resource=catalog.get(name),
                                               interval=Interval.ending(_day_end(day)),
                                               settings=settings)  # fmt: skip
        yield Lake(settings, catalog, s3, root, runs)


def test_every_stage_writes_to_the_bucket_and_nothing_to_local_disk(lake: Lake) -> None:
    first, second = lake.runs[(RESIDENTS, DAY1)], lake.runs[(RESIDENTS, DAY2)]
    assert len(first.extracts) == len(second.extracts) == 3  # one per provider
    assert first.published and second.published
    keys = lake.keys("lakehouse/")
    tables = (
        "population/residents_bronze", "population/residents", "population/residents_quarantine",
        "population/residents_unconditional", "population/residents_conditional", "ops/extracts",
        "ops/publications", "ops/quality_runs", "ops/quality_results", "legal_entity/enterprises",
    )  # fmt: skip
    for table in tables:
        assert any(k.startswith(f"lakehouse/{table}/_delta_log/") for k in keys), table
    # Landed files were archived on S3 with their hash; the staging area (in the warehouse,
    # where the engine reads it) is empty.
    assert len(lake.keys("landing/archive/population/residents/")) == 6
    assert lake.keys("lakehouse/_staging/") == []
    assert lake.keys("landing/_staging/") == []
    assert lake.keys("landing/population/") == []
    # The platform database and the reports are the only local files.
    assert {p.name for p in lake.root.iterdir()} <= {
        "govlake.db",
        "govlake.db-wal",
        "govlake.db-shm",
        "reports",
    }
    assert not (Path.cwd() / "lakehouse").exists() and not (Path.cwd() / "landing").exists()


def test_published_versions_on_s3_hold_what_silver_holds(lake: Lake) -> None:
    spark = get_spark(lake.settings, lake.catalog, fresh=True)
    published = spark.sql(
        "SELECT sharing_class, version, rows FROM ops.publications "
        f"WHERE resource = '{RESIDENTS}' ORDER BY version"
    ).collect()
    assert {p.sharing_class for p in published} == {"unconditional", "conditional"}
    for p in published:
        at_version = lake.delta(RESIDENTS, p.sharing_class, version=p.version)
        assert read_delta(at_version).num_rows == p.rows > 0
    latest = read_delta(lake.delta(RESIDENTS, "unconditional")).to_pandas()
    silver = spark.table(RESIDENTS).toPandas()
    assert set(latest["citizen_id"]) <= set(silver["citizen_id"])
    assert latest["citizen_id"].is_unique


def test_an_unreadable_file_is_kept_on_s3_with_its_reason(lake: Lake) -> None:
    counts = lake.runs[(ENTERPRISES, DAY1)]
    assert [r.file for r in counts.rejected] == ["enterprises_taxation_broken.csv"]
    assert counts.published
    kept = lake.settings.landing_location.child(
        "rejected", "legal_entity", "enterprises", "taxation", "enterprises_taxation_broken.csv"
    )
    assert kept.read_text(encoding="latin-1").startswith("credit_code,name")
    reason = json.loads(kept.parent.child(kept.name + ".reason.json").read_text())
    assert reason["provider"] == "taxation" and reason["rule"]


@pytest.fixture(scope="module")
def analyst(lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Civil affairs reading through the sharing server over the S3 lakehouse (its profile
    outside the lake's folder, which holds nothing but the platform database)."""
    with session(lake.settings) as s:
        access.register_consumer(s, lake.catalog, "civil_affairs", email=None, at=AT)
    with running(lake.settings) as endpoint:
        profile = write_profile(lake.settings, lake.catalog, "civil_affairs",
                                tmp_path_factory.mktemp("profiles") / "civil_affairs.share",
                                days=7,
                                at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
                                endpoint=endpoint)  # fmt: skip
        yield endpoint, str(profile)


def test_the_official_client_reads_s3_tables_through_presigned_urls(
    lake: Lake, analyst: tuple[str, str]
) -> None:
    _, profile = analyst
    table = "population.population.residents_unconditional"
    read = delta_sharing.load_as_pandas(f"{profile}#{table}")
    expected = read_delta(lake.delta(RESIDENTS, "unconditional")).to_pandas()
    assert len(read) == len(expected) > 0
    assert sorted(read["citizen_id"]) == sorted(expected["citizen_id"])
    first = read_delta(lake.delta(RESIDENTS, "unconditional", version=0)).to_pandas()
    assert len(delta_sharing.load_as_pandas(f"{profile}#{table}", version=0)) == len(first)
    # The latest publication: table maintenance may have committed a compaction after it.
    publications = ops_tables(lake.settings.warehouse_location)[1].location
    latest = max(
        row["version"]
        for row in DeltaTable(publications.uri, storage_options=publications.storage_options())
        .to_pyarrow_table()
        .to_pylist()
        if row["resource"] == RESIDENTS and row["sharing_class"] == "unconditional"
    )
    changes = delta_sharing.load_table_changes_as_pandas(
        f"{profile}#{table}", starting_version=latest, ending_version=latest
    )
    inserted = changes[changes["_change_type"] == "insert"]
    assert len(inserted) > 0 and set(inserted["citizen_id"]) <= set(expected["citizen_id"])
    assert set(changes["_commit_version"]) == {latest}


def _file_urls(endpoint: str, profile: str) -> list[str]:
    token = json.loads(Path(profile).read_text())["bearerToken"]
    reply = httpx.post(
        f"{endpoint}/shares/population/schemas/population/tables/residents_unconditional/query",
        headers={"Authorization": f"Bearer {token}"}, json={},
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    lines = [json.loads(line) for line in reply.text.splitlines()]
    return [line["file"]["url"] for line in lines if "file" in line]


def test_file_urls_are_sigv4_presigned_and_cannot_be_altered(
    lake: Lake, analyst: tuple[str, str]
) -> None:
    urls = _file_urls(*analyst)
    assert urls
    for url in urls:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        assert f"{parts.scheme}://{parts.netloc}" == lake.s3.endpoint
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Expires"] == [str(lake.settings.sharing_url_minutes * 60)]
        assert parts.path.startswith(f"/{BUCKET}/lakehouse/population/residents_unconditional/")
    # The URL alone is enough: no credentials go with it.
    download = httpx.get(urls[0])
    assert download.status_code == 200 and download.content[:4] == b"PAR1"
    # A consumer cannot turn it into a URL for another object, nor read without a signature.
    other = urls[0].replace("residents_unconditional", "residents_conditional")
    assert httpx.get(other).status_code == 403
    assert httpx.get(urls[0].split("?")[0]).status_code == 403


def test_presigned_urls_name_the_store_as_consumers_reach_it(
    lake: Lake, analyst: tuple[str, str]
) -> None:
    # A deployment's store has an internal name for the platform and a public one for
    # consumers; here "localhost" plays the public name of the same server.
    public = lake.s3.endpoint.replace("127.0.0.1", "localhost")
    settings = lake.settings.model_copy(update={"sharing_s3_endpoint": public})
    with running(settings) as endpoint:
        urls = _file_urls(endpoint, analyst[1])
    assert urls and all(url.startswith(f"{public}/{BUCKET}/lakehouse/") for url in urls)
    download = httpx.get(urls[0])
    assert download.status_code == 200 and download.content[:4] == b"PAR1"


def test_every_read_on_s3_is_in_the_journal_and_archived_to_s3(
    lake: Lake, analyst: tuple[str, str]
) -> None:
    _file_urls(*analyst)
    with session(lake.settings) as s:
        trail = audit.trail(s, lake.catalog, "civil_affairs")
        entries = [e for e in trail if e.action == "share.query"]
        assert entries and entries[-1].table_name == "population.population.residents_unconditional"
        assert audit.verify(s, lake.settings).ok
        archived = audit.archive(s, lake.settings, at=AT)
    assert archived > 0
    assert any(k.startswith("lakehouse/ops/audit_journal/_delta_log/")
               for k in lake.keys("lakehouse/ops/"))  # fmt: skip


def _count(table: DeltaTable) -> int:
    """Rows as delta-rs QueryBuilder reads them (deletion vectors applied)."""
    return int(query_delta(table, "SELECT count(*) AS n FROM t").column("n")[0].as_py())


def test_maintenance_compacts_and_vacuums_s3_tables_keeping_versions(lake: Lake) -> None:
    before = {v: _count(lake.delta(RESIDENTS, version=v))
              for v in range(lake.delta(RESIDENTS).version() + 1)}  # fmt: skip
    done = {m.table: m for m in maintenance.run(lake.catalog, lake.settings)}
    assert {RESIDENTS, "population.residents_unconditional", "ops.extracts"} <= set(done)
    assert done["ops.extracts"].retention_days >= 3 * 365
    assert sum(m.files_compacted for m in done.values()) > 0
    assert all(m.files_removed == 0 for m in done.values())  # every version is younger
    for v, rows in before.items():
        assert _count(lake.delta(RESIDENTS, version=v)) == rows
    # Silver carries deletion vectors (MERGE): compaction purged them.
    assert pa.table(lake.delta(RESIDENTS).deletion_vectors()).num_rows == 0


def test_wrong_credentials_fail_loudly_instead_of_reading_an_empty_lake(lake: Lake) -> None:
    location = Location.parse(f"s3://{BUCKET}/lakehouse/population/residents")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(OSError):
            location.is_delta_table()
        with pytest.raises(Exception, match=r"(?i)signature|forbidden|403|access denied"):
            DeltaTable(location.uri, storage_options=location.storage_options())
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") == lake.s3.secret_key


def test_demo_s3_runs_the_demo_on_its_own_s3_server_and_stops_it(tmp_path: Path) -> None:
    govlake = Path(sys.executable).parent / "govlake"
    workdir = tmp_path / "demo-s3"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "GOVLAKE_", "SPARK_REMOTE"))}  # fmt: skip
    done = subprocess.run([str(govlake), "demo-s3", "--rows", "300", "--workdir", str(workdir)],
                          cwd=tmp_path, env={**env, "COLUMNS": "200"}, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "S3 server: SeaweedFS at http://127.0.0.1:" in out
    assert "landing zone: s3://govlake/landing" in out
    assert "warehouse: s3://govlake/lakehouse" in out
    summary = out[out.index("ingestion summary") :]
    line = next(x for x in summary.splitlines() if x.startswith("│ population.residents "))
    assert "unconditional v1" in line
    assert "civil_affairs may read 5 tables" in out  # the official client read it back
    listed = out[out.index("what the bucket govlake holds") :]
    assert "lakehouse/population/residents_unconditional" in listed
    assert "landing/archive/population" in listed
    # Only the server's data, the platform database with its secrets key and the reports are
    # local (the database with its companion files: SQLite's WAL and the journal writers' lock).
    companions = {"govlake.db-wal", "govlake.db-shm", "govlake.db.journal-lock"}
    local = {p.name for p in workdir.iterdir()} - companions
    assert local == {"govlake.db", "govlake-secrets.key", "reports", "seaweedfs"}
    assert not (tmp_path / "lakehouse").exists() and not (tmp_path / "landing").exists()
    held = subprocess.run(["pgrep", "-f", str(workdir / "seaweedfs")], capture_output=True)
    assert held.returncode == 1, held.stdout  # the S3 server stopped
