"""The yearly sharing report over a real lakehouse and a real platform database: two resources
published over a few days, reads through the sharing server with the official `delta_sharing`
client, access and verification requests filed and answered with the platform's functions;
the figures of a provider's, a consumer's and the platform's report checked against what the
test did. The pure core is checked on hand-made rows."""

from __future__ import annotations

import contextlib
import csv
import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import delta_sharing
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from support import Clock, consumers_with_tokens, deliver, lake_settings, write_profiles
from typer.testing import CliRunner

from govlake.core import settings as settings_module
from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.reads import query_delta
from govlake.lake.tables import TableSet
from govlake.platform.database import session
from govlake.reports import Period, ReportError
from govlake.reports.sharing import (
    PLATFORM_COLUMNS,
    PlatformSummary,
    SharingRows,
    build_department_report,
    build_sharing,
    sharing_dir,
    write_sharing_reports,
)
from govlake.sharing import requests as req
from govlake.sharing.server.app import create_app
from govlake_app.cli.serve import running

RESIDENTS, ENTERPRISES = "population.residents", "legal_entity.enterprises"
PROVIDER, USER = "public_security", "taxation"
#: Publication days: the last days of 2025, then two days of 2026.
OLD_DAY = datetime.date(2025, 12, 30)
DAY1, DAY2 = datetime.date(2026, 3, 2), datetime.date(2026, 3, 3)
OLD_READ = datetime.datetime(2025, 12, 31, 9)  # a read in 2025 (naive UTC)
READ = datetime.datetime(2026, 3, 4, 2)  # reads and requests in 2026
AT = datetime.datetime(2026, 11, 20, 8)  # the report is made at this time
SHARE = {
    RESIDENTS: "population.population.residents",
    ENTERPRISES: "legal_entity.legal_entity.enterprises",
}


@dataclass
class World:
    """The lakehouse, the platform database and what the test did to them."""

    settings: Settings
    catalog: Catalog
    spark: SparkSession
    reads: list[tuple[int, str, str, int, int]]  # (year, consumer, table, version, rows)
    requests: dict[str, int]  # request ids by label

    def env(self) -> dict[str, str]:
        return {
            "GOVLAKE_WAREHOUSE": self.settings.warehouse,
            "GOVLAKE_LANDING": self.settings.landing,
            "GOVLAKE_DATABASE_URL": self.settings.database_url,
            "GOVLAKE_CATALOG_DIR": str(self.settings.catalog_dir),
            "GOVLAKE_REPORTS_DIR": str(self.settings.reports_dir),
        }


def _published(
    world: World, resource: str, cls: Literal["unconditional", "conditional"]
) -> DeltaTable:
    table = TableSet(world.catalog.get(resource), world.settings.warehouse_location)
    return DeltaTable(table.published(cls).location.uri)


