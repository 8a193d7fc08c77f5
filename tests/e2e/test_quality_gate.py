"""The quality gate in the pipeline: error-level failures hold data back, consumers keep the
previous version, and every result and reason is kept."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from govlake_tools.generate import generate
from pyspark.sql import SparkSession

from govlake.core.catalog import Catalog, Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.statements import version
from govlake.lake.tables import TableSet
from govlake_app import pipeline as ingest

pytestmark = pytest.mark.slow

DAY1 = datetime.date(2026, 11, 19)
DAY2 = datetime.date(2026, 11, 20)


def _ingest(
    spark: SparkSession, resource: Resource, settings: Settings, day: datetime.date
) -> StageCounts:
    end = datetime.datetime.combine(
        day + datetime.timedelta(days=1), datetime.time(2), datetime.UTC
    )
    return ingest.run(spark, resource=resource, interval=Interval.ending(end), settings=settings)


def _published_versions(resource: Resource, settings: Settings) -> dict[str, int]:
    tables = TableSet(resource, settings.warehouse_location)
    return {c: version(tables.published(c)) for c in resource.sharing_classes}


def test_extract_breaking_an_error_rule_is_held_and_consumers_keep_the_previous_version(
    spark: SparkSession, catalog: Catalog, settings: Settings
) -> None:
    residents = catalog.get("population.residents")
    generate(catalog, settings.landing_location, rows=2000, seed=3, defects=0.0,
             as_of=DAY1, resources=[residents.qualified_name])  # fmt: skip
    first = _ingest(spark, residents, settings, DAY1)
    assert first.published and not first.held
    before = _published_versions(residents, settings)
    published_rows = spark.table("population.residents_unconditional").count()

    # A botched export: about a third of the rows carry a defect.
    generate(catalog, settings.landing_location, rows=2000, seed=3, defects=0.35,
             as_of=DAY2, resources=[residents.qualified_name])  # fmt: skip
    second = _ingest(spark, residents, settings, DAY2)
    assert not second.published
    assert _published_versions(residents, settings) == before
    assert spark.table("population.residents_unconditional").count() == published_rows

    held = spark.sql(
        "SELECT extract_id, provider, reason FROM ops.extracts WHERE status = 'held'"
    ).collect()
    assert "public_security" in {h.provider for h in held}
    reason = next(h.reason for h in held if h.provider == "public_security")
    assert reason.startswith("quality: ") and "(validity, error)" in reason
    assert "expected at least 98.00% of rows" in reason
    # None of a held extract's records reached silver, but its quarantine rows are kept.
    ids = ", ".join(f"'{h.extract_id}'" for h in held)
    assert spark.sql(f"SELECT count(*) FROM population.residents WHERE _extract_id IN ({ids})"
                     ).first()[0] == 0  # fmt: skip
    assert (
        spark.sql(
            f"SELECT count(*) FROM population.residents_quarantine WHERE _extract_id IN ({ids})"
        ).first()[0]
        > 0
    )
    runs = spark.sql(
        "SELECT outcome, failed_errors, reason FROM ops.quality_runs "
        "WHERE scope = 'extract' AND provider = 'public_security' ORDER BY checked_at"
    ).collect()
    assert [r.outcome for r in runs] == ["passed", "held"]
    assert runs[1].failed_errors > 0 and runs[1].reason == reason.removeprefix("quality: ")
    failures = spark.sql(
        "SELECT expectation, observed_ratio, sample FROM ops.quality_results r "
        "JOIN ops.quality_runs q USING (run_id) WHERE q.outcome = 'held' "
        "AND r.severity = 'error' AND NOT r.success"
    ).collect()
    # every error threshold here is 98 % or 99 % of rows
    assert failures and all(f.observed_ratio < 0.99 for f in failures if f.observed_ratio)
    # The same file sent again is skipped, not judged again; a corrected one goes through.
    generate(catalog, settings.landing_location, rows=2000, seed=3, defects=0.35,
             as_of=DAY2, resources=[residents.qualified_name])  # fmt: skip
    again = _ingest(spark, residents, settings, DAY2)
    assert len(again.skipped_files) == 3 and not again.extracts
    generate(catalog, settings.landing_location, rows=2000, seed=3, defects=0.001,
             as_of=DAY2, resources=[residents.qualified_name])  # fmt: skip
    corrected = _ingest(spark, residents, settings, DAY2)
    assert corrected.published and not corrected.held


def test_publication_breaking_an_error_rule_is_held_with_its_reason(
    spark: SparkSession, catalog: Catalog, settings: Settings, tmp_path: Path
) -> None:
    strict = catalog.get("population.residents")
    policy = strict.quality.model_copy(
        update={"consistency": strict.quality.consistency.model_copy(
            update={"max_share": 0.0, "severity": "error"})}
    )  # fmt: skip
    residents = strict.model_copy(update={"quality": policy})
    made = generate(catalog, settings.landing_location, rows=2000, seed=5, defects=0.0,
                    as_of=DAY1, resources=[residents.qualified_name])  # fmt: skip
    # Day 1: only the identity authority delivers, so nothing is disputed.
    for extract in made:
        if extract.provider != "public_security":
            Path(extract.location.uri).unlink()
    assert _ingest(spark, residents, settings, DAY1).published
    before = _published_versions(residents, settings)

    # Day 2: civil affairs and human resources deliver their copies, which disagree on some
    # names; with max_share 0 at error level the publication is held.
    generate(catalog, settings.landing_location, rows=2000, seed=5, defects=0.0,
             as_of=DAY2, resources=[residents.qualified_name])  # fmt: skip
    second = _ingest(spark, residents, settings, DAY2)
    assert second.crosscheck_findings > 0
    assert not second.published
    assert any("crosscheck.share (consistency, error)" in h for h in second.held)
    assert _published_versions(residents, settings) == before
    run = spark.sql(
        "SELECT outcome, silver_version, reason FROM ops.quality_runs "
        "WHERE scope = 'publication' ORDER BY checked_at DESC LIMIT 1"
    ).first()
    assert run is not None and run.outcome == "held"
    assert run.silver_version == version(TableSet(residents, settings.warehouse_location).silver)
    assert "at most 0.00% of rows disputed" in run.reason
    assert spark.sql("SELECT count(*) FROM ops.publications").first()[0] == len(before)

    # Nothing new arrives: the same silver version is not judged again, nothing is published.
    third = _ingest(spark, residents, settings, DAY2)
    assert not third.published
    assert (
        spark.sql("SELECT count(*) FROM ops.quality_runs WHERE scope = 'publication'").first()[0]
        == 2
    )
    assert _published_versions(residents, settings) == before
