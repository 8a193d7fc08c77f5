"""Row rules derived from the catalogue: one definition per rule, as engine column expressions.

Each `RowRule` says when a raw (string) record breaks it and why. The validation transform
uses them to route records to silver or quarantine; quality suites use the same objects, so
no rule is written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from govlake.core import reference
from govlake.core.catalog import Item, Resource
from govlake.core.text import REASON_VALUE_CHARS
from govlake.core.text import quote as quote  # a value already in Python, cut as `quoted` cuts
from govlake.transforms import checks

Predicate = Callable[[], Column]


def quoted(value: Column, *, limit: int = REASON_VALUE_CHARS) -> Column:
    """`value` as a reason quotes it: `<blank>` for null, the first `limit` characters and the
    value's length when it is longer (a 1 MB key would otherwise put 1 MB into each reason)."""
    text = value.cast("string")
    cut = F.concat(
        F.substring(text, 1, limit),
        F.lit("…("),
        F.char_length(text).cast("string"),
        F.lit(" chars)"),
    )
    return (
        F.when(text.isNull(), F.lit("<blank>"))
        .when(F.char_length(text) > limit, cut)
        .otherwise(text)
    )


@dataclass(frozen=True)
class RowRule:
    """A rule one record can break. `broken()` is true when it does, false or null otherwise."""

    item: str
    rule: str
    description: str
    broken: Predicate

    @property
    def rule_id(self) -> str:
        return f"{self.item}.{self.rule}"

    def reason(self) -> Column:
        """`<item>: <rule description>: <the value as delivered, cut to its first characters>`."""
        return F.concat(F.lit(f"{self.item}: {self.description}: "), quoted(F.col(self.item)))


def _blank(name: str) -> Column:
    return F.col(name).isNull() | (F.trim(F.col(name)) == "")


def _typed(name: str, kind: str) -> Column:
    return F.expr(f"try_cast(`{name}` as {kind})")


def _check_rule(item: Item, *, as_of: date) -> RowRule | None:
    """The rule of the item's named check (citizen ID, credit code, division code, no future
    date), if it has one of these."""
    name = item.name
    found: tuple[str, Predicate]
    match item.check:
        case "citizen_id":
            found = (
                "not a GB 11643 citizen identity number (format, birth date or check character)",
                lambda: ~checks.is_valid_citizen_id(name),
            )
        case "credit_code":
            found = (
                "not a GB 32100 unified social credit code (format or check character)",
                lambda: ~checks.is_valid_credit_code(name),
            )
        case "division_code":
            codes = sorted(reference.division_codes())
            found = (
                "not a GB/T 2260 division code in the reference table",
                lambda: F.col(name).isNotNull() & ~F.col(name).isin(codes),
            )
        case "not_future":
            limit = as_of.isoformat()
            found = (
                f"date is after the extract date {limit}",
                lambda: _typed(name, "date") > F.lit(limit).cast("date"),
            )
        case _:
            return None
    return RowRule(name, item.check, *found)


def _range_rule(item: Item) -> RowRule | None:
    """The rule of the item's bounds: China's longitude or latitude, or its minimum and
    maximum."""
    low, high = {
        "china_longitude": reference.CHINA_LONGITUDE,
        "china_latitude": reference.CHINA_LATITUDE,
    }.get(item.check or "", (item.minimum, item.maximum))
    if low is None and high is None:
        return None
    text = f"outside [{'' if low is None else low}, {'' if high is None else high}]"

    def out_of_range(
        name: str = item.name, low: float | None = low, high: float | None = high
    ) -> Column:
        value = _typed(name, "double")
        broken = F.lit(False)
        if low is not None:
            broken = broken | (value < F.lit(low))
        if high is not None:
            broken = broken | (value > F.lit(high))
        return broken

    return RowRule(item.name, "range", text, out_of_range)


def _item_rules(item: Item, *, required: bool, as_of: date) -> list[RowRule]:
    name = item.name
    rules: list[RowRule] = []
    if required:
        rules.append(RowRule(name, "required", "required item is blank", lambda: _blank(name)))
    if item.type != "string":
        kind = item.type
        rules.append(
            RowRule(
                name,
                "type",
                f"not a valid {kind}",
                lambda: F.col(name).isNotNull() & _typed(name, kind).isNull(),
            )
        )
    rules.extend(r for r in (_check_rule(item, as_of=as_of), _range_rule(item)) if r)
    if item.values:
        allowed = list(item.values)
        rules.append(
            RowRule(
                name,
                "values",
                f"not one of {', '.join(allowed)}",
                lambda: F.col(name).isNotNull() & ~F.col(name).isin(allowed),
            )
        )
    return rules


def row_rules(resource: Resource, provider: str, *, as_of: date) -> list[RowRule]:
    """The rules a record of `provider`'s extract must keep, in catalogue order."""
    rules: list[RowRule] = []
    for name in resource.supplied_items(provider):
        item = resource.item(name)
        rules.extend(_item_rules(item, required=item.required, as_of=as_of))
    return rules


KEY_DUPLICATE = "key_duplicate"
PARSE = "record.parse"


RESULT_PREFIX = "_broken__"
#: How often the record's key occurs in its extract (`judge`).
OCCURRENCES = "_key_occurrences"


def result_column(rule_id: str) -> str:
    """The column in which `evaluate` puts a rule's result: true where the record breaks it."""
    return RESULT_PREFIX + rule_id.replace(".", "__")


