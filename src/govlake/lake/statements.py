"""Writing to the lakehouse: the few Delta operations jobs use, all in the portable subset
(append, replaceWhere overwrite, SQL MERGE/UPDATE), plus table metadata through delta-rs."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from govlake.lake.tables import Table

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A commit lost to a concurrent writer of the same table: Sail's message, and Delta's
#: optimistic-concurrency exceptions on Spark. Nothing of the statement was committed. Also
#: Sail's "Missing commit file" when it listed a table's log while another process committed
#: to it (seen once on `ops.extracts` with three runs at once): the statement read nothing.
_CONFLICT = re.compile(
    r"Failed to commit transaction|Concurrent(Append|DeleteRead|DeleteDelete|Transaction)"
    r"Exception|ProtocolChangedException|MetadataChangedException|Missing commit file"
)
COMMIT_ATTEMPTS = 8


def committing(statement: Callable[[], T], *, what: str, attempts: int = COMMIT_ATTEMPTS) -> T:
    """Run an idempotent write, again after a commit conflict with another writer (another
    resource's run updating `ops.extracts`, say), with a growing random pause."""
    for attempt in range(1, attempts + 1):
        try:
            return statement()
        except Exception as exc:
            if attempt == attempts or not _CONFLICT.search(str(exc)):
                raise
            pause = random.uniform(0.05, 0.2) * 2**attempt
            log.info("%s: commit conflict (%s); attempt %d in %.2f s", what,
                     str(exc).splitlines()[0][:200], attempt + 1, pause)  # fmt: skip
            time.sleep(pause)
    raise AssertionError("unreachable")


def sql_literal(value: Any) -> str:
    """A SQL literal for a value of ours (ids, names, numbers, timestamps)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def conform(df: DataFrame, table: Table) -> DataFrame:
    """Select `table`'s columns in order, casting; columns `df` lacks become nulls."""
    present = set(df.columns)
    return df.selectExpr(
        *[
            f"cast(`{name}` as {kind}) as `{name}`"
            if name in present
            else f"cast(null as {kind}) as `{name}`"
            for name, kind in table.columns
        ]
    )


def append(df: DataFrame, table: Table) -> None:
    conform(df, table).write.format("delta").mode("append").save(table.location.uri)


def replace_where(df: DataFrame, table: Table, predicate: str) -> None:
    """Replace exactly the rows matching `predicate` with `df` (one Delta version)."""
    (
        conform(df, table)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .save(table.location.uri)
    )


def overwrite(df: DataFrame, table: Table) -> None:
    """Replace the table's rows; a table rewritten whole by each write also takes the
    catalogue's current columns (an item added, widened, or no longer shared in its class)."""
    writer = conform(df, table).write.format("delta").mode("overwrite")
    if table.rewritten:
        writer = writer.option("overwriteSchema", "true")
    writer.save(table.location.uri)


def execute(spark: SparkSession, statement: str) -> int:
    """Run a DML statement; return the number of rows it affected (first result column on
    both Sail and Spark+Delta), 0 when it reports nothing."""
    rows = committing(lambda: spark.sql(statement).collect(), what=statement[:80])
    if not rows or rows[0][0] is None:
        return 0
    return int(rows[0][0])


@dataclass(frozen=True)
class Merged:
    """What one MERGE commit did, from its `operationMetrics` in the Delta log (the names
    Delta defines, written by Sail and by Spark+Delta alike), not from the statement's result
    row, whose meaning differs between engines. `version` is the commit's (None: nothing
    committed)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    version: int | None = None

    @property
    def changed(self) -> int:
        """Rows inserted or updated."""
        return self.inserted + self.updated

    @classmethod
    def of(cls, commit: dict[str, Any]) -> Merged:
        metrics = commit.get("operationMetrics") or {}
        return cls(
            inserted=int(metrics.get("numTargetRowsInserted", 0)),
            updated=int(metrics.get("numTargetRowsUpdated", 0)),
            deleted=int(metrics.get("numTargetRowsDeleted", 0)),
            version=int(commit["version"]) if "version" in commit else None,
        )


def merge(spark: SparkSession, table: Table, statement: str) -> Merged:
    """Run a MERGE into `table`; what it inserted, updated and deleted. A MERGE that changes
    nothing commits nothing."""

    def attempt() -> tuple[int, int]:
        before = version(table)
        spark.sql(statement).collect()
        return before, version(table)

    before, after = committing(attempt, what=f"MERGE INTO {table.qualified_name}")
    if after == before:
        return Merged()
    for commit in history(table, limit=after - before):
        if commit.get("operation") == "MERGE" and before < int(commit.get("version", after)):
            return Merged.of(commit)
    return Merged()


def merges_marked(table: Table, marks: Iterable[str]) -> dict[str, Merged]:
    """The MERGE commits of `table` whose condition carries one of `marks` (SQL literals the
    statement's ON clause compares with, e.g. the extract id its source holds): for each mark
    found, what that commit did.

    The commit is the only record of a MERGE that is written in the same step as its data, so
    a job that stopped after the commit and before recording it elsewhere finds its figures
    here. Sail 0.7.2 ignores `spark.databricks.delta.commitInfo.userMetadata` (the commit has
    no `userMetadata`), which Delta on Spark honours; both keep the merge condition's text in
    `operationParameters`, literals included (Sail 0.7.2 as `mergePredicate`, checked; Delta
    on Spark as `predicate`, not checked here). Reads the history the log still holds, newest
    first, until every mark is found."""
    wanted = set(marks)
    found: dict[str, Merged] = {}
    if not wanted:
        return found
    for commit in history(table):  # newest first
        if commit.get("operation") != "MERGE":
            continue
        parameters = commit.get("operationParameters") or {}
        condition = " ".join(str(v) for k, v in parameters.items() if "predicate" in k.lower())
        for mark in wanted - found.keys():
            if mark in condition:
                found[mark] = Merged.of(commit)
        if found.keys() == wanted:
            break
    return found


def version(table: Table) -> int:
    """The table's current Delta version, read from its log with delta-rs."""
    return int(
        DeltaTable(table.location.uri, storage_options=table.location.storage_options()).version()
    )


def history(table: Table, limit: int | None = None) -> list[dict[str, Any]]:
    """Commits of `table`, newest first, read from its log with delta-rs."""
    return list(
        DeltaTable(table.location.uri, storage_options=table.location.storage_options()).history(
            limit
        )
    )