def _rows(table: DeltaTable) -> int:
    """The table's rows as delta-rs QueryBuilder reads them (deletion vectors applied)."""
    return int(query_delta(table, "SELECT count(*) AS n FROM t").column("n")[0].as_py())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("sharing_report")
    settings = lake_settings(root, reports_dir=root / "reports")
    catalog = Catalog.load(settings.catalog_dir)
    spark = get_spark(settings, catalog, fresh=True)

    def ingest_day(day: datetime.date, names: list[str]) -> None:
        """Every source of `names` delivers an extract as of `day`, ingested at 20:00."""
        end = datetime.datetime.combine(day, datetime.time(20), datetime.UTC)
        deliver(spark, settings, catalog, day=day, names=names, rows=200, end=end)

    ingest_day(OLD_DAY, [RESIDENTS])

    registered = datetime.datetime(2025, 12, 1)
    codes = (PROVIDER, USER, "civil_affairs", "market_regulation")
    tokens = consumers_with_tokens(settings, catalog, codes, at=registered, days=400)
    clock = Clock(OLD_READ)
    app = create_app(settings, catalog, clock=clock)
    server = contextlib.ExitStack()
    endpoint = server.enter_context(running(settings, app=app))
    profiles = write_profiles(root, endpoint, tokens)
    world = World(settings, catalog, spark, [], {})

    def read(
        consumer: str,
        resource: str,
        cls: Literal["unconditional", "conditional"],
        *,
        version: int | None = None,
    ) -> None:
        table = f"{SHARE[resource]}_{cls}"
        frame = delta_sharing.load_as_pandas(f"{profiles[consumer]}#{table}", version=version)
        served = version if version is not None else _published(world, resource, cls).version()
        world.reads.append((clock.at.year, consumer, table, served, len(frame)))

    def refused(consumer: str, resource: str, cls: str) -> None:
        with pytest.raises(Exception, match="403"):
            delta_sharing.load_as_pandas(f"{profiles[consumer]}#{SHARE[resource]}_{cls}")

    form = {
        "applicant_name": "王敏", "applicant_phone": "010-12345678",
        "applicant_email": "wang@dept.gov.example", "using_department": "使用部门",
        "using_contact": "王敏 010-12345678", "service_scenario": "业务核验",
        "business_system": "业务系统", "justification": "核验信息，避免重复索要证明",
    }  # fmt: skip
    items = ["residence_address", "marital_status"]
    try:
        # 2025: one read, and a request filed and approved; neither counts in 2026.
        read(USER, RESIDENTS, "unconditional")
        with session(settings) as s:
            world.requests["old"] = req.file_access_request(
                s, catalog, settings, consumer="market_regulation", resource=RESIDENTS,
                items=items, usage_scope="work_reference", at=OLD_READ, **form,
            ).id  # fmt: skip
        with session(settings) as s:
            refused_at = OLD_READ + datetime.timedelta(hours=2)
            req.refuse(s, world.requests["old"], provider=PROVIDER, by="王建国",
                       reason="尚无法律依据", at=refused_at)  # fmt: skip

        ingest_day(DAY1, [RESIDENTS, ENTERPRISES])
        ingest_day(DAY2, [RESIDENTS, ENTERPRISES])

        # 2026: taxation reads unconditional data, asks for the conditional items and gets
        # them in time, then reads them under the grant's purpose.
        clock.at = READ
        read(USER, RESIDENTS, "unconditional")
        read(USER, RESIDENTS, "unconditional")
        first_2026 = min(
            r.version for r in _publication_rows(world) if r.resource == RESIDENTS
            and r.sharing_class == "unconditional" and r.published_at.year == 2026
        )  # fmt: skip
        read(USER, RESIDENTS, "unconditional", version=first_2026)
        refused(USER, RESIDENTS, "conditional")  # before the grant
        with session(settings) as s:
            world.requests["granted"] = req.file_access_request(
                s, catalog, settings, consumer=USER, resource=RESIDENTS, items=items,
                usage_scope="data_verification", at=READ, **form,
            ).id  # fmt: skip
            world.requests["refused"] = req.file_access_request(
                s, catalog, settings, consumer="market_regulation", resource=RESIDENTS,
                items=items, usage_scope="business_collaboration", at=READ, **form,
            ).id  # fmt: skip
            world.requests["waiting"] = req.file_access_request(
                s, catalog, settings, consumer="civil_affairs", resource=RESIDENTS,
                items=["residence_address"], usage_scope="administrative_basis", at=READ,
                **form,
            ).id  # fmt: skip
        decided = READ + datetime.timedelta(days=1)
        with session(settings) as s:
            req.approve(s, catalog, world.requests["granted"], provider=PROVIDER, by="王建国",
                        at=decided)  # fmt: skip
            req.refuse(s, world.requests["refused"], provider=PROVIDER, by="王建国",
                       reason="用途超出职责范围", at=decided)  # fmt: skip
        clock.at = decided + datetime.timedelta(hours=1)
        read(USER, RESIDENTS, "conditional")
        read("market_regulation", RESIDENTS, "unconditional")
        refused("civil_affairs", RESIDENTS, "conditional")
        read(PROVIDER, ENTERPRISES, "unconditional")
        read(PROVIDER, RESIDENTS, "conditional")  # its own data: not sharing
        read("market_regulation", ENTERPRISES, "unconditional")  # its own data too

        # Verification: taxation doubts a birth date (public security's item), answered in
        # time; market regulation doubts a marital status (civil affairs'), never answered.
        with session(settings) as s:
            world.requests["verify"] = req.file_verification(
                s, catalog, settings, consumer=USER, resource=RESIDENTS,
                key="11010519491231002X", item="birth_date", doubted_value="1949-12-31",
                evidence="纳税人提供的户口簿", at=decided,
            ).id  # fmt: skip
            world.requests["verify_open"] = req.file_verification(
                s, catalog, settings, consumer="market_regulation", resource=RESIDENTS,
                key="110105194912310037", item="marital_status", doubted_value="20",
                evidence="结婚证", at=decided,
            ).id  # fmt: skip
        with session(settings) as s:
            req.answer_verification(s, catalog, world.requests["verify"], provider=PROVIDER,
                                    by="王建国", at=decided + datetime.timedelta(days=2),
                                    outcome="confirmed", answer="经核查，出生日期无误")  # fmt: skip
        yield world
    finally:
        server.close()


