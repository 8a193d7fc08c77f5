"""Landing → bronze: every record of every new extract, as delivered, with its lineage.

The first stage of the pipeline, so it first brings the existing tables a run writes to the
columns the catalogue now gives them (`govlake.lake.evolution.evolve_tables`: additive, or
refused), before anything is written.

A file already ingested (same resource, provider and sha256) is skipped and archived. A file
that cannot be read at all is moved to `rejected/` with a `.reason.json` beside it, recorded
in `ops.extracts`, and the run goes on with the other files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import Resource
from govlake.core.errors import GovlakeError
from govlake.core.location import Location
from govlake.core.runs import Interval, RejectedFile, StageCounts
from govlake.core.settings import Settings
from govlake.lake.evolution import evolve_tables
from govlake.lake.landing import (
    ExtractRejected,
    LandedFile,
    NormalisedExtract,
    discover,
    extract_id,
    file_digest,
    normalise,
    staging_location,
)
from govlake.lake.statements import append, execute, sql_literal
from govlake.lake.tables import Table, TableSet, ops_tables, quality_tables, register
from jobs import registry

log = logging.getLogger(__name__)

DONE = ("bronze", "validated", "held", "merged", "published")


class StagingUnreadable(GovlakeError):
    """The engine did not see every record staged for it: the staging file is on storage
    the engine does not reach. Nothing was appended; the landed file stays where it is."""


def _archive_location(
    landing: Location, resource: Resource, file: LandedFile, sha: str
) -> Location:
    # The content hash in the name keeps a corrected re-send from overwriting the original.
    return landing.child(
        "archive",
        resource.theme,
        resource.name,
        file.provider,
        f"{file.stem}.{sha[:12]}{file.suffix}",
    )


def _reject(
    spark: SparkSession,
    *,
    settings: Settings,
    resource: Resource,
    file: LandedFile,
    error: ExtractRejected,
    digest: tuple[str, int, bool] | None,
    interval: Interval,
    counts: StageCounts,
) -> None:
    landing = settings.landing_location
    target = landing.child("rejected", resource.theme, resource.name, file.provider, file.name)
    if target.exists():
        suffix = digest[0][:12] if digest else interval.end.strftime("%Y%m%dT%H%M%S")
        target = target.parent.child(f"{file.stem}.{suffix}{file.suffix}")
    file.location.move_to(target)
    reason = {
        "file": file.name,
        "resource": resource.qualified_name,
        "provider": file.provider,
        "rule": error.rule,
        "reason": error.reason,
        "sha256": digest[0] if digest else None,
        "rejected_at": interval.end.isoformat(),
        "kept_at": target.uri,
    }
    target.parent.child(target.name + ".reason.json").write_text(
        json.dumps(reason, ensure_ascii=False, indent=2) + "\n"
    )
    table = registry.extracts_table(spark, settings)
    sha = digest[0] if digest else ""
    registry.add(
        spark,
        table,
        # Its own id, so that a corrected re-send of the same content registers afresh.
        extract_id=f"rejected/{extract_id(file, sha or 'unread')}",
        resource=resource.qualified_name,
        provider=file.provider,
        file_name=file.name,
        file_uri=target.uri,
        file_sha256=sha or None,
        bytes=digest[1] if digest else None,
        status="rejected",
        reason=f"{error.rule}: {error.reason}",
        ingested_at=interval.end_naive_utc,
        completed_at=interval.end_naive_utc,
    )
    counts.rejected.append(RejectedFile(file.name, error.rule, error.reason))
    log.warning("rejected %s: %s: %s", file.location.uri, error.rule, error.reason)


@dataclass(frozen=True)
class _Staged:
    """A new extract, normalised into its staging file."""

    ident: str
    sha: str
    staging: Location
    extract: NormalisedExtract
    known: list[Row]  # its earlier rows in the register (a run stopped half-way)


def run(
    spark: SparkSession,
    *,
    resource: Resource,
    interval: Interval,
    settings: Settings,
    counts: StageCounts | None = None,
) -> StageCounts:
    """Bring the tables a run writes to the catalogue's columns (the pipeline's schema
    evolution step), then ingest every file waiting for `resource` into
    `<theme>.<resource>_bronze`."""
    counts = counts or StageCounts(resource.qualified_name)
    tables = TableSet(resource, settings.warehouse_location)
    warehouse = settings.warehouse_location
    evolve_tables([*tables.all(), *ops_tables(warehouse), *quality_tables(warehouse)])
    register(spark, tables.bronze)
    register_table = registry.extracts_table(spark, settings)
    for file in discover(settings.landing_location, resource):
        staged = _stage(spark, file, resource=resource, register_table=register_table,
                        settings=settings, interval=interval, counts=counts)  # fmt: skip
        if staged is not None:
            _load(spark, file, staged, resource=resource, bronze=tables.bronze,
                  register_table=register_table, settings=settings, interval=interval,
                  counts=counts)  # fmt: skip
    return counts


def _stage(
    spark: SparkSession,
    file: LandedFile,
    *,
    resource: Resource,
    register_table: Table,
    settings: Settings,
    interval: Interval,
    counts: StageCounts,
) -> _Staged | None:
    """`file` normalised into a staging file; None when it was ingested before (skipped and
    archived) or cannot be read (rejected)."""
    landing = settings.landing_location
    digest: tuple[str, int, bool] | None = None
    try:
        digest = file_digest(file.location)
        sha = digest[0]
        known = registry.find(
            spark,
            register_table,
            resource=resource.qualified_name,
            provider=file.provider,
            file_sha256=sha,
        )
        if any(row.status in DONE for row in known):
            log.info("skipping %s: extract already ingested", file.location.uri)
            counts.skipped_files.append(file.name)
            file.location.move_to(_archive_location(landing, resource, file, sha))
            return None
        ident = extract_id(file, sha)
        staging = staging_location(settings.warehouse_location, file, sha)
        extract = normalise(file, resource, staging, digest=digest)
    except ExtractRejected as error:
        _reject(
            spark,
            settings=settings,
            resource=resource,
            file=file,
            error=error,
            digest=digest,
            interval=interval,
            counts=counts,
        )
        return None
    return _Staged(ident, sha, staging, extract, known)


def _load(
    spark: SparkSession,
    file: LandedFile,
    staged: _Staged,
    *,
    resource: Resource,
    bronze: Table,
    register_table: Table,
    settings: Settings,
    interval: Interval,
    counts: StageCounts,
) -> None:
    """Append the staged records to bronze with their lineage, archive the file and record
    the extract as `bronze`."""
    ident, sha, extract = staged.ident, staged.sha, staged.extract
    if any(row.status == "registered" for row in staged.known):
        # A previous run stopped between registering and finishing this extract.
        execute(spark, f"DELETE FROM {bronze.sql_name} WHERE _extract_id = {sql_literal(ident)}")
    else:
        registry.add(
            spark,
            register_table,
            extract_id=ident,
            resource=resource.qualified_name,
            provider=file.provider,
            file_name=file.name,
            file_sha256=sha,
            file_format=extract.file_format,
            # Without a stamp in its name an extract is taken to be as of its arrival.
            as_of=file.as_of or interval.end_naive_utc,
            encoding="gbk" if extract.encoding == "gb18030" else extract.encoding,
            bytes=extract.bytes,
            status="registered",
            ingested_at=interval.end_naive_utc,
        )
    staged_rows = extract.rows + len(extract.malformed)
    # Sail reads a path it cannot see as an empty table, without an error: an engine that
    # does not share the staging storage would otherwise archive the file with no records.
    seen = spark.read.parquet(staged.staging.uri).count()
    if seen != staged_rows:
        raise StagingUnreadable(
            f"{resource.qualified_name}: the engine read {seen} of the {staged_rows} records "
            f"staged from {file.name} at {staged.staging.uri}; the staging area must be on "
            "storage the engine reaches (the warehouse)"
        )
    operation = resource.delivery(file.provider).operation
    records = spark.read.parquet(staged.staging.uri)
    if operation is not None:
        records = records.withColumnRenamed(operation.column, "_operation")
    records = records.select(
        "*",
        F.lit(file.provider).alias("_provider"),
        F.lit(ident).alias("_extract_id"),
        F.lit(file.name).alias("_file_name"),
        F.lit(sha).alias("_file_sha256"),
        F.lit(interval.end_naive_utc).cast("timestamp").alias("_ingested_at"),
    )
    append(records, bronze)
    archived = _archive_location(settings.landing_location, resource, file, sha)
    file.location.move_to(archived)
    staged.staging.delete()
    registry.update(
        spark,
        register_table,
        ident,
        status="bronze",
        file_uri=archived.uri,
        rows_read=extract.rows,
        rows_malformed=len(extract.malformed),
    )
    counts.extracts.append(ident)
    counts.rows_read += extract.rows
    counts.rows_malformed += len(extract.malformed)
    if extract.ignored_columns:
        counts.ignored_columns[file.name] = extract.ignored_columns
