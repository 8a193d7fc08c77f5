"""How a message quotes text a department delivered (a value, a header name): cut to a
readable length, so that a reason stays small whatever the file held. Pure Python, so any
layer can use it."""

from __future__ import annotations

from collections.abc import Sequence

#: How much of a delivered value a reason quotes; the record itself keeps the whole value.
REASON_VALUE_CHARS = 64
#: How many delivered names (header items, say) a reason lists before counting the rest.
REASON_LIST_ITEMS = 50


def quote(value: str, *, limit: int = REASON_VALUE_CHARS) -> str:
    """`value` as a reason quotes it: whole, or its first `limit` characters and its length
    when it is longer (a 1 MB value would otherwise put 1 MB into each reason)."""
    return value if len(value) <= limit else f"{value[:limit]}…({len(value)} chars)"


def quote_list(
    values: Sequence[str], *, most: int = REASON_LIST_ITEMS, limit: int = REASON_VALUE_CHARS
) -> str:
    """`values` comma-separated as a reason lists them: the first `most`, each quoted, then
    how many more there are."""
    listed = ", ".join(quote(value, limit=limit) for value in values[:most])
    if len(values) > most:
        listed += f", … {len(values) - most} more"
    return listed