def _publication_rows(world: World) -> list[Any]:
    return world.spark.sql(
        "SELECT resource, sharing_class, table_name, version, published_at, rows, silver_version "
        "FROM ops.publications"
    ).collect()


@pytest.fixture(scope="module")
def written(world: World) -> PlatformSummary:
    return write_sharing_reports(
        world.spark, world.catalog, world.settings, year=2026, at=AT
    ).summary


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _figures(path: Path) -> dict[tuple[str, str, str, str, str, str], int]:
    """A department CSV as {(side, section, resource, counterpart, purpose, measure): value}."""
    return {
        (r["side"], r["section"], r["resource"], r["counterpart"], r["purpose"], r["measure"]):
        int(r["value"])
        for r in _csv(path)
    }  # fmt: skip


def _figure(html: str, name: str) -> str:
    found = re.search(rf'data-figure="{name}">([^<]*)<', html)
    assert found, f"no {name} figure"
    return found.group(1)


def _row(html: str, attribute: str, value: str) -> str:
    start = html.index(f'{attribute}="{value}"')
    return html[start : html.index("</tr>", start)]


def _rows_read(world: World, consumer: str, table: str) -> int:
    return sum(n for (year, who, name, _, n) in world.reads
               if year == 2026 and who == consumer and name == table)  # fmt: skip


