"""Check-character rules as engine column expressions (no Python UDF), so they run where the
data is, on Sail or on a Spark cluster, and serve both row quarantine and quality suites.

- GB 11643 citizen identity number: 17 digits + ISO 7064 MOD 11-2 check character, and a
  valid birth date in positions 7–14. The first six digits are the division where the number
  was issued; divisions are renamed over time, so they are not checked against today's table.
- GB 32100 unified social credit code: 18 characters of the 31-character alphabet (no I, O,
  S, V, Z), the first eight being digits, + MOD 31 check character.

Each function takes a column (a name or a `Column`) and returns a boolean `Column`: true
when valid, false when not, null when the value is null (completeness is a rule of its own).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

CITIZEN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CITIZEN_ID_CHECK = "10X98765432"
CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def _col(column: str | Column) -> Column:
    return F.col(column) if isinstance(column, str) else column


def _weighted_sum(value: Column, weights: tuple[int, ...], digit: object) -> Column:
    """Σ digit(character i) × weight i, written out term by term: a plain arithmetic
    expression is several times faster in the engine than `aggregate(sequence(...), lambda)`
    (Sail evaluates the lambda row by row), and the check characters are the costliest rules
    of an extract."""
    terms = [
        digit(F.substring(value, position, 1)) * F.lit(weight)  # type: ignore[operator]
        for position, weight in enumerate(weights, start=1)
    ]
    total: Column = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def citizen_id_check_char(column: str | Column) -> Column:
    """The check character GB 11643 computes from the first 17 digits of `column`."""
    # try_cast, not cast: the engine may evaluate every branch of a `when`, and a malformed
    # value must give False, never a cast error that fails the whole job.
    total = _weighted_sum(
        _col(column), CITIZEN_ID_WEIGHTS, lambda c: F.coalesce(c.try_cast("int"), F.lit(0))
    )
    return F.substring(F.lit(CITIZEN_ID_CHECK), F.pmod(total, F.lit(11)) + 1, F.lit(1))


def is_valid_citizen_id(column: str | Column) -> Column:
    """True when `column` is a well-formed citizen id with the right check character and a real
    birth date."""
    value = _col(column)
    birth = F.concat_ws(
        "-", F.substring(value, 7, 4), F.substring(value, 11, 2), F.substring(value, 13, 2)
    ).try_cast("date")
    valid = (F.substring(value, 18, 1) == citizen_id_check_char(value)) & birth.isNotNull()
    # The arithmetic first: an AND whose first operand is the regular expression makes the
    # engine evaluate the rest row by row on the rows it selected (several times slower).
    return _unless_null(value, valid & value.rlike(r"^[0-9]{17}[0-9X]$"))


def _unless_null(value: Column, judged: Column) -> Column:
    """`judged`, but null where `value` is null (`judged` is false there). Not a CASE: the
    engine evaluates a CASE branch row by row too."""
    return judged | (value.isNull() & F.lit(None).cast("boolean"))


def credit_code_check_char(column: str | Column) -> Column:
    """The check character GB 32100 computes from the first 17 characters of `column`."""
    alphabet = F.lit(CREDIT_CODE_ALPHABET)
    total = _weighted_sum(_col(column), CREDIT_CODE_WEIGHTS, lambda c: F.instr(alphabet, c) - 1)
    check = F.pmod(F.lit(31) - F.pmod(total, F.lit(31)), F.lit(31))
    return F.substring(alphabet, check + 1, F.lit(1))


def is_valid_credit_code(column: str | Column) -> Column:
    """True when `column` is a well-formed credit code with the right check character."""
    value = _col(column)
    shaped = value.rlike(f"^[0-9]{{8}}[{CREDIT_CODE_ALPHABET}]{{10}}$")
    checked = F.substring(value, 18, 1) == credit_code_check_char(value)
    return _unless_null(value, checked & shaped)
