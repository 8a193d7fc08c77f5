"""High-frequency datasets: increments with removals, full extracts, and publications that
apply only the change.

A small catalogue entry (permits: one responsible provider delivering increments with an
operation column, another supplying one item) goes through many random cycles of the
pipeline. After each, every published table must equal a from-scratch rebuild of silver's
state, read back with delta-rs (QueryBuilder, which applies deletion vectors), and every
earlier version must still read as it did. A crash (kill -9) between silver's MERGE and each
published table must leave tables that the next run brings to the state of an uninterrupted
run.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from support import REPO, lake_settings

from govlake.core.catalog import Catalog, Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.lake.tables import Table, TableSet
from govlake.transforms import opendata
from govlake.transforms.opendata import RECORD_ID
from govlake_app import pipeline as ingest
from jobs.publish import record_key

pytestmark = pytest.mark.slow

START = datetime.datetime(2026, 12, 14, 1, 0)
STEWARD = {"name": "李敏", "email": "steward.permits@market-regulation.gov.example"}
LENIENT = {"mostly": 0.5, "severity": "error"}


def permits_entry(*, deliveries: dict[str, Any], status_sharing: str = "conditional",
                  grade_required: bool = False) -> dict[str, Any]:  # fmt: skip
    """The catalogue entry of `trial.permits`."""
    return {
        "title": "Business permits (许可)",
        "category": "thematic",
        "classification": "主题信息资源/许可",
        "provider": "market_regulation",
        "steward": STEWARD,
        "update_cycle": "hourly",
        "sharing": "conditional",
        "purposes": ["work_reference"],
        "sharing_method": ["system_interface"],
        "usage_requirements": "state the purpose",
        "open_attribute": "open",
        "open": {"licence": "CC-BY-4.0", "notice": "cite the source",
                 "licence_url": "https://creativecommons.org/licenses/by/4.0/"},
        "key": ["permit_id"],
        "grain": "one row per permit",
        "quality": {"completeness": LENIENT, "validity": LENIENT, "uniqueness": LENIENT},
        "sources": {
            "market_regulation": ["holder", "status", "issued_on"],
            "taxation": ["tax_grade"],
        },
        "deliveries": deliveries,
        "items": [
            {"name": "permit_id", "title": "Permit", "required": True, "base_item": True,
             "authority": "market_regulation"},
            {"name": "holder", "title": "Holder", "required": True, "base_item": True,
             "authority": "market_regulation", "open": "mask"},
            {"name": "status", "title": "Status", "authority": "market_regulation",
             "sharing": status_sharing, "values": ["active", "suspended"]},
            {"name": "issued_on", "title": "Issued on", "type": "date", "open": "generalise",
             "authority": "market_regulation"},
            {"name": "tax_grade", "title": "Tax grade", "authority": "taxation",
             "required": grade_required, "values": ["A", "B", "C", "D"]},
        ],
    }  # fmt: skip


INCREMENTS = {"market_regulation": {"kind": "increment",
                                    "operation": {"column": "op", "removal": ["D"]}}}  # fmt: skip
FULL = {"market_regulation": {"kind": "full"}}


def write_catalogue(folder: Path, entry: dict[str, Any]) -> Resource:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("departments.yaml", "holidays.yaml"):
        shutil.copy(REPO / "schemas" / name, folder / name)
    (folder / "trial").mkdir(exist_ok=True)
    text = yaml.safe_dump(entry, allow_unicode=True, sort_keys=False)
    (folder / "trial" / "permits.yaml").write_text(text, encoding="utf-8")
    return Catalog.load(folder).get("trial.permits")


def permits_lake(root: Path, deliveries: dict[str, Any]) -> tuple[Resource, Settings, TableSet]:
    """A lakehouse under `root` whose catalogue holds `trial.permits` with `deliveries`."""
    folder = root / "catalogue"
    resource = write_catalogue(folder, permits_entry(deliveries=deliveries))
    settings = lake_settings(root, catalog_dir=folder)
    return resource, settings, TableSet(resource, settings.warehouse_location)


def land(settings: Settings, provider: str, at: datetime.datetime, header: list[str],
         rows: list[list[str]]) -> Path:  # fmt: skip
    folder = Path(settings.landing_location.uri) / "trial" / "permits" / provider
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"permits_{at:%Y%m%dT%H%M}.csv"
    lines = [",".join(header), *(",".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(spark: SparkSession, resource: Resource, settings: Settings,
        at: datetime.datetime) -> StageCounts:  # fmt: skip
    return ingest.run(spark, resource=resource, interval=Interval.ending(at), settings=settings)


def rows_of(table: Table, *, version: int | None = None) -> set[tuple[Any, ...]]:
    """The table's rows as delta-rs reads them (deletion vectors applied)."""
    delta = DeltaTable(table.location.uri, version=version)
    data = read_delta(delta, table.column_names)
    return set(zip(*[data.column(c).to_pylist() for c in table.column_names], strict=True))


