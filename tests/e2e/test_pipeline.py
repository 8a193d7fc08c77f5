"""End to end on the embedded engine: generated extracts → bronze → quarantine → silver →
published versions, read back with SQL and delta-rs."""

from __future__ import annotations

import datetime
import json
import re
import shutil
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from govlake_tools.generate import generate
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from govlake.core.catalog import Catalog
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.statements import version
from govlake.lake.tables import TableSet, ops_tables
from govlake_app import pipeline as ingest

pytestmark = pytest.mark.slow

DAY1 = datetime.date(2026, 11, 19)
DAY2 = datetime.date(2026, 11, 20)


def _run(spark: SparkSession, catalog: Catalog, settings: Settings, day: datetime.date,
         names: list[str] | None = None) -> dict[str, StageCounts]:  # fmt: skip
    end = datetime.datetime.combine(
        day + datetime.timedelta(days=1), datetime.time(2), datetime.UTC
    )
    interval = Interval.ending(end)
    return {
        r.qualified_name: ingest.run(spark, resource=r, interval=interval, settings=settings)
        for r in catalog.select(None)
        if names is None or r.qualified_name in names
    }


def _versions(catalog: Catalog, settings: Settings) -> dict[str, int]:
    found = {}
    for resource in catalog:
        for table in TableSet(resource, settings.warehouse_location).all():
            if table.location.is_delta_table():
                found[table.qualified_name] = version(table)
    for table in ops_tables(settings.warehouse_location):
        found[table.qualified_name] = version(table)
    return found


def _csv(path: Path) -> list[dict[str, str | None]]:
    opts = pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=True)
    table = pacsv.read_csv(path, convert_options=opts)
    return [{k: (None if v is None else str(v)) for k, v in r.items()} for r in table.to_pylist()]


def _count(spark: SparkSession, sql: str) -> int:
    row = spark.sql(sql).first()
    assert row is not None
    return int(row[0])


def test_all_four_themes_end_to_end(
    spark: SparkSession, catalog: Catalog, settings: Settings
) -> None:
    made = generate(
        catalog, settings.landing_location, rows=3000, seed=11, defects=0.02, as_of=DAY1
    )
    results = _run(spark, catalog, settings, DAY1)
    assert {r.theme for r in catalog} == {"population", "legal_entity", "geospatial", "credit"}
    for extract in made:
        counts = results[extract.resource]
        assert counts.published, extract.resource
    for name, counts in results.items():
        resource = catalog.get(name)
        generated = [e for e in made if e.resource == name]
        injected = sum(sum(e.defects.values()) for e in generated)
        assert counts.rows_read == sum(e.rows for e in generated)
        # Every injected defect is caught; a duplicated key quarantines both copies.
        assert injected <= counts.rows_quarantined <= 2 * injected, name
        tables = TableSet(resource, settings.warehouse_location)
        assert _count(spark, f"SELECT count(*) FROM {tables.bronze.sql_name}") == counts.rows_read
        assert (
            _count(spark, f"SELECT count(*) FROM {tables.quarantine.sql_name}")
            == counts.rows_quarantined
        )
        for sharing_class in resource.sharing_classes:
            published = tables.published(sharing_class)
            assert (
                _count(spark, f"SELECT count(*) FROM {published.sql_name}") == counts.rows_published
            )
            assert published.column_names == resource.class_items(sharing_class)
            # The key is unique in what is published.
            keys = ", ".join(resource.key)
            assert (
                _count(
                    spark,
                    f"SELECT count(*) FROM (SELECT {keys} FROM {published.sql_name} "
                    f"GROUP BY {keys} HAVING count(*) > 1)",
                )
                == 0
            )
    publications = spark.sql("SELECT * FROM ops.publications").collect()
    assert {(p.resource, p.sharing_class) for p in publications} == {
        (r.qualified_name, c)
        for r in catalog
        for c in [*r.sharing_classes, *(["open"] if r.is_open else [])]
    }
    assert all(p.version == 1 and p.source_extracts for p in publications)
    # Personal-privacy items never reach the unconditional table.
    residents = spark.table("population.residents_unconditional").columns
    assert "marital_status" not in residents and "residence_address" not in residents
    # A quarantined record names its file, row, item and rule.
    reason = spark.sql(
        "SELECT _file_name, _row, _rules, _reason FROM population.residents_quarantine "
        "WHERE _rules = 'citizen_id.citizen_id' LIMIT 1"
    ).first()
    assert reason is not None and reason._file_name.endswith(".csv") and reason._row > 0
    assert reason._reason.startswith("citizen_id: not a GB 11643 citizen identity number")


