"""Table maintenance with delta-rs: compact small files and purge deletion vectors, then
vacuum the files no version younger than the retention needs.

Vacuum keeps every version younger than the retention readable: published and silver
tables keep `settings.retention_days` (at least 30 days), and `ops.*` tables, the
platform's records, `settings.records_retention_days` (at least 3 years, 宝鸡 art. 21).
The retention counts back from the run's own moment (`at`, the end of its interval), not
from the machine's clock.

Deletion vectors: delta-rs's compaction rewrites the small files it merges with their
deleted rows left out, but leaves a file alone that is the only one of its bin or larger
than the target size; a file that still carries a deletion vector after it is rewritten by
a Z-order pass over its partition (one more version, `dataChange=false`, earlier versions
untouched). delta-rs's vacuum deletes no deletion-vector file (lite) or deletes those the
current version still needs (full): it runs lite, and the deletion-vector files no version
younger than the retention needs are deleted here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable

from govlake.core.catalog import Catalog
from govlake.core.location import Location
from govlake.core.settings import Settings
from govlake.lake.deltalog import DeltaLog, VersionError, millis
from govlake.lake.tables import Table, TableSet, ops_tables, quality_tables

log = logging.getLogger(__name__)

#: The least the platform's records are kept (3 years and a leap day).
RECORDS_RETENTION_DAYS = 3 * 365 + 1


@dataclass
class Maintained:
    table: str
    retention_days: int
    files_compacted: int
    files_removed: int
    vectors_purged: int = 0  # data files rewritten without their deletion vectors
    vectors_removed: int = 0  # deletion-vector files vacuumed

    def summary(self) -> str:
        return (
            f"{self.table}: {self.files_compacted} file(s) compacted, {self.vectors_purged} "
            f"rewritten without deletion vectors; vacuum kept {self.retention_days} days and "
            f"removed {self.files_removed} data and {self.vectors_removed} deletion-vector "
            "file(s)"
        )


def retention_days(table: Table, settings: Settings) -> int:
    if table.database == "ops":
        return max(settings.records_retention_days, RECORDS_RETENTION_DAYS)
    return settings.retention_days


def _with_vectors(delta: DeltaTable) -> int:
    return int(pa.table(delta.deletion_vectors()).num_rows)


def _compact(table: Table, delta: DeltaTable) -> tuple[int, int]:
    """Files compacted, and files rewritten to purge the deletion vectors compaction left."""
    compacted = int(delta.optimize.compact().get("numFilesRemoved", 0))
    delta.update_incremental()
    left = _with_vectors(delta)
    if left:
        # Z-order rewrites every file of the table's partitions, each without its deleted
        # rows; the first column orders it (the key, for govlake's tables).
        columns = table.column_names[:1] or [delta.schema().fields[0].name]
        delta.optimize.z_order(columns)
        delta.update_incremental()
    return compacted, left


def _cutoff_version(log: DeltaLog, cutoff: datetime) -> int:
    """The oldest version still readable as of `cutoff`: the one current at that moment
    (0 when the table is younger)."""
    before = [c.version for c in log.commits() if c.timestamp <= millis(cutoff)]
    return max(before) if before else 0


def vacuum_vectors(location: Location, cutoff: datetime) -> list[str]:
    """Delete the deletion-vector files no version current at or after `cutoff` uses and
    written before it; returns them (relative paths)."""
    log = DeltaLog(location)
    files = log.log_files()
    latest = files.latest
    if latest is None:
        return []
    first = _cutoff_version(log, cutoff)
    try:
        live = log.live_actions(first, files)
    except VersionError:
        return []  # that version's log is gone: keep every vector rather than guess
    needed = log.vector_files(live.values())
    for version in range(first + 1, latest + 1):
        added = [b for kind, b in log.commit_file(version).actions if kind == "add"]
        needed |= log.vector_files(added)
    removed = []
    for path, _size in sorted(location.listing().items()):
        name = path.rsplit("/", 1)[-1]
        if not (name.startswith("deletion_vector_") and name.endswith(".bin")):
            continue
        if path in needed or _modified(location.child(path)) >= cutoff:
            continue
        location.child(path).delete()
        removed.append(path)
    return removed


def _modified(location: Location) -> datetime:
    if location.is_local:
        fs, path = pafs.LocalFileSystem(), location.uri
    else:
        fs, path = pafs.FileSystem.from_uri(location.uri)
    moment = fs.get_file_info(path).mtime
    assert moment is not None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def maintain(table: Table, settings: Settings, *, at: datetime | None = None) -> Maintained:
    """Compact `table`, purge its deletion vectors and vacuum what no version younger than its
    retention, counted back from `at` (the run's moment; now by default), needs."""
    at = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    delta = DeltaTable(table.location.uri, storage_options=table.location.storage_options())
    compacted, purged = _compact(table, delta)
    days = retention_days(table, settings)
    cutoff = at - timedelta(days=days)
    # delta-rs counts the retention back from its own clock: ask for the hours to `cutoff`.
    hours = max(0, int((datetime.now(UTC) - cutoff).total_seconds() // 3600))
    removed = delta.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)
    vectors = vacuum_vectors(table.location, cutoff)
    return Maintained(table.qualified_name, days, compacted, len(removed), purged, len(vectors))


def run(catalog: Catalog, settings: Settings, *, at: datetime | None = None) -> list[Maintained]:
    """Compact and vacuum every existing table of the warehouse."""
    warehouse = settings.warehouse_location
    tables = [t for r in catalog for t in TableSet(r, warehouse).all()]
    tables += [*ops_tables(warehouse), *quality_tables(warehouse)]
    done = [maintain(t, settings, at=at) for t in tables if t.location.is_delta_table()]
    for maintained in done:  # the task's log says what each table went through
        log.info("%s", maintained.summary())
    return done