def rebuilt(spark: SparkSession, resource: Resource, tables: TableSet, settings: Settings,
            target: str) -> set[tuple[Any, ...]]:  # fmt: skip
    """`target`'s table (a sharing class, or `open`) built from scratch from silver's current
    rows as delta-rs reads them."""
    silver = read_delta(DeltaTable(tables.silver.location.uri)).to_pylist()
    required = [item.name for item in resource.items if item.required]
    publishable = [row for row in silver if all(row[name] is not None for name in required)]
    if target != "open":
        columns = resource.class_items(target)  # type: ignore[arg-type]
        return {tuple(row[c] for c in columns) for row in publishable}
    frame = spark.createDataFrame(publishable, schema=tables.silver.ddl_columns())
    named = frame.withColumn(RECORD_ID, opendata.record_id(resource, record_key(settings)))
    rows = opendata.open_variant(named, resource, carry=[RECORD_ID]).collect()
    return {tuple(row) for row in rows}


def targets(resource: Resource, tables: TableSet) -> list[tuple[str, Table]]:
    return [(c, tables.published(c)) for c in resource.sharing_classes] + [("open", tables.open)]


def _date(rng: random.Random) -> str:
    return (datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randrange(2000))).isoformat()


class Permits:
    """Random increments of both sources, and what the responsible provider holds."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.held: set[str] = set()
        self.last: dict[str, list[str]] = {}  # the record each held permit was last sent
        self.next_id = 0

    def _new_id(self) -> str:
        self.next_id += 1
        return f"P{self.next_id:06d}"

    def _record(self, permit: str) -> list[str]:
        rng = self.rng
        return [permit, f"holder {rng.randrange(10_000)}", rng.choice(["active", "suspended"]),
                _date(rng), "U"]  # fmt: skip

    def market(self, *, inserts: int, updates: int, removals: int) -> list[list[str]]:
        rng = self.rng
        held = sorted(self.held)
        new = [self._record(self._new_id()) for _ in range(inserts)]
        removed = rng.sample(held, min(removals, len(held)))
        kept = sorted(set(held) - set(removed))
        updated = [self._record(p) for p in rng.sample(kept, min(updates, len(kept)))]
        # A few records re-sent as they are: their rows change nowhere.
        untouched = sorted(set(kept) - {row[0] for row in updated})
        resent = [self.last[p] for p in rng.sample(untouched, min(3, len(untouched)))]
        rows = [*new, *updated, *resent, *([p, "", "", "", "D"] for p in removed)]
        rows.append([self._new_id(), "", "", "", "D"])  # a key silver never held: nothing
        if spare := sorted(set(untouched) - {row[0] for row in resent}):
            twice = rng.choice(spare)
            rows += [self._record(twice), self._record(twice)]  # a key twice: neither applies
        rows.append([self._new_id(), "holder x", "revoked", _date(rng), "I"])  # breaks a rule
        self.held |= {row[0] for row in new}
        self.last.update({row[0]: row for row in [*new, *updated]})
        self.held -= set(removed)
        rng.shuffle(rows)
        return rows

    def taxation(self, count: int) -> list[list[str]]:
        rng = self.rng
        known = sorted(self.held)
        grades = {}
        for _ in range(count):
            # Mostly permits the market holds, some the market has not delivered yet.
            ahead = f"P{rng.randrange(self.next_id + 1, self.next_id + 40):06d}"
            permit = rng.choice(known) if known and rng.random() < 0.8 else ahead
            grades[permit] = [permit, rng.choice("ABCD")]
        return list(grades.values())


MARKET = ["permit_id", "holder", "status", "issued_on", "op"]
TAXATION = ["permit_id", "tax_grade"]


def test_random_cycles_publish_what_a_rebuild_would(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "catalogue"
    resource = write_catalogue(folder, permits_entry(deliveries=INCREMENTS))
    settings = lake_settings(tmp_path, catalog_dir=folder)
    permits = Permits(seed=16)
    seen: dict[tuple[str, int], tuple[Table, set[tuple[Any, ...]]]] = {}
    at = START
    for cycle in range(8):
        if cycle == 4:  # status becomes unconditional: the unconditional table gains a column
            resource = write_catalogue(
                folder, permits_entry(deliveries=INCREMENTS, status_sharing="unconditional")
            )
        if cycle == 6:  # the grade becomes required: rows without one stop being published
            entry = permits_entry(
                deliveries=INCREMENTS, status_sharing="unconditional", grade_required=True
            )
            resource = write_catalogue(folder, entry)
        tables = TableSet(resource, settings.warehouse_location)
        size = 400 if cycle == 0 else 40
        market = permits.market(inserts=size, updates=size // 2, removals=size // 8)
        land(settings, "market_regulation", at, MARKET, market)
        land(settings, "taxation", at, TAXATION, permits.taxation(size))
        before = {c: _version(table) for c, table in targets(resource, tables)}
        counts = run(spark, resource, settings, at)
        assert not counts.held, counts.held
        silver_keys = {row[0] for row in rows_of(tables.silver)}
        assert silver_keys >= permits.held, "a record the market holds is missing from silver"
        removed_ever = {k for k in silver_keys if k not in permits.held}
        # Keys in silver the market does not hold came from taxation alone (waiting).
        unexpected = [k for k in removed_ever if not _market_items_blank(tables, k)]
        assert not unexpected, (cycle, unexpected[:5], counts)
        for sharing_class, table in targets(resource, tables):
            now = _version(table)
            # The open table's terms (its properties) change in a version of their own.
            terms = 1 if sharing_class == "open" and cycle == 4 else 0
            assert now - before[sharing_class] <= 1 + terms, "more than one version per run"
            published = rows_of(table)
            expected = rebuilt(spark, resource, tables, settings, sharing_class)
            assert published == expected, (cycle, sharing_class)
            seen[(table.location.uri, now)] = (table, published)
            if cycle not in (0, 4, 6) and now > before[sharing_class]:
                _assert_change_only(table, now, changed=size * 3)
        at += datetime.timedelta(hours=1)
    # Every version a cycle made still reads as it did (with the columns it had then).
    for (_, number), (table, expected) in seen.items():
        assert rows_of(table, version=number) == expected, (table.name, number)


def _version(table: Table) -> int:
    """The table's current version; 0 (its empty creation) before it exists."""
    if not table.location.is_delta_table():
        return 0
    return int(DeltaTable(table.location.uri).version())


