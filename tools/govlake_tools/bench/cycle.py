"""The cycle a high-frequency user lives with: a provider's change extract lands, the pipeline
takes it to a new published version, and a consumer's official client sees that version and
reads it back. Measured on resources of several sizes, each built fast and as govlake builds
it, not through a full ingest.

The resource is the benchmark's own catalogue entry (`hf.permits`, written into the run's
scratch folder): a key and five items from one provider, the authority of all of them, in an
unconditional and a conditional sharing class. Its starting state is made by the engine
(`spark.range` with column expressions appended to the silver table that `register()`
creates, deletion vectors enabled), recorded in the extract register as a merged extract,
and then published once by the pipeline's own publish stage and announced: so every record
the next run relies on is the pipeline's own. Each cycle then runs every stage of
`govlake_app.pipeline` on one change extract (CSV, as the provider delivers it).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from govlake.core.catalog import DEPARTMENTS_FILE, Catalog, CatalogError, Resource, SharingClass
from govlake.core.location import Location
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.deltalog import DeltaLog
from govlake.lake.tables import TableSet
from govlake_tools.bench.process import run_stages, settings_for, timing_gx, warm_up
from govlake_tools.bench.results import peak_rss_bytes, rss_bytes

RESOURCE = "hf.permits"
PROVIDER = "market_regulation"
#: The published table the consumer's client reads back (share.schema.table).
SHARED = "hf.hf.permits_unconditional"
KEY = "permit_id"
TYPES = ("food", "drug", "medical_device", "cosmetics", "special_equipment")
STATUSES = ("valid", "suspended", "revoked", "expired")
FIRST_ISSUE = "2015-01-01"  # issue dates fall in the ten years after
SEED_EXTRACT = f"{PROVIDER}/permits_{PROVIDER}_seed/000000000000"
#: The increment's operation column and its values (inserted, updated, removed).
OPERATION = "operation"
INSERT, UPDATE, REMOVE = "I", "U", "D"
#: Removed records per change extract, of each 1,000 changes.
REMOVALS_PER_MILLE = 1

ENTRY = f"""\
title: Business permits (经营许可证), the benchmark's high-frequency resource
category: department
classification: 部门信息资源/基准测试
provider: {PROVIDER}
steward: {{name: 李敏, email: steward.enterprise@market-regulation.gov.example}}
update_cycle: hourly
sharing: conditional
purposes: [work_reference]
sharing_method: [system_interface]
usage_requirements: Benchmark data; the holder and the fee are requested with a purpose.
open_attribute: not_open
key: [{KEY}]
grain: one row per permit, identified by its permit number
sources:
  {PROVIDER}: [permit_type, status, issued_on, holder_name, fee]
items:
  - {{name: {KEY}, title: Permit number (许可证编号), required: true, sharing: unconditional,
     authority: {PROVIDER}}}
  - {{name: permit_type, title: Permit type (许可类型), required: true, sharing: unconditional,
     authority: {PROVIDER}, values: [{", ".join(TYPES)}]}}
  - {{name: status, title: Status (状态), required: true, sharing: unconditional,
     authority: {PROVIDER}, values: [{", ".join(STATUSES)}]}}
  - {{name: issued_on, title: Issue date (发证日期), type: date, sharing: unconditional,
     authority: {PROVIDER}, check: not_future}}
  - {{name: holder_name, title: Holder (持证人), pii: true, authority: {PROVIDER}}}
  - {{name: fee, title: Fee paid (缴费金额), type: double, minimum: 0, authority: {PROVIDER}}}
"""
#: How the provider's increments mark a removed record (the catalogue's `deliveries`).
DELIVERIES = f"""\
deliveries:
  {PROVIDER}: {{kind: increment, operation: {{column: {OPERATION}, removal: [{REMOVE}]}}}}
"""


@dataclass(frozen=True)
class BenchCatalog:
    """The benchmark's catalogue folder, and whether its entry declares removals."""

    directory: Path
    removals: bool
    note: str


