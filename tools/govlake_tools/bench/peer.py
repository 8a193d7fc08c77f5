"""The peer the benchmark compares against: the same ingest as a plain polars + delta-rs script.

Same input (the providers' CSV extracts of one resource), same output shape (a typed silver
table and one published table per sharing class), and the obvious logic only: cast to the
catalogue's types, drop keys that occur more than once in an extract, take each item from
its authority (one data, one source) with a full outer join on the key, publish the rows
whose required items are present. It does NOT keep bronze or lineage, apply row rules
(check characters, division codes, allowed values, dates), quarantine, run Great
Expectations, cross-check other sources, keep the extract register or the audit journal,
or recognise a re-sent extract.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import write_deltalake

from govlake.core.catalog import Resource

_POLARS_TYPES: dict[str, Any] = {
    "string": pl.String,
    "date": pl.Date,
    "int": pl.Int32,
    "bigint": pl.Int64,
    "double": pl.Float64,
    "boolean": pl.Boolean,
    "timestamp": pl.Datetime("us", "UTC"),
}


def polars_type(kind: str) -> Any:
    """The polars type of a catalogue item type (decimals and others as strings)."""
    return _POLARS_TYPES.get(kind, pl.String)


def _typed(frame: pl.LazyFrame, resource: Resource, items: list[str]) -> pl.LazyFrame:
    def cast(name: str) -> pl.Expr:
        kind = resource.item(name).type
        if kind == "date":
            return pl.col(name).str.to_date("%Y-%m-%d", strict=False)
        if kind == "timestamp":
            return pl.col(name).str.to_datetime(time_zone="UTC", strict=False)
        return pl.col(name).cast(polars_type(kind), strict=False)

    return frame.select([cast(name) for name in items])


def provider_frame(resource: Resource, provider: str, path: Path) -> pl.LazyFrame:
    """`provider`'s extract as the key plus the items it governs, typed, without duplicate
    keys (every copy dropped, as the platform cannot tell which is right)."""
    items = [*resource.key, *resource.authoritative_items(provider)]
    if path.suffix == ".parquet":
        raw = pl.scan_parquet(path)
    else:
        raw = pl.scan_csv(path, infer_schema=False, encoding="utf8")
    frame = _typed(raw.select(items), resource, items)
    return frame.filter(pl.len().over(resource.key) == 1)


def silver_frame(
    resource: Resource,
    extracts: dict[str, Path],
    *,
    extract_ids: dict[str, str] | None = None,
    updated_at: datetime,
) -> pl.LazyFrame:
    """One row per key: each item from its authority, in the silver table's column order,
    with the lineage columns (`_extract_id` of the authority of the identity items)."""
    key = resource.key
    ids = extract_ids or {p: f"{p}/{path.stem}" for p, path in extracts.items()}
    joined: pl.LazyFrame | None = None
    for provider in resource.providers:
        if provider not in extracts:
            continue
        frame = provider_frame(resource, provider, extracts[provider])
        frame = frame.with_columns(pl.lit(ids[provider]).alias(f"__extract_{provider}"))
        joined = (
            frame
            if joined is None
            else joined.join(frame, on=key, how="full", coalesce=True, maintain_order="none")
        )
    if joined is None:
        raise ValueError(f"no extract of {resource.qualified_name} to ingest")
    lineage = [pl.col(f"__extract_{p}") for p in resource.providers if p in extracts]
    names = [item.name for item in resource.items]
    return joined.select(
        *[
            pl.col(n) if n in joined.collect_schema() else pl.lit(None).alias(n).cast(pl.String)
            for n in names
        ],
        pl.coalesce(lineage).alias("_extract_id"),
        pl.lit(updated_at).cast(pl.Datetime("us", "UTC")).alias("_updated_at"),
    )


def run(
    resource: Resource,
    extracts: dict[str, Path],
    warehouse: Path,
    *,
    updated_at: datetime,
) -> dict[str, int]:
    """Ingest `extracts` (provider → file) into `warehouse/<theme>/<resource>[_<class>]`;
    return the rows written per table."""
    silver = silver_frame(resource, extracts, updated_at=updated_at).collect()
    root = warehouse / resource.theme
    written = {resource.name: silver.height}
    write_deltalake(str(root / resource.name), silver.to_arrow(), mode="overwrite")
    required = [pl.col(item.name).is_not_null() for item in resource.items if item.required]
    published = silver.filter(pl.all_horizontal(required))
    for sharing_class in resource.sharing_classes:
        name = f"{resource.name}_{sharing_class}"
        table = published.select(resource.class_items(sharing_class))
        write_deltalake(str(root / name), table.to_arrow(), mode="overwrite")
        written[name] = table.height
    return written
