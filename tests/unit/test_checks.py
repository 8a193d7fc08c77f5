"""The engine-side check-character expressions agree with python-stdnum, the independent
oracle, on valid numbers, single-character corruptions and arbitrary strings."""

from __future__ import annotations

import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from stdnum.cn import ric, uscc

from govlake.transforms.checks import (
    CREDIT_CODE_ALPHABET,
    is_valid_citizen_id,
    is_valid_credit_code,
)

DIGITS = "0123456789"


def _engine(spark: SparkSession, values: list[str], check) -> list[bool | None]:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string")
    rows = df.select("i", check("v").alias("ok")).orderBy("i").collect()
    return [row.ok for row in rows]


def _ric_oracle(value: str) -> bool:
    """stdnum's rules minus the birthplace lookup (renamed divisions stay valid on old ids)."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    if value[-1] != ric.calc_check_digit(value):
        return False
    try:
        ric.get_birth_date(value)
    except Exception:
        return False
    return True


birth_dates = st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2026, 1, 1))


@st.composite
def citizen_ids(draw: st.DrawFn) -> str:
    region = draw(st.text(DIGITS, min_size=6, max_size=6))
    born = draw(birth_dates).strftime("%Y%m%d")
    seq = draw(st.text(DIGITS, min_size=3, max_size=3))
    body = region + born + seq
    valid = body + ric.calc_check_digit(body + "0")
    mutation = draw(st.sampled_from(["none", "check", "digit", "junk", "date"]))
    if mutation == "check":
        return body + draw(st.sampled_from([c for c in "0123456789X" if c != valid[-1]]))
    if mutation == "digit":
        pos = draw(st.integers(0, 16))
        return valid[:pos] + draw(st.sampled_from(DIGITS)) + valid[pos + 1 :]
    if mutation == "junk":
        return draw(st.text("0123456789Xx -a", min_size=0, max_size=20))
    if mutation == "date":
        return region + draw(st.sampled_from(["19991301", "20230230", "20000000"])) + valid[14:]
    return valid


@st.composite
def credit_codes(draw: st.DrawFn) -> str:
    body = draw(st.text(DIGITS, min_size=8, max_size=8)) + draw(
        st.text(CREDIT_CODE_ALPHABET, min_size=9, max_size=9)
    )
    valid = body + uscc.calc_check_digit(body)
    mutation = draw(st.sampled_from(["none", "check", "char", "junk"]))
    if mutation == "check":
        return body + draw(st.sampled_from([c for c in CREDIT_CODE_ALPHABET if c != valid[-1]]))
    if mutation == "char":
        pos = draw(st.integers(0, 16))
        return valid[:pos] + draw(st.sampled_from(CREDIT_CODE_ALPHABET + "IOZ")) + valid[pos + 1 :]
    if mutation == "junk":
        return draw(st.text(CREDIT_CODE_ALPHABET + "io-", min_size=0, max_size=20))
    return valid


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(citizen_ids(), min_size=20, max_size=60))
def test_citizen_id_expression_matches_stdnum(
    shared_spark: SparkSession, values: list[str]
) -> None:
    assert _engine(shared_spark, values, is_valid_citizen_id) == [_ric_oracle(v) for v in values]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(credit_codes(), min_size=20, max_size=60))
def test_credit_code_expression_matches_stdnum(
    shared_spark: SparkSession, values: list[str]
) -> None:
    assert _engine(shared_spark, values, is_valid_credit_code) == [uscc.is_valid(v) for v in values]


def test_known_numbers(shared_spark: SparkSession) -> None:
    # The example number of GB 11643 and a real-format credit code.
    values = ["11010519491231002X", "110105194912310021", "91350100M000100Y43"]
    assert _engine(shared_spark, values, is_valid_citizen_id) == [True, False, False]
    assert ric.is_valid("11010519491231002X")
    assert _engine(shared_spark, values, is_valid_credit_code)[2] is True


def test_null_is_not_judged(shared_spark: SparkSession) -> None:
    df = shared_spark.createDataFrame([(None,)], "v string")
    row = df.select(
        is_valid_citizen_id("v").alias("a"), is_valid_credit_code("v").alias("b")
    ).first()
    assert row is not None and row.a is None and row.b is None