def write_catalog(directory: Path, departments: Path) -> BenchCatalog:
    """The benchmark's catalogue: the department list and the `hf.permits` entry, declaring
    the provider's increments with an operation column when the catalogue knows
    `deliveries`; a catalogue without it gets the entry without removals."""
    (directory / "hf").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(departments, directory / DEPARTMENTS_FILE)
    entry = directory / "hf" / "permits.yaml"
    entry.write_text(ENTRY + DELIVERIES, encoding="utf-8")
    try:
        Catalog.load(directory)
    except CatalogError as error:
        # REMOVALS: a catalogue that cannot say how an increment removes a record: the change
        # extracts carry updates and inserts only.
        entry.write_text(ENTRY, encoding="utf-8")
        Catalog.load(directory)
        return BenchCatalog(directory, False, f"no removals: the catalogue refused "
                            f"`deliveries` ({str(error).splitlines()[0][:200]})")  # fmt: skip
    return BenchCatalog(directory, True, f"removals marked {OPERATION}={REMOVE}")


# -- the starting state -------------------------------------------------------------------
def _pick(ident: Column, values: tuple[str, ...], salt: int) -> Column:
    index = F.pmod(ident * salt, F.lit(len(values))) + 1
    return F.element_at(F.array(*[F.lit(v) for v in values]), index.cast("int"))


def seed_frame(spark: SparkSession, rows: int, *, at: datetime) -> DataFrame:
    """`rows` permits (keys `P00000000000` on), as silver holds them after a full extract."""
    ident = F.col("id")
    return spark.range(rows).select(
        F.format_string("P%011d", ident).alias(KEY),
        _pick(ident, TYPES, 7).alias("permit_type"),
        _pick(ident, STATUSES, 13).alias("status"),
        F.date_add(
            F.lit(FIRST_ISSUE).cast("date"), F.pmod(ident * 7919, F.lit(3650)).cast("int")
        ).alias("issued_on"),
        F.concat(F.lit("持证人"), ident.cast("string")).alias("holder_name"),
        (F.pmod(ident * 31, F.lit(100_000)) / 100).cast("double").alias("fee"),
        F.lit(SEED_EXTRACT).alias("_extract_id"),
        F.lit(at).cast("timestamp").alias("_updated_at"),
    )


def _table_shape(location: Location) -> dict[str, int]:
    files = DeltaLog(location).files()
    return {"files": len(files), "bytes": sum(f.size for f in files)}


def _seed_one(run_dir: Path, rows: int, catalog_dir: str, end: datetime) -> dict[str, Any]:
    from govlake.lake.engine import get_spark
    from govlake.lake.statements import append
    from govlake.lake.tables import register
    from govlake_app import pipeline
    from jobs import publish, registry

    settings = settings_for(run_dir, catalog_dir)
    catalog = Catalog.load(settings.catalog_dir)
    resource = catalog.get(RESOURCE)
    spark = get_spark(settings, catalog, fresh=True)
    interval = Interval.ending(end)
    at = interval.end_naive_utc
    tables = TableSet(resource, settings.warehouse_location)
    started = time.perf_counter()
    register(spark, tables.silver)
    append(seed_frame(spark, rows, at=at), tables.silver)
    registry.add(spark, registry.extracts_table(spark, settings), extract_id=SEED_EXTRACT,
                 resource=RESOURCE, provider=PROVIDER, file_name="(built by the benchmark)",
                 as_of=at, rows_read=rows, rows_merged=rows, status="merged",
                 ingested_at=at)  # fmt: skip
    built = time.perf_counter() - started
    counts = StageCounts(RESOURCE)
    pipeline.run_stage(publish, spark, resource=resource, interval=interval, settings=settings,
                       counts=counts)  # fmt: skip
    pipeline.announce(resource=resource, interval=interval, settings=settings)
    spark.stop()
    if not counts.published:
        raise RuntimeError(f"the first publication of {rows:,} rows was held: {counts.held}")
    return {
        "rows": rows,
        "silver_seconds": built,
        "publication_seconds": time.perf_counter() - started - built,
        "silver": _table_shape(tables.silver.location),
        "published_versions": counts.published_versions,
    }


def seed(*, runs: dict[str, int], catalog_dir: str, end: str) -> dict[str, Any]:
    """The starting state of each run folder (folder → rows): silver written by the engine,
    then published once by the pipeline's publish stage and announced."""
    warm_up()
    return {
        run_dir: _seed_one(Path(run_dir), rows, catalog_dir, datetime.fromisoformat(end))
        for run_dir, rows in runs.items()
    }


