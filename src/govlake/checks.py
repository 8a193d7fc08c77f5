"""Check-character rules as engine column expressions (no Python UDF), so they run where the
data is, on Sail or on a Spark cluster.

- GB 11643 citizen identity number: 17 digits + ISO 7064 MOD 11-2 check character, and a
  valid birth date in positions 7–14. The first six digits are the division where the number
  was issued; divisions are renamed over time, so they are not checked against today's table.
- GB 32100 unified social credit code: 18 characters of the 31-character alphabet (no I, O,
  S, V, Z), the first eight being digits, + MOD 31 check character.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

CITIZEN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CITIZEN_ID_CHECK = "10X98765432"
CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def _weights(values: tuple[int, ...]) -> str:
    return "array(" + ",".join(str(v) for v in values) + ")"


def _sql_column(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def citizen_id_check_char(column: str) -> Column:
    """The check character GB 11643 computes from the first 17 digits of `column`."""
    col = _sql_column(column)
    total = (
        f"aggregate(sequence(1, 17), 0, (acc, i) -> acc + "
        f"coalesce(try_cast(substring({col}, i, 1) as int), 0) * "
        f"element_at({_weights(CITIZEN_ID_WEIGHTS)}, i))"
    )
    return F.expr(f"substring('{CITIZEN_ID_CHECK}', pmod({total}, 11) + 1, 1)")


def is_valid_citizen_id(column: str) -> Column:
    """True when `column` is a well-formed citizen id with the right check character and a real
    birth date; null when the value is null (completeness is a rule of its own)."""
    value = F.col(column)
    shaped = value.rlike(r"^[0-9]{17}[0-9X]$")
    birth = F.expr(
        f"try_cast(concat_ws('-', substring({_sql_column(column)}, 7, 4), "
        f"substring({_sql_column(column)}, 11, 2), "
        f"substring({_sql_column(column)}, 13, 2)) as date)"
    )
    # The engine may evaluate both branches of `when`, so the digit sum uses try_cast: a
    # malformed value must give False, never a cast error that fails the whole job.
    return F.when(value.isNull(), F.lit(None)).otherwise(
        F.when(
            shaped,
            (F.substring(value, 18, 1) == citizen_id_check_char(column)) & birth.isNotNull(),
        ).otherwise(F.lit(False))
    )


def credit_code_check_char(column: str) -> Column:
    """The check character GB 32100 computes from the first 17 characters of `column`."""
    col = _sql_column(column)
    total = (
        f"aggregate(sequence(1, 17), 0, (acc, i) -> acc + "
        f"(instr('{CREDIT_CODE_ALPHABET}', substring({col}, i, 1)) - 1) * "
        f"element_at({_weights(CREDIT_CODE_WEIGHTS)}, i))"
    )
    return F.expr(f"substring('{CREDIT_CODE_ALPHABET}', pmod(31 - pmod({total}, 31), 31) + 1, 1)")


def is_valid_credit_code(column: str) -> Column:
    """True when `column` is a well-formed credit code with the right check character."""
    value = F.col(column)
    shaped = value.rlike(f"^[0-9]{{8}}[{CREDIT_CODE_ALPHABET}]{{10}}$")
    return F.when(value.isNull(), F.lit(None)).otherwise(
        F.when(shaped, F.substring(value, 18, 1) == credit_code_check_char(column)).otherwise(
            F.lit(False)
        )
    )
