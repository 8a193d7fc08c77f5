"""Quarantine-filtered bronze → silver, one data one source (一数一源).

Each extract updates only the items its provider is the authority for: a `MERGE` on the key
that touches a row only when one of those items changed. Items a provider sends but does not
govern never overwrite: where they disagree with the authority's value they become rows of
`<theme>.<resource>_crosscheck` (多元校核).

Removals (the catalogue's `deliveries`): a record the responsible provider's increment marks
removed, or that its full extract no longer carries, leaves silver in the same MERGE; its
history stays in silver's earlier versions and in bronze. A full extract removes only records
the provider has delivered before (a record another source knows of waits for it) and only
when every record of the file could be read: a key the engine could not read might be one of
those that seem missing. Silver carries deletion vectors, so the MERGE costs the change.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.statements import Merged, merge, merges_marked, sql_literal
from govlake.lake.tables import Table, TableSet, register
from govlake.transforms.rules import removal, typed
from jobs import registry


def _q(name: str) -> str:
    return "`" + name + "`"


#: Columns of a MERGE source beside the items: apply the record (it is not in quarantine),
#: and remove it (its operation says so).
APPLY, REMOVE = "_apply", "_remove"


def extract_records(spark: SparkSession, tables: TableSet, extract_id: str) -> DataFrame:
    """The records of one extract the parser could read, with `_apply`: false for those in
    quarantine."""
    records = spark.table(tables.bronze.sql_name).where(
        (F.col("_extract_id") == extract_id) & F.col("_parse_error").isNull()
    )
    rejected = (
        spark.table(tables.quarantine.sql_name)
        .where(F.col("_extract_id") == extract_id)
        .select("_row", F.lit(False).alias(APPLY))
    )
    return records.join(rejected, on="_row", how="left").withColumn(
        APPLY, F.coalesce(F.col(APPLY), F.lit(True))
    )


def accepted_records(spark: SparkSession, tables: TableSet, extract_id: str) -> DataFrame:
    """The extract's records that are not in quarantine."""
    return extract_records(spark, tables, extract_id).where(F.col(APPLY)).drop(APPLY)


def merge_source(
    resource: Resource, records: DataFrame, provider: str, items: list[str], *, full: bool
) -> DataFrame:
    """What `merge_statement` reads: one row per key applied (typed `items`, `_remove` from
    the record's operation), and for a full extract also one row per key held back in
    quarantine (`_apply` false), so that it does not look missing."""
    source = typed(records, resource, [*resource.key, *items]).select(
        *resource.key, *items, F.col(APPLY), removal(resource, provider).alias(REMOVE)
    )
    applied = source.where(F.col(APPLY))
    if not full:
        return applied
    held = (
        source.where(~F.col(APPLY))
        .select(*resource.key)
        .distinct()
        .join(applied.select(*resource.key), on=resource.key, how="left_anti")
        .select(
            *resource.key,
            *[F.lit(None).cast(resource.item(i).type).alias(i) for i in items],
            F.lit(False).alias(APPLY),
            F.lit(False).alias(REMOVE),
        )
    )
    return applied.unionByName(held)


def merge_statement(
    resource: Resource,
    silver: Table,
    source: str,
    items: list[str],
    *,
    extract_id: str,
    removes_missing: bool = False,
) -> str:
    """MERGE that writes `items` from `source` (`merge_source` of extract `extract_id`) and
    leaves every other item alone; a matched row is touched only if one of `items` differs
    (null-safe), so an unchanged re-send is a no-op. A source row marked `_remove` deletes
    its key (a key silver does not hold: nothing). `removes_missing` (a full extract of the
    responsible provider): a row the source does not carry and whose `items` the provider
    has delivered before is deleted. The ON clause names the extract (true of every source
    row) so that the Delta commit says which extract it merged."""
    on = " AND ".join(
        [f"t.{_q(k)} = s.{_q(k)}" for k in resource.key] + [f"s._extract_id = {_mark(extract_id)}"]
    )
    changed = " AND ".join(f"t.{_q(i)} <=> s.{_q(i)}" for i in items)
    lineage = ["_extract_id", "_updated_at"]
    assignments = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in [*items, *lineage])
    inserted = [*resource.key, *items, *lineage]
    statement = (
        f"MERGE INTO {silver.sql_name} t USING {source} s ON {on} "
        f"WHEN MATCHED AND s.{APPLY} AND s.{REMOVE} THEN DELETE "
        f"WHEN MATCHED AND s.{APPLY} AND NOT ({changed}) THEN UPDATE SET {assignments} "
        f"WHEN NOT MATCHED AND s.{APPLY} AND NOT s.{REMOVE} "
        f"THEN INSERT ({', '.join(map(_q, inserted))}) "
        f"VALUES ({', '.join('s.' + _q(c) for c in inserted)})"
    )
    if removes_missing:
        delivered = " OR ".join(f"t.{_q(i)} IS NOT NULL" for i in items)
        statement += f" WHEN NOT MATCHED BY SOURCE AND ({delivered}) THEN DELETE"
    return statement


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
            rows_merged=merged[ident].changed,
            rows_removed=merged[ident].deleted,
            crosscheck_findings=findings[ident],
        )
        counts.rows_merged += merged[ident].changed
        counts.rows_removed += merged[ident].deleted
        counts.crosscheck_findings += findings[ident]
    return counts


def _merge_extracts(spark: SparkSession, resource: Resource, tables: TableSet,
                    waiting: list[Row], *, interval: Interval) -> dict[str, Merged]:  # fmt: skip
    """MERGE each waiting extract's authoritative items (and removals) into silver; what
    each extract's MERGE did.

    A run that stopped between its MERGE commits and the register update left its extracts
    `validated`. They are not merged again: the commits that merged them (found by the
    extract id their condition names) give the figures an uninterrupted run records. Merging
    again would find nothing to change and record 0, or put an earlier extract's values back
    over a later one's until that one is merged again. The same holds for the findings.
    """
    merged_before = merges_marked(tables.silver, [_mark(e.extract_id) for e in waiting])
    stamp = F.lit(interval.end_naive_utc).cast("timestamp")
    merged: dict[str, Merged] = {}
    for extract in waiting:
        ident = extract.extract_id
        items = resource.authoritative_items(extract.provider)
        if not items:
            merged[ident] = Merged()
            continue
        if _mark(ident) in merged_before:
            merged[ident] = merged_before[_mark(ident)]
            continue
        full = resource.delivery(extract.provider).kind == "full"
        # A key the parser could not read might be one that seems missing: remove nothing.
        removes_missing = full and not (extract.rows_malformed or 0)
        records = extract_records(spark, tables, ident)
        source = merge_source(resource, records, extract.provider, items, full=removes_missing)
        source = source.select("*", F.lit(ident).alias("_extract_id"), stamp.alias("_updated_at"))
        view = f"merge_source_{resource.theme}_{resource.name}"
        source.createOrReplaceTempView(view)
        statement = merge_statement(resource, tables.silver, view, items, extract_id=ident,
                                    removes_missing=removes_missing)  # fmt: skip
        merged[ident] = merge(spark, tables.silver, statement)
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
            findings[extract.extract_id] = found_before[_mark(extract.extract_id)].changed
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
        ).changed
        spark.catalog.dropTempView(view)
    return findings
