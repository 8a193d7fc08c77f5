"""Steward reports and the department scorecard over a real pipeline run: figures in the HTML
match the ops tables, the report is mailed to the steward through a real SMTP server, and a
sloppy department ranks below a diligent one."""

from __future__ import annotations

import csv
import datetime
import email
import email.policy
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable
from govlake_tools.generate import generate
from markupsafe import escape
from pydantic import ValidationError
from pyspark.sql import SparkSession
from support import Inbox, lake_settings
from typer.testing import CliRunner

from govlake.core import settings as settings_module
from govlake.core.catalog import Catalog
from govlake.core.runs import Interval
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.lake.tables import TableSet
from govlake.reports import ReportError
from govlake.reports.quality import write_quality_report
from govlake.reports.scorecard import effective_weights, entry_upkeep, write_scorecard
from govlake_app import pipeline as ingest

REPO = Path(__file__).resolve().parents[2]
DAY1 = datetime.date(2026, 11, 18)
DAY2 = datetime.date(2026, 11, 19)
STALE = datetime.date(2026, 11, 10)  # market regulation's second extract is this old
AT = datetime.datetime(2026, 11, 20, 8, 0)  # the reports are made at this (naive UTC) time
STALE_REVIEW = "2025-01-10"
DILIGENT, SLOPPY = "public_security", "market_regulation"


@dataclass(frozen=True)
class Lake:
    settings: Settings
    catalog: Catalog
    spark: SparkSession

    def env(self) -> dict[str, str]:
        return {
            "GOVLAKE_WAREHOUSE": self.settings.warehouse,
            "GOVLAKE_LANDING": self.settings.landing,
            "GOVLAKE_CATALOG_DIR": str(self.settings.catalog_dir),
            "GOVLAKE_REPORTS_DIR": str(self.settings.reports_dir),
            # The platform database too, so that no command writes one in the working folder.
            "GOVLAKE_DATABASE_URL": self.settings.database_url,
        }

    def rows(self, query: str) -> list[Any]:
        return self.spark.sql(query).collect()

    def value(self, query: str) -> Any:
        row = self.spark.sql(query).first()
        assert row is not None
        return row[0]


