"""Silver → published tables, one per sharing class, each publication one Delta version.

`<theme>.<resource>_unconditional` carries the key and the unconditional items;
`<theme>.<resource>_conditional` the key and every shareable item. Only rows whose required
items are all present are published. Nothing is published when silver has not changed since
the last publication, so a re-run makes no new version.

A publication costs the change, not the table. The rows the waiting extracts wrote in silver
and the keys they removed are the change (`_change`): each is MERGEd into each published
table (insert, update, delete; a table the change leaves as it is gets no new version).
The published tables carry deletion vectors, so a MERGE writes the rows it changes and marks
the ones it replaces. The change is computed once and kept in the warehouse
(`_publishing/`) while the tables are merged. A table is reconciled with the whole of silver
instead (still one MERGE writing only what differs) when the change cannot be known from the
extracts: its first publication, a full extract that removed records, silver changed by
anything but the waiting extracts' MERGEs (a restore), or the catalogue changed what the
table's rows follow from (`catalogue_fingerprint`: its items, their types, which are
required). A table whose columns the catalogue changed (an item's sharing type) is rewritten
in one version. Each MERGE names the silver version it publishes, so a run that stopped
between tables finds the ones already done and does the rest: the tables end as an
uninterrupted run leaves them.

Before anything is written the publication suite runs (`jobs.quality.check_publication`) on
the rows about to be published — the changed rows, or every row when a table is reconciled:
an error-level failure holds the publication back, the published tables keep their current
version, and the reason is kept in `ops.quality_runs`. The same silver version is not
judged twice; a new extract makes a new silver version and a new attempt.
Each publication is recorded in `ops.publications`, and that is all this stage does: what
follows a publication (its journal entry, the verification fixes it carries, the notices to
subscribers) is the pipeline's next step, which reads these records.

An open resource (开放属性 open) also overwrites its open variant `<theme>.<resource>_open`
from the same silver rows, de-identified by `govlake.transforms.opendata`: one more Delta
version per publication, recorded with sharing class `open`. Its rows carry no key (the key
is personal or masked), so it is rewritten whole rather than merged. The table carries its
licence and usage notice as its description and properties (`govlake.open.*`); when the
catalogue's terms change they are rewritten with delta-rs just before the next publication
(a metadata-only version). A resource opened after its silver was last published gets its
open variant on the next run, without new versions of the other tables.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import reduce
from typing import Any

from deltalake import DeltaTable
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import Resource
from govlake.core.location import Location
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.deltalog import DeltaLog
from govlake.lake.evolution import catalogue_type
from govlake.lake.statements import (
    Merged,
    append,
    history,
    merge,
    merges_marked,
    overwrite,
    sql_literal,
    version,
)
from govlake.lake.tables import DELETION_VECTORS, Table, TableSet, ops_tables, register
from govlake.transforms import opendata
from govlake.transforms.opendata import RECORD_ID
from govlake.transforms.rules import removal, typed
from jobs import quality, registry

#: Where the change a publication applies is kept while the tables are merged.
PUBLISHING = "_publishing"
#: Whether a changed key has a publishable row now (null: it leaves the published tables).
PRESENT = "_present"
#: The silver version a change publishes, named by each MERGE's condition.
PUBLICATION = "_publication"


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
    records = _last_records(spark, settings, resource)
    at = interval.end_naive_utc
    secret = record_key(settings) if resource.is_open else ""
    salt = hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else ""
    plan = _plan(resource, tables, waiting, records, silver_version, salt)
    plan.secret = secret
    if not plan.due:
        # Silver is what was last published: mark the extracts done, make no new version.
        if resource.is_open and not _open_published(spark, resource, silver_version, settings):
            # Opened since: the open variant starts from the silver published (and checked)
            # then; the other tables keep their versions.
            latest = max(records.values(), key=lambda r: r.published_at)
            _publish_late_open(spark, resource, tables, plan, sources=latest.source_extracts or "",
                               settings=settings, at=at, counts=counts)  # fmt: skip
    else:
        change = _materialise(spark, resource, tables, plan, settings)
        try:
            rows = _passing_rows(spark, resource, change, plan, interval=interval,
                                 settings=settings, counts=counts)  # fmt: skip
            if rows is None:
                # Consumers keep the version they have; the extracts stay merged and go out
                # with the next publication that passes.
                return counts
            sources = ",".join(extract.extract_id for extract in waiting)
            _publish(spark, resource, tables, change, plan, rows=rows, sources=sources,
                     settings=settings, at=at, counts=counts)  # fmt: skip
        finally:
            _publishing(settings, resource).delete()
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


def catalogue_fingerprint(
    resource: Resource, columns: list[tuple[str, str]], salt: str = ""
) -> str:
    """What a published table's rows follow from in the catalogue: its columns and types, the
    key, the items a row needs to be published, and `salt` (for the open variant: its rules
    and its pseudonyms' key)."""
    required = sorted(item.name for item in resource.items if item.required)
    text = repr((columns, resource.key, required, salt))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Plan:
    """What one publication does: the silver version it publishes, the keys that changed
    (None: unknown, every table is reconciled), and per table whether it is merged with the
    change, reconciled with the whole of silver, or rewritten."""

    silver_version: int
    previous_rows: int | None
    extracts: list[str] | None  # whose change is published (None: unknown, reconcile)
    modes: dict[str, str] = field(default_factory=dict)  # class -> merge|reconcile|rewrite
    fingerprints: dict[str, str] = field(default_factory=dict)
    due: bool = True
    secret: str = ""  # of the open variant's record pseudonyms

    @property
    def whole(self) -> bool:
        """Whether the rows to publish are all of silver's (some table needs them all)."""
        return any(mode != "merge" for mode in self.modes.values())

    @property
    def mark(self) -> str:
        return sql_literal(f"silver-v{self.silver_version}")


def _plan(resource: Resource, tables: TableSet, waiting: list[Row], records: dict[str, Row],
          silver_version: int, salt: str) -> _Plan:  # fmt: skip
    """How each published table (and the open variant) is brought to `silver_version` (see
    the module). `salt`: what else the tables' rows follow from (the open pseudonyms' key)."""
    last_silver = {r.silver_version for r in records.values()}
    previous = max(records.values(), key=lambda r: r.published_at) if records else None
    known = (
        previous is not None
        and len(last_silver) == 1
        and _silver_changed_by(tables.silver, waiting, int(previous.silver_version), silver_version)
        and not any(resource.delivery(e.provider).kind == "full" for e in waiting)
    )
    plan = _Plan(
        silver_version,
        None if previous is None else int(previous.rows),
        [e.extract_id for e in waiting] if known else None,
    )
    for sharing_class, table in _targets(resource, tables):
        extra = repr((resource.open_items(), salt)) if sharing_class == "open" else ""
        fingerprint = catalogue_fingerprint(resource, list(table.columns), extra)
        plan.fingerprints[sharing_class] = fingerprint
        record = records.get(sharing_class)
        if record is None or _columns(table) != list(table.columns):
            plan.modes[sharing_class] = "rewrite"
        elif getattr(record, "catalogue_fingerprint", None) != fingerprint or not known:
            plan.modes[sharing_class] = "reconcile"
        else:
            plan.modes[sharing_class] = "merge"
    # An open variant with no version yet (the resource was opened since) is made on its own
    # when silver has not changed (`_publish_late_open`).
    settled = [m for t, m in plan.modes.items() if t in records or t != "open"]
    plan.due = not (
        previous is not None
        and int(previous.silver_version) == silver_version
        and all(mode == "merge" for mode in settled)
    )
    if plan.whole:  # the rows are all of silver's: a merged table must drop what they lack
        plan.modes = {c: "reconcile" if m == "merge" else m for c, m in plan.modes.items()}
    return plan


def _silver_changed_by(silver: Table, waiting: list[Row], since: int, now: int) -> bool:
    """Whether every silver commit after version `since` up to `now` is a waiting extract's
    MERGE or changes no row (a compaction, a vacuum): then the rows those extracts wrote and
    the keys they removed are the whole change."""
    if now <= since:
        return True
    marks = [sql_literal(e.extract_id) for e in waiting]
    log = DeltaLog(silver.location)
    for commit in history(silver, limit=now - since):
        number = int(commit.get("version", now))
        if number <= since:
            continue
        parameters = commit.get("operationParameters") or {}
        condition = " ".join(str(v) for k, v in parameters.items() if "predicate" in k.lower())
        if commit.get("operation") == "MERGE" and any(mark in condition for mark in marks):
            continue
        if log.commit_file(number).changes_rows:
            return False
    return True


def _columns(table: Table) -> list[tuple[str, str]]:
    """The columns `table` has now, typed as the catalogue names types."""
    delta = DeltaTable(table.location.uri, storage_options=table.location.storage_options())
    return [
        (f.name, catalogue_type(str(getattr(f.type, "type", f.type))))
        for f in delta.schema().fields
    ]


def record_key(settings: Settings) -> str:
    """The secret of the open variants' record pseudonyms: the setting, else the key kept in
    the warehouse (made on first use; the warehouse is not served, only table files are)."""
    if settings.open_record_key is not None:
        return settings.open_record_key.get_secret_value()
    kept = settings.warehouse_location.child("ops", "open-record.key")
    if not kept.exists():
        kept.write_text(secrets.token_hex(32))
    return kept.read_text().strip()


def _publishing(settings: Settings, resource: Resource) -> Location:
    return settings.warehouse_location.child(resource.theme, PUBLISHING, resource.table_base)


def _materialise(spark: SparkSession, resource: Resource, tables: TableSet, plan: _Plan,
                 settings: Settings) -> DataFrame:  # fmt: skip
    """The rows this publication applies, written once to the warehouse and read back, so
    that each table's MERGE reads them rather than computing them again: every publishable
    silver row (`plan.whole`), or the change (`_change`)."""
    silver = _publishable(spark, resource, tables).select(
        *[item.name for item in resource.items], F.lit(True).alias(PRESENT)
    )
    if not plan.whole:
        assert plan.extracts is not None
        silver = _change(spark, resource, tables, plan.extracts)
    target = _publishing(settings, resource)
    silver = silver.withColumn(PUBLICATION, F.lit(f"silver-v{plan.silver_version}"))
    schema = silver.schema
    silver.write.mode("overwrite").parquet(target.uri)
    if not target.exists():  # no row changed: the engine wrote no file
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(target.uri)


def _change(spark: SparkSession, resource: Resource, tables: TableSet,
            extracts: list[str]) -> DataFrame:  # fmt: skip
    """What the merged `extracts` changed, without reading all of silver: the publishable
    silver rows they wrote (a MERGE that changes a row stamps it with its extract's id, and
    the files it writes hold only that id, so the engine skips the others by their
    statistics), and one row with `_present` null per key they removed that no later one
    wrote again. A record re-sent unchanged leaves its row as it was, and so as published;
    an item an increment cannot blank (a blank required item is quarantined) cannot make a
    row stop being publishable, so removals are the only rows that leave."""
    items = [item.name for item in resource.items]
    written = (
        _publishable(spark, resource, tables)
        .where(F.col("_extract_id").isin(extracts))
        .select(*items, F.lit(True).alias(PRESENT))
    )
    removing = [p for p in resource.providers if resource.delivery(p).operation is not None]
    if not removing:
        return written
    records = spark.table(tables.bronze.sql_name).where(
        F.col("_extract_id").isin(extracts) & F.col("_parse_error").isNull()
    )
    rejected = spark.table(tables.quarantine.sql_name).where(F.col("_extract_id").isin(extracts))
    removal_of = reduce(
        lambda a, b: a | b,
        [(F.col("_provider") == p) & removal(resource, p) for p in removing],
    )
    removed = (
        typed(
            records.where(removal_of).join(
                rejected.select("_extract_id", "_row"), on=["_extract_id", "_row"], how="left_anti"
            ),
            resource,
            resource.key,
        )
        .select(*resource.key)
        .distinct()
        .join(written.select(*resource.key), on=resource.key, how="left_anti")
        .select(
            *[
                F.col(i) if i in resource.key else F.lit(None).cast(resource.item(i).type).alias(i)
                for i in items
            ],
            F.lit(None).cast("boolean").alias(PRESENT),
        )
    )
    return written.unionByName(removed)


def _passing_rows(spark: SparkSession, resource: Resource, change: DataFrame, plan: _Plan, *,
                  interval: Interval, settings: Settings,
                  counts: StageCounts) -> int | None:  # fmt: skip
    """The rows the suite judged (every publishable row, or the changed ones), or None when
    the publication suite holds this silver version back (now, or already in an earlier run:
    it is not judged twice). A publication that merges only the change is judged on the rows
    it changes; the table-level volume check then has nothing to count and is left out (each
    extract's volume is checked against its provider's previous one)."""
    silver_version = plan.silver_version
    if quality.last_held_silver_version(spark, settings, resource) == silver_version:
        counts.held.append(f"{resource.qualified_name}: silver v{silver_version} already held")
        return None
    candidate = change.where(F.col(PRESENT).isNotNull()).select(
        *[item.name for item in resource.items]
    )
    rows = candidate.count()
    verdict = quality.check_publication(
        spark,
        resource=resource,
        candidate=candidate,
        rows=rows,
        silver_version=silver_version,
        interval=interval,
        settings=settings,
        judge_volume=plan.whole,
    )
    counts.quality[f"silver-v{silver_version}"] = verdict.outcome
    if verdict.held:
        counts.held.append(f"{resource.qualified_name} publication: {verdict.reason}")
        return None
    return rows


def merge_published(key: list[str], table: Table, source: str, *, mark: str,
                    reconcile: bool) -> str:  # fmt: skip
    """MERGE of `source` (`_materialise`'s rows) into a published table: a changed key with no
    publishable row is deleted, one whose values differ is updated, a new one inserted; when
    reconciling, a published row silver no longer publishes is deleted too. The ON clause
    names the silver version published (true of every source row) so the commit says it."""
    columns = table.column_names
    on = " AND ".join([f"t.{_q(k)} = s.{_q(k)}" for k in key] + [f"s.{PUBLICATION} = {mark}"])
    same = " AND ".join(f"t.{_q(c)} <=> s.{_q(c)}" for c in columns if c not in key) or "TRUE"
    assignments = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in columns if c not in key)
    statement = (
        f"MERGE INTO {table.sql_name} t USING {source} s ON {on} "
        f"WHEN MATCHED AND s.{PRESENT} IS NULL THEN DELETE "
        + (f"WHEN MATCHED AND NOT ({same}) THEN UPDATE SET {assignments} " if assignments else "")
        + f"WHEN NOT MATCHED AND s.{PRESENT} THEN INSERT ({', '.join(map(_q, columns))}) "
        f"VALUES ({', '.join('s.' + _q(c) for c in columns)})"
    )
    if reconcile:
        statement += " WHEN NOT MATCHED BY SOURCE THEN DELETE"
    return statement