def test_one_data_one_source(spark: SparkSession, catalog: Catalog, settings: Settings) -> None:
    made = generate(catalog, settings.landing_location, rows=2000, seed=5, as_of=DAY1,
                    resources=["population.residents"])  # fmt: skip
    files = {e.provider: Path(e.location.uri) for e in made}
    police = {r["citizen_id"]: r for r in _csv(files["public_security"])}
    civil = {r["citizen_id"]: r for r in _csv(files["civil_affairs"])}
    _run(spark, catalog, settings, DAY1, ["population.residents"])
    silver = {r.citizen_id: r for r in spark.table("population.residents").collect()}
    disputed = {k for k, r in civil.items() if r["name"] != police[k]["name"]}
    assert disputed, "the generator makes civil affairs disagree on some names"
    for key in police:
        # Identity items come only from public security, marital status only from civil affairs.
        assert silver[key].name == police[key]["name"]
        assert silver[key].marital_status == (
            civil[key]["marital_status"] if key in civil else None
        )
    findings = spark.sql(
        "SELECT citizen_id, authority_value, provider_value FROM population.residents_crosscheck "
        "WHERE item = 'name' AND provider = 'civil_affairs'"
    ).collect()
    assert {f.citizen_id for f in findings} == disputed
    for f in findings:
        assert f.authority_value == police[f.citizen_id]["name"]
        assert f.provider_value == civil[f.citizen_id]["name"]


def test_reingest_is_a_no_op_and_changes_touch_only_changed_rows(
    spark: SparkSession, catalog: Catalog, settings: Settings
) -> None:
    landing = Path(settings.landing_location.uri)
    first = generate(catalog, settings.landing_location, rows=2000, seed=3, as_of=DAY1)
    copies = landing.parent / "copies"
    shutil.copytree(landing, copies)
    _run(spark, catalog, settings, DAY1)
    before = _versions(catalog, settings)
    silver_rows = spark.table("population.residents").count()

    # The same extracts again (same content): skipped, no new Delta version anywhere.
    shutil.copytree(copies, landing, dirs_exist_ok=True)
    again = _run(spark, catalog, settings, DAY2)
    assert all(c.rows_read == 0 and not c.published for c in again.values())
    assert sum(len(c.skipped_files) for c in again.values()) == len(first)
    assert _versions(catalog, settings) == before
    assert spark.table("population.residents").count() == silver_rows
    assert spark.table("population.residents_bronze").count() == sum(
        e.rows for e in first if e.resource == "population.residents"
    )

    # The next day's extracts: only rows whose authoritative items changed are updated.
    second = generate(catalog, settings.landing_location, rows=2000, seed=3, as_of=DAY2,
                      resources=["population.residents"])  # fmt: skip
    old = {r["citizen_id"]: r for r in _csv(copies / _relative(first, "public_security", landing))}
    new = {r["citizen_id"]: r for r in _csv(Path(_file(second, "public_security")))}
    # Keys whose day-1 or day-2 record broke a rule are not compared.
    owned = catalog.get("population.residents").authoritative_items("public_security")
    changed = {k for k in new if k in old and any(new[k][i] != old[k][i] for i in owned)}
    assert 0 < len(changed) < len(new) * 0.05
    counts = _run(spark, catalog, settings, DAY2, ["population.residents"])["population.residents"]
    run2 = spark.sql(
        "SELECT citizen_id, _extract_id FROM population.residents "
        "WHERE _updated_at = (SELECT max(_updated_at) FROM population.residents)"
    ).collect()
    by_police = {r.citizen_id for r in run2 if r._extract_id.startswith("public_security/")}
    quarantined = {r.citizen_id for r in spark.table("population.residents_quarantine").collect()}
    assert by_police == changed - quarantined
    assert counts.published
    # Only a table whose items changed gets a new version: the conditional one carries every
    # item; the unconditional one only if an unconditional item of a changed key changed.
    resource = catalog.get("population.residents")
    unconditional = set(resource.class_items("unconditional"))
    touched = any(
        new[k][i] != old[k][i] for k in changed - quarantined for i in owned if i in unconditional
    )
    assert counts.published_versions == {"unconditional": 2 if touched else 1, "conditional": 2}
    # The previous version stays readable by number.
    v1 = (
        spark.read.format("delta")
        .option("versionAsOf", 1)
        .load(
            TableSet(catalog.get("population.residents"), settings.warehouse_location)
            .published("conditional")
            .location.uri
        )
    )
    assert v1.count() == silver_rows - _count(
        spark, "SELECT count(*) FROM population.residents WHERE name IS NULL"
    )


