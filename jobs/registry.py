"""The extract register `ops.extracts`: one row per landed file and where it stands.

An extract moves `registered` → `bronze` → `validated` → `merged` → `published`, or stops
at `held` (its extract suite failed: none of its records reach silver) or `rejected` (the
file could not be read). Those three are final: the step that sets one also sets
`completed_at`, the end of the run's interval. `merged` is not final: the extract waits there
while a publication is held back.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from pyspark.sql import Row, SparkSession

from govlake.core.catalog import Resource
from govlake.core.settings import Settings
from govlake.lake.statements import committing, execute, sql_literal
from govlake.lake.tables import Table, ops_tables, register

#: Per engine session, the locations of the ops tables registered in it.
_registered: WeakKeyDictionary[SparkSession, set[str]] = WeakKeyDictionary()


def extracts_table(spark: SparkSession, settings: Settings) -> Table:
    """`ops.extracts`, registered (with `ops.publications`) once per engine session."""
    table, publications = ops_tables(settings.warehouse_location)
    registered = _registered.setdefault(spark, set())
    if table.location.uri not in registered:
        register(spark, table)
        register(spark, publications)
        registered.add(table.location.uri)
    return table


FINAL_STATUSES = ("published", "held", "rejected")


def _check_final(values: dict[str, Any]) -> None:
    if values.get("status") in FINAL_STATUSES and values.get("completed_at") is None:
        raise ValueError(f"status {values['status']} is final: give its completed_at")


def find(spark: SparkSession, table: Table, **where: Any) -> list[Row]:
    condition = " AND ".join(f"`{k}` = {sql_literal(v)}" for k, v in where.items())
    return spark.sql(f"SELECT * FROM {table.sql_name} WHERE {condition}").collect()


def pending(spark: SparkSession, table: Table, resource: Resource, status: str) -> list[Row]:
    """Extracts of `resource` waiting in `status`, in provider and file-name order."""
    statement = (
        f"SELECT * FROM {table.sql_name} WHERE resource = {sql_literal(resource.qualified_name)} "
        f"AND status = {sql_literal(status)} ORDER BY provider, file_name"
    )
    # Other resources' runs commit to the register meanwhile: a read that met one is retried.
    return committing(lambda: spark.sql(statement).collect(), what="pending extracts")


def add(spark: SparkSession, table: Table, **values: Any) -> None:
    _check_final(values)
    columns = table.column_names
    literals = []
    for name, kind in table.columns:
        literal = sql_literal(values.get(name))
        literals.append(f"cast({literal} as {kind})")
    spark.sql(
        f"INSERT INTO {table.sql_name} ({', '.join(f'`{c}`' for c in columns)}) "
        f"VALUES ({', '.join(literals)})"
    )


def update(spark: SparkSession, table: Table, extract_id: str, **values: Any) -> None:
    _check_final(values)
    assignments = ", ".join(f"`{k}` = {sql_literal(v)}" for k, v in values.items())
    execute(
        spark,
        f"UPDATE {table.sql_name} SET {assignments} WHERE extract_id = {sql_literal(extract_id)}",
    )


def latest(
    spark: SparkSession, table: Table, resource: Resource, *, order: str, columns: str = "*",
    where: str = "",
) -> Row | None:  # fmt: skip
    """The first row of `table` about `resource` (and `where`) in `order`, None if none."""
    rows = spark.sql(
        f"SELECT {columns} FROM {table.sql_name} "
        f"WHERE resource = {sql_literal(resource.qualified_name)} {where}"
        f"ORDER BY {order} LIMIT 1"
    ).collect()
    return rows[0] if rows else None


def latest_publication(spark: SparkSession, settings: Settings, resource: Resource) -> Row | None:
    """The newest row of `ops.publications` for `resource`, or None before the first."""
    _, publications = ops_tables(settings.warehouse_location)
    register(spark, publications)
    return latest(spark, publications, resource, order="published_at DESC, version DESC")
