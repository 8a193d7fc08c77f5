"""Row validation and the silver transforms on a handful of rows."""

from __future__ import annotations

import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from stdnum.cn import ric

from govlake.core.catalog import Catalog
from govlake.transforms.rules import evaluate, judge, result_column, row_rules, typed, validate
from jobs.silver import crosscheck_findings

AS_OF = datetime.date(2026, 11, 20)
PS_COLUMNS = [
    "citizen_id", "name", "gender", "ethnicity", "birth_date",
    "household_division_code", "residence_address",
]  # fmt: skip


def _cid(body: str) -> str:
    """A citizen id with the right check character (python-stdnum computes it)."""
    return body + ric.calc_check_digit(body + "0")


def _records(spark: SparkSession, columns: list[str], rows: list[tuple]) -> DataFrame:  # type: ignore[type-arg]
    schema = (
        ", ".join(f"{c} string" for c in columns)
        + ", _row bigint, _raw string, _parse_error string"
    )
    return spark.createDataFrame([(*row, i + 1, None, None) for i, row in enumerate(rows)], schema)


def _rules_by_row(df: DataFrame) -> dict[int, set[str]]:
    return {
        r._row: set(filter(None, r._rules.split(",")))
        for r in df.select("_row", "_rules").collect()
    }


def test_each_rule_flags_its_defect_and_only_it(
    shared_spark: SparkSession, catalog: Catalog
) -> None:
    residents = catalog.get("population.residents")
    good = ("11010519491231002X", "张三", "2", "汉族", "1949-12-31", "110105", "北京市朝阳区")
    rows = [
        good,
        ("11010519491231002X", "张三", "2", "汉族", "1949-12-31", "110105", "dup"),  # dup key
        ("110105194912310021", "李四", "1", "汉族", "1949-12-31", "110105", "x"),  # check char
        (_cid("11010119900307777"), " ", "1", "汉族", "1990-03-07", "110101", "x"),  # blank name
        (
            _cid("11010119900307779"),
            "王五",
            "3",
            "汉族",
            "1990-03-07",
            "110101",
            "x",
        ),  # gender code
        (
            _cid("11010119900307771"),
            "赵六",
            "1",
            "汉族",
            "1990-02-30",
            "999999",
            "x",
        ),  # date, division
        (_cid("11010119900307775"), "钱七", "1", "汉族", "2027-01-01", "110101", "x"),  # future
    ]
    checked = validate(
        _records(shared_spark, PS_COLUMNS, rows), residents, "public_security", as_of=AS_OF
    )
    rules = _rules_by_row(checked)
    assert rules[1] == rules[2] == {"citizen_id.key_duplicate"}
    assert rules[3] == {"citizen_id.citizen_id"}
    assert rules[4] == {"name.required"}
    assert rules[5] == {"gender.values"}
    assert rules[6] == {"birth_date.type", "household_division_code.division_code"}
    assert rules[7] == {"birth_date.not_future"}
    reasons = {r._row: r._reason for r in checked.select("_row", "_reason").collect()}
    assert "household_division_code: not a GB/T 2260 division code" in reasons[6]
    assert "999999" in reasons[6]
    assert "key occurs 2 times" in reasons[1]


def test_ranges_and_amounts(shared_spark: SparkSession, catalog: Catalog) -> None:
    addresses = catalog.get("geospatial.registered_addresses")
    columns = ["credit_code", "address", "division_code", "longitude", "latitude", "geocoded_on"]
    rows = [
        ("91350100M000100Y43", "福州市鼓楼区", "350102", "119.30", "26.08", "2026-01-01"),
        ("91350100M000100Y43", "x", "350102", "-3.5", "26.08", "2026-01-01"),
    ]
    df = _records(shared_spark, columns, rows)
    checked = validate(df.where("_row = 1"), addresses, "natural_resources", as_of=AS_OF)
    assert _rules_by_row(checked) == {1: set()}
    checked = validate(df.where("_row = 2"), addresses, "natural_resources", as_of=AS_OF)
    assert _rules_by_row(checked) == {2: {"longitude.range"}}