# -- the provider ------------------------------------------------------------------------------
@pytest.mark.slow
def test_provider_report_counts_publications_reads_and_requests(
    world: World, written: PlatformSummary
) -> None:
    folder = sharing_dir(world.settings, 2026)
    assert folder == world.settings.reports_dir / "sharing" / "2026"
    report = written.department(PROVIDER)
    residents = next(r for r in report.resources if r.resource == RESIDENTS)
    assert residents.responsible and residents.source

    # Publications: the two 2026 runs, not the one of 2025.
    published = [r for r in _publication_rows(world) if r.resource == RESIDENTS]
    in_2026 = [r for r in published if r.published_at.year == 2026]
    assert {r.published_at.date() for r in in_2026} == {DAY1, DAY2}
    assert residents.publications == 2
    assert residents.versions_published == len(in_2026)
    for table in residents.tables:
        assert table.versions == tuple(sorted(r.version for r in in_2026
                                              if r.table_name == table.table))  # fmt: skip
    last = max(in_2026, key=lambda r: r.published_at)
    assert residents.last_rows == last.rows == _rows(_published(world, RESIDENTS, "unconditional"))
    # The first 2026 run came two months after the one of 2025: late; the next a day later.
    assert [run.on_time for run in residents.runs] == [False, True]
    assert residents.state_at_end == "overdue"  # nothing since 3 March

    # Deliveries and quality as in ops.extracts / ops.quality_results.
    checks = world.spark.sql(
        f"SELECT expectation, success FROM ops.quality_results WHERE provider = '{PROVIDER}' "
        f"AND resource = '{RESIDENTS}' AND scope = 'extract' AND year(checked_at) = 2026"
    ).collect()
    assert residents.quality.expectations == len(checks) > 0
    assert residents.quality.passed == sum(c.success for c in checks)
    assert residents.provision.extracts == 2 and residents.delivery.on_time == 2

    # Who read its data: taxation three unconditional reads over two versions and one under
    # its grant, market regulation one; its own read and the 2025 read are not counted.
    unconditional, conditional = (
        f"{SHARE[RESIDENTS]}_{c}" for c in ("unconditional", "conditional")
    )
    readers = {(t.counterpart, t.purpose): t for t in report.readers}
    assert set(readers) == {(USER, None), (USER, "data_verification"), ("market_regulation", None)}
    tax = readers[(USER, None)]
    assert (tax.reads, tax.versions) == (3, 2)
    assert tax.rows == _rows_read(world, USER, unconditional)
    assert readers[(USER, "data_verification")].rows == _rows_read(world, USER, conditional)
    assert report.reads_received == 5 and report.own_reads == 1
    assert {(t.counterpart, t.refused) for t in report.refused_readers} == {
        (USER, 1),
        ("civil_affairs", 1),
    }

    # Requests received in 2026: approved in time, refused with reasons, one still waiting.
    received = {line.id: line for line in report.access_received.lines}
    assert set(received) == {world.requests[k] for k in ("granted", "refused", "waiting")}
    assert received[world.requests["granted"]].outcome == "approved"
    assert received[world.requests["granted"]].on_time is True
    assert received[world.requests["refused"]].reason == "用途超出职责范围"
    assert received[world.requests["waiting"]].overdue
    assert report.access_received.answered_on_time == 2
    verifications = report.verification_received
    assert [(v.id, v.outcome, v.on_time) for v in verifications.lines] == [
        (world.requests["verify"], "confirmed", True)
    ]

    html = (folder / f"sharing-{PROVIDER}-2026.html").read_text(encoding="utf-8")
    assert "共享情况年度报告" in html and "公安局" in html
    row = _row(html, "data-resource", RESIDENTS)
    assert _figure(row, "publications") == "2"
    assert _figure(row, "reads") == "5" and _figure(row, "refused") == "2"
    assert _figure(row, "publications_on_time") == "1 of 2 (50.0%)"
    versions = residents.tables[1]  # by name: conditional, unconditional
    assert f"{versions.table} v{', v'.join(str(v) for v in versions.versions)}" in row
    assert (
        _figure(_row(html, "data-reader", f"{USER}|{RESIDENTS}|data_verification"), "reads") == "1"
    )
    assert _figure(html, "access_received_filed") == "3"
    assert _figure(html, "access_received_refused") == "1"
    assert _figure(html, "access_received_overdue") == "1"
    assert "用途超出职责范围" in html and "尚无法律依据" not in html  # the 2025 refusal

    figures = _figures(folder / f"sharing-{PROVIDER}-2026.csv")
    assert figures[("provided", "resource", RESIDENTS, "", "", "publications")] == 2
    assert figures[("provided", "resource", RESIDENTS, "", "", "reads")] == 5
    assert figures[("provided", "readers", RESIDENTS, USER, "", "versions_read")] == 2
    assert figures[("provided", "readers", RESIDENTS, USER, "data_verification", "reads")] == 1
    assert figures[("provided", "access_requests", RESIDENTS, USER, "", "answered_on_time")] == 1
    assert figures[("provided", "access_requests", RESIDENTS, "civil_affairs", "", "overdue")] == 1
    assert figures[("provided", "verification_requests", RESIDENTS, USER, "", "confirmed")] == 1
    # It used enterprises data of market regulation.
    assert figures[("used", "reads", ENTERPRISES, "market_regulation", "", "reads")] == 1
    assert figures[("used", "own_reads", "", "", "", "own_reads")] == 1


