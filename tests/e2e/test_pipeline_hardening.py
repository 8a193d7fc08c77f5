"""The pipeline's records stay true when runs stop half-way or extracts carry outsized values:
the extract register after a crash between silver's MERGE and its register update, the time
each extract is completed, and how much of a value a quarantine reason quotes."""

from __future__ import annotations

import csv
import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from govlake_tools.generate import generate
from pyspark.sql import Row, SparkSession

from govlake.core.catalog import Catalog
from govlake.core.location import Location
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.landing import LandedFile, normalise
from govlake_app import pipeline as ingest
from jobs import bronze, publish, registry, silver, validate

pytestmark = pytest.mark.slow

RESIDENTS = "population.residents"
#: How much of a value a quarantine reason quotes.
REASON_VALUE_CHARS = 64
DAY1 = datetime.date(2026, 11, 19)
#: The run that takes DAY1's extracts: the next night at 02:00 UTC.
RUN1 = Interval.ending(datetime.datetime(2026, 11, 20, 2, tzinfo=datetime.UTC))


class Crash(RuntimeError):
    """Stands for the process dying between silver's MERGE commits and its register update."""


def _lakehouse(root: Path, database_url: str, catalog: Catalog) -> tuple[Settings, SparkSession]:
    settings = Settings(
        warehouse=str(root / "lakehouse"),
        landing=str(root / "landing"),
        database_url=database_url,
        catalog_dir=Path(__file__).resolve().parents[2] / "schemas",
        spark_remote=None,
    )
    return settings, get_spark(settings, catalog, fresh=True)


def _register(spark: SparkSession) -> list[dict[str, Any]]:
    """`ops.extracts` without the archive path (it names the lakehouse)."""
    rows = spark.sql("SELECT * FROM ops.extracts ORDER BY extract_id").collect()
    return [{k: v for k, v in row.asDict().items() if k != "file_uri"} for row in rows]


