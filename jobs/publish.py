"""Silver → published tables, one per sharing class, each publication one Delta version.

`<theme>.<resource>_unconditional` carries the key and the unconditional items;
`<theme>.<resource>_conditional` the key and every shareable item. Only rows whose required
items are all present are published. Nothing is published when silver has not changed since
the last publication, so a re-run makes no new version.

Before anything is written the publication suite runs (`jobs.quality.check_publication`):
an error-level failure holds the publication back, the published tables keep their current
version, and the reason is kept in `ops.quality_runs`. The same silver version is not
judged twice; a new extract makes a new silver version and a new attempt.
Each publication is recorded in `ops.publications`, and that is all this stage does: what
follows a publication (its journal entry, the verification fixes it carries, the notices to
subscribers) is the pipeline's next step, which reads these records.

An open resource (开放属性 open) also overwrites its open variant `<theme>.<resource>_open`
from the same silver rows, de-identified by `govlake.transforms.opendata`: one more Delta
version per publication, recorded with sharing class `open`. The table carries its licence and usage
notice as its description and properties (`govlake.open.*`); when the catalogue's terms
change they are rewritten with delta-rs just before the next publication (a metadata-only
version). A resource opened after its silver was last published gets its open variant on
the next run, without new versions of the other tables.
"""

from __future__ import annotations

from datetime import datetime
from functools import reduce
from typing import Any

from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.statements import append, overwrite, sql_literal, version
from govlake.lake.tables import DELETION_VECTORS, Table, TableSet, ops_tables, register
from govlake.transforms import opendata
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
    silver_version = _current_versions(spark, resource, tables, counts)
    register_table = registry.extracts_table(spark, settings)
    waiting = registry.pending(spark, register_table, resource, "merged")
    latest = registry.latest_publication(spark, settings, resource)
    at = interval.end_naive_utc
    if latest is not None and latest.silver_version == silver_version:
        # Silver is what was last published: mark the extracts done, make no new version.
        if resource.is_open and not _open_published(spark, resource, silver_version, settings):
            # Opened since: the open variant starts from the silver published (and checked)
            # then; the other tables keep their versions.
            _publish_late_open(spark, resource, tables, silver_version=silver_version,
                               sources=latest.source_extracts or "", settings=settings, at=at,
                               counts=counts)  # fmt: skip
    else:
        silver = _publishable(spark, resource, tables)
        rows = _passing_rows(spark, resource, silver, silver_version=silver_version,
                             interval=interval, settings=settings, counts=counts)  # fmt: skip
        if rows is None:
            # Consumers keep the version they have; the extracts stay merged and go out with
            # the next publication that passes.
            return counts
        sources = ",".join(extract.extract_id for extract in waiting)
        _publish(spark, resource, tables, silver, rows=rows, silver_version=silver_version,
                 sources=sources, settings=settings, at=at, counts=counts)  # fmt: skip
    for extract in waiting:
        registry.update(spark, register_table, extract.extract_id, status="published",
                        completed_at=at)  # fmt: skip
    return counts


def _current_versions(
    spark: SparkSession, resource: Resource, tables: TableSet, counts: StageCounts
) -> int:
    """Register silver and the published tables (the open one created with its terms), note
    their current versions in `counts`; silver's version."""
    register(spark, tables.silver)
    silver_version = version(tables.silver)
    counts.silver_version = silver_version
    for sharing_class in resource.sharing_classes:
        table = tables.published(sharing_class)
        register(spark, table)
        counts.published_versions[sharing_class] = version(table)
    if resource.is_open:
        _create_open_table(spark, resource, tables.open)
        counts.published_versions["open"] = version(tables.open)
    return silver_version


def _passing_rows(
    spark: SparkSession,
    resource: Resource,
    silver: DataFrame,
    *,
    silver_version: int,
    interval: Interval,
    settings: Settings,
    counts: StageCounts,
) -> int | None:
    """The number of rows to publish, or None when the publication suite holds this silver
    version back (now, or already in an earlier run: it is not judged twice)."""
    if quality.last_held_silver_version(spark, settings, resource) == silver_version:
        counts.held.append(f"{resource.qualified_name}: silver v{silver_version} already held")
        return None
    rows = silver.count()
    verdict = quality.check_publication(
        spark,
        resource=resource,
        candidate=silver.select(*[item.name for item in resource.items]),
        rows=rows,
        silver_version=silver_version,
        interval=interval,
        settings=settings,
    )
    counts.quality[f"silver-v{silver_version}"] = verdict.outcome
    if verdict.held:
        counts.held.append(f"{resource.qualified_name} publication: {verdict.reason}")
        return None
    return rows


