"""Quarantine-filtered bronze → silver, one data one source (一数一源).

Each extract updates only the items its provider is the authority for: a `MERGE` on the key
that touches a row only when one of those items changed. Items a provider sends but does not
govern never overwrite: where they disagree with the authority's value they become rows of
`<theme>.<resource>_crosscheck` (多元校核).
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.statements import merge, merges_marked, sql_literal
from govlake.lake.tables import Table, TableSet, register
from govlake.transforms.rules import typed
from jobs import registry


def _q(name: str) -> str:
    return "`" + name + "`"


def accepted_records(spark: SparkSession, tables: TableSet, extract_id: str) -> DataFrame:
    """The extract's records that are not in quarantine."""
    records = spark.table(tables.bronze.sql_name).where(
        (F.col("_extract_id") == extract_id) & F.col("_parse_error").isNull()
    )
    rejected = (
        spark.table(tables.quarantine.sql_name)
        .where(F.col("_extract_id") == extract_id)
        .select("_row")
    )
    return records.join(rejected, on="_row", how="left_anti")


def merge_statement(
    resource: Resource, silver: Table, source: str, items: list[str], *, extract_id: str
) -> str:
    """MERGE that writes `items` from `source` (the records of extract `extract_id`) and leaves
    every other item alone; a matched row is touched only if one of `items` differs
    (null-safe), so an unchanged re-send is a no-op. The ON clause names the extract (true of
    every source row) so that the Delta commit says which extract it merged."""
    on = " AND ".join(
        [f"t.{_q(k)} = s.{_q(k)}" for k in resource.key] + [f"s._extract_id = {_mark(extract_id)}"]
    )
    changed = " AND ".join(f"t.{_q(i)} <=> s.{_q(i)}" for i in items)
    lineage = ["_extract_id", "_updated_at"]
    assignments = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in [*items, *lineage])
    inserted = [*resource.key, *items, *lineage]
    return (
        f"MERGE INTO {silver.sql_name} t USING {source} s ON {on} "
        f"WHEN MATCHED AND NOT ({changed}) THEN UPDATE SET {assignments} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(map(_q, inserted))}) "
        f"VALUES ({', '.join('s.' + _q(c) for c in inserted)})"
    )


def _mark(extract_id: str) -> str:
    """How a MERGE's condition, and so its Delta commit, names the extract it applies."""
    return sql_literal(extract_id)


def crosscheck_statement(resource: Resource, crosscheck: Table, source: str, *,
                         extract_id: str) -> str:  # fmt: skip
    """MERGE of one extract's findings (`source`) into `<resource>_crosscheck`: a finding whose
    values are unchanged is left alone. Its condition names the extract, as `merge_statement`'s
    does."""
    keys = [*resource.key, "item", "provider"]
    on = " AND ".join(
        [f"t.{_q(c)} = s.{_q(c)}" for c in keys] + [f"s.extract_id = {_mark(extract_id)}"]
    )
    columns = crosscheck.column_names
    return (
        f"MERGE INTO {crosscheck.sql_name} t USING {source} s ON {on} "
        f"WHEN MATCHED AND NOT (t.authority_value <=> s.authority_value "
        f"AND t.provider_value <=> s.provider_value) THEN UPDATE SET "
        f"authority_value = s.authority_value, provider_value = s.provider_value, "
        f"extract_id = s.extract_id, detected_at = s.detected_at, status = s.status "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(map(_q, columns))}) "
        f"VALUES ({', '.join('s.' + _q(c) for c in columns)})"
    )