def _old_rows(world: World) -> int:
    """Rows taxation read in 2025 (the only read of 2025, of the version published then)."""
    (old,) = [n for (year, *_, n) in world.reads if year == 2025]
    return old


# -- the consumer ------------------------------------------------------------------------------
@pytest.mark.slow
def test_consumer_report_counts_reads_by_resource_and_purpose(
    world: World, written: PlatformSummary
) -> None:
    report = written.department(USER)
    reads = {(t.resource, t.purpose): t for t in report.reads}
    assert set(reads) == {(RESIDENTS, None), (RESIDENTS, "data_verification")}
    assert (reads[(RESIDENTS, None)].reads, reads[(RESIDENTS, None)].versions) == (3, 2)
    assert reads[(RESIDENTS, None)].counterpart == PROVIDER
    assert reads[(RESIDENTS, "data_verification")].reads == 1
    conditional = f"{SHARE[RESIDENTS]}_conditional"
    assert reads[(RESIDENTS, "data_verification")].rows == _rows_read(world, USER, conditional)
    assert report.refused_reads == 1  # before the grant; not a read
    assert report.reads_made == 4
    assert [(r.id, r.outcome) for r in report.access_filed.lines] == [
        (world.requests["granted"], "approved")
    ]
    assert [(v.id, v.outcome, v.provider) for v in report.verification_filed.lines] == [
        (world.requests["verify"], "confirmed", PROVIDER)
    ]
    # Taxation supplies enterprises: its deliveries show on the provided side.
    enterprises = next(r for r in report.resources if r.resource == ENTERPRISES)
    assert enterprises.source and not enterprises.responsible
    assert enterprises.provision.extracts == 2 and enterprises.publications == 0

    folder = sharing_dir(world.settings, 2026)
    html = (folder / f"sharing-{USER}-2026.html").read_text(encoding="utf-8")
    assert _figure(html, "reads_made") == "4" and _figure(html, "refused_reads") == "1"
    row = _row(html, "data-read", f"{RESIDENTS}|data_verification")
    assert _figure(row, "reads") == "1"
    assert _figure(_row(html, "data-read", f"{RESIDENTS}|"), "versions") == "2"
    figures = _figures(folder / f"sharing-{USER}-2026.csv")
    assert figures[("used", "reads", RESIDENTS, PROVIDER, "", "reads")] == 3
    assert figures[("used", "reads", RESIDENTS, PROVIDER, "data_verification", "rows_read")] == (
        _rows_read(world, USER, conditional)
    )
    assert figures[("used", "refused_reads", RESIDENTS, PROVIDER, "", "refused_reads")] == 1
    assert figures[("used", "access_requests", RESIDENTS, PROVIDER, "", "approved")] == 1
    assert figures[("used", "verification_requests", RESIDENTS, PROVIDER, "", "confirmed")] == 1

    # Civil affairs: a refused read and a request still waiting; the authority for marital
    # status, it has a verification request it never answered.
    civil = written.department("civil_affairs")
    assert civil.reads_made == 0 and civil.refused_reads == 1
    assert civil.access_filed.overdue == 1
    assert [(v.id, v.overdue) for v in civil.verification_received.lines] == [
        (world.requests["verify_open"], True)
    ]


@pytest.mark.slow
def test_another_year_is_left_out(world: World, written: PlatformSummary) -> None:
    old = write_sharing_reports(world.spark, world.catalog, world.settings, year=2025, at=AT)
    assert {p.name for p in old.paths} >= {
        "sharing-platform-2025.html",
        "sharing-taxation-2025.csv",
    }
    report = old.summary.department(USER)
    assert [(t.resource, t.reads) for t in report.reads] == [(RESIDENTS, 1)]
    assert report.rows_read == _old_rows(world)
    provider = old.summary.department(PROVIDER)
    residents = next(r for r in provider.resources if r.resource == RESIDENTS)
    assert residents.publications == 1 and residents.publications_measured == 0
    assert [line.id for line in provider.access_received.lines] == [world.requests["old"]]
    # ...and 2026 knows nothing of 2025's request.
    assert world.requests["old"] not in {
        line.id for line in written.department(PROVIDER).access_received.lines
    }


