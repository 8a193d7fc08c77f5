"""Data skipping by file statistics (`govlake.lake.predicates`): a file is skipped only when its
statistics prove that no row of it satisfies the predicate. The property test draws files
(their rows, hence their statistics, some of which go missing) and predicate trees, and checks
that a file holding a selected row is never skipped, against SQL's three-valued logic worked
out row by row; the examples show that skipping does happen, and where it must not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govlake.lake.deltalog import DataFile, FileStats
from govlake.lake.predicates import InvalidPredicate, might_match, parse

COLUMN = {"op": "column", "name": "n", "valueType": "int"}


def _literal(value: Any, value_type: str = "int") -> dict[str, Any]:
    return {"op": "literal", "value": value, "valueType": value_type}


def _cmp(op: str, value: Any, value_type: str = "int", name: str = "n") -> dict[str, Any]:
    column = {"op": "column", "name": name, "valueType": value_type}
    return {"op": op, "children": [column, _literal(value, value_type)]}


def _matches(tree: dict[str, Any], stats: FileStats) -> bool:
    return might_match(parse(json.dumps(tree)), stats)


# -- the property: never skip a file with a selected row ------------------------------------
OPS = ["equal", "lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"]
SQL = {"equal": lambda a, b: a == b, "lessThan": lambda a, b: a < b,
       "lessThanOrEqual": lambda a, b: a <= b, "greaterThan": lambda a, b: a > b,
       "greaterThanOrEqual": lambda a, b: a >= b}  # fmt: skip


def _leaves() -> st.SearchStrategy[dict[str, Any]]:
    literal = st.integers(-12, 12).map(lambda v: _literal(str(v)))
    compare = st.tuples(st.sampled_from(OPS), literal, st.booleans()).map(
        lambda t: {"op": t[0], "children": [COLUMN, t[1]] if t[2] else [t[1], COLUMN]}
    )
    return st.one_of(compare, st.just({"op": "isNull", "children": [COLUMN]}))


TREES = st.recursive(
    _leaves(),
    lambda inner: st.one_of(
        inner.map(lambda c: {"op": "not", "children": [c]}),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=1, max_size=3)).map(
            lambda t: {"op": t[0], "children": t[1]}
        ),
    ),
    max_leaves=8,
)


def _row(tree: dict[str, Any], n: int | None) -> bool | None:
    """The predicate on one row in SQL's three-valued logic (None: unknown)."""
    op, children = tree["op"], tree.get("children", [])
    if op == "isNull":
        return n is None
    if op == "not":
        found = _row(children[0], n)
        return None if found is None else not found
    if op in ("and", "or"):
        found = [_row(c, n) for c in children]
        if op == "and":
            return False if False in found else (None if None in found else True)
        return True if True in found else (None if None in found else False)
    left, right = children
    a = n if left["op"] == "column" else int(left["value"])
    b = n if right["op"] == "column" else int(right["value"])
    return None if a is None or b is None else SQL[op](a, b)


def _stats(rows: list[int | None], missing: set[str]) -> FileStats:
    values = [r for r in rows if r is not None]
    low = {"n": min(values)} if values and "min" not in missing else {}
    high = {"n": max(values)} if values and "max" not in missing else {}
    nulls = {"n": len(rows) - len(values)} if "nulls" not in missing else {}
    records = None if "rows" in missing else len(rows)
    return FileStats(records, low, high, nulls)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.one_of(st.none(), st.integers(-10, 10)), min_size=1, max_size=12),
       missing=st.sets(st.sampled_from(["min", "max", "nulls", "rows"])), tree=TREES)  # fmt: skip
def test_a_file_with_a_selected_row_is_never_skipped(
    rows: list[int | None], missing: set[str], tree: dict[str, Any]
) -> None:
    if any(_row(tree, n) is True for n in rows):
        assert _matches(tree, _stats(rows, missing))


# -- skipping happens -----------------------------------------------------------------------
def test_comparisons_skip_files_outside_the_range() -> None:
    stats = FileStats(10, {"n": 20}, {"n": 29}, {"n": 0})
    assert not _matches(_cmp("lessThan", "20"), stats)
    assert _matches(_cmp("lessThanOrEqual", "20"), stats)
    assert not _matches(_cmp("greaterThan", "29"), stats)
    assert not _matches(_cmp("equal", "30"), stats)
    flipped = {"op": "lessThan", "children": [_literal("29"), COLUMN]}  # 29 < n
    assert not _matches(flipped, stats)
    # n = 25 holds for every row: its negation for none
    constant = FileStats(10, {"n": 25}, {"n": 25}, {"n": 0})
    assert not _matches({"op": "not", "children": [_cmp("equal", "25")]}, constant)


def test_null_checks_use_the_null_count() -> None:
    none_null = FileStats(10, {"n": 1}, {"n": 2}, {"n": 0})
    all_null = FileStats(10, {}, {}, {"n": 10})
    is_null = {"op": "isNull", "children": [COLUMN]}
    assert not _matches(is_null, none_null) and _matches(is_null, all_null)
    assert not _matches({"op": "not", "children": [is_null]}, all_null)
    assert not _matches(_cmp("greaterThan", "0"), all_null)  # a null compares to nothing


