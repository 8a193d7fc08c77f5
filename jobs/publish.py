"""Silver → published tables, one per sharing class, each publication one Delta version.

`<theme>.<resource>_unconditional` carries the key and the unconditional items;
`<theme>.<resource>_conditional` the key and every shareable item. Only rows whose required
items are all present are published. Nothing is published when silver has not changed since
the last publication, so a re-run makes no new version.

Before anything is written the publication suite runs (`jobs.quality.check_publication`):
an error-level failure holds the publication back, the published tables keep their current
version, and the reason is kept in `ops.quality_runs`. The same silver version is not
judged twice; a new extract makes a new silver version and a new attempt.
Each publication is recorded in `ops.publications`.
"""

from __future__ import annotations

from datetime import datetime
from functools import reduce
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from govlake.catalog import Resource
from govlake.lake import append, overwrite, version
from govlake.runs import Interval, StageCounts
from govlake.settings import Settings
from govlake.tables import TableSet, ops_tables, register
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
    register(spark, tables.silver)
    _, publications = ops_tables(settings.warehouse_location)
    register_table = registry.extracts_table(spark, settings)
    silver_version = version(tables.silver)
    counts.silver_version = silver_version
    for sharing_class in resource.sharing_classes:
        table = tables.published(sharing_class)
        register(spark, table)
        counts.published_versions[sharing_class] = version(table)
    waiting = registry.pending(spark, register_table, resource, "merged")
    latest = registry.latest_publication(spark, settings, resource)
    if latest is not None and latest.silver_version == silver_version:
        # Silver is what was last published: mark the extracts done, make no new version.
        for extract in waiting:
            registry.update(spark, register_table, extract.extract_id, status="published")
        return counts

    # A row is published once its required items are in, e.g. a person civil affairs knows of
    # waits in silver until the identity authority's record arrives.
    required = [F.col(item.name).isNotNull() for item in resource.items if item.required]
    silver = spark.table(tables.silver.sql_name).where(reduce(lambda a, b: a & b, required))
    if quality.last_held_silver_version(spark, settings, resource) == silver_version:
        counts.held.append(f"{resource.qualified_name}: silver v{silver_version} already held")
        return counts
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
        # Consumers keep the version they have; the extracts stay merged and go out with
        # the next publication that passes.
        counts.held.append(f"{resource.qualified_name} publication: {verdict.reason}")
        return counts
    sources = ",".join(extract.extract_id for extract in waiting)
    records = []
    for sharing_class in resource.sharing_classes:
        table = tables.published(sharing_class)
        overwrite(silver.select(*resource.class_items(sharing_class)), table)
        published_version = version(table)
        counts.published_versions[sharing_class] = published_version
        records.append(
            (
                resource.qualified_name,
                sharing_class,
                table.qualified_name,
                published_version,
                interval.end_naive_utc,
                rows,
                silver_version,
                sources,
            )
        )
    if records:
        append(
            spark.createDataFrame(records, publications.ddl_columns()),
            publications,
        )
        counts.published = True
        counts.rows_published = rows
        _journal(resource, settings, records, at=interval.end_naive_utc)
    for extract in waiting:
        registry.update(spark, register_table, extract.extract_id, status="published")
    return counts


def _journal(resource: Resource, settings: Settings, records: list[tuple[Any, ...]], *,
             at: datetime) -> None:  # fmt: skip
    """Each published version goes into the audit journal, and verification requests whose
    correction it carries are linked to it."""
    from govlake.catalog import Catalog
    from govlake.sharing import audit
    from govlake.sharing.requests import link_fixes
    from govlake.sharing.state import session

    with session(settings) as s:
        for (
            _,
            sharing_class,
            table_name,
            published_version,
            _,
            rows,
            silver_version,
            sources,
        ) in records:
            audit.record(s, at=at, actor="pipeline", action="pipeline.publish",
                         resource=resource.qualified_name, table_name=table_name,
                         version=published_version, rows=rows,
                         detail={"sharing_class": sharing_class, "silver_version": silver_version,
                                 "extracts": sources.split(",") if sources else []})  # fmt: skip
        link_fixes(s, None, Catalog.load(settings.catalog_dir), settings, at=at)