def _ingest(lake: Lake, names: list[str], end: datetime.datetime) -> None:
    interval = Interval.ending(end.replace(tzinfo=datetime.UTC))
    for name in names:
        ingest.run(
            lake.spark, resource=lake.catalog.get(name), interval=interval, settings=lake.settings
        )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Two days of deliveries. Public security (and the other population providers) deliver
    clean, current extracts; market regulation and taxation deliver defective enterprise
    extracts (held back), the second one a week old; market regulation's catalogue entry was
    last reviewed long ago."""
    root = tmp_path_factory.mktemp("reports")
    schemas = root / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    entry = schemas / "legal_entity" / "enterprises.yaml"
    text = entry.read_text(encoding="utf-8")
    entry.write_text(
        re.sub(r"^reviewed_on: .*$", f"reviewed_on: {STALE_REVIEW}", text, flags=re.M),
        encoding="utf-8",
    )
    settings = lake_settings(root, catalog_dir=schemas, reports_dir=root / "reports")
    catalog = Catalog.load(schemas)
    lake = Lake(settings, catalog, get_spark(settings, catalog, fresh=True))
    landing = settings.landing_location
    residents, enterprises = "population.residents", "legal_entity.enterprises"
    for day, enterprises_as_of in ((DAY1, DAY1), (DAY2, STALE)):
        generate(catalog, landing, rows=1500, seed=3, defects=0.004, as_of=day,
                 resources=[residents])  # fmt: skip
        generate(catalog, landing, rows=2500, seed=3, defects=0.25, as_of=enterprises_as_of,
                 resources=[enterprises])  # fmt: skip
        _ingest(lake, [residents, enterprises], datetime.datetime.combine(day, datetime.time(20)))
    return lake


@pytest.fixture
def cli_env(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """`GOVLAKE_*` variables pointing the CLI at the test lakehouse."""
    env = lake.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings_module.get_settings.cache_clear()
    yield env
    settings_module.get_settings.cache_clear()


def _section(html: str, resource: str) -> str:
    start = html.index(f'<section id="resource-{resource}">')
    return html[start : html.index("</section>", start)]


def _figure(html: str, name: str) -> str:
    found = re.search(rf'data-figure="{name}">([^<]*)<', html)
    assert found, f"no {name} figure"
    return found.group(1)


def _percent(passed: int, total: int) -> str:
    return f"{passed / total:.1%}"


# -- steward report ----------------------------------------------------------------------------
@pytest.mark.slow
def test_report_shows_the_run_figures_of_a_sloppy_provider(lake: Lake) -> None:
    written = write_quality_report(
        lake.spark, lake.catalog, lake.settings, SLOPPY, since=DAY1, at=AT
    )
    assert written.path == lake.settings.reports_dir / f"quality_{SLOPPY}_2026-11-20.html"
    html = written.path.read_text(encoding="utf-8")
    assert "市场监督管理局" in html and "steward.enterprise@market-regulation.gov.example" in html
    section = _section(html, "legal_entity.enterprises")

    extracts = lake.rows(
        f"SELECT file_name, status, reason, rows_read, rows_quarantined FROM ops.extracts "
        f"WHERE provider = '{SLOPPY}'"
    )
    assert len(extracts) == 2 and {e.status for e in extracts} == {"held"}
    assert _figure(section, "rows_read") == f"{sum(e.rows_read for e in extracts):,}"
    assert _figure(section, "rows_quarantined") == f"{sum(e.rows_quarantined for e in extracts):,}"
    assert _figure(section, "rows_merged") == "0"
    for extract in extracts:  # held, and why
        assert f'<td>{extract.file_name}</td><td class="bad">held</td>' in section
        assert str(escape(extract.reason)) in section

    # The top quarantine rule comes first, with its count and an example reason.
    top = lake.rows(
        f"SELECT rule, count(*) AS n FROM (SELECT explode(split(_rules, ',')) AS rule "
        f"FROM legal_entity.enterprises_quarantine WHERE _provider = '{SLOPPY}') "
        f"GROUP BY rule ORDER BY n DESC, rule"
    )
    listed = re.findall(
        r'data-rule="([^"]+)">[^<]*</td><td class="num" data-figure="quarantine_rows">([^<]+)<',
        section,
    )
    assert listed[0] == (top[0].rule, f"{top[0].n:,}")
    assert dict(listed) == {r.rule: f"{r.n:,}" for r in top}
    item = top[0].rule.split(".")[0]
    assert re.search(rf'<td class="sample">{item}: [^<]+</td>', section)

    # Pass rates: all the department's extract expectations, and completeness alone.
    results = lake.rows(
        f"SELECT dimension, success, expectation, severity, threshold, observed_value "
        f"FROM ops.quality_results WHERE provider = '{SLOPPY}' AND scope = 'extract'"
    )
    summary = html[html.index('<table id="summary">') :]
    passed = sum(r.success for r in results)
    assert _figure(summary, "pass_rate") == _percent(passed, len(results))
    assert passed < len(results)
    completeness = [r for r in results if r.dimension == "completeness"]
    row = section[section.index('data-dimension="completeness"') :]
    assert _figure(row, "pass_rate") == _percent(
        sum(r.success for r in completeness), len(completeness)
    )
    # Every failed error-level expectation is listed with its threshold and observed value.
    failed = [r for r in results if not r.success and r.severity == "error"]
    assert failed
    for r in failed:
        assert f"<td>{escape(r.threshold)}</td><td>{escape(r.observed_value)}</td>" in section
    # The second extract was a week old: it shows as late, the first as on time.
    assert section.count('<span class="bad">late</span>') == 1
    assert section.count('<span class="good">yes</span>') == 1
    # Held extracts do not count as delivered: the monitor has none.
    assert re.search(r'data-state="delivery:legal_entity.enterprises">overdue<', html)
    assert html.count('src="data:image/png;base64,') == 3  # completeness, timeliness, rules


@pytest.mark.slow
def test_report_lists_cross_check_findings_and_timeliness(lake: Lake) -> None:
    authority = write_quality_report(
        lake.spark, lake.catalog, lake.settings, DILIGENT, since=DAY1, at=AT
    ).path.read_text(encoding="utf-8")
    copy = write_quality_report(
        lake.spark, lake.catalog, lake.settings, "civil_affairs", since=DAY1, at=AT
    ).path.read_text(encoding="utf-8")
    open_findings = lake.value(
        "SELECT count(*) FROM population.residents_crosscheck WHERE status = 'open' "
        "AND item = 'name' AND authority = 'public_security' AND provider = 'civil_affairs'"
    )
    assert open_findings > 0
    finding = 'data-finding="population.residents.name:civil_affairs"'
    for html in (authority, copy):  # disputed by civil affairs; civil affairs' copy differs
        row = html[html.index(finding) :]
        assert _figure(row, "open_findings") == f"{open_findings:,}"
    assert "Items you are the authority for" in authority
    # Residents were published at 20:00 the day before: on time at 08:00.
    assert re.search(r'data-state="publication:population.residents">on_time<', authority)
    assert 'data-state="publication:population.residents"' not in copy  # not responsible
    # Civil affairs' latest extract is as of 11-19 00:00: one day plus 6 h grace is past.
    assert re.search(r'data-state="delivery:population.residents">overdue<', copy)
    assert "No extracts" not in authority


@pytest.mark.slow
def test_report_lists_the_requests_awaiting_the_providers_answer(lake: Lake) -> None:
    """Access requests past their 10 working days show as overdue in the steward report."""
    from govlake.platform.database import session
    from govlake.sharing import access
    from govlake.sharing import requests as req

    settings, catalog = lake.settings, lake.catalog
    filed = AT - datetime.timedelta(days=30)  # far more than 10 working days before AT
    with session(settings) as s:
        for code in ("taxation", "civil_affairs"):
            if s.get(access.Consumer, code) is None:
                access.register_consumer(s, catalog, code, email=None, at=filed)
        item = catalog.get("population.residents").class_items("conditional")[-1]
        late = req.file_access_request(
            s, catalog, settings, consumer="taxation", resource="population.residents",
            items=[item], applicant_name="王敏", applicant_phone="010-12345678",
            applicant_email="wang@tax.gov.example", using_department="税务局",
            using_contact="王敏 010-12345678", service_scenario="个税专项附加扣除核验",
            usage_scope="data_verification", business_system="税收征管系统",
            justification="核验纳税人家庭成员信息", at=filed,
        ).id  # fmt: skip
    html = write_quality_report(lake.spark, catalog, settings, DILIGENT, at=AT).path.read_text(
        encoding="utf-8"
    )
    section = html[html.index("Requests awaiting your answer") :]
    assert f'data-request="access request:{late}">overdue<' in section
    assert "taxation" in section
    # Another department's report does not list it.
    other = write_quality_report(lake.spark, catalog, settings, SLOPPY, at=AT).path.read_text(
        encoding="utf-8"
    )
    assert f"access request:{late}" not in other


def test_a_department_without_data_still_gets_a_report(lake: Lake) -> None:
    written = write_quality_report(
        lake.spark, lake.catalog, lake.settings, "natural_resources", at=AT
    )
    html = written.path.read_text(encoding="utf-8")
    assert not written.report.has_data
    assert 'id="no-data"' in html and "No extracts from 自然资源局 were received" in html
    assert "geospatial.registered_addresses (weekly)" in html
    assert "You are the authority for longitude, latitude" in html  # of admin divisions
    # It is responsible for registered addresses, never published here.
    assert re.search(r'data-state="publication:geospatial.registered_addresses">overdue<', html)
    assert re.search(r'data-state="delivery:geospatial.admin_divisions">overdue<', html)
    assert _figure(html, "rows_read") == "0"


@pytest.mark.slow
def test_send_mails_the_report_to_the_department_steward(
    lake: Lake,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    smtp: tuple[Inbox, int],
) -> None:
    from govlake_app.cli import app

    inbox, port = smtp
    monkeypatch.setenv("GOVLAKE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GOVLAKE_SMTP_PORT", str(port))
    settings_module.get_settings.cache_clear()
    result = CliRunner(env={"COLUMNS": "300"}).invoke(
        app,
        ["report", "quality", "--provider", SLOPPY, "--since", "2026-11-01",
         "--at", AT.isoformat(), "--send"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path = lake.settings.reports_dir / f"quality_{SLOPPY}_2026-11-20.html"
    assert str(path) in result.output
    steward = yaml.safe_load((REPO / "schemas" / "departments.yaml").read_text("utf-8"))[SLOPPY][
        "steward"
    ]
    assert f"mailed to {steward['name']} <{steward['email']}>" in result.output

    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.rcpt_tos == [steward["email"]]
    assert envelope.mail_from == "govlake@platform.gov.example"
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    assert "市场监督管理局" in message["Subject"] and "2026-11-01" in message["Subject"]
    html = path.read_text(encoding="utf-8")
    body = message.get_body(preferencelist=("html",))
    assert body is not None and _normal(body.get_content()) == _normal(html)
    attachments = list(message.iter_attachments())
    assert [a.get_filename() for a in attachments] == [path.name]
    assert _normal(attachments[0].get_content()) == _normal(html)
    assert "legal_entity.enterprises" in html


def _normal(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def test_unknown_provider_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    from govlake_app.cli import app

    settings_module.get_settings.cache_clear()
    try:
        result = CliRunner(env={"COLUMNS": "300", "GOVLAKE_REPORTS_DIR": str(tmp_path)}).invoke(
            app, ["report", "quality", "--provider", "police"]
        )
    finally:
        settings_module.get_settings.cache_clear()
    assert result.exit_code == 2
    assert "unknown provider department 'police'" in result.output
    assert "public_security" in result.output and "taxation" in result.output
    assert not list(tmp_path.iterdir())  # nothing written


def test_report_period_must_not_be_empty(catalog: Catalog, settings: Settings) -> None:
    with pytest.raises(ReportError, match="--since 2026-12-01 is not before"):
        write_quality_report(
            None,  # type: ignore[arg-type]  # refused before any query
            catalog,
            settings,
            DILIGENT,
            since=datetime.date(2026, 12, 1),
            at=AT,
        )


# -- scorecard ---------------------------------------------------------------------------------
def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


COMPONENTS = ("catalogue", "provision", "quality", "timeliness")


@pytest.mark.slow
def test_scorecard_ranks_a_sloppy_department_below_a_diligent_one(lake: Lake) -> None:
    written = write_scorecard(lake.spark, lake.catalog, lake.settings, year=2026, at=AT)
    rows = _csv(written.csv)
    assert written.csv.name == "scorecard_2026.csv" and written.html.name == "scorecard_2026.html"
    assert [r["department"] for r in rows] == [
        s.department.code for s in written.scorecard.departments
    ]
    assert sorted(r["department"] for r in rows) == lake.catalog.providers  # one per department
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    by = {r["department"]: r for r in rows}
    diligent, sloppy = by[DILIGENT], by[SLOPPY]
    assert int(diligent["rank"]) < int(sloppy["rank"])
    assert float(diligent["score"]) > float(sloppy["score"])

    # Provision: both of market regulation's extracts were held; public security's merged.
    assert float(sloppy["provision"]) == 0 and float(diligent["provision"]) == 1
    # Quality and on-time rates are the shares in ops.quality_results.
    for code in (DILIGENT, SLOPPY):
        checks = lake.rows(
            f"SELECT expectation, success FROM ops.quality_results "
            f"WHERE provider = '{code}' AND scope = 'extract'"
        )
        assert float(by[code]["quality"]) == pytest.approx(
            sum(c.success for c in checks) / len(checks), abs=1e-4
        )
        timely = [c.success for c in checks if c.expectation == "as_of.timeliness"]
        assert float(by[code]["timeliness"]) == pytest.approx(sum(timely) / len(timely), abs=1e-4)
    assert float(diligent["timeliness"]) == 1 and float(sloppy["timeliness"]) == 0.5
    # Catalogue: the enterprises entry is complete but was last reviewed long ago; the
    # residents entry is reviewed but, though conditional, cites no legal basis.
    assert float(sloppy["catalogue"]) == 0.5
    assert float(diligent["catalogue"]) == 0.875

    # The weights apply: the score is the weighted sum of the components.
    weights = lake.settings.scorecard_weights
    for r in rows:
        applied = {c: float(r[f"weight_{c}"]) for c in COMPONENTS}
        assert sum(applied.values()) == pytest.approx(1, abs=1e-3)
        total = sum(applied[c] * float(r[c] or 0) for c in COMPONENTS)
        assert float(r["score"]) == pytest.approx(total, abs=1e-3)
        if r["catalogue"]:
            assert applied == pytest.approx(weights, abs=1e-4)
    # Taxation keeps no catalogue entry: not applicable, its weight spread over the rest.
    assert by["taxation"]["catalogue"] == "" and float(by["taxation"]["weight_catalogue"]) == 0
    assert float(by["taxation"]["weight_quality"]) == pytest.approx(0.3 / 0.8, abs=1e-4)

    html = written.html.read_text(encoding="utf-8")
    section = html[html.index(f'<section id="department-{SLOPPY}">') :]
    section = section[: section.index("</section>")]
    assert "Weakest component: <strong>provision</strong>" in section
    assert "deliver legal_entity.enterprises" in section
    assert f"<td>{STALE_REVIEW}</td>" in section
    assert "not applicable (n/a)" in html


@pytest.mark.slow
def test_scorecard_cli_applies_the_configured_weights(
    lake: Lake, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from govlake_app.cli import app

    weights = {"catalogue": 0.1, "provision": 0.1, "quality": 0.2, "timeliness": 0.6}
    monkeypatch.setenv("GOVLAKE_SCORECARD_WEIGHTS", str(weights).replace("'", '"'))
    settings_module.get_settings.cache_clear()
    result = CliRunner(env={"COLUMNS": "300"}).invoke(
        app, ["report", "scorecard", "--year", "2026", "--at", AT.isoformat()]
    )
    assert result.exit_code == 0, result.output
    assert "timeliness (60%)" in result.output
    rows = _csv(lake.settings.reports_dir / "scorecard_2026.csv")
    ranked = [r["department"] for r in rows]
    # The ranked table is printed in the same order as the CSV.
    printed = [line.split("│")[2].strip() for line in result.output.splitlines() if "│" in line]
    assert printed == ranked
    for r in rows:
        if r["catalogue"]:
            assert {c: float(r[f"weight_{c}"]) for c in COMPONENTS} == weights
        total = sum(float(r[f"weight_{c}"]) * float(r[c] or 0) for c in COMPONENTS)
        assert float(r["score"]) == pytest.approx(total, abs=1e-3)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"catalogue": 0.5, "provision": 0.2, "quality": 0.3, "timeliness": 0.3}, "sum to 1"),
        ({"catalogue": 0.5, "provision": 0.5}, "missing: quality, timeliness"),
        (
            {"catalogue": 0.2, "provision": 0.2, "quality": 0.3, "timeliness": 0.2, "speed": 0.1},
            "unknown: speed",
        ),
        ({"catalogue": -0.2, "provision": 0.6, "quality": 0.3, "timeliness": 0.3}, "negative"),
    ],
)
def test_bad_weights_are_refused(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(scorecard_weights=weights)


def test_cli_refuses_bad_weights_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from govlake_app.cli import app

    monkeypatch.setenv("GOVLAKE_SCORECARD_WEIGHTS", '{"catalogue": 1, "quality": 1}')
    settings_module.get_settings.cache_clear()
    try:
        result = CliRunner(env={"COLUMNS": "300"}).invoke(
            app, ["report", "scorecard", "--year", "2026"]
        )
    finally:
        settings_module.get_settings.cache_clear()
    assert result.exit_code == 2
    assert "GOVLAKE_SCORECARD_WEIGHTS" in result.output
    assert "missing: provision, timeliness" in result.output


def test_catalogue_upkeep_counts_fields_and_reviews(catalog: Catalog) -> None:
    residents = catalog.get("population.residents")  # conditional, no legal basis
    sloppy = residents.model_copy(
        update={"description": None, "reviewed_on": datetime.date(2026, 6, 1)}
    )
    end = datetime.date(2026, 11, 20)
    upkeep = entry_upkeep(sloppy, period_end=end)
    assert upkeep.missing == ["description", "legal_basis"]
    assert upkeep.fill_share == 0.5 and not upkeep.review_current
    kept = entry_upkeep(
        residents.model_copy(update={"legal_basis": "《居民身份证法》", "reviewed_on": end}),
        period_end=end,
    )
    assert kept.missing == [] and kept.fill_share == 1 and kept.review_current
    # 92 days before the period end still counts; 93 does not.
    for days, current in ((92, True), (93, False)):
        reviewed = residents.model_copy(update={"reviewed_on": end - datetime.timedelta(days)})
        assert entry_upkeep(reviewed, period_end=end).review_current is current


def test_not_applicable_weight_is_spread_over_the_rest() -> None:
    weights = {"catalogue": 0.2, "provision": 0.2, "quality": 0.3, "timeliness": 0.3}
    spread = effective_weights(
        weights, {"catalogue": None, "provision": 1.0, "quality": 0.5, "timeliness": 0.0}
    )
    assert spread == pytest.approx(
        {"catalogue": 0, "provision": 0.25, "quality": 0.375, "timeliness": 0.375}
    )
    assert effective_weights(weights, dict.fromkeys(weights, 0.5)) == weights


def test_report_shows_the_catalogue_upkeep_of_the_departments_entries(lake: Lake) -> None:
    """Overdue reviews and updates due after a duty change show in the steward report."""
    from govlake.governance import changes
    from govlake.platform.database import session

    settings, catalog = lake.settings, lake.catalog
    sloppy = write_quality_report(lake.spark, catalog, settings, SLOPPY, at=AT)
    html = sloppy.path.read_text(encoding="utf-8")
    section = html[html.index("<h2>Catalogue upkeep") :]
    # Its entry was last reviewed on 2025-01-10: due 2025-04-10, long overdue.
    assert re.search(r'data-upkeep="review:legal_entity.enterprises">overdue<', section)
    assert "2025-04-10" in section and "last reviewed 2025-01-10" in section
    with session(settings) as s:
        changes.register_duty_change(
            s, catalog, settings, provider=DILIGENT, basis="居民身份证法 (amended)",
            reason="new identity items", effective_on=AT.date(), by="大数据局", at=AT,
        )  # fmt: skip
    diligent = write_quality_report(lake.spark, catalog, settings, DILIGENT, at=AT)
    html = diligent.path.read_text(encoding="utf-8")
    section = html[html.index("<h2>Catalogue upkeep") :]
    assert re.search(r'data-upkeep="review:population.residents">on_time<', section)
    assert re.search(r'data-upkeep="update:population.residents">due<', section)
    assert "居民身份证法 (amended)" in section
    assert "legal_entity.enterprises" not in section  # not its entry


# -- deletion vectors --------------------------------------------------------------------------
def _rule_counts(folder: Path) -> Counter[str]:
    """Quarantined rows per rule of the sloppy provider, read through QueryBuilder."""
    rows = read_delta(DeltaTable(str(folder)), ["_provider", "_rules"]).to_pylist()
    return Counter(rule for r in rows if r["_provider"] == SLOPPY
                   for rule in r["_rules"].split(",") if rule)  # fmt: skip


@pytest.mark.slow
def test_quarantine_counts_leave_out_rows_deleted_by_vectors(lake: Lake, tmp_path: Path) -> None:
    shutil.copytree(lake.settings.warehouse, tmp_path / "lakehouse")
    settings = lake.settings.model_copy(update={"warehouse": str(tmp_path / "lakehouse"),
                                                "reports_dir": tmp_path / "reports"})  # fmt: skip
    quarantine = TableSet(
        lake.catalog.get("legal_entity.enterprises"), settings.warehouse_location
    ).quarantine
    folder = Path(quarantine.location.uri)
    # The quarantine table, rewritten with deletion vectors enabled, then rows deleted.
    spark = get_spark(settings, lake.catalog, fresh=True)
    spark.sql(f"CREATE TABLE dv_copy USING delta LOCATION '{tmp_path / 'dv'}' "
              "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true') "
              f"AS SELECT * FROM {quarantine.sql_name}")  # fmt: skip
    shutil.rmtree(folder)
    shutil.move(tmp_path / "dv", folder)
    before = _rule_counts(folder)
    top = before.most_common(1)[0][0]
    spark = get_spark(settings, lake.catalog, fresh=True)
    spark.sql(f"DELETE FROM {quarantine.sql_name} WHERE _provider = '{SLOPPY}' "
              f"AND _rules LIKE '%{top}%' AND _row % 2 = 0")  # fmt: skip
    assert list(folder.rglob("deletion_vector_*.bin")), "the engine wrote no deletion vectors"
    after = _rule_counts(folder)
    assert after[top] < before[top]

    written = write_quality_report(spark, lake.catalog, settings, SLOPPY, since=DAY1, at=AT)
    section = _section(written.path.read_text(encoding="utf-8"), "legal_entity.enterprises")
    listed = re.findall(
        r'data-rule="([^"]+)">[^<]*</td><td class="num" data-figure="quarantine_rows">([^<]+)<',
        section,
    )
    assert dict(listed) == {rule: f"{n:,}" for rule, n in after.items()}