def crosscheck_findings(
    resource: Resource,
    provider: str,
    records: DataFrame,
    silver: DataFrame,
    *,
    extract_id: str,
    detected_at: object,
) -> DataFrame | None:
    """One row per key and item where `provider`'s value disagrees with the authority's.
    Pure: `records` are typed extract records, `silver` the current state."""
    items = resource.crosscheck_items(provider)
    if not items:
        return None
    key = resource.key
    current = silver.select(*key, *[F.col(i).alias(f"__auth_{i}") for i in items])
    joined = records.select(*key, *items).join(current, on=key, how="inner")
    parts = [
        joined.where(
            F.col(i).isNotNull()
            & F.col(f"__auth_{i}").isNotNull()
            & ~F.col(i).eqNullSafe(F.col(f"__auth_{i}"))
        ).select(
            *key,
            F.lit(i).alias("item"),
            F.lit(resource.item(i).authority).alias("authority"),
            F.col(f"__auth_{i}").cast("string").alias("authority_value"),
            F.lit(provider).alias("provider"),
            F.col(i).cast("string").alias("provider_value"),
            F.lit(extract_id).alias("extract_id"),
            F.lit(detected_at).cast("timestamp").alias("detected_at"),
            F.lit("open").alias("status"),
        )
        for i in items
    ]
    return reduce(DataFrame.unionByName, parts)


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
    for table in (tables.bronze, tables.quarantine, tables.silver, tables.crosscheck):
        register(spark, table)
    register_table = registry.extracts_table(spark, settings)
    waiting = registry.pending(spark, register_table, resource, "validated")
    # Phase 1: every extract writes the items it governs. Phase 2: with the authorities'
    # values in place, compare the copies other sources hold.
    merged = _merge_extracts(spark, resource, tables, waiting, interval=interval)
    findings = _crosscheck_extracts(spark, resource, tables, waiting, interval=interval)
    for extract in waiting:
        ident = extract.extract_id
        registry.update(
            spark,
            register_table,
            ident,
            status="merged",
            rows_merged=merged[ident],
            crosscheck_findings=findings[ident],
        )
        counts.rows_merged += merged[ident]
        counts.crosscheck_findings += findings[ident]
    return counts


def _merge_extracts(spark: SparkSession, resource: Resource, tables: TableSet,
                    waiting: list[Row], *, interval: Interval) -> dict[str, int]:  # fmt: skip
    """MERGE each waiting extract's authoritative items into silver; rows merged per extract.

    A run that stopped between its MERGE commits and the register update left its extracts
    `validated`. They are not merged again: the commits that merged them (found by the
    extract id their condition names) give the figures an uninterrupted run records. Merging
    again would find nothing to change and record 0, or put an earlier extract's values back
    over a later one's until that one is merged again. The same holds for the findings.
    """
    merged_before = merges_marked(tables.silver, [_mark(e.extract_id) for e in waiting])
    stamp = F.lit(interval.end_naive_utc).cast("timestamp")
    merged: dict[str, int] = {}
    for extract in waiting:
        items = resource.authoritative_items(extract.provider)
        if not items:
            merged[extract.extract_id] = 0
            continue
        if _mark(extract.extract_id) in merged_before:
            merged[extract.extract_id] = merged_before[_mark(extract.extract_id)]
            continue
        records = accepted_records(spark, tables, extract.extract_id)
        source = typed(records, resource, [*resource.key, *items]).select(
            *resource.key,
            *items,
            F.lit(extract.extract_id).alias("_extract_id"),
            stamp.alias("_updated_at"),
        )
        view = f"merge_source_{resource.theme}_{resource.name}"
        source.createOrReplaceTempView(view)
        merged[extract.extract_id] = merge(
            spark,
            tables.silver,
            merge_statement(resource, tables.silver, view, items, extract_id=extract.extract_id),
        )
        spark.catalog.dropTempView(view)
    return merged


def _crosscheck_extracts(spark: SparkSession, resource: Resource, tables: TableSet,
                         waiting: list[Row], *, interval: Interval) -> dict[str, int]:  # fmt: skip
    """MERGE each waiting extract's disagreements with silver into the cross-check table;
    findings per extract."""
    found_before = merges_marked(tables.crosscheck, [_mark(e.extract_id) for e in waiting])
    findings: dict[str, int] = {}
    silver = spark.table(tables.silver.sql_name)
    for extract in waiting:
        if _mark(extract.extract_id) in found_before:
            findings[extract.extract_id] = found_before[_mark(extract.extract_id)]
            continue
        records = accepted_records(spark, tables, extract.extract_id)
        items = [*resource.key, *resource.crosscheck_items(extract.provider)]
        found = crosscheck_findings(
            resource,
            extract.provider,
            typed(records, resource, items),
            silver,
            extract_id=extract.extract_id,
            detected_at=interval.end_naive_utc,
        )
        if found is None:
            findings[extract.extract_id] = 0
            continue
        view = f"crosscheck_source_{resource.theme}_{resource.name}"
        found.createOrReplaceTempView(view)
        findings[extract.extract_id] = merge(
            spark,
            tables.crosscheck,
            crosscheck_statement(resource, tables.crosscheck, view, extract_id=extract.extract_id),
        )
        spark.catalog.dropTempView(view)
    return findings
