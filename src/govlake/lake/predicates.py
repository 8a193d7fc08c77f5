"""Data skipping: whether a data file may hold a row that a predicate selects, from the file's
statistics alone (`FileStats`), so that a reader is not handed files it would only discard.

The predicate is the JSON tree of Delta Sharing's `jsonPredicateHints` (PROTOCOL.md, "JSON
predicates for Filtering"): `column` and `literal` leaves with a `valueType` (bool/boolean,
int, long, string, date, float, double, timestamp), the comparisons `equal`, `lessThan`,
`lessThanOrEqual`, `greaterThan`, `greaterThanOrEqual`, and `isNull`, `not`, `and`, `or`.

Skipping is a hint, so it errs one way only: a file is skipped only when its statistics prove
that no row of it can satisfy the predicate. An operator or a value type this module does not
know, a column without statistics, or values that do not compare, keep the file. `parse`
refuses (`InvalidPredicate`) only a tree that is not one at all; the caller decides what a
refused hint means (the sharing server ignores it, as the protocol says).

Each node is judged by two questions over the file's rows, in SQL's three-valued logic (a
comparison with a null is neither true nor false): may some row make it true, may some row
make it false. `not` swaps the two, which is what makes `not` over a comparison sound.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from govlake.core.errors import GovlakeError
from govlake.lake.deltalog import FileStats

#: The deepest predicate tree accepted: deeper is no filter a client writes.
MAX_DEPTH = 64
#: The most nodes accepted in one tree.
MAX_NODES = 10_000

COMPARISONS = ("equal", "lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual")
#: A comparison with its sides swapped: `literal < column` is `column > literal`.
_FLIPPED = {"equal": "equal", "lessThan": "greaterThan", "lessThanOrEqual": "greaterThanOrEqual",
            "greaterThan": "lessThan", "greaterThanOrEqual": "lessThanOrEqual"}  # fmt: skip


class InvalidPredicate(GovlakeError, ValueError):
    """A predicate hint that is not a JSON predicate tree."""


@dataclass(frozen=True)
class Node:
    """One node of a predicate tree: `op`, and per kind its `children`, the column's `name` or
    the literal's `value`, and their `value_type`."""

    op: str
    children: tuple[Node, ...] = ()
    name: str | None = None
    value: Any = None
    value_type: str | None = None


# -- parsing --------------------------------------------------------------------------------
def parse(text: str) -> Node:
    """The predicate tree `text` holds; `InvalidPredicate` unless it is one. Operators and
    value types this module does not know are kept (they keep every file)."""
    try:
        found = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidPredicate(f"not JSON: {exc}") from exc
    counter = [0]
    return _node(found, 0, counter)


def _node(raw: Any, depth: int, counter: list[int]) -> Node:
    if depth > MAX_DEPTH:
        raise InvalidPredicate(f"the tree is deeper than {MAX_DEPTH}")
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise InvalidPredicate(f"the tree has more than {MAX_NODES} nodes")
    if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
        raise InvalidPredicate("each node is an object with an 'op'")
    op = raw["op"]
    value_type = raw.get("valueType")
    if value_type is not None and not isinstance(value_type, str):
        raise InvalidPredicate(f"{op}: valueType is a string")
    if op == "column":
        if not isinstance(raw.get("name"), str):
            raise InvalidPredicate("a column names its column")
        return Node(op, name=raw["name"], value_type=value_type)
    if op == "literal":
        if "value" not in raw:
            raise InvalidPredicate("a literal has a value")
        return Node(op, value=raw["value"], value_type=value_type)
    children = raw.get("children", [])
    if not isinstance(children, list):
        raise InvalidPredicate(f"{op}: children is a list")
    nodes = tuple(_node(child, depth + 1, counter) for child in children)
    wanted = {"not": 1, "isNull": 1, **dict.fromkeys(COMPARISONS, 2)}.get(op)
    if wanted is not None and len(nodes) != wanted:
        raise InvalidPredicate(f"{op} takes {wanted} child(ren), got {len(nodes)}")
    if op in ("and", "or") and not nodes:
        raise InvalidPredicate(f"{op} takes children")
    return Node(op, nodes)


