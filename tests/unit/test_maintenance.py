"""Table maintenance: compaction through delta-rs keeps every version younger than the
retention readable and purges deletion vectors; vacuum keeps 30 days (3 years for `ops.*`)
counted back from the run's own moment, deletion-vector files included; the retentions are
settings with floors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pydantic import ValidationError
from pyspark.sql import SparkSession

from govlake.core.location import Location
from govlake.core.settings import Settings
from govlake.lake.reads import query_delta
from govlake.lake.tables import Table
from jobs.maintenance import RECORDS_RETENTION_DAYS, maintain, retention_days


def _table(tmp_path: Path, database: str) -> Table:
    location = Location.parse(tmp_path / database / "t")
    for i in range(5):
        write_deltalake(location.uri, pa.table({"n": [i, i + 10]}), mode="append")
    return Table(database, "t", location, (("n", "bigint"),), "one row per n")


def test_compaction_keeps_every_version_readable(settings: Settings, tmp_path: Path) -> None:
    table = _table(tmp_path, "population")
    done = maintain(table, settings)
    assert done.files_compacted == 5 and done.files_removed == 0
    assert done.retention_days == 30
    latest = DeltaTable(table.location.uri)
    assert len(latest.file_uris()) == 1
    assert latest.to_pyarrow_table().num_rows == 10
    for version in range(5):  # every version before compaction still reads
        assert DeltaTable(table.location.uri, version=version).to_pyarrow_table().num_rows == (
            2 * (version + 1)
        )


def test_platform_records_keep_three_years(settings: Settings, tmp_path: Path) -> None:
    ops = _table(tmp_path, "ops")
    assert retention_days(ops, settings) == RECORDS_RETENTION_DAYS >= 3 * 365
    with pytest.raises(ValidationError, match="greater than or equal to 30"):
        Settings(retention_days=7)


# -- deletion vectors and the retention clock -------------------------------------------------
def _dv_table(spark: SparkSession, tmp_path: Path, database: str, *, update: bool = True) -> Table:
    """A table written by the engine with deletion vectors: created (version 0) in one file,
    rows deleted (1) and, with `update`, updated (2: a second file) as deletion vectors."""
    location = Location.parse(tmp_path / database / "dv")
    name = f"dv_{uuid.uuid4().hex}"
    spark.sql(f"CREATE TABLE {name} USING delta LOCATION '{location.uri}' TBLPROPERTIES "
              "('delta.enableDeletionVectors' = 'true') AS "
              "SELECT id, concat('name-', id) AS label FROM range(2000)")  # fmt: skip
    spark.sql(f"DELETE FROM {name} WHERE id % 7 = 0")
    if update:
        spark.sql(f"UPDATE {name} SET label = 'changed' WHERE id % 11 = 0")
    return Table(
        database, "dv", location, (("id", "bigint"), ("label", "string")), "one row per id"
    )


def _read(location: Location, version: int | None = None) -> pa.Table:
    """A version's rows through delta-rs QueryBuilder, deletion vectors applied."""
    table = DeltaTable(location.uri, version=version)
    return query_delta(table, "SELECT id, label FROM t ORDER BY id")


def _vector_files(location: Location) -> set[str]:
    return {p for p in location.listing() if p.rsplit("/", 1)[-1].startswith("deletion_vector_")}


@pytest.mark.parametrize(("update", "left_by_compaction"), [(True, 0), (False, 1)])
def test_compaction_purges_deletion_vectors(
    shared_spark: SparkSession, settings: Settings, tmp_path: Path, update: bool,
    left_by_compaction: int,
) -> None:  # fmt: skip
    """Two files are merged by compaction, their deleted rows left out; a lone file with a
    deletion vector, which compaction leaves alone, is rewritten without it."""
    table = _dv_table(shared_spark, tmp_path, "population", update=update)
    versions = DeltaTable(table.location.uri).version() + 1
    before = {v: _read(table.location, v) for v in range(versions)}
    assert pa.table(DeltaTable(table.location.uri).deletion_vectors()).num_rows == 1

    done = maintain(table, settings, at=datetime.now(UTC))
    assert done.vectors_purged == left_by_compaction and done.files_removed == 0
    assert f"{left_by_compaction} rewritten without deletion vectors" in done.summary()
    latest = DeltaTable(table.location.uri)
    assert latest.version() >= versions
    assert pa.table(latest.deletion_vectors()).num_rows == 0  # no live file carries one
    assert _read(table.location).equals(before[versions - 1])
    assert latest.count() == before[versions - 1].num_rows  # the files' own statistics agree now
    for version, rows in before.items():  # every earlier version still reads as it did
        assert _read(table.location, version).equals(rows), version


@pytest.mark.parametrize(("database", "kept_days"), [("population", 30), ("ops", 3 * 365 + 1)])
def test_vacuum_keeps_the_retention_counted_from_the_run(
    shared_spark: SparkSession, settings: Settings, tmp_path: Path, database: str, kept_days: int
) -> None:
    table = _dv_table(shared_spark, tmp_path, database)
    run_at = datetime.now(UTC)  # the files' own times come from the clock that wrote them
    rows = _read(table.location)
    maintain(table, settings, at=run_at)  # compacted: the old files are history now
    vectors = _vector_files(table.location)
    assert vectors

    within = maintain(table, settings, at=run_at + timedelta(days=kept_days - 1))
    assert within.retention_days == kept_days
    assert within.files_removed == within.vectors_removed == 0
    assert _read(table.location, 2).num_rows == rows.num_rows  # history still readable

    after = maintain(table, settings, at=run_at + timedelta(days=kept_days + 1))
    assert after.files_removed > 0 and after.vectors_removed == len(vectors)
    assert not _vector_files(table.location)
    assert _read(table.location).equals(rows)  # the current version is untouched


def test_retention_is_configurable_with_its_floors() -> None:
    assert Settings(retention_days=45, records_retention_days=2000).records_retention_days == 2000
    with pytest.raises(ValidationError, match="greater than or equal to 1096"):
        Settings(records_retention_days=365)