def _q(name: str) -> str:
    return "`" + name + "`"


def _targets(resource: Resource, tables: TableSet) -> list[tuple[str, Table]]:
    """The tables a publication writes: one per sharing class, and the open variant."""
    found = [(c, tables.published(c)) for c in resource.sharing_classes]
    return found + ([("open", tables.open)] if resource.is_open else [])


def _publish(spark: SparkSession, resource: Resource, tables: TableSet, change: DataFrame,
             plan: _Plan, *, rows: int, sources: str, settings: Settings, at: datetime,
             counts: StageCounts) -> None:  # fmt: skip
    """Bring every published table (and the open variant) to the planned silver version, at
    most one version each, and record the versions in `ops.publications`."""
    records = []
    published_rows = rows
    for target, table in _targets(resource, tables):
        if target == "open":
            _apply_open_terms(resource, table)
        merged = _bring(spark, resource, table, _rows_for(resource, target, change, plan),
                        plan, target)  # fmt: skip
        if plan.modes[target] == "merge" and plan.previous_rows is not None:
            published_rows = plan.previous_rows + merged.inserted - merged.deleted
        records.append(_record(resource, target, table, at, published_rows, plan.silver_version,
                               sources, plan.fingerprints[target], merged))  # fmt: skip
        counts.published_versions[target] = records[-1][3]
    if records:
        _append_records(spark, settings, records)
        counts.published = True
        counts.rows_published = published_rows