def evaluate(df: DataFrame, resource: Resource, provider: str, *, as_of: date) -> DataFrame:
    """Every row rule evaluated once per record: one boolean column per rule
    (`result_column`, true where the record breaks it, never null), the records in their
    order; a record that removes its key (`removal`) breaks only its key's rules. Whatever
    judges the records afterwards (`judge`, the extract suite) reads these
    columns instead of evaluating the rules again; the engine recomputes a DataFrame each time
    it is used, so write the result before reading it twice."""
    rules = row_rules(resource, provider, as_of=as_of)
    removing = removal(resource, provider)

    def broken(rule: RowRule) -> Column:
        # A record that removes its key is judged by its key alone: its items may be blank.
        return rule.broken() if rule.item in resource.key else rule.broken() & ~removing

    return df.select(
        "*",
        *[
            F.coalesce(broken(rule), F.lit(False)).alias(result_column(rule.rule_id))
            for rule in rules
        ],
    )


def _with_occurrences(df: DataFrame, key: list[str]) -> DataFrame:
    """`df` with `OCCURRENCES`, how often each record's key (null-safe) occurs in `df`. An
    aggregate joined back, not a window: a window sorts every column of every record."""
    repeated = (
        df.groupBy(*key)
        .agg(F.count(F.lit(1)).alias(OCCURRENCES))
        .where(F.col(OCCURRENCES) > 1)
        .select(*[F.col(k).alias(f"__repeated_{k}") for k in key], OCCURRENCES)
    )
    on = [F.col(k).eqNullSafe(F.col(f"__repeated_{k}")) for k in key]
    # The few repeated keys on the left: the engine builds its hash table from the left side.
    joined = repeated.join(df, on=reduce(lambda a, b: a & b, on), how="right")
    return joined.drop(*[f"__repeated_{k}" for k in key]).withColumn(
        OCCURRENCES, F.coalesce(F.col(OCCURRENCES), F.lit(1))
    )


def judge(
    evaluated: DataFrame, resource: Resource, provider: str, *, as_of: date,
    broken_only: bool = False,
) -> DataFrame:  # fmt: skip
    """Add `_rules` (comma-separated rule ids broken, empty when none) and `_reason` (one
    reason per broken rule naming item, rule and value) to records that `evaluate` judged,
    from its result columns: no rule is evaluated again. A reason quotes at most
    `REASON_VALUE_CHARS` characters of a value (and then its length); the record's columns keep
    the value as delivered.

    Expects the bronze columns (`_parse_error` marks records the parser could not split).
    A key that occurs more than once in the extract breaks `key_duplicate` on every record
    that carries it: the platform cannot tell which is right, so none is applied.
    `broken_only`: only the records that break a rule (what quarantine keeps), chosen before
    any reason is written."""
    rules = row_rules(resource, provider, as_of=as_of)
    key_label = ",".join(resource.key)
    key_text = F.concat_ws(",", *[quoted(F.col(k)) for k in resource.key])
    broken = [(rule, F.col(result_column(rule.rule_id))) for rule in rules]
    flags = [F.when(result, F.lit(rule.rule_id)) for rule, result in broken]
    reasons = [F.when(result, rule.reason()) for rule, result in broken]
    occurrences = F.col(OCCURRENCES)
    duplicate = occurrences > 1
    evaluated = _with_occurrences(evaluated, resource.key)
    flags.append(F.when(duplicate, F.lit(f"{key_label}.{KEY_DUPLICATE}")))
    reasons.append(
        F.when(
            duplicate,
            F.concat(
                F.lit(f"{key_label}: key occurs "),
                occurrences.cast("string"),
                F.lit(" times in the extract: "),
                key_text,
            ),
        )
    )
    # A record the parser could not split has no items to judge: its only rule is `parse`.
    unparsed = F.col("_parse_error").isNotNull()
    if broken_only:
        results = [result for _, result in broken]
        evaluated = evaluated.where(reduce(Column.__or__, results, duplicate | unparsed))
    return (
        evaluated.withColumn(
            "_rules", F.when(unparsed, F.lit(PARSE)).otherwise(F.concat_ws(",", *flags))
        )
        .withColumn(
            "_reason",
            F.when(
                unparsed,
                F.concat(
                    F.lit("record: cannot be parsed: "),
                    quoted(F.col("_parse_error"), limit=4 * REASON_VALUE_CHARS),
                    F.lit(": "),
                    quoted(F.col("_raw")),
                ),
            ).otherwise(F.concat_ws("; ", *reasons)),
        )
        .drop(OCCURRENCES)
    )


def validate(df: DataFrame, resource: Resource, provider: str, *, as_of: date) -> DataFrame:
    """`judge(evaluate(df))` without the result columns: the records of one extract with
    `_rules` and `_reason` (see `judge`)."""
    judged = judge(evaluate(df, resource, provider, as_of=as_of), resource, provider, as_of=as_of)
    return judged.drop(
        *[result_column(r.rule_id) for r in row_rules(resource, provider, as_of=as_of)]
    )


def removal(resource: Resource, provider: str) -> Column:
    """Whether a record of `provider`'s extract removes its key: its operation column (bronze
    `_operation`) holds one of the catalogue's removal values; never without one."""
    operation = resource.delivery(provider).operation
    if operation is None:
        return F.lit(False)
    return F.coalesce(F.trim(F.col("_operation")).isin(operation.removal), F.lit(False))


def typed(df: DataFrame, resource: Resource, items: list[str]) -> DataFrame:
    """Cast validated raw strings to the catalogue's types (keeps other columns)."""
    return df.select(
        *[
            (
                _typed(name, resource.item(name).type)
                if resource.item(name).type != "string"
                else F.col(name)
            ).alias(name)
            for name in items
        ],
        *[c for c in df.columns if c not in items],
    )
