"""Expectation suites: derived from the catalogue, and each kind passes on good data and fails
on the matching defect, run by Great Expectations on the engine."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from stdnum.cn import ric, uscc

from expectations.runner import SuiteRun, run_suite
from expectations.suites import (
    AS_OF_COLUMN,
    DISPUTED_COLUMN,
    RECORD_TIME_COLUMN,
    Check,
    extract_suite,
    publication_suite,
)
from govlake.core import reference
from govlake.core.catalog import Catalog, QualityPolicy, Resource
from govlake.transforms.rules import evaluate, result_column

RUN = datetime.datetime(2026, 11, 21, 2, 0)
DIVISIONS = sorted(reference.division_codes())[:50]


def _ids() -> Iterator[str]:
    """Valid citizen ids (check character from python-stdnum, an independent oracle)."""
    serial = 0
    while True:
        body = f"{DIVISIONS[serial % len(DIVISIONS)]}1980{1 + serial % 12:02d}15{serial % 1000:03d}"
        yield body + ric.calc_check_digit(body + "0")  # it reads 18 characters
        serial += 1


def _codes() -> Iterator[str]:
    serial = 0
    while True:
        body = f"91{DIVISIONS[serial % len(DIVISIONS)]}{serial:09d}"
        yield body + uscc.calc_check_digit(body)
        serial += 1


def _failed(spark_df: DataFrame, checks: list[Check], name: str) -> set[str]:
    run = run_suite(spark_df, checks, name=name, project=None)
    assert [o.check.expectation for o in run.outcomes] == [c.expectation for c in checks]
    return {o.check.expectation for o in run.outcomes if not o.success}


def _residents(spark: SparkSession, rows: list[dict[str, str | None]], as_of: datetime.datetime):
    columns = ["citizen_id", "name", "gender", "ethnicity", "birth_date",
               "household_division_code", "residence_address"]  # fmt: skip
    data = [tuple(r.get(c) for c in columns) for r in rows]
    df = spark.createDataFrame(data, ", ".join(f"{c} string" for c in columns))
    return df.withColumn(AS_OF_COLUMN, F.lit(as_of).cast("timestamp"))


def _good_residents(n: int) -> list[dict[str, str | None]]:
    ids = _ids()
    return [
        {
            "citizen_id": next(ids),
            "name": f"居民{i}",
            "gender": "12"[i % 2],
            "ethnicity": "汉族",
            "birth_date": "1980-01-15",
            "household_division_code": DIVISIONS[i % len(DIVISIONS)],
            "residence_address": None,
        }
        for i in range(n)
    ]


def _defective(good: list[dict[str, str | None]]) -> list[dict[str, str | None]]:
    """One defect per kind, in 10 of 200 rows each (5 %: above every threshold)."""
    bad = [dict(r) for r in good]
    for i in range(0, 10):
        bad[i]["name"] = " "  # completeness
    for i in range(10, 20):
        cid = bad[i]["citizen_id"] or ""
        bad[i]["citizen_id"] = cid[:17] + ("0" if cid[17] != "0" else "1")  # check character
    for i in range(20, 30):
        bad[i]["household_division_code"] = "999999"  # not in the reference table
    for i in range(30, 40):
        bad[i]["birth_date"] = "2027-03-01"  # after the run
    for i in range(40, 50):
        bad[i]["citizen_id"] = bad[i + 100]["citizen_id"]  # duplicate key
    return bad


def test_extract_suite_is_derived_from_the_catalogue(catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    checks = {
        c.expectation: c
        for c in extract_suite(
            residents, "public_security", run_date=RUN.date(), checked_at=RUN, previous_rows=None
        )
    }
    required = [i.name for i in residents.items if i.required]
    for name in required:
        check = checks[f"{name}.required"]
        assert check.dimension == "completeness"
        assert check.kwargs["mostly"] == residents.quality.completeness.mostly
        assert check.severity == residents.quality.completeness.severity
    assert checks["citizen_id.citizen_id"].kind == "ExpectColumnValuesToBeValidCitizenId"
    assert checks["household_division_code.division_code"].dimension == "validity"
    assert checks["birth_date.not_future"].rule is not None
    assert checks["key.unique"].kind == "ExpectColumnValuesToBeUnique"
    assert "volume" not in checks  # nothing to compare a first extract with
    assert "as_of.timeliness" in checks
    assert not any(c.endswith(".freshness") for c in checks)
    # civil affairs supplies only name and marital status: its suite judges only those
    civil = extract_suite(
        residents, "civil_affairs", run_date=RUN.date(), checked_at=RUN, previous_rows=10
    )
    assert {c.item for c in civil if c.item} <= {"citizen_id", "name", "marital_status"}
    assert any(c.expectation == "volume" for c in civil)
    credit = catalog.get("credit.records")
    credit_checks = extract_suite(
        credit, "development_reform", run_date=RUN.date(), checked_at=RUN, previous_rows=None
    )
    assert {c.kind for c in credit_checks if c.expectation == "key.unique"} == {
        "ExpectCompoundColumnsToBeUnique"
    }
    fresh = [c for c in credit_checks if c.expectation == "decision_date.freshness"]
    assert fresh and fresh[0].severity == "warn"


def test_item_overrides_and_policy_severity(catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    items = [
        i.model_copy(update={"mostly": 0.5, "severity": "warn"}) if i.name == "gender" else i
        for i in residents.items
    ]
    policy = QualityPolicy.model_validate(
        {"completeness": {"mostly": 0.9, "severity": "warn"}, "uniqueness": {
            "mostly": 1.0, "severity": "warn"}}
    )  # fmt: skip
    changed = Resource.model_validate(
        {**residents.model_dump(), "items": [i.model_dump() for i in items],
         "quality": policy.model_dump()}
    )  # fmt: skip
    checks = {
        c.expectation: c
        for c in extract_suite(
            changed, "public_security", run_date=RUN.date(), checked_at=RUN, previous_rows=None
        )
    }
    assert checks["gender.required"].kwargs["mostly"] == 0.5
    assert checks["gender.required"].severity == "warn"
    assert checks["name.required"].kwargs["mostly"] == 0.9
    assert checks["key.unique"].severity == "warn"


@pytest.mark.slow
def test_each_extract_expectation_passes_on_good_data_and_fails_on_its_defect(
    shared_spark: SparkSession, catalog: Catalog
) -> None:
    residents = catalog.get("population.residents")
    good = _good_residents(200)

    def suite(previous_rows: int | None) -> list[Check]:
        return extract_suite(
            residents, "public_security", run_date=RUN.date(), checked_at=RUN,
            previous_rows=previous_rows, grace=datetime.timedelta(hours=6),
        )  # fmt: skip

    fresh_as_of = datetime.datetime(2026, 11, 20)
    assert _failed(_residents(shared_spark, good, fresh_as_of), suite(200), "good") == set()

    bad = _defective(good)
    stale = datetime.datetime(2026, 11, 18)  # older than one daily cycle + 6 h grace
    failed = _failed(_residents(shared_spark, bad, stale), suite(400), "bad")
    assert failed == {
        "name.required",
        "citizen_id.citizen_id",
        "household_division_code.division_code",
        "birth_date.not_future",
        "key.unique",
        "volume",
        "as_of.timeliness",
    }


@pytest.mark.slow
def test_credit_code_coordinates_and_freshness(
    shared_spark: SparkSession, catalog: Catalog
) -> None:
    addresses = catalog.get("geospatial.registered_addresses")
    codes = _codes()
    columns = [i.name for i in addresses.items]

    def frame(rows: list[dict[str, str]]) -> DataFrame:
        data = [tuple(r.get(c) for c in columns) for r in rows]
        df = shared_spark.createDataFrame(data, ", ".join(f"{c} string" for c in columns))
        return df.withColumn(AS_OF_COLUMN, F.lit(RUN).cast("timestamp"))

    good = [
        {"credit_code": next(codes), "address": f"路{i}号", "division_code": DIVISIONS[i % 50],
         "longitude": "116.40", "latitude": "39.90", "geocoded_on": "2026-01-02"}
        for i in range(100)
    ]  # fmt: skip
    good = [{c: r.get(c) for c in columns} for r in good]  # type: ignore[misc]
    checks = extract_suite(
        addresses, "natural_resources", run_date=RUN.date(), checked_at=RUN, previous_rows=None
    )
    assert _failed(frame(good), checks, "addresses_good") == set()
    bad = [dict(r) for r in good]
    for i in range(5):
        code = bad[i]["credit_code"]
        bad[i]["credit_code"] = code[:17] + ("0" if code[17] != "0" else "1")
    for i in range(5, 10):
        bad[i]["longitude"] = "150.0"  # east of China
    failed = _failed(frame(bad), checks, "addresses_bad")
    assert {"credit_code.credit_code", "longitude.range"} <= failed
    assert failed <= {"credit_code.credit_code", "longitude.range", "key.unique"}

    credit = catalog.get("credit.records")
    credit_checks = [
        c
        for c in extract_suite(
            credit, "development_reform", run_date=RUN.date(), checked_at=RUN, previous_rows=None
        )
        if c.expectation == "decision_date.freshness"
    ]

    def newest(day: str) -> DataFrame:
        df = shared_spark.createDataFrame([("2020-01-01",), (day,)], "decision_date string")
        return df.withColumn(RECORD_TIME_COLUMN, F.col("decision_date").cast("timestamp"))

    assert _failed(newest("2026-11-10"), credit_checks, "fresh") == set()
    assert _failed(newest("2026-09-01"), credit_checks, "stale") == {"decision_date.freshness"}


@pytest.mark.slow
def test_publication_suite_uniqueness_volume_consistency(
    shared_spark: SparkSession, catalog: Catalog
) -> None:
    residents = catalog.get("population.residents")
    checks = publication_suite(residents, previous_rows=100, crosschecked=True)
    assert [c.dimension for c in checks] == ["uniqueness", "volume", "consistency"]
    ids = _ids()

    def frame(n: int, disputed: int, duplicates: int = 0) -> DataFrame:
        keys = [next(ids) for _ in range(n - duplicates)]
        keys += keys[:duplicates]
        rows = [(k, i < disputed) for i, k in enumerate(keys)]
        return shared_spark.createDataFrame(rows, f"citizen_id string, {DISPUTED_COLUMN} boolean")

    assert _failed(frame(100, 2), checks, "pub_good") == set()
    assert _failed(frame(100, 2, duplicates=1), checks, "pub_dup") == {"key.unique"}
    assert _failed(frame(130, 2), checks, "pub_grew") == {"volume"}
    assert _failed(frame(100, 10), checks, "pub_disputed") == {"crosscheck.share"}


def _reported(run: SuiteRun, duplicated: set[str]) -> list[tuple[object, ...]]:
    """What a run reports. Which repeated keys `key.unique` quotes depends on how the engine
    partitions its window, for one DataFrame as for another: only that they are repeated."""
    return [
        (o.check.expectation, o.success, o.observed_value, o.observed_ratio,
         o.unexpected_count, o.element_count,
         set(o.sample) <= duplicated if o.check.expectation == "key.unique" else o.sample)
        for o in run.outcomes
    ]  # fmt: skip


@pytest.mark.slow
def test_extract_suite_reports_from_the_rule_results(
    shared_spark: SparkSession, catalog: Catalog
) -> None:
    """Run on records that carry their rule results (what the quarantine pass writes), the
    suite reports exactly what it reports when it evaluates the rules itself, and the figures
    come from those results: no rule is evaluated a second time."""
    residents = catalog.get("population.residents")
    bad = _defective(_good_residents(200))
    bad[60]["citizen_id"] = None
    bad[61]["birth_date"] = "not a date"
    checks = extract_suite(
        residents, "public_security", run_date=RUN.date(), checked_at=RUN, previous_rows=200
    )
    raw = _residents(shared_spark, bad, datetime.datetime(2026, 11, 20))
    results = evaluate(raw, residents, "public_security", as_of=RUN.date())
    assert {result_column(c.expectation) for c in checks if c.rule} <= set(results.columns)
    direct = run_suite(raw, checks, name="direct", project=None)
    reported = run_suite(results, checks, name="reported", project=None)
    ids = [r["citizen_id"] for r in bad]
    duplicated = {i for i in ids if i is not None and ids.count(i) > 1}
    assert _reported(reported, duplicated) == _reported(direct, duplicated)
    failed = {o.check.expectation for o in direct.outcomes if not o.success}
    assert {"citizen_id.citizen_id", "household_division_code.division_code"} <= failed

    # Results that say every citizen id and division code is fine are believed.
    cleared = results.withColumns(
        {
            result_column("citizen_id.citizen_id"): F.lit(False),
            result_column("household_division_code.division_code"): F.lit(False),
        }
    )
    outcomes = {
        o.check.expectation: o
        for o in run_suite(cleared, checks, name="cleared", project=None).outcomes
    }
    assert outcomes["citizen_id.citizen_id"].success
    assert outcomes["citizen_id.citizen_id"].unexpected_count == 0
    assert outcomes["household_division_code.division_code"].unexpected_count == 0
    assert not outcomes["name.required"].success
