"""Custom expectations over engine column expressions (no Python UDF).

Every row rule of the catalogue (`govlake.transforms.rules.RowRule`) becomes an expectation through
`ExpectColumnValuesToKeepRowRule`: the metric evaluates the rule's own `broken()` column, so
the rule that quarantines records and the rule the suite measures are one definition. The
check-character rules have named expectations of their own, over the same
`govlake.transforms.checks` expressions the row rules use.

Rules are handed to the metric through a process-local registry keyed by `rule_key`: a
suite registers its rules before it runs (see `runner`).

Where the data already carries a rule's result (the column `rules.evaluate` adds, as the
extract's rule results that the quarantine pass wrote do), the metric reads that column
instead of evaluating the rule again: the same answer, with each rule, check characters
included, evaluated once per extract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from great_expectations.execution_engine import SparkDFExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics import (
    ColumnMapMetricProvider,
    column_condition_partial,
)
from pyspark.sql import Column
from pyspark.sql import functions as F

from govlake.transforms import checks
from govlake.transforms.rules import RowRule, result_column

_RULES: dict[str, RowRule] = {}


def register_rule(key: str, rule: RowRule) -> None:
    _RULES[key] = rule


def _rule(key: str) -> RowRule:
    try:
        return _RULES[key]
    except KeyError:
        raise LookupError(f"row rule {key!r} is not registered in this process") from None


def _kept(rule_id: str, kept: Callable[[], Column], metric: dict[str, Any]) -> Column:
    """True where the row keeps rule `rule_id`: the data's result column for it when the data
    carries one, else `kept()` evaluated here. `metric`: what the metric function was given."""
    column = result_column(rule_id)
    if column in (metric.get("_metrics") or {}).get("table.columns", ()):
        return ~F.col(column)
    return kept()


def _column_name(metric: dict[str, Any]) -> str:
    return str(metric["_accessor_domain_kwargs"]["column"])


class ColumnValuesKeepRowRule(ColumnMapMetricProvider):
    """True where the row keeps the rule. Nulls are judged too: a `required` rule is about
    them, and every other rule treats a null as kept."""

    condition_metric_name = "column_values.keep_row_rule"
    condition_value_keys = ("rule_key",)
    filter_column_isnull = False

    @column_condition_partial(engine=SparkDFExecutionEngine)
    def _spark(cls, column: Column, rule_key: str, **kwargs: Any) -> Column:
        rule = _rule(rule_key)
        return _kept(rule.rule_id, lambda: ~F.coalesce(rule.broken(), F.lit(False)), kwargs)


class ExpectColumnValuesToKeepRowRule(ColumnMapExpectation):
    """Expect at least `mostly` of the rows to keep the catalogue row rule `rule_key`."""

    rule_key: str
    map_metric = "column_values.keep_row_rule"
    success_keys = ("rule_key", "mostly")
    args_keys = ("column", "rule_key")
    library_metadata: ClassVar[dict[str, object]] = {"tags": ["govlake", "catalogue rule"]}


class ColumnValuesValidCitizenId(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_citizen_id"

    @column_condition_partial(engine=SparkDFExecutionEngine)
    def _spark(cls, column: Column, **kwargs: Any) -> Column:
        return _kept(
            f"{_column_name(kwargs)}.citizen_id",
            lambda: F.coalesce(checks.is_valid_citizen_id(column), F.lit(False)),
            kwargs,
        )


class ExpectColumnValuesToBeValidCitizenId(ColumnMapExpectation):
    """Expect non-null values to be GB 11643 citizen identity numbers: 17 digits with a real
    birth date and the ISO 7064 MOD 11-2 check character."""

    map_metric = "column_values.valid_citizen_id"
    success_keys = ("mostly",)
    library_metadata: ClassVar[dict[str, object]] = {"tags": ["govlake", "GB 11643"]}


class ColumnValuesValidCreditCode(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_credit_code"

    @column_condition_partial(engine=SparkDFExecutionEngine)
    def _spark(cls, column: Column, **kwargs: Any) -> Column:
        return _kept(
            f"{_column_name(kwargs)}.credit_code",
            lambda: F.coalesce(checks.is_valid_credit_code(column), F.lit(False)),
            kwargs,
        )


class ExpectColumnValuesToBeValidCreditCode(ColumnMapExpectation):
    """Expect non-null values to be GB 32100 unified social credit codes with the MOD 31
    check character."""

    map_metric = "column_values.valid_credit_code"
    success_keys = ("mostly",)
    library_metadata: ClassVar[dict[str, object]] = {"tags": ["govlake", "GB 32100"]}