@pytest.mark.parametrize(("value_type", "low", "high", "outside", "inside"), [
    ("string", "b", "d", "e", "c"),
    ("date", "2026-11-01", "2026-11-30", "2026-12-01", "2026-11-04"),
    ("long", 10**12, 10**12 + 5, str(10**12 + 6), str(10**12)),
    ("bool", False, False, "true", "false"),
    ("timestamp", "2026-11-04T01:00:00.000Z", "2026-11-04T02:00:00.000Z",
     "2026-11-04T03:00:00Z", "2026-11-04T09:30:00+08:00"),
])  # fmt: skip
def test_each_value_type_compares_as_its_type(
    value_type: str, low: Any, high: Any, outside: str, inside: str
) -> None:
    stats = FileStats(5, {"c": low}, {"c": high}, {"c": 0})
    assert not _matches(_cmp("equal", outside, value_type, "c"), stats)
    assert _matches(_cmp("equal", inside, value_type, "c"), stats)


def test_partition_values_stand_for_every_row() -> None:
    day = FileStats(5, partition_values={"day": "2026-11-04"})
    assert not _matches(_cmp("equal", "2026-11-05", "date", "day"), day)
    assert _matches(_cmp("equal", "2026-11-04", "date", "day"), day)
    null = FileStats(5, partition_values={"day": None})
    is_null = {"op": "isNull", "children": [{"op": "column", "name": "day", "valueType": "date"}]}
    assert _matches(is_null, null)
    assert not _matches({"op": "not", "children": [is_null]}, null)


def test_nested_columns_are_found_in_nested_statistics() -> None:
    stats = FileStats(5, {"a": {"b": 1}}, {"a": {"b": 3}}, {"a": {"b": 0}})
    assert not _matches(_cmp("greaterThan", "3", name="a.b"), stats)


# -- and where it must not ------------------------------------------------------------------
def test_what_is_not_known_keeps_the_file() -> None:
    stats = FileStats(10, {"n": 20}, {"n": 29}, {"n": 0})
    assert _matches(_cmp("lessThan", "5", name="other"), stats)  # no statistics for it
    assert _matches(_cmp("regexMatch", "5"), stats)  # an operator not known
    assert _matches(_cmp("lessThan", "5", "decimal"), stats)  # a type not known
    assert _matches(_cmp("lessThan", "five"), stats)  # a literal that is no int
    assert _matches(_cmp("lessThan", "5"), FileStats())  # no statistics at all
    mixed = {"op": "lessThan", "children": [COLUMN, _literal("2026-01-01", "date")]}
    assert _matches(mixed, stats)  # an int column against a date


def test_timestamps_kept_to_the_millisecond_do_not_hide_a_later_row() -> None:
    # The row is 09:00:00.123456; its statistics say 09:00:00.123.
    stats = FileStats(1, {"t": "2026-11-04T09:00:00.123Z"}, {"t": "2026-11-04T09:00:00.123Z"})
    assert _matches(_cmp("greaterThan", "2026-11-04T09:00:00.1234Z", "timestamp", "t"), stats)
    assert not _matches(_cmp("greaterThan", "2026-11-04T09:00:00.125Z", "timestamp", "t"), stats)


def test_not_a_number_is_above_every_double() -> None:
    # Statistics leave NaN out of the maximum; NaN > 5.0 holds for the engine.
    stats = FileStats(2, {"x": 1.0}, {"x": 1.0}, {"x": 0})
    assert _matches(_cmp("greaterThan", "5.0", "double", "x"), stats)
    assert not _matches(_cmp("lessThan", "0.5", "double", "x"), stats)


@pytest.mark.parametrize("text", [
    "{not json", "[]", "42", json.dumps({"children": []}), json.dumps({"op": "not"}),
    json.dumps({"op": "equal", "children": [COLUMN]}), json.dumps({"op": "and", "children": []}),
    json.dumps({"op": "column"}), json.dumps({"op": "literal", "valueType": "int"}),
    json.dumps({"op": "isNull", "children": "n"}), "[" * 5000 + "]" * 5000,
    json.dumps(_cmp("equal", "1") | {"valueType": 3}),
])  # fmt: skip
def test_a_tree_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(InvalidPredicate):
        parse(text)


def test_a_deep_tree_is_refused_not_recursed() -> None:
    tree: dict[str, Any] = _cmp("equal", "1")
    for _ in range(100):
        tree = {"op": "not", "children": [tree]}
    with pytest.raises(InvalidPredicate, match="deeper"):
        parse(json.dumps(tree))


def test_a_data_file_reads_its_statistics_from_its_action() -> None:
    action = {"path": "p.parquet", "size": 1, "partitionValues": {"day": "2026-11-04"},
              "stats": json.dumps({"numRecords": 3, "minValues": {"n": 1},
                                   "maxValues": {"n": 2}, "nullCount": {"n": 0}})}  # fmt: skip
    stats = DataFile.of(action).stats
    assert stats == FileStats(3, {"n": 1}, {"n": 2}, {"n": 0}, {"day": "2026-11-04"})
    broken = DataFile.of(action | {"stats": "{not json"}).stats
    assert broken == FileStats(None, {}, {}, {}, {"day": "2026-11-04"})
    # A checkpoint read with pyarrow gives the partition values as key-value pairs.
    pairs = DataFile.of(action | {"partitionValues": [("day", "2026-11-04")]}).stats
    assert pairs.partition_values == {"day": "2026-11-04"}
