"""Reading Delta tables with delta-rs's own engine (DataFusion), deletion vectors included."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from deltalake import DeltaTable


def query_delta(table: DeltaTable, sql: str, *, name: str = "t") -> pa.Table:
    """Run `sql` over a delta-rs table registered as `name`, with delta-rs's own engine
    (DataFusion; deletion vectors included).

    Use this rather than `DeltaTable.to_pyarrow_dataset()` / `to_pyarrow_table()`: a pyarrow
    dataset scan over delta-rs leaves Arrow thread-pool threads behind, and a process that
    scanned so can abort when it exits ("terminate called without an active exception",
    exit 134) after its work is done, which fails a CLI command or an Airflow task.
    """
    from deltalake import QueryBuilder

    reader = QueryBuilder().register(name, table).execute(sql)
    return pa.RecordBatchReader.from_stream(reader).read_all()


def delta_schema(table: DeltaTable) -> pa.Schema:
    """The table's columns with the pyarrow types its Delta schema maps to (the types
    `to_pyarrow_dataset()` reads them as)."""
    return pa.schema(table.schema().to_arrow())


def scan_delta(table: DeltaTable, columns: Sequence[str] | None = None) -> pa.RecordBatchReader:
    """The rows of a delta-rs table batch by batch, read like `query_delta`, with `columns`
    (all by default) in that order and typed as in `delta_schema`: DataFusion reads strings
    as `string_view`, which code that relies on the table's own types must not see."""
    schema = delta_schema(table)
    names = list(schema.names if columns is None else columns)
    from deltalake import QueryBuilder

    selected = ", ".join('"' + name.replace('"', '""') + '"' for name in names)
    reader = QueryBuilder().register("t", table).execute(f"SELECT {selected} FROM t")
    wanted = pa.schema([schema.field(name) for name in names])
    return pa.RecordBatchReader.from_stream(reader).cast(wanted)


def read_delta(table: DeltaTable, columns: Sequence[str] | None = None) -> pa.Table:
    """`scan_delta` read whole: the replacement for `DeltaTable.to_pyarrow_table()`."""
    return scan_delta(table, columns).read_all()