@pytest.mark.parametrize("recorded", [0, 1], ids=["none-recorded", "one-recorded"])
def test_rerun_after_a_crash_between_merge_and_register_records_the_uninterrupted_figures(
    recorded: int,
    tmp_path: Path,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    residents = catalog.get(RESIDENTS)
    clean, clean_spark = _lakehouse(tmp_path / "clean", f"sqlite:///{tmp_path}/clean.db", catalog)
    crashed, crashed_spark = _lakehouse(
        tmp_path / "crashed", f"sqlite:///{tmp_path}/crashed.db", catalog
    )
    for settings in (clean, crashed):
        generate(catalog, settings.landing_location, rows=1500, seed=5, as_of=DAY1,
                 resources=[RESIDENTS])  # fmt: skip

    uninterrupted = ingest.run(clean_spark, resource=residents, interval=RUN1, settings=clean)

    # The crashed run dies after its MERGE commits, once `recorded` extracts are recorded.
    real_update = registry.update
    done: list[str] = []

    def update(spark: SparkSession, table: Any, extract_id: str, **values: Any) -> None:
        if values.get("status") == "merged":
            if len(done) == recorded:
                raise Crash(f"stopped before recording {extract_id}")
            done.append(extract_id)
        real_update(spark, table, extract_id, **values)

    monkeypatch.setattr(registry, "update", update)
    with pytest.raises(Crash):
        ingest.run(crashed_spark, resource=residents, interval=RUN1, settings=crashed)
    monkeypatch.setattr(registry, "update", real_update)
    rerun = ingest.run(crashed_spark, resource=residents, interval=RUN1, settings=crashed)

    expected = _register(clean_spark)
    assert {e["status"] for e in expected} == {"published"}
    assert all(e["rows_merged"] > 0 for e in expected)
    assert any(e["crosscheck_findings"] > 0 for e in expected)
    assert _register(crashed_spark) == expected
    # The rerun's summary counts what the rerun recorded: every figure when the crash
    # recorded none, else the remaining extracts' figures.
    remaining = [e for e in expected if e["extract_id"] not in done]
    assert rerun.rows_merged == sum(e["rows_merged"] for e in remaining)
    assert rerun.crosscheck_findings == sum(e["crosscheck_findings"] for e in remaining)
    if not recorded:
        assert rerun.rows_merged == uninterrupted.rows_merged
        assert rerun.crosscheck_findings == uninterrupted.crosscheck_findings
    assert rerun.rows_published == uninterrupted.rows_published
    silver_rows = "SELECT * FROM population.residents ORDER BY citizen_id"
    assert crashed_spark.sql(silver_rows).collect() == clean_spark.sql(silver_rows).collect()


def test_every_extract_reaching_a_final_status_has_its_completion_time(
    spark: SparkSession, catalog: Catalog, settings: Settings
) -> None:
    residents = catalog.get(RESIDENTS)
    landing = settings.landing_location
    generate(catalog, landing, rows=1500, seed=5, as_of=DAY1, resources=[RESIDENTS])
    # A second export from public security that breaks the validity threshold: held.
    generate(catalog, landing.child("botched"), rows=1500, seed=6, defects=0.35,
             as_of=DAY1 + datetime.timedelta(days=1), resources=[RESIDENTS])  # fmt: skip
    botched = Path(landing.uri, "botched", "population", "residents", "public_security")
    target = Path(landing.uri, "population", "residents", "public_security")
    for file in botched.iterdir():
        file.rename(target / file.name)
    (target / "notes.xlsx").write_bytes(b"not an extract")  # rejected: unsupported type

    # Landed in one run, finished in the next (e.g. the first stopped after bronze).
    later = Interval.ending(RUN1.end + datetime.timedelta(hours=6))
    counts = StageCounts(RESIDENTS)
    ingest.run_stage(bronze, spark, resource=residents, interval=RUN1, settings=settings,
                     counts=counts)  # fmt: skip
    for stage in (validate, silver, publish):
        ingest.run_stage(stage, spark, resource=residents, interval=later, settings=settings,
                         counts=counts)  # fmt: skip

    rows: list[Row] = spark.sql(
        "SELECT file_name, status, ingested_at, completed_at FROM ops.extracts"
    ).collect()
    assert {r.status for r in rows} == {"published", "held", "rejected"}, rows
    for row in rows:
        assert row.completed_at is not None, row
        assert row.completed_at >= row.ingested_at, row
        finished_by = RUN1 if row.status == "rejected" else later
        assert row.completed_at == finished_by.end_naive_utc, row


def test_a_reason_quotes_the_start_of_an_outsized_value_and_the_record_keeps_all_of_it(
    spark: SparkSession, catalog: Catalog, settings: Settings
) -> None:
    residents = catalog.get(RESIDENTS)
    made = generate(catalog, settings.landing_location, rows=200, seed=5, as_of=DAY1,
                    resources=[RESIDENTS])  # fmt: skip
    path = Path(next(e for e in made if e.provider == "public_security").location.uri)
    with path.open(encoding="utf-8", newline="") as handle:
        header, *records = list(csv.reader(handle))
    position = header.index("citizen_id")
    huge = "1" * 100_000  # ~100 kB: a key no check passes
    # The outsized key twice (a duplicate key), and four more outsized keys: 6 of ~200
    # records break the citizen_id check, enough to hold the extract back (validity 98%).
    for index, key in enumerate([huge, huge, *(str(d) * 100_000 for d in range(2, 6))]):
        records[index][position] = key
    ragged = "," * len(header) + "Z" * 100_000  # one field too many, and outsized
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *records])
        handle.write(ragged + "\n")  # a record that cannot be parsed

    counts = StageCounts(RESIDENTS)
    for stage in (bronze, validate):
        ingest.run_stage(stage, spark, resource=residents, interval=RUN1, settings=settings,
                         counts=counts)  # fmt: skip

    quarantined = spark.sql(
        "SELECT citizen_id, _raw, _rules, _reason, length(_reason) AS reason_chars "
        "FROM population.residents_quarantine WHERE _provider = 'public_security' "
        "AND (length(citizen_id) > 1000 OR length(_raw) > 1000)"
    ).collect()
    assert len(quarantined) == 7
    assert all(q.reason_chars < 1000 for q in quarantined)
    cut = huge[:REASON_VALUE_CHARS] + "…(100000 chars)"
    duplicated = [q for q in quarantined if q.citizen_id == huge]  # kept as delivered
    assert len(duplicated) == 2
    for row in duplicated:
        assert set(row._rules.split(",")) == {"citizen_id.citizen_id", "citizen_id.key_duplicate"}
        assert "citizen_id: not a GB 11643 citizen identity number" in row._reason
        assert f"identity number (format, birth date or check character): {cut}" in row._reason
        assert f"citizen_id: key occurs 2 times in the extract: {cut}" in row._reason
    (unparsed,) = [q for q in quarantined if q._raw is not None]
    assert unparsed._raw == ragged
    assert unparsed._rules == "record.parse"
    assert unparsed._reason.startswith("record: cannot be parsed: ")
    assert unparsed._reason.endswith(ragged[:REASON_VALUE_CHARS] + f"…({len(ragged)} chars)")

    # The extract suite's samples and the reason the extract is held quote values the same way.
    held = spark.sql(
        "SELECT status, reason FROM ops.extracts WHERE provider = 'public_security'"
    ).first()
    assert held is not None and held.status == "held"
    assert "…(100000 chars)" in held.reason and len(held.reason) < 2000
    samples = spark.sql(
        "SELECT expectation, sample FROM ops.quality_results WHERE sample IS NOT NULL"
    ).collect()
    assert any(cut in r.sample for r in samples if r.expectation == "citizen_id.citizen_id")
    assert all(len(r.sample) < 1000 for r in samples)


def test_a_malformed_json_line_is_kept_whole(tmp_path: Path, catalog: Catalog) -> None:
    """The raw text of a record that cannot be parsed is kept as delivered, however long:
    reasons quote it cut, so nothing needs cutting it where it is read."""
    broken = '{"citizen_id": "' + "9" * 100_000  # an unterminated JSON object, ~100 kB
    good = '{"citizen_id": "11010519491231002X", "name": "张三", "marital_status": "20"}'
    path = tmp_path / "landing" / "population" / "residents" / "civil_affairs" / "a.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(f"{good}\n{broken}\n", encoding="utf-8")
    file = LandedFile(Location.parse(path), RESIDENTS, "civil_affairs")
    staging = Location.parse(tmp_path / "staging" / "a.parquet")
    result = normalise(file, catalog.get(RESIDENTS), staging)
    assert result.rows == 1
    (unparsed,) = [r for r in pq.read_table(staging.uri).to_pylist() if r["_raw"] is not None]
    assert unparsed["_raw"] == broken
    assert unparsed["_parse_error"].startswith("line 2: ")