def _file(made: list, provider: str) -> str:  # type: ignore[type-arg]
    return next(
        e.location.uri for e in made if e.provider == provider and "residents" in e.resource
    )


def _relative(made: list, provider: str, landing: Path) -> Path:  # type: ignore[type-arg]
    return Path(_file(made, provider)).relative_to(landing)


def test_gbk_parquet_and_jsonl_extracts_ingest_alike(
    spark: SparkSession, catalog: Catalog, settings: Settings, tmp_path: Path
) -> None:
    names: dict[str, set[tuple[str, str]]] = {}
    for encoding, fmt in (("utf-8", "csv"), ("gbk", "csv"), ("utf-8", "parquet"), ("gbk", "jsonl")):
        label = f"{encoding}-{fmt}"
        local = Settings(
            warehouse=str(tmp_path / label / "lakehouse"),
            landing=str(tmp_path / label / "landing"),
            catalog_dir=settings.catalog_dir,
        )
        generate(catalog, local.landing_location, rows=5000, seed=2, defects=0.02, as_of=DAY1,
                 encoding=encoding, fmt=fmt, resources=["legal_entity.enterprises"])  # type: ignore[arg-type]  # fmt: skip
        session = get_spark(local, catalog, fresh=True)
        _run(session, catalog, local, DAY1, ["legal_entity.enterprises"])
        names[label] = {
            (r.credit_code, r.name) for r in session.table("legal_entity.enterprises").collect()
        }
        extracts = session.sql("SELECT encoding, file_format FROM ops.extracts").collect()
        assert {(e.encoding, e.file_format) for e in extracts} == {
            ("utf-8" if fmt == "parquet" else encoding, fmt)
        }
    reference = names["utf-8-csv"]
    assert len(reference) > 400
    assert any("公司" in name for _, name in reference)
    assert all(found == reference for found in names.values())


def test_unreadable_file_is_rejected_and_the_rest_goes_on(
    spark: SparkSession, catalog: Catalog, settings: Settings
) -> None:
    generate(catalog, settings.landing_location, rows=500, seed=4, as_of=DAY1,
             resources=["legal_entity.enterprises", "credit.records"])  # fmt: skip
    landing = Path(settings.landing_location.uri)
    bad = landing / "legal_entity" / "enterprises" / "taxation" / "enterprises_taxation_broken.csv"
    bad.write_bytes(b"credit_code,name,registered_capital,tax_status\n\xff\xfe\x80\x81\x00 binary")
    results = _run(spark, catalog, settings, DAY1, ["legal_entity.enterprises", "credit.records"])
    enterprises = results["legal_entity.enterprises"]
    assert [r.file for r in enterprises.rejected] == ["enterprises_taxation_broken.csv"]
    kept = landing / "rejected" / "legal_entity" / "enterprises" / "taxation" / bad.name
    assert kept.read_bytes().startswith(b"credit_code,")
    reason = json.loads((kept.parent / (bad.name + ".reason.json")).read_text(encoding="utf-8"))
    assert reason["rule"] == "encoding" and reason["provider"] == "taxation"
    assert "neither UTF-8 nor GBK" in reason["reason"]
    assert not bad.exists()
    assert enterprises.published and results["credit.records"].published
    assert len(enterprises.extracts) == 2
    row = spark.sql("SELECT status, reason FROM ops.extracts WHERE status = 'rejected'").first()
    assert row is not None and row.reason.startswith("encoding:")