def _publish(spark: SparkSession, resource: Resource, tables: TableSet, silver: DataFrame, *,
             rows: int, silver_version: int, sources: str, settings: Settings, at: datetime,
             counts: StageCounts) -> None:  # fmt: skip
    """Overwrite every published table (and the open variant) with `silver`, one version
    each, and record the versions in `ops.publications`."""
    records = []
    for sharing_class in resource.sharing_classes:
        table = tables.published(sharing_class)
        overwrite(silver.select(*resource.class_items(sharing_class)), table)
        records.append(_record(resource, sharing_class, table, at, rows, silver_version, sources))
        counts.published_versions[sharing_class] = records[-1][3]
    if resource.is_open:
        records.append(_publish_open(spark, resource, tables.open, silver, rows=rows,
                                     silver_version=silver_version, sources=sources,
                                     at=at))  # fmt: skip
        counts.published_versions["open"] = records[-1][3]
    if records:
        _append_records(spark, settings, records)
        counts.published = True
        counts.rows_published = rows


def _publish_late_open(spark: SparkSession, resource: Resource, tables: TableSet, *,
                       silver_version: int, sources: str, settings: Settings, at: datetime,
                       counts: StageCounts) -> None:  # fmt: skip
    """The open variant of a resource opened after its silver was published, and its record."""
    silver = _publishable(spark, resource, tables)
    record = _publish_open(spark, resource, tables.open, silver, rows=silver.count(),
                           silver_version=silver_version, sources=sources, at=at)  # fmt: skip
    _append_records(spark, settings, [record])
    counts.published_versions["open"] = record[3]


def _append_records(
    spark: SparkSession, settings: Settings, records: list[tuple[Any, ...]]
) -> None:
    """Record published versions in `ops.publications`."""
    _, publications = ops_tables(settings.warehouse_location)
    append(spark.createDataFrame(records, publications.ddl_columns()), publications)


def _record(resource: Resource, sharing_class: str, table: Table, at: datetime, rows: int,
            silver_version: int, sources: str) -> tuple[Any, ...]:  # fmt: skip
    """The `ops.publications` row of `table`'s current version."""
    return (resource.qualified_name, sharing_class, table.qualified_name, version(table), at,
            rows, silver_version, sources)  # fmt: skip


def _publishable(spark: SparkSession, resource: Resource, tables: TableSet) -> DataFrame:
    """Silver rows that may be published."""
    # A row is published once its required items are in, e.g. a person civil affairs knows of
    # waits in silver until the identity authority's record arrives.
    required = [F.col(item.name).isNotNull() for item in resource.items if item.required]
    return spark.table(tables.silver.sql_name).where(reduce(lambda a, b: a & b, required))


# -- the open variant (开放数据) --------------------------------------------------------------
def _create_open_table(spark: SparkSession, resource: Resource, table: Table) -> None:
    """Register the open table; a new one is created with its licence and usage notice as
    description and properties, so that even its first version carries them."""
    if table.location.is_delta_table():
        register(spark, table)
        return
    properties = ", ".join(
        f"{sql_literal(key)} = {sql_literal(value)}"
        for key, value in opendata.open_properties(resource).items()
    )
    description = opendata.open_description(resource, table.grain)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{table.database}`")
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table.sql_name} ({table.ddl_columns()}) USING delta "
        f"LOCATION {sql_literal(table.location.uri)} COMMENT {sql_literal(description)} "
        f"TBLPROPERTIES ({properties}, {DELETION_VECTORS})"
    )


def _apply_open_terms(resource: Resource, table: Table) -> None:
    """Rewrite the open table's description and properties with delta-rs when the catalogue's
    terms differ from them (Sail has no ALTER TABLE … SET TBLPROPERTIES)."""
    delta = DeltaTable(table.location.uri, storage_options=table.location.storage_options())
    metadata = delta.metadata()
    properties = opendata.open_properties(resource)
    if any(metadata.configuration.get(key) != value for key, value in properties.items()):
        delta.alter.set_table_properties(properties, raise_if_not_exists=False)
    description = opendata.open_description(resource, table.grain)
    if metadata.description != description:
        delta.alter.set_table_description(description)


def _publish_open(spark: SparkSession, resource: Resource, table: Table, silver: DataFrame, *,
                  rows: int, silver_version: int, sources: str,
                  at: datetime) -> tuple[Any, ...]:  # fmt: skip
    """Overwrite the open table with the de-identified `silver` rows; its publication record."""
    _apply_open_terms(resource, table)
    overwrite(opendata.open_variant(silver, resource), table)
    return _record(resource, "open", table, at, rows, silver_version, sources)


def _open_published(spark: SparkSession, resource: Resource, silver_version: int,
                    settings: Settings) -> bool:  # fmt: skip
    """Whether `ops.publications` has an open version of `resource` from this silver version."""
    _, publications = ops_tables(settings.warehouse_location)
    return bool(
        spark.sql(
            f"SELECT 1 FROM {publications.sql_name} "
            f"WHERE resource = {sql_literal(resource.qualified_name)} "
            f"AND sharing_class = 'open' AND silver_version = {silver_version} LIMIT 1"
        ).collect()
    )