def test_unparsed_record_breaks_only_the_parse_rule(
    shared_spark: SparkSession, catalog: Catalog
) -> None:
    residents = catalog.get("population.residents")
    schema = (
        ", ".join(f"{c} string" for c in PS_COLUMNS)
        + ", _row bigint, _raw string, _parse_error string"
    )
    df = shared_spark.createDataFrame(
        [(*([None] * len(PS_COLUMNS)), None, "bad,row", "line 5: 2 fields where the header has 7")],
        schema,
    )
    row = validate(df, residents, "public_security", as_of=AS_OF).first()
    assert row is not None
    assert row._rules == "record.parse"
    assert "line 5" in row._reason and "bad,row" in row._reason


def test_rules_follow_the_providers_columns(catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    civil = {r.rule_id for r in row_rules(residents, "civil_affairs", as_of=AS_OF)}
    assert civil == {
        "citizen_id.required", "citizen_id.citizen_id", "name.required", "marital_status.values",
    }  # fmt: skip


def test_typed_and_crosscheck_findings(shared_spark: SparkSession, catalog: Catalog) -> None:
    enterprises = catalog.get("legal_entity.enterprises")
    items = ["credit_code", "name", "registered_capital"]

    def frame(name: str, capital: str) -> DataFrame:
        raw = shared_spark.createDataFrame(
            [("91350100M000100Y43", name, capital)], ", ".join(f"{i} string" for i in items)
        )
        return typed(raw, enterprises, items)

    def findings(tax: DataFrame) -> DataFrame:
        found = crosscheck_findings(
            enterprises,
            "taxation",
            tax,
            frame("福州华信科技有限公司", "100.00"),
            extract_id="e",
            detected_at=datetime.datetime(2026, 1, 1),
        )
        assert found is not None
        return found

    # The same decimal written differently is agreement, not a finding.
    assert findings(frame("福州华信科技有限公司", "100.0")).count() == 0
    rows = {r.item: r for r in findings(frame("福州华信科技公司", "120")).collect()}
    assert set(rows) == {"name", "registered_capital"}
    assert rows["registered_capital"].authority == "market_regulation"
    assert rows["registered_capital"].authority_value == "100.00"
    assert rows["name"].provider_value == "福州华信科技公司"


def test_judging_the_rule_results_keeps_only_broken_records_with_their_reasons(
    shared_spark: SparkSession, catalog: Catalog
) -> None:
    """What quarantine keeps, judged from the results `evaluate` wrote: the same rules and
    reasons as `validate`, for the broken records only; a blank key repeated is a repeated key
    too, like any other."""
    residents = catalog.get("population.residents")
    good = (_cid("11010119900307777"), "张三", "1", "汉族", "1990-03-07", "110101", "x")
    rows = [
        good,
        ("110105194912310021", "李四", "1", "汉族", "1949-12-31", "110105", "x"),  # check char
        (None, "王五", "1", "汉族", "1990-03-07", "110101", "x"),  # blank key, twice
        (None, "赵六", "2", "汉族", "1990-03-07", "110101", "x"),
        (_cid("11010119900307779"), "钱七", "1", "汉族", "1990-03-07", "110101", "x"),
    ]
    df = _records(shared_spark, PS_COLUMNS, rows)
    results = evaluate(df, residents, "public_security", as_of=AS_OF)
    assert results.select("_row").collect() == df.select("_row").collect()  # order kept
    checked = results.where(F.col(result_column("citizen_id.citizen_id"))).select("_row")
    assert [r._row for r in checked.collect()] == [2]
    judged = judge(results, residents, "public_security", as_of=AS_OF, broken_only=True)
    assert _rules_by_row(judged) == {
        row: rules
        for row, rules in _rules_by_row(
            validate(df, residents, "public_security", as_of=AS_OF)
        ).items()
        if rules
    }
    assert _rules_by_row(judged) == {
        2: {"citizen_id.citizen_id"},
        3: {"citizen_id.required", "citizen_id.key_duplicate"},
        4: {"citizen_id.required", "citizen_id.key_duplicate"},
    }
    reasons = {r._row: r._reason for r in judged.select("_row", "_reason").collect()}
    assert "key occurs 2 times in the extract: <blank>" in reasons[3]