def _market_items_blank(tables: TableSet, permit: str) -> bool:
    silver = read_delta(DeltaTable(tables.silver.location.uri)).to_pylist()
    row = next(r for r in silver if r["permit_id"] == permit)
    return row["holder"] is None and row["status"] is None


def _assert_change_only(table: Table, number: int, *, changed: int) -> None:
    """The commit that made version `number` wrote only changed rows (deletion vectors mark
    the replaced ones): no row copied, at most `changed` rows written."""
    commit = next(c for c in DeltaTable(table.location.uri).history(5)
                  if int(c["version"]) == number)  # fmt: skip
    assert commit["operation"] == "MERGE", commit["operation"]
    metrics = commit["operationMetrics"]
    assert int(metrics.get("numTargetRowsCopied", 0)) == 0
    assert int(metrics["numOutputRows"]) <= changed


FULL_HEADER = ["permit_id", "holder", "status", "issued_on"]


def _full_row(permit: str, status: str = "active") -> list[str]:
    return [permit, f"holder of {permit}", status, "2024-05-01"]


def test_a_full_extract_removes_what_it_no_longer_carries(
    spark: SparkSession, tmp_path: Path
) -> None:
    resource, settings, tables = permits_lake(tmp_path, FULL)
    first = [f"P{n:03d}" for n in range(60)]
    land(settings, "market_regulation", START, FULL_HEADER, [_full_row(p) for p in first])
    # Taxation knows of a permit the market has not delivered: it waits in silver.
    land(settings, "taxation", START, TAXATION, [["P900", "A"], ["P001", "B"]])
    run(spark, resource, settings, START)

    # The next snapshot lacks P000-P004; P005's record breaks a rule (quarantined, so it does
    # not count as missing); P100 is new.
    at = START + datetime.timedelta(hours=1)
    second = [_full_row(p) for p in first[6:]] + [_full_row("P005", "revoked"), _full_row("P100")]
    land(settings, "market_regulation", at, FULL_HEADER, second)
    counts = run(spark, resource, settings, at)
    assert counts.rows_removed == 5
    keys = {row[0] for row in rows_of(tables.silver)}
    assert keys == (set(first) - {f"P{n:03d}" for n in range(5)}) | {"P100", "P900"}
    for sharing_class in resource.sharing_classes:
        published = rows_of(tables.published(sharing_class))
        assert published == rebuilt(spark, resource, tables, settings, sharing_class)
        assert "P000" not in {row[0] for row in published}
    # Its history stays: the previous version still has the removed permits.
    earlier = rows_of(tables.published("conditional"), version=1)
    assert {f"P{n:03d}" for n in range(5)} <= {row[0] for row in earlier}

    # A snapshot with a record the parser cannot read removes nothing: that record's key is
    # unknown and might be one of those that seem missing.
    at += datetime.timedelta(hours=1)
    third = [_full_row(p) for p in first[20:]]
    land(settings, "market_regulation", at, FULL_HEADER, third)
    path = next((Path(settings.landing_location.uri) / "trial/permits/market_regulation").iterdir())
    path.write_text(path.read_text() + "P999,a,b,c,d,e,f\n", encoding="utf-8")
    counts = run(spark, resource, settings, at)
    assert counts.rows_malformed == 1
    assert counts.rows_removed == 0
    assert {row[0] for row in rows_of(tables.silver)} == keys