def test_cli_ingest_and_sql(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from govlake.core import settings as settings_module

    monkeypatch.setenv("GOVLAKE_WAREHOUSE", settings.warehouse)
    monkeypatch.setenv("GOVLAKE_LANDING", settings.landing)
    monkeypatch.setenv("GOVLAKE_DATABASE_URL", settings.database_url)
    reports = Path(settings.warehouse).parent / "reports"
    monkeypatch.setenv("GOVLAKE_REPORTS_DIR", str(reports))
    settings_module.get_settings.cache_clear()
    runner = CliRunner(env={"COLUMNS": "200"})
    try:
        made = runner.invoke(app_(), ["generate", "--rows", "300", "--as-of", "2026-11-19",
                                      "--resource", "geospatial.admin_divisions"])  # fmt: skip
        assert made.exit_code == 0, made.output
        done = runner.invoke(app_(), ["ingest", "--resource", "geospatial.admin_divisions"])
        assert done.exit_code == 0, done.output
        assert "geospatial.admin_divisions" in done.output
        shown = runner.invoke(
            app_(),
            ["sql", "SELECT level, count(*) AS n FROM geospatial.admin_divisions_unconditional "
                    "GROUP BY level ORDER BY level"],
        )  # fmt: skip
        assert shown.exit_code == 0, shown.output
        assert "province" in shown.output and "county" in shown.output
    finally:
        settings_module.get_settings.cache_clear()


def app_():  # type: ignore[no-untyped-def]
    from govlake_app.cli import app

    return app


def test_demo_publishes_all_four_themes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from govlake.core import settings as settings_module

    monkeypatch.setenv("GOVLAKE_WAREHOUSE", settings.warehouse)
    monkeypatch.setenv("GOVLAKE_LANDING", settings.landing)
    monkeypatch.setenv("GOVLAKE_DATABASE_URL", settings.database_url)
    reports = Path(settings.warehouse).parent / "reports"
    monkeypatch.setenv("GOVLAKE_REPORTS_DIR", str(reports))
    settings_module.get_settings.cache_clear()
    runner = CliRunner(env={"COLUMNS": "200"})
    try:
        first = runner.invoke(app_(), ["demo", "--rows", "1000"])
        assert first.exit_code == 0, first.output
        summary = first.output[first.output.index("ingestion summary") :]
        for name in (
            "population.residents",
            "legal_entity.enterprises",
            "geospatial.admin_divisions",
            "credit.records",
        ):
            line = next(line for line in summary.splitlines() if name in line)
            assert "unconditional v1" in line, line
        assert "govlake sql" in first.output
        # The sharing step read a table through the official client with a fresh profile.
        sharing = first.output[first.output.index("sharing through the Delta Sharing protocol") :]
        assert "civil_affairs may read 5 tables" in sharing
        assert "population.population.residents_unconditional" in sharing
        shown = sharing[sharing.index("citizen_id") :].splitlines()[1:6]
        assert all(len(line.split()[0]) == 18 for line in shown), shown
        assert (reports / "profiles" / "civil_affairs.share").is_file()
        # The subscriber's webhook got the new version, signed; the mail notice is recorded.
        notices = first.output[first.output.index("4. subscription notices") :]
        assert "event subscription.version" in notices and "signature verified" in notices
        assert '"full_name": "legal_entity.legal_entity.enterprises_unconditional"' in notices
        assert "mail notice to " in notices and "New version of legal_entity.enterprises" in notices
        # The open variant: the legal representative masked, the identity number dropped.
        opened = first.output[first.output.index("5. open data") :]
        assert "legal_entity.enterprises_open v1" in opened and "licence: CC-BY-4.0" in opened
        row = next(line for line in opened.splitlines() if "│ legal_representative " in line)
        assert "mask" in row and re.search(r"\w+ → \w\*\*", row), row
        row = next(line for line in opened.splitlines() if "legal_representative_id" in line)
        assert "drop" in row and re.search(r"\d{17}[\dX] → —", row), row
        # The DCAT-AP export, as a harvester parses it: the three open resources.
        import rdflib

        graph = rdflib.Graph().parse(reports / "open" / "catalog.jsonld", format="json-ld")
        dcat = rdflib.Namespace("http://www.w3.org/ns/dcat#")
        assert len(set(graph.subjects(rdflib.RDF.type, dcat.Dataset))) == 3
        again = runner.invoke(app_(), ["demo", "--rows", "1000"])
        assert again.exit_code == 0, again.output
        assert "already ingested" in again.output
        assert "unchanged" in again.output and "v2" not in again.output
        assert "No new version of legal_entity.enterprises was published, so no notice" in (
            again.output
        )
    finally:
        settings_module.get_settings.cache_clear()
