"""Table maintenance with delta-rs: compact small files, then vacuum files no version needs.

Vacuum keeps every version younger than the retention readable: published and silver
tables keep `settings.retention_days` (at least 30 days), and `ops.*` tables, the
platform's records, keep at least 3 years (宝鸡 art. 21), so nothing younger is removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from deltalake import DeltaTable

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.tables import Table, TableSet, ops_tables, quality_tables

RECORDS_RETENTION_DAYS = 3 * 366


@dataclass
class Maintained:
    table: str
    retention_days: int
    files_compacted: int
    files_removed: int


def retention_days(table: Table, settings: Settings) -> int:
    if table.database == "ops":
        return max(settings.retention_days, RECORDS_RETENTION_DAYS)
    return settings.retention_days


def maintain(table: Table, settings: Settings) -> Maintained:
    delta = DeltaTable(table.location.uri, storage_options=table.location.storage_options())
    compacted = delta.optimize.compact()
    days = retention_days(table, settings)
    removed = delta.vacuum(retention_hours=days * 24, dry_run=False)
    return Maintained(
        table.qualified_name, days, int(compacted.get("numFilesRemoved", 0)), len(removed)
    )


def run(catalog: Catalog, settings: Settings) -> list[Maintained]:
    """Compact and vacuum every existing table of the warehouse."""
    warehouse = settings.warehouse_location
    tables = [t for r in catalog for t in TableSet(r, warehouse).all()]
    tables += [*ops_tables(warehouse), *quality_tables(warehouse)]
    return [maintain(t, settings) for t in tables if t.location.is_delta_table()]