def _rows_for(resource: Resource, target: str, change: DataFrame, plan: _Plan) -> DataFrame:
    """`change` as `target`'s table has its rows: the open variant de-identified, with each
    record's pseudonym as its key."""
    if target != "open":
        return change
    named = change.withColumn(RECORD_ID, opendata.record_id(resource, plan.secret))
    return opendata.open_variant(named, resource, carry=[RECORD_ID, PRESENT, PUBLICATION])


def _bring(spark: SparkSession, resource: Resource, table: Table, change: DataFrame,
           plan: _Plan, target: str) -> Merged:  # fmt: skip
    """Bring one published table to the planned silver version: what its commit did."""
    mode = plan.modes[target]
    if mode == "rewrite":
        rows = change.where(F.col(PRESENT).isNotNull()).select(*table.column_names)
        before = version(table)
        overwrite(rows, table)
        after = version(table)
        return Merged(inserted=rows.count(), version=after if after > before else None)
    done = merges_marked(table, [plan.mark])
    if plan.mark in done:  # an earlier run that stopped after this table's MERGE
        return done[plan.mark]
    key = [RECORD_ID] if target == "open" else resource.key
    view = f"publication_{resource.theme}_{resource.table_base}_{target}"
    change.createOrReplaceTempView(view)
    statement = merge_published(key, table, view, mark=plan.mark, reconcile=mode == "reconcile")
    try:
        return merge(spark, table, statement)
    finally:
        spark.catalog.dropTempView(view)