@pytest.mark.slow
def test_platform_totals_are_the_sum_of_departments(world: World, written: PlatformSummary) -> None:
    folder = sharing_dir(world.settings, 2026)
    rows = _csv(folder / "sharing-platform-2026.csv")
    departments, total = rows[:-1], rows[-1]
    assert total["department"] == "TOTAL"
    assert [r["department"] for r in departments] == [d.code for d in written.departments]
    for column in PLATFORM_COLUMNS:
        assert int(total[column]) == sum(int(r[column]) for r in departments), column
    # Each read is counted once as provided and once as used.
    assert int(total["reads"]) == int(total["reads_by_others"]) == 6
    assert int(total["rows_read"]) == int(total["rows_read_by_others"])
    assert int(total["refused_reads"]) == 2 and int(total["own_reads"]) == 2
    assert int(total["access_received"]) == int(total["access_filed"]) == 3
    assert [(r.resource, r.reads, r.consumers) for r in written.top_resources] == [
        (RESIDENTS, 5, 2), (ENTERPRISES, 1, 1)
    ]  # fmt: skip
    assert {(line.kind, line.id) for line in written.overdue} == {
        ("access", world.requests["waiting"]),
        ("verification", world.requests["verify_open"]),
    }
    html = (folder / "sharing-platform-2026.html").read_text(encoding="utf-8")
    totals = html[html.index('id="total"') :]
    assert _figure(totals, "reads") == "6" and _figure(totals, "reads_by_others") == "6"
    assert f'data-request="access:{world.requests["waiting"]}"' in html
    for d in written.departments:  # every department's report is written next to it
        assert (folder / f"sharing-{d.code}-2026.html").exists()
        assert (folder / f"sharing-{d.code}-2026.csv").exists()


# -- the command -------------------------------------------------------------------------------
@pytest.fixture
def cli_env(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)
    settings_module.get_settings.cache_clear()
    yield
    settings_module.get_settings.cache_clear()


@pytest.mark.slow
def test_cli_writes_one_department_and_refuses_unknown_ones_and_future_years(
    world: World, cli_env: None
) -> None:
    from govlake_app.cli import app

    runner = CliRunner(env={"COLUMNS": "300"})
    result = runner.invoke(app, ["report", "sharing", "--year", "2026", "--department", USER,
                                 "--at", AT.isoformat()])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = sharing_dir(world.settings, 2026)
    assert str(folder / f"sharing-{USER}-2026.html") in result.output
    assert str(folder / f"sharing-{USER}-2026.csv") in result.output
    assert "税务局 (taxation)" in result.output and "sharing-platform" not in result.output

    unknown = runner.invoke(app, ["report", "sharing", "--year", "2026", "--department", "police"])
    assert unknown.exit_code == 2
    assert "unknown department 'police'" in unknown.output and PROVIDER in unknown.output
    future = runner.invoke(app, ["report", "sharing", "--year", "2099", "--at", AT.isoformat()])
    assert future.exit_code == 2 and "year 2099 has not started yet" in future.output


# -- the pure core -----------------------------------------------------------------------------
YEAR = Period(datetime.datetime(2026, 1, 1), datetime.datetime(2027, 1, 1))


def _entry(**fields: Any) -> dict[str, Any]:
    values = {"at": datetime.datetime(2026, 5, 1), "action": "share.query", "consumer": USER,
              "purpose": None, "resource": RESIDENTS, "table_name": "t", "version": 3,
              "rows": 10, "outcome": "ok"}  # fmt: skip
    return values | fields


