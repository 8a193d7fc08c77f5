"""Table maintenance: compaction through delta-rs keeps every version younger than the
retention readable, and the retention cannot go below 30 days."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pydantic import ValidationError

from govlake.core.location import Location
from govlake.core.settings import Settings
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