def _publish_late_open(spark: SparkSession, resource: Resource, tables: TableSet, plan: _Plan,
                       *, sources: str, settings: Settings, at: datetime,
                       counts: StageCounts) -> None:  # fmt: skip
    """The open variant of a resource opened after its silver was published, and its record."""
    silver = _publishable(spark, resource, tables).select(
        "*", F.lit(True).alias(PRESENT), F.lit(f"silver-v{plan.silver_version}").alias(PUBLICATION)
    )
    rows = silver.count()
    _apply_open_terms(resource, tables.open)
    merged = _bring(spark, resource, tables.open, _rows_for(resource, "open", silver, plan),
                    replace(plan, modes={"open": "rewrite"}), "open")  # fmt: skip
    record = _record(resource, "open", tables.open, at, rows, plan.silver_version, sources,
                     plan.fingerprints["open"], merged)  # fmt: skip
    _append_records(spark, settings, [record])
    counts.published_versions["open"] = record[3]


def _last_records(spark: SparkSession, settings: Settings, resource: Resource) -> dict[str, Row]:
    """The newest `ops.publications` row of each of `resource`'s published tables."""
    _, publications = ops_tables(settings.warehouse_location)
    register(spark, publications)
    found = spark.sql(
        f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY sharing_class "
        f"ORDER BY version DESC, published_at DESC) AS _n FROM {publications.sql_name} "
        f"WHERE resource = {sql_literal(resource.qualified_name)}) WHERE _n = 1"
    ).collect()
    return {row.sharing_class: row for row in found}


def _append_records(
    spark: SparkSession, settings: Settings, records: list[tuple[Any, ...]]
) -> None:
    """Record published versions in `ops.publications`."""
    _, publications = ops_tables(settings.warehouse_location)
    append(spark.createDataFrame(records, publications.ddl_columns()), publications)


def _record(resource: Resource, sharing_class: str, table: Table, at: datetime, rows: int,
            silver_version: int, sources: str, fingerprint: str | None = None,
            merged: Merged | None = None) -> tuple[Any, ...]:  # fmt: skip
    """The `ops.publications` row of `table`'s current version."""
    changed = None if merged is None else merged.inserted + merged.updated + merged.deleted
    return (resource.qualified_name, sharing_class, table.qualified_name, version(table), at,
            rows, silver_version, sources, fingerprint, changed)  # fmt: skip


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