# -- values ---------------------------------------------------------------------------------
def _timestamp(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in ("true", "false"):
        raise ValueError(f"not a boolean: {value!r}")
    return text == "true"


def _integer(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


#: How a value of each type is read from a literal or a statistic (both may come as text).
CASTS: dict[str, Callable[[Any], Any]] = {
    "bool": _boolean, "boolean": _boolean, "int": _integer, "long": _integer, "string": str,
    "date": lambda v: date.fromisoformat(str(v)[:10]), "float": float, "double": float,
    "timestamp": _timestamp,
}  # fmt: skip


def _cast(value: Any, value_type: str | None) -> Any:
    """`value` as `value_type`; `_Unknown` when the type is not known or the value does not
    read as one."""
    cast = CASTS.get(value_type or "")
    if cast is None or value is None:
        raise _Unknown
    try:
        return cast(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _Unknown from exc


class _Unknown(Exception):
    """Nothing can be concluded: the node keeps the file."""


# -- judging a file -------------------------------------------------------------------------
#: (may some row make it true, may some row make it false)
Verdict = tuple[bool, bool]
UNKNOWN: Verdict = (True, True)


def might_match(predicate: Node, stats: FileStats) -> bool:
    """Whether a row of the file with `stats` may satisfy `predicate` (False only when the
    statistics prove none can)."""
    return _judge(predicate, stats)[0]


def _judge(node: Node, stats: FileStats) -> Verdict:
    try:
        if node.op == "and":
            verdicts = [_judge(c, stats) for c in node.children]
            return all(v[0] for v in verdicts), any(v[1] for v in verdicts)
        if node.op == "or":
            verdicts = [_judge(c, stats) for c in node.children]
            return any(v[0] for v in verdicts), all(v[1] for v in verdicts)
        if node.op == "not":
            true, false = _judge(node.children[0], stats)
            return false, true
        if node.op == "isNull":
            return _is_null(node.children[0], stats)
        if node.op in COMPARISONS:
            return _compare(node.op, node.children[0], node.children[1], stats)
    except _Unknown:
        return UNKNOWN
    return UNKNOWN


@dataclass(frozen=True)
class _Bounds:
    """What the statistics say of one column in one file: its least and greatest non-null
    values (None: not known), its nulls and its rows (None: not known)."""

    low: Any
    high: Any
    nulls: int | None
    rows: int | None

    @property
    def all_null(self) -> bool:
        return self.nulls is not None and self.rows is not None and self.nulls >= self.rows


def _lookup(values: Mapping[str, Any], name: str) -> Any:
    """A column's statistic; nested columns are nested objects (`a.b` is `{"a": {"b": ..}}`)."""
    if name in values:
        return values[name]
    found: Any = values
    for part in name.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return found


def _bounds(column: Node, stats: FileStats) -> _Bounds:
    name, value_type = column.name or "", column.value_type
    if name in stats.partition_values:  # one value for every row of the file
        value = stats.partition_values[name]
        if value is None:  # every row is null, however many there are
            return _Bounds(None, None, 1, 1)
        typed = _cast(value, value_type)
        return _Bounds(typed, typed, 0, stats.num_records)
    nulls = _lookup(stats.null_count, name)
    low, high = _lookup(stats.min_values, name), _lookup(stats.max_values, name)
    return _Bounds(
        None if low is None else _cast_or_none(low, value_type),
        None if high is None else _cast_or_none(high, value_type),
        nulls if type(nulls) is int else None,
        stats.num_records,
    )


def _cast_or_none(value: Any, value_type: str | None) -> Any:
    """A statistic as `value_type`, or None (no bound) when it does not read as one."""
    try:
        return _cast(value, value_type)
    except _Unknown:
        return None


def _is_null(child: Node, stats: FileStats) -> Verdict:
    if child.op == "literal":
        return (True, False) if child.value is None else (False, True)
    if child.op != "column":
        return UNKNOWN
    bounds = _bounds(child, stats)
    if bounds.nulls is None:
        return UNKNOWN
    return bounds.nulls > 0, bounds.rows is None or bounds.nulls < bounds.rows


def _compare(op: str, left: Node, right: Node, stats: FileStats) -> Verdict:
    if left.op == "literal" and right.op == "column":
        return _compare(_FLIPPED[op], right, left, stats)
    if left.op == "literal" and right.op == "literal":
        a, b = _cast(left.value, left.value_type), _cast(right.value, right.value_type)
        holds = _holds(op, a, b)
        return holds, not holds
    if left.op != "column" or right.op != "literal":
        return UNKNOWN
    literal = _cast(right.value, right.value_type)
    bounds = _bounds(left, stats)
    if bounds.all_null:  # every comparison with a null is unknown: no row is selected
        return False, False
    low, high = bounds.low, bounds.high
    if left.value_type in ("float", "double"):
        high = None  # NaN sorts above every number, and statistics leave it out
    if left.value_type == "timestamp" and high is not None:
        high += timedelta(milliseconds=1)  # kept to the millisecond: the true maximum may be later
    try:
        return _may_hold(op, low, high, literal)
    except TypeError as exc:  # values of types that do not compare
        raise _Unknown from exc


def _holds(op: str, a: Any, b: Any) -> bool:
    try:
        return bool({"equal": a == b, "lessThan": a < b, "lessThanOrEqual": a <= b,
                     "greaterThan": a > b, "greaterThanOrEqual": a >= b}[op])  # fmt: skip
    except TypeError as exc:
        raise _Unknown from exc


def _may_hold(op: str, low: Any, high: Any, x: Any) -> Verdict:
    """Whether `column op x` may be true, may be false, for values within [low, high] (either
    bound None: unbounded on that side)."""
    if op == "equal":
        true = (low is None or low <= x) and (high is None or x <= high)
        false = not (low is not None and high is not None and low == x == high)
        return true, false
    if op == "lessThan":
        return (low is None or low < x), (high is None or high >= x)
    if op == "lessThanOrEqual":
        return (low is None or low <= x), (high is None or high > x)
    if op == "greaterThan":
        return (high is None or high > x), (low is None or low <= x)
    if op == "greaterThanOrEqual":
        return (high is None or high >= x), (low is None or low < x)
    return UNKNOWN
