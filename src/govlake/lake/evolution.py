"""Schema evolution: a catalogue change reaches existing Delta tables additively, or not at all.

When a table already exists, its schema is compared with the columns the catalogue now
derives for it (`govlake.lake.tables.Table.columns`) before anything is written. That is a
step of its own, `evolve_tables`, which the pipeline's first stage (`jobs.bronze`) runs for
the tables a run writes; registering a table (`govlake.lake.tables.register`) never changes
its schema.

- a column the catalogue added is added to the table (nullable; older rows read null), one
  Delta version, through delta-rs;
- a column whose type the catalogue widened (`govlake.core.catalog.widens`: integer → bigint,
  decimal → wider decimal, …) is rewritten to the wider type, one Delta version that keeps
  every row;
- a column the catalogue no longer has, or a type it narrowed or changed, is refused with
  `SchemaChangeRefused`, naming the table, the column and the rule: consumers and MERGE keys
  depend on them. Such a change is published as a new resource version, whose tables are new
  ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.schema import Field, PrimitiveType

from govlake.core.catalog import CatalogError, widens
from govlake.lake.reads import delta_schema, read_delta
from govlake.lake.tables import Table

log = logging.getLogger(__name__)

# The catalogue's type names that Delta spells differently.
_DELTA_TYPES = {"bigint": "long"}
_CATALOGUE_TYPES = {"long": "bigint", "timestamp_ntz": "timestamp"}


class SchemaChangeRefused(CatalogError):
    """A catalogue change would remove or narrow a column of an existing table."""


@dataclass(frozen=True)
class Evolution:
    """What was done to one table to follow the catalogue."""

    table: str
    added: tuple[str, ...] = ()
    widened: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.widened)


def delta_type(catalogue_type: str) -> str:
    return _DELTA_TYPES.get(catalogue_type, catalogue_type)


def catalogue_type(delta: str) -> str:
    return _CATALOGUE_TYPES.get(delta, delta)


def plan(
    name: str, existing: list[tuple[str, str]], wanted: list[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Pure: the columns to add and the (column, old, new) types to widen to turn `existing`
    into `wanted` (both in catalogue type names); `SchemaChangeRefused` for the rest."""
    have = dict(existing)
    want = dict(wanted)
    removed = [column for column in have if column not in want]
    if removed:
        raise SchemaChangeRefused(
            f"{name}: column(s) {', '.join(removed)} are no longer in the catalogue entry: "
            "removing an item is a breaking change; publish it as a new resource version "
            "(raise `version:` in the entry), which gets tables of its own"
        )
    widen, refused = [], []
    for column, kind in wanted:
        before = have.get(column)
        if before is None or before == kind:
            continue
        if widens(before, kind):
            widen.append((column, before, kind))
        else:
            refused.append(f"{column} {before} → {kind}")
    if refused:
        raise SchemaChangeRefused(
            f"{name}: type change(s) {', '.join(refused)} narrow or change the column: a "
            "breaking change; publish it as a new resource version (raise `version:` in the "
            "entry), which gets tables of its own"
        )
    add = [(column, kind) for column, kind in wanted if column not in have]
    return add, widen


def evolve(
    name: str, uri: str, wanted: list[tuple[str, str]], storage_options: dict[str, str]
) -> Evolution:
    """Bring the Delta table at `uri` to the columns `wanted`, additively (see the module)."""
    table = DeltaTable(uri, storage_options=storage_options)
    existing = [
        (field.name, catalogue_type(_type_name(field.type))) for field in table.schema().fields
    ]
    add, widen = plan(name, existing, wanted)
    if widen:
        _rewrite(table, uri, wanted, storage_options)
        table = DeltaTable(uri, storage_options=storage_options)
        log.info("%s: widened %s", name, ", ".join(f"{c} {a}→{b}" for c, a, b in widen))
    if add:
        table.alter.add_columns(
            [Field(column, PrimitiveType(delta_type(kind)), nullable=True) for column, kind in add]
        )
        log.info("%s: added column(s) %s", name, ", ".join(c for c, _ in add))
    return Evolution(name, tuple(c for c, _ in add), tuple(c for c, _, _ in widen))


def evolve_tables(tables: Iterable[Table]) -> list[Evolution]:
    """The schema-evolution step: bring each existing table of `tables` that is written in
    place to the columns it now has (`evolve`). A table rewritten whole by each write (a
    published one) takes its columns at that write, and a missing one is created with them:
    both are left alone. Returns what changed, one entry per table changed."""
    done = []
    for table in tables:
        if not table.rewritten and table.location.is_delta_table():
            location = table.location
            wanted = list(table.columns)
            done.append(
                evolve(table.qualified_name, location.uri, wanted, location.storage_options())
            )
    return [evolution for evolution in done if evolution]


def _type_name(kind: object) -> str:
    return str(getattr(kind, "type", kind))


def _arrow_type(kind: str) -> pa.DataType:
    if kind.startswith("decimal("):
        precision, scale = (int(p) for p in kind[8:-1].split(","))
        return pa.decimal128(precision, scale)
    return {
        "string": pa.string(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[kind]


def _rewrite(
    table: DeltaTable, uri: str, wanted: list[tuple[str, str]], storage_options: dict[str, str]
) -> None:
    """Rewrite the table with its columns cast to the wider types: one version, every row."""
    present = set(delta_schema(table).names)
    columns = [c for c in wanted if c[0] in present]
    # Through delta-rs's engine, not a pyarrow dataset scan (which can make the process abort
    # at exit); the columns come typed as the table has them, then cast to the wider types.
    data = read_delta(table, [c for c, _ in columns])
    schema = pa.schema([pa.field(column, _arrow_type(kind)) for column, kind in columns])
    write_deltalake(
        uri,
        data.cast(schema),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=storage_options,
    )