CRASHING = """
import json, os, signal, sys
from govlake.core.catalog import Catalog
from govlake.core.runs import Interval
from govlake.core.settings import Settings
from govlake_app import pipeline
from jobs import publish

fields, when, after = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
settings = Settings(**fields)
merged = []
real = publish.merge


def merge(spark, table, statement):
    if len(merged) == after:
        os.kill(os.getpid(), signal.SIGKILL)  # between silver's MERGE and this table's
    merged.append(table.name)
    return real(spark, table, statement)


publish.merge = merge
from govlake.lake.engine import get_spark
resource = Catalog.load(settings.catalog_dir).get("trial.permits")
end = __import__("datetime").datetime.fromisoformat(when)
pipeline.run(get_spark(settings), resource=resource, interval=Interval.ending(end),
             settings=settings)
"""


@pytest.mark.parametrize("after", [0, 1], ids=["before-any-table", "after-one-table"])
def test_a_crash_during_publication_ends_as_an_uninterrupted_run(
    tmp_path: Path, after: int
) -> None:
    runs = {}
    for name in ("uninterrupted", "crashed"):
        root = tmp_path / name
        folder = root / "catalogue"
        resource = write_catalogue(folder, permits_entry(deliveries=INCREMENTS))
        settings = lake_settings(root, catalog_dir=folder)
        spark = get_spark(settings, Catalog.load(folder), fresh=True)  # its own table names
        permits = Permits(seed=7)
        at = START
        for cycle in range(2):
            market = permits.market(inserts=200 if cycle == 0 else 30, updates=20, removals=5)
            land(settings, "market_regulation", at, MARKET, market)
            land(settings, "taxation", at, TAXATION, permits.taxation(30))
            if name == "crashed" and cycle == 1:
                fields = {
                    "warehouse": settings.warehouse,
                    "landing": settings.landing,
                    "catalog_dir": str(folder),
                    "database_url": settings.database_url,
                }
                script = root / "crash.py"
                script.write_text(CRASHING, encoding="utf-8")
                done = subprocess.run(
                    [sys.executable, str(script), json.dumps(fields), at.isoformat(), str(after)],
                    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                    capture_output=True, text=True, timeout=600, check=False,
                )  # fmt: skip
                assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
            run(spark, resource, settings, at)
            at += datetime.timedelta(hours=1)
        tables = TableSet(resource, settings.warehouse_location)
        runs[name] = {
            table.name: rows_of(table)
            for table in [tables.silver, *map(tables.published, resource.sharing_classes)]
        }
        versions = {c: _version(tables.published(c)) for c in resource.sharing_classes}
        runs[name]["versions"] = {tuple(sorted(versions.items()))}
    assert runs["crashed"] == runs["uninterrupted"]


