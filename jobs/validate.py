"""Bronze → quarantine: apply the catalogue's row rules to each new extract.

Each rule is evaluated once per record (`govlake.transforms.rules.evaluate`) and the
results are written once, beside the warehouse's tables (`<warehouse>/_staging/`), because
the engine recomputes a DataFrame each time it is used. From them, records that break a rule
go to `<theme>.<resource>_quarantine` with every rule they broke and why (the write replaces
that extract's quarantine rows, so a re-run adds nothing), and the extract suite measures the
extract as a whole (`jobs.quality.check_extract`): an error-level failure marks the extract
`held`, so none of its records reach silver. The results are removed once both have read them.
"""

from __future__ import annotations

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import Resource
from govlake.core.location import Location
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.statements import replace_where, sql_literal
from govlake.lake.tables import TableSet, register
from govlake.transforms.rules import evaluate, judge
from jobs import quality, registry


def run(
    spark: SparkSession,
    *,
    resource: Resource,
    interval: Interval,
    settings: Settings,
    counts: StageCounts | None = None,
) -> StageCounts:
    counts = counts or StageCounts(resource.qualified_name)
    tables = TableSet(resource, settings.warehouse_location)
    register(spark, tables.bronze)
    register(spark, tables.quarantine)
    register_table = registry.extracts_table(spark, settings)
    for extract in registry.pending(spark, register_table, resource, "bronze"):
        ident = extract.extract_id
        results = rule_results_location(settings, resource, ident)
        try:
            quarantined, verdict = _validate(spark, resource, tables, extract, results,
                                             interval=interval, settings=settings)  # fmt: skip
        finally:
            results.delete()
        registry.update(
            spark,
            register_table,
            ident,
            status="held" if verdict.held else "validated",
            rows_quarantined=quarantined,
            reason=f"quality: {verdict.reason}" if verdict.held else None,
            completed_at=interval.end_naive_utc if verdict.held else None,
        )
        counts.rows_quarantined += quarantined
        counts.quality[ident] = verdict.outcome
        if verdict.held:
            counts.held.append(f"{extract.file_name}: {verdict.reason}")
    return counts


def rule_results_location(settings: Settings, resource: Resource, extract_id: str) -> Location:
    """Where an extract's rule results wait while it is validated."""
    return settings.warehouse_location.child(
        "_staging", "rule_results", resource.qualified_name, extract_id.replace("/", "__")
    )


def _validate(
    spark: SparkSession,
    resource: Resource,
    tables: TableSet,
    extract: Row,
    results: Location,
    *,
    interval: Interval,
    settings: Settings,
) -> tuple[int, quality.Verdict]:
    """Evaluate the extract's rules into `results`, quarantine the records that break one and
    run the extract suite on the results; the rows quarantined and the suite's verdict."""
    ident, as_of = extract.extract_id, interval.end.date()
    records = spark.table(tables.bronze.sql_name).where(F.col("_extract_id") == ident)
    evaluate(records, resource, extract.provider, as_of=as_of).write.mode("overwrite").parquet(
        results.uri
    )
    checked = spark.read.parquet(results.uri)
    failed = judge(checked, resource, extract.provider, as_of=as_of, broken_only=True).withColumn(
        "_quarantined_at", F.lit(interval.end_naive_utc).cast("timestamp")
    )
    replace_where(failed, tables.quarantine, f"_extract_id = {sql_literal(ident)}")
    quarantined = (
        spark.table(tables.quarantine.sql_name).where(F.col("_extract_id") == ident).count()
    )
    verdict = quality.check_extract(
        spark, resource=resource, extract=extract, records=checked, interval=interval,
        settings=settings,
    )  # fmt: skip
    return quarantined, verdict