# -- the change extracts ------------------------------------------------------------------
@dataclass(frozen=True)
class ChangeExtract:
    """One change extract, waiting outside the landing zone until its cycle lands it."""

    file: str  # where it waits
    landing: str  # its path in the landing zone
    end: str  # the end of its run's interval (ISO)
    updates: int
    inserts: int
    removals: int


def _change_table(ids: np.ndarray, operations: np.ndarray, cycle: int, *,
                  operation_column: bool) -> pa.Table:  # fmt: skip
    days = np.datetime64(FIRST_ISSUE) + (ids * 13 + cycle) % 3650
    columns = {
        KEY: [f"P{i:011d}" for i in ids],
        "permit_type": np.array(TYPES)[(ids + cycle) % len(TYPES)],
        "status": np.array(STATUSES)[(ids * 3 + cycle) % len(STATUSES)],
        "issued_on": days.astype(str),
        "holder_name": [f"持证人{i}" for i in ids],
        "fee": [f"{((i * 37 + cycle) % 100_000) / 100:.2f}" for i in ids],
    }
    if operation_column:
        columns[OPERATION] = operations
    return pa.table(columns)


def change_extracts(incoming: Path, *, rows: int, changes: int, cycles: int, removals: bool,
                    first_end: datetime) -> list[ChangeExtract]:  # fmt: skip
    """`cycles` change extracts of `changes` records each for a resource of `rows` records:
    updates of existing permits (random, a different set each time), new permits and, when
    the catalogue declares removals, a few removed permits (never one updated or removed
    before). The same arguments make the same files."""
    inserts = max(1, changes // 10)
    removed = max(1, changes * REMOVALS_PER_MILLE // 1000) if removals else 0
    updates = changes - inserts - removed
    kept = rows - cycles * removed  # removals come from the top of the key range
    made = []
    for cycle in range(1, cycles + 1):
        rng = np.random.default_rng(1000 + cycle)
        ids = np.concatenate([
            np.sort(rng.choice(kept, size=updates, replace=False)),
            rows + (cycle - 1) * inserts + np.arange(inserts),
            rows - 1 - (cycle - 1) * removed - np.arange(removed),
        ])  # fmt: skip
        operations = np.array([UPDATE] * updates + [INSERT] * inserts + [REMOVE] * removed)
        end = first_end + timedelta(hours=cycle)
        name = f"permits_{PROVIDER}_{end - timedelta(minutes=30):%Y%m%dT%H%M}.csv"
        path = incoming / f"cycle{cycle}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        table = _change_table(ids, operations, cycle, operation_column=removals)
        pacsv.write_csv(table, path)
        made.append(ChangeExtract(str(path), f"hf/permits/{PROVIDER}/{name}", end.isoformat(),
                                  updates, inserts, removed))  # fmt: skip
    return made


# -- one cycle ----------------------------------------------------------------------------
def _read_back(url: str, counts: StageCounts, before: int, *, limit: int,
               read_changes: bool) -> dict[str, Any]:  # fmt: skip
    """The consumer's official client sees the new version of the unconditional table and
    reads it back: `limit` rows of that version, or every change since `before`."""
    import delta_sharing

    published = counts.published_versions.get("unconditional")
    if not counts.published or published is None or published <= before:
        raise RuntimeError(f"the cycle published no new version (held: {counts.held})")
    seen = delta_sharing.get_table_version(url)
    if seen != published:
        raise RuntimeError(f"the client sees version {seen}, the cycle published {published}")
    if read_changes:
        frame = delta_sharing.load_table_changes_as_pandas(
            url, starting_version=before + 1, ending_version=seen
        )
    else:
        frame = delta_sharing.load_as_pandas(url, version=seen, limit=limit)
    return {"version_before": before, "version_seen": seen, "rows_read": len(frame)}


def _written_by(log: DeltaLog, versions: range) -> dict[str, int]:
    """What the commits `versions` wrote: new data files (not a file re-added with a deletion
    vector), and deletion vectors with the rows they mark deleted."""
    written = dict.fromkeys(("data_files", "data_bytes", "deletion_vectors",
                             "deletion_vector_bytes", "rows_marked_deleted"), 0)  # fmt: skip
    for version in versions:
        actions = log.commit_file(version).actions
        removed = {body["path"] for kind, body in actions if kind == "remove"}
        for kind, body in actions:
            if kind != "add":
                continue
            if vector := body.get("deletionVector"):
                written["deletion_vectors"] += 1
                written["deletion_vector_bytes"] += int(vector.get("sizeInBytes") or 0)
                written["rows_marked_deleted"] += int(vector.get("cardinality") or 0)
            if body["path"] not in removed:
                written["data_files"] += 1
                written["data_bytes"] += int(body.get("size") or 0)
    return written


def _written(
    settings: Settings, resource: Resource, before: dict[SharingClass, int]
) -> dict[str, Any]:
    """Per published table: what the cycle wrote, against the table's bytes."""
    tables = TableSet(resource, settings.warehouse_location)
    written: dict[str, Any] = {}
    for sharing_class, version in before.items():
        location = tables.published(sharing_class).location
        log = DeltaLog(location)
        shape = _table_shape(location)
        made = _written_by(log, range(version + 1, log.version() + 1))
        share = (made["data_bytes"] + made["deletion_vector_bytes"]) / max(1, shape["bytes"])
        written[sharing_class] = shape | made | {"share_of_table_written": share}
    return written


def _one_cycle(spark: SparkSession, settings: Settings, resource: Resource,
               extract: ChangeExtract, url: str, *, limit: int,
               read_changes: bool) -> dict[str, Any]:  # fmt: skip
    import delta_sharing

    from govlake.lake.statements import version

    tables = TableSet(resource, settings.warehouse_location)
    before = {c: version(tables.published(c)) for c in resource.sharing_classes}
    known = delta_sharing.get_table_version(url)  # what the consumer had
    target = Path(settings.landing_location.child(*extract.landing.split("/")).uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    counts = StageCounts(resource.qualified_name)
    interval = Interval.ending(datetime.fromisoformat(extract.end))
    with timing_gx() as gx:
        started = time.perf_counter()
        os.replace(extract.file, target)  # the provider's file lands
        stages = run_stages(spark, resource=resource, interval=interval, settings=settings,
                            counts=counts)  # fmt: skip
        pipeline_peak = peak_rss_bytes()
        begun = time.perf_counter()
        read = _read_back(url, counts, known, limit=limit, read_changes=read_changes)
        finished = time.perf_counter()
    return {
        "seconds": finished - started,
        "stages": stages | {"client": finished - begun},
        "gx_seconds": gx.seconds,
        "extract": asdict(extract),
        "read_back": read,
        "peak_rss_after_stages_bytes": pipeline_peak,
        "counts": asdict(counts),
        "published": _written(settings, resource, before),
    }


def cycle(*, run_dir: str, catalog_dir: str, extracts: list[dict[str, Any]], profile: str,
          limit: int, budget: float, read_changes: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run the cycle once per change extract, in order (a further one only while each takes
    under `budget` seconds), in one process with the engine started before timing."""
    from govlake.lake.engine import get_spark

    settings = settings_for(run_dir, catalog_dir)
    catalog = Catalog.load(settings.catalog_dir)
    resource = catalog.get(RESOURCE)
    warm_up()
    import delta_sharing  # noqa: F401  (imported before timing, like the engine's modules)

    started = time.perf_counter()
    spark = get_spark(settings, catalog, fresh=True)
    engine_seconds = time.perf_counter() - started
    rss_before = rss_bytes()
    done: list[dict[str, Any]] = []
    for given in extracts:
        if done and done[-1]["seconds"] > budget:
            break
        done.append(_one_cycle(spark, settings, resource, ChangeExtract(**given),
                               f"{profile}#{SHARED}", limit=limit,
                               read_changes=read_changes))  # fmt: skip
    spark.stop()
    return {
        "seconds": min(c["seconds"] for c in done),
        "cycles": done,
        # govlake's setting where it has one, else what Sail reads itself
        "sail_mode": getattr(settings, "sail_mode", None) or os.environ.get("SAIL_MODE", "local"),
        "engine_start_seconds": engine_seconds,
        "rss_before_bytes": rss_before,
    }