def test_an_increment_that_changes_nothing_makes_no_version(
    spark: SparkSession, tmp_path: Path
) -> None:
    resource, settings, tables = permits_lake(tmp_path, INCREMENTS)
    first = [[f"P{n:03d}", f"holder {n}", "active", "2024-05-01", "I"] for n in range(20)]
    land(settings, "market_regulation", START, MARKET, first)
    run(spark, resource, settings, START)
    before = {c: _version(t) for c, t in targets(resource, tables)}
    # The same records again in a new file, and a grade of a permit the market has not
    # delivered: silver changes, nothing publishable does.
    at = START + datetime.timedelta(hours=1)
    land(settings, "market_regulation", at, MARKET, first[:5])
    land(settings, "taxation", at, TAXATION, [["P500", "A"]])
    counts = run(spark, resource, settings, at)
    assert counts.rows_merged == 1 and counts.rows_removed == 0
    assert counts.silver_version == _version(tables.silver) > 0
    assert {c: _version(t) for c, t in targets(resource, tables)} == before


def test_a_compaction_keeps_the_change_known_and_another_write_reconciles(
    spark: SparkSession, tmp_path: Path
) -> None:
    resource, settings, tables = permits_lake(tmp_path, INCREMENTS)
    permits = Permits(seed=5)
    at = START
    for cycle in range(3):
        land(settings, "market_regulation", at, MARKET,
             permits.market(inserts=100 if cycle == 0 else 10, updates=10, removals=3))  # fmt: skip
        if cycle == 1:  # compaction changes no row: the next publication still merges the change
            DeltaTable(tables.silver.location.uri).optimize.compact()
        if cycle == 2:  # a row deleted outside the pipeline: the publication reconciles
            gone = sorted(permits.held)[0]
            spark.sql(f"DELETE FROM {tables.silver.sql_name} WHERE permit_id = '{gone}'")
            permits.held.discard(gone)
        run(spark, resource, settings, at)
        for sharing_class, table in targets(resource, tables):
            assert rows_of(table) == rebuilt(spark, resource, tables, settings, sharing_class)
        at += datetime.timedelta(hours=1)
        commit = DeltaTable(tables.published("conditional").location.uri).history(1)[0]
        merged = json.loads(commit["operationParameters"].get("notMatchedBySourcePredicates", "[]"))
        # The compacted silver's change is merged; the other write's is reconciled.
        assert bool(merged) == (cycle == 2), (cycle, commit["operationParameters"])
    assert gone not in {row[0] for row in rows_of(tables.published("conditional"))}