def test_a_department_with_nothing_gets_an_empty_report(catalog: Catalog) -> None:
    report = build_department_report(catalog, "natural_resources", year=2026, period=YEAR,
                                     grace_fraction=0.25)  # fmt: skip
    assert not report.has_activity and not report.consumer
    assert report.reads_made == report.reads_received == report.publications == 0
    # Responsible for registered addresses, never published: overdue at the period end.
    addresses = next(r for r in report.resources if r.resource == "geospatial.registered_addresses")
    assert addresses.state_at_end == "overdue" and addresses.last_rows is None
    assert addresses.publication_on_time_share is None and addresses.quality_share is None
    from govlake.reports.sharing import department_csv, render_department

    assert 'id="no-activity"' in render_department(report)
    assert "own_reads,0" in department_csv(report)


def test_refused_and_non_reading_calls_are_not_reads(catalog: Catalog) -> None:
    journal = [
        _entry(),
        _entry(version=4, rows=12),
        _entry(purpose="data_verification", rows=5),
        _entry(outcome="refused", rows=None, purpose=None),
        _entry(action="share.metadata", outcome="refused", version=None),  # as the client asks
        _entry(action="share.list_tables", outcome="refused"),  # no table: not a read
        _entry(action="share.metadata"),
        _entry(action="share.file", rows=None),
        _entry(action="share.changes", rows=2, version=5),
        _entry(outcome="not_found"),
        _entry(consumer=None, outcome="refused"),  # unauthenticated: nobody to count it for
        _entry(at=datetime.datetime(2025, 12, 31, 23, 59)),  # another year
        _entry(consumer=PROVIDER),  # its own data
    ]
    summary = build_sharing(catalog, year=2026, period=YEAR, grace_fraction=0.25,
                            rows=SharingRows(journal=journal))  # fmt: skip
    user = summary.department(USER)
    assert {(t.purpose, t.reads, t.rows, t.versions) for t in user.reads} == {
        (None, 3, 24, 3),
        ("data_verification", 1, 5, 1),
    }
    assert user.refused_reads == 2
    provider = summary.department(PROVIDER)
    assert provider.reads_received == 4 and provider.refused_received == 2
    assert provider.own_reads == 1 and provider.reads_made == 0
    assert summary.total("reads") == summary.total("reads_by_others") == 4


def test_publication_timeliness_and_request_state_at_the_period_end(catalog: Catalog) -> None:
    def publication(day: int, hour: int, version: int) -> dict[str, Any]:
        return {"resource": RESIDENTS, "sharing_class": "unconditional", "table_name": "u",
                "version": version, "published_at": datetime.datetime(2026, 6, day, hour),
                "rows": 100 + version, "silver_version": version}  # fmt: skip

    # Daily, with a 6 h grace: 29 hours after the previous one is on time, 32 late.
    publications = [publication(1, 0, 1), publication(2, 5, 2), publication(3, 13, 3)]
    requests = [
        {"id": 1, "resource": RESIDENTS, "provider": PROVIDER, "consumer": USER,
         "usage_scope": "data_verification", "status": "approved",
         "filed_at": datetime.datetime(2026, 12, 20), "due_on": datetime.date(2027, 1, 5),
         "decided_at": datetime.datetime(2027, 1, 2), "reason": None},
    ]  # fmt: skip
    report = build_department_report(
        catalog, PROVIDER, year=2026, period=YEAR, grace_fraction=0.25,
        rows=SharingRows(publications=publications, access_requests=requests),
    )  # fmt: skip
    residents = next(r for r in report.resources if r.resource == RESIDENTS)
    assert [run.on_time for run in residents.runs] == [None, True, False]
    assert residents.last_rows == 103 and residents.versions_published == 3
    # Decided after the period: still waiting at its end, not yet overdue.
    (line,) = report.access_received.lines
    assert (line.outcome, line.answered, line.overdue) == ("pending", False, False)


def test_unknown_department_is_refused(catalog: Catalog, settings: Settings) -> None:
    with pytest.raises(ReportError, match="unknown department 'police'"):
        write_sharing_reports(None, catalog, settings, year=2026, at=AT,  # type: ignore[arg-type]
                              department="police")  # fmt: skip
