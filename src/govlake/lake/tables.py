"""The tables derived from one catalogue entry, where they live and what one row is.

- `<theme>.<resource>_bronze`: one row per record of an ingested extract, raw strings;
- `<theme>.<resource>_quarantine`: one row per extract record that broke a row rule;
- `<theme>.<resource>` (silver): the resource's grain, typed current state;
- `<theme>.<resource>_crosscheck`: one row per key, item and non-authoritative provider
  whose value disagrees with the authority's;
- `<theme>.<resource>_<class>` (published): the resource's grain, one sharing class's items;
- `ops.extracts`: one row per landed extract file;
- `ops.publications`: one row per published table version;
- `ops.quality_runs`: one row per run of an expectation suite (an extract or a publication);
- `ops.quality_results`: one row per expectation per suite run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pyspark.sql import SparkSession

from govlake.core.catalog import Resource, SharingClass
from govlake.core.location import Location

LINEAGE_COLUMNS = (
    ("_row", "bigint"),
    ("_raw", "string"),
    ("_parse_error", "string"),
    ("_provider", "string"),
    ("_extract_id", "string"),
    ("_file_name", "string"),
    ("_file_sha256", "string"),
    ("_ingested_at", "timestamp"),
    # The increment's operation value as delivered (null when its source sends none).
    ("_operation", "string"),
)
QUARANTINE_COLUMNS = (
    ("_rules", "string"),
    ("_reason", "string"),
    ("_quarantined_at", "timestamp"),
)
SILVER_LINEAGE = (("_extract_id", "string"), ("_updated_at", "timestamp"))
DELETION_VECTORS = "'delta.enableDeletionVectors' = 'true'"


def open_type(item_type: str, rule: str) -> str:
    """The column type of an item in the open variant: a generalised date is its year, a
    generalised division code and a masked value are strings."""
    if rule == "mask":
        return "string"
    if rule == "generalise":
        return "integer" if item_type in ("date", "timestamp") else "string"
    return item_type


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class Table:
    """A Delta table: its SQL name, its location and the columns it is created with."""

    database: str
    name: str
    location: Location
    columns: tuple[tuple[str, str], ...]
    grain: str
    #: Rewritten whole by every write (a published table): its schema follows the catalogue
    #: at each write. Other tables evolve additively (`govlake.lake.evolution`).
    rewritten: bool = False
    #: Written with deletion vectors (`delta.enableDeletionVectors`): a MERGE, UPDATE or
    #: DELETE marks the rows it replaces in a small file beside the data instead of
    #: rewriting every data file it touches, so a change costs the change, not the table.
    #: Every reader of such a table must apply them (the protocol's reader feature
    #: `deletionVectors`).
    deletion_vectors: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.database}.{self.name}"

    @property
    def sql_name(self) -> str:
        return f"{_quote(self.database)}.{_quote(self.name)}"

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def ddl_columns(self) -> str:
        return ", ".join(f"{_quote(name)} {kind}" for name, kind in self.columns)


class TableSet:
    """Every table derived from `resource`, under `warehouse/<theme>/`."""

    def __init__(self, resource: Resource, warehouse: Location):
        self.resource = resource
        self.root = warehouse.child(resource.theme)

    def _table(
        self,
        suffix: str,
        columns: tuple[tuple[str, str], ...],
        grain: str,
        *,
        rewritten: bool = False,
        deletion_vectors: bool = False,
    ) -> Table:
        name = self.resource.table_base + suffix
        return Table(
            self.resource.theme,
            name,
            self.root.child(name),
            columns,
            grain,
            rewritten,
            deletion_vectors,
        )

    def _raw_items(self) -> tuple[tuple[str, str], ...]:
        return tuple((item.name, "string") for item in self.resource.items)

    def _typed(self, names: list[str]) -> tuple[tuple[str, str], ...]:
        return tuple((name, self.resource.item(name).type) for name in names)

    @property
    def bronze(self) -> Table:
        return self._table(
            "_bronze",
            self._raw_items() + LINEAGE_COLUMNS,
            "one row per record of an ingested extract, values as delivered (strings)",
        )

    @property
    def quarantine(self) -> Table:
        return self._table(
            "_quarantine",
            self._raw_items() + LINEAGE_COLUMNS + QUARANTINE_COLUMNS,
            "one row per extract record that broke a row rule, with the rules and reasons",
        )

    @property
    def silver(self) -> Table:
        names = [item.name for item in self.resource.items]
        return self._table(
            "", self._typed(names) + SILVER_LINEAGE, self.resource.grain, deletion_vectors=True
        )

    @property
    def crosscheck(self) -> Table:
        columns = self._typed(self.resource.key) + (
            ("item", "string"),
            ("authority", "string"),
            ("authority_value", "string"),
            ("provider", "string"),
            ("provider_value", "string"),
            ("extract_id", "string"),
            ("detected_at", "timestamp"),
            ("status", "string"),
        )
        return self._table(
            "_crosscheck",
            columns,
            "one row per key, item and non-authoritative provider whose value disagrees",
        )

    def published(self, sharing_class: SharingClass) -> Table:
        return self._table(
            f"_{sharing_class}",
            self._typed(self.resource.class_items(sharing_class)),
            f"{self.resource.grain}; {sharing_class} items only",
            rewritten=True,
            deletion_vectors=True,
        )

    @property
    def open(self) -> Table:
        """The open variant (开放数据): a pseudonym of each record (`record_id`), then the
        de-identified items for the public."""
        resource = self.resource
        columns = (("record_id", "string"),) + tuple(
            (name, open_type(resource.item(name).type, rule))
            for name, rule in resource.open_items()
        )
        return self._table(
            "_open",
            columns,
            f"{resource.grain}; open items, de-identified",
            rewritten=True,
            deletion_vectors=True,
        )

    def all(self) -> Iterator[Table]:
        yield self.bronze
        yield self.quarantine
        yield self.silver
        yield self.crosscheck
        for sharing_class in self.resource.sharing_classes:
            yield self.published(sharing_class)
        if self.resource.is_open:
            yield self.open


def ops_tables(warehouse: Location) -> tuple[Table, Table]:
    root = warehouse.child("ops")
    extracts = Table(
        "ops",
        "extracts",
        root.child("extracts"),
        (
            ("extract_id", "string"),
            ("resource", "string"),
            ("provider", "string"),
            ("file_name", "string"),
            ("file_uri", "string"),
            ("file_sha256", "string"),
            ("file_format", "string"),
            ("as_of", "timestamp"),
            ("encoding", "string"),
            ("bytes", "bigint"),
            ("rows_read", "bigint"),
            ("rows_malformed", "bigint"),
            ("rows_quarantined", "bigint"),
            ("rows_merged", "bigint"),
            ("crosscheck_findings", "bigint"),
            ("rows_removed", "bigint"),
            ("status", "string"),
            ("reason", "string"),
            ("ingested_at", "timestamp"),
            ("completed_at", "timestamp"),
        ),
        "one row per landed extract file (ingested or rejected)",
    )
    publications = Table(
        "ops",
        "publications",
        root.child("publications"),
        (
            ("resource", "string"),
            ("sharing_class", "string"),
            ("table_name", "string"),
            ("version", "bigint"),
            ("published_at", "timestamp"),
            ("rows", "bigint"),
            ("silver_version", "bigint"),
            ("source_extracts", "string"),  # comma-separated: replaceWhere rejects arrays on Sail
            # What the table's rows follow from in the catalogue (classes, items, types,
            # required items): a publication whose fingerprint differs rebuilds the table.
            ("catalogue_fingerprint", "string"),
            ("rows_changed", "bigint"),  # rows inserted, updated or deleted by this version
        ),
        "one row per published table version",
    )
    return extracts, publications


def quality_tables(warehouse: Location) -> tuple[Table, Table]:
    root = warehouse.child("ops")
    runs = Table(
        "ops",
        "quality_runs",
        root.child("quality_runs"),
        (
            ("run_id", "string"),
            ("resource", "string"),
            ("provider", "string"),
            ("scope", "string"),  # extract | publication
            ("extract_id", "string"),
            ("silver_version", "bigint"),
            ("checked_at", "timestamp"),
            ("rows", "bigint"),
            ("expectations", "bigint"),
            ("failed_errors", "bigint"),
            ("failed_warnings", "bigint"),
            ("outcome", "string"),  # passed | warned | held
            ("reason", "string"),
            ("data_docs", "string"),
        ),
        "one row per run of an expectation suite on an extract or a publication",
    )
    results = Table(
        "ops",
        "quality_results",
        root.child("quality_results"),
        (
            ("run_id", "string"),
            ("resource", "string"),
            ("provider", "string"),
            ("scope", "string"),
            ("extract_id", "string"),
            ("checked_at", "timestamp"),
            ("expectation", "string"),
            ("expectation_type", "string"),
            ("dimension", "string"),
            ("item", "string"),
            ("severity", "string"),
            ("threshold", "string"),
            ("observed_value", "string"),
            ("observed_ratio", "double"),
            ("unexpected_count", "bigint"),
            ("element_count", "bigint"),
            ("success", "boolean"),
            ("sample", "string"),
        ),
        "one row per expectation per suite run",
    )
    return runs, results


def register(spark: SparkSession, table: Table) -> None:
    """Make `table` known to the session, creating it empty if it does not exist yet. An
    existing table is registered as it is: bringing its schema to the catalogue's is a step
    of its own (`govlake.lake.evolution.evolve_tables`)."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(table.database)}")
    if table.location.is_delta_table():
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {table.sql_name} USING delta "
            f"LOCATION '{table.location.uri}'"
        )
    else:
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {table.sql_name} ({table.ddl_columns()}) USING delta "
            f"LOCATION '{table.location.uri}' COMMENT '{table.grain.replace(chr(39), '')}'"
            + (f" TBLPROPERTIES ({DELETION_VECTORS})" if table.deletion_vectors else "")
        )
