"""Bronze → quarantine: apply the catalogue's row rules to each new extract.

Records that break a rule go to `<theme>.<resource>_quarantine` with every rule they broke
and why; the write replaces that extract's quarantine rows, so a re-run adds nothing.
Then the extract suite measures the extract as a whole (`jobs.quality.check_extract`): an
error-level failure marks the extract `held`, so none of its records reach silver.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.statements import replace_where, sql_literal
from govlake.lake.tables import TableSet, register
from govlake.transforms.rules import validate
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
        records = spark.table(tables.bronze.sql_name).where(F.col("_extract_id") == ident)
        checked = validate(records, resource, extract.provider, as_of=interval.end.date())
        failed = checked.where(F.col("_rules") != "").withColumn(
            "_quarantined_at", F.lit(interval.end_naive_utc).cast("timestamp")
        )
        replace_where(failed, tables.quarantine, f"_extract_id = {sql_literal(ident)}")
        quarantined = (
            spark.table(tables.quarantine.sql_name).where(F.col("_extract_id") == ident).count()
        )
        verdict = quality.check_extract(
            spark,
            resource=resource,
            extract=extract,
            records=records,
            interval=interval,
            settings=settings,
        )
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
