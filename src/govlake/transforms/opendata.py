"""De-identification (脱敏) of the open variant (开放数据, 石景山 ch. 6, art. 23, 32), inside the
engine: silver rows in, the public's rows out, as Spark SQL column expressions only (no Python
UDF, nothing collected), so that the same plan runs on Sail and on Spark+Delta at any size.

Each item of an open resource has its rule in the catalogue (`Resource.open_rule`):

- `keep`: as it is (only items that are not pii; the catalogue refuses pii kept raw);
- `mask`: identifiers (citizen id, credit code) keep a 3-character prefix and a 2-character
  suffix around stars, and keep their length; anything shorter than 12 characters is all
  stars. Other text keeps its first character followed by two stars, whatever its length
  (张三丰 → 张**), so that the mask does not tell the length either; text of one
  character is one star. A mask never equals the value it hides: a value that already looks
  masked gets one more star;
- `generalise`: a date or timestamp becomes its year (an integer); a division code becomes its
  prefecture's code, the first four digits and `00` (110105 → 110100); a value that is not a
  6-digit code becomes null rather than a prefix of something else;
- `drop`: the item is not in the open variant at all.

Nulls stay null under every rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from govlake.core.catalog import Item, Resource
from govlake.lake.tables import open_type

MaskKind = Literal["identifier", "text"]

#: Checks whose values are identifiers: masked keeping a short prefix and suffix.
IDENTIFIER_CHECKS = frozenset({"citizen_id", "credit_code"})
#: Identifiers shorter than this are all stars; from it on, prefix and suffix stay.
IDENTIFIER_MIN_KEPT = 12
IDENTIFIER_PREFIX = 3
IDENTIFIER_SUFFIX = 2
STAR = "*"


def mask_kind(item: Item) -> MaskKind:
    """How an item is masked: as an identifier (citizen id, credit code) or as text."""
    return "identifier" if item.check in IDENTIFIER_CHECKS else "text"


def mask(value: Column, kind: MaskKind = "text") -> Column:
    """`value` masked (see the module docstring); never equal to `value`; null stays null."""
    length = F.char_length(value)
    if kind == "identifier":
        hidden = F.greatest(length - (IDENTIFIER_PREFIX + IDENTIFIER_SUFFIX), F.lit(0))
        kept = F.concat(
            F.substring(value, 1, IDENTIFIER_PREFIX),
            F.repeat(F.lit(STAR), hidden),
            F.substring(value, -IDENTIFIER_SUFFIX, IDENTIFIER_SUFFIX),
        )
        masked = F.when(length >= IDENTIFIER_MIN_KEPT, kept).otherwise(
            F.repeat(F.lit(STAR), F.greatest(length, F.lit(1)))
        )
    else:
        masked = F.when(length >= 2, F.concat(F.substring(value, 1, 1), F.lit(STAR * 2))).otherwise(
            F.lit(STAR)
        )
    # Only a value that is already stars where the mask puts them can equal its mask.
    guarded = F.when(masked == value, F.concat(masked, F.lit(STAR))).otherwise(masked)
    return F.when(value.isNull(), F.lit(None).cast("string")).otherwise(guarded)


def year_of(value: Column) -> Column:
    """A date or timestamp generalised to its year, as an integer."""
    return F.year(value).cast("integer")


def prefecture(value: Column) -> Column:
    """A 6-digit division code generalised to its prefecture (first four digits + `00`);
    anything else becomes null."""
    code = F.trim(value.cast("string"))
    return F.when(
        code.rlike(r"^[0-9]{6}$"), F.concat(F.substring(code, 1, 4), F.lit("00"))
    ).otherwise(F.lit(None).cast("string"))


def open_column(resource: Resource, item: Item) -> Column | None:
    """The open variant's column for `item`, named as the item, or None when it is dropped."""
    rule = resource.open_rule(item)
    value = F.col(f"`{item.name}`")
    if rule == "drop":
        return None
    if rule == "keep":
        column = value
    elif rule == "mask":
        column = mask(value.cast("string"), mask_kind(item))
    elif item.type in ("date", "timestamp"):  # generalise
        column = year_of(value)
    else:
        column = prefecture(value)
    return column.cast(open_type(item.type, rule)).alias(item.name)


def open_variant(silver: DataFrame, resource: Resource, *, carry: Sequence[str] = ()) -> DataFrame:
    """The open variant of `resource` from its silver rows: the items that are not dropped,
    in catalogue order, de-identified by their rules; one row per silver row. `carry`:
    columns of `silver` passed through first (e.g. `RECORD_ID`)."""
    if not resource.is_open:
        raise ValueError(f"{resource.qualified_name} is not open (open_attribute "
                         f"{resource.open_attribute}): it has no open variant")  # fmt: skip
    columns = [
        column for item in resource.items if (column := open_column(resource, item)) is not None
    ]
    return silver.select(*carry, *columns)


#: The open variant's first column: a pseudonym of the record, the same in every version.
RECORD_ID = "record_id"


def record_id(resource: Resource, secret: str) -> Column:
    """A record's pseudonym (假名): the first 128 bits of SHA-256 over a platform secret and
    the record's key. It lets a publication change only the records that changed, and a
    reader follow a record across versions, without telling anything of its key: without the
    secret it cannot be computed from a key, nor a key found from it."""
    parts = [F.lit(secret), *(F.col(f"`{k}`").cast("string") for k in resource.key)]
    return F.substring(F.sha2(F.concat_ws("\u001f", *parts), 256), 1, 32)


# -- what the public is told, on the table itself -------------------------------------------
#: Table properties of an open table: its licence, usage notice and de-identification rules.
LICENCE_PROPERTY = "govlake.open.licence"
LICENCE_URL_PROPERTY = "govlake.open.licenceUrl"
NOTICE_PROPERTY = "govlake.open.notice"
RULES_PROPERTY = "govlake.open.rules"


def open_properties(resource: Resource) -> dict[str, str]:
    """The Delta table properties of `resource`'s open table: licence, licence URL, usage
    notice, and each published item's rule (`name=rule`, comma-separated)."""
    terms = resource.open
    if terms is None:
        raise ValueError(f"{resource.qualified_name} has no open terms")
    rules = ",".join(f"{name}={rule}" for name, rule in resource.open_items())
    return {
        LICENCE_PROPERTY: terms.licence,
        LICENCE_URL_PROPERTY: terms.licence_url,
        NOTICE_PROPERTY: " ".join(terms.notice.split()),
        RULES_PROPERTY: rules,
    }


def open_description(resource: Resource, grain: str) -> str:
    """The Delta table description of the open table: its grain, licence and usage notice,
    what anyone listing the table's metadata reads first."""
    properties = open_properties(resource)
    return (
        f"{grain}. Licence: {properties[LICENCE_PROPERTY]} "
        f"({properties[LICENCE_URL_PROPERTY]}). Usage notice (使用须知): "
        f"{properties[NOTICE_PROPERTY]}"
    )
