"""Timeliness monitor: each resource's last publication against its update cycle, and each
provider's last delivery to it.

A resource is `on_time` until its next publication is due (last publication + update
cycle), `due` during a grace period after that, and `overdue` after the grace period or
when it has never been published. The same rule applies to each source provider's
deliveries, measured from the as-of time of its latest extract that passed the quality gate
(held and rejected extracts do not count as delivered).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pyspark.sql import SparkSession

from govlake.core.catalog import CYCLE_HOURS, Catalog, Resource, grace
from govlake.core.settings import Settings
from govlake.lake.statements import sql_literal
from govlake.lake.tables import ops_tables, register

State = Literal["on_time", "due", "overdue"]


@dataclass(frozen=True)
class Timeliness:
    """Where one resource stands at `at`."""

    resource: str
    provider: str
    update_cycle: str
    last_published_at: datetime | None
    next_due_at: datetime | None
    state: State
    at: datetime
    subject: Literal["publication", "delivery"] = "publication"

    @property
    def hours_late(self) -> float:
        if self.next_due_at is None or self.at <= self.next_due_at:
            return 0.0
        return (self.at - self.next_due_at).total_seconds() / 3600


def assess(
    resource: Resource,
    last_published_at: datetime | None,
    *,
    at: datetime,
    grace_fraction: float,
    provider: str | None = None,
) -> Timeliness:
    """Pure: the state of `resource` at `at` given its last publication time, or, with
    `provider`, that provider's delivery given the as-of time of its last extract."""
    subject: Literal["publication", "delivery"] = "publication" if provider is None else "delivery"
    who = provider or resource.provider
    if last_published_at is None:
        return Timeliness(
            resource.qualified_name, who, resource.update_cycle, None, None, "overdue", at,
            subject,
        )  # fmt: skip
    next_due = last_published_at + timedelta(hours=CYCLE_HOURS[resource.update_cycle])
    if at < next_due:
        state: State = "on_time"
    elif at < next_due + grace(resource, grace_fraction):
        state = "due"
    else:
        state = "overdue"
    return Timeliness(
        resource.qualified_name, who, resource.update_cycle, last_published_at, next_due, state,
        at, subject,
    )  # fmt: skip


def last_publications(spark: SparkSession, settings: Settings) -> dict[str, datetime]:
    """Latest publication time per resource, from `ops.publications` (a small table)."""
    _, publications = ops_tables(settings.warehouse_location)
    register(spark, publications)
    rows = spark.sql(
        f"SELECT resource, max(published_at) AS last FROM {publications.sql_name} GROUP BY resource"
    ).collect()
    return {row.resource: row.last for row in rows}


def monitor(
    spark: SparkSession, catalog: Catalog, settings: Settings, *, at: datetime
) -> list[Timeliness]:
    """Every catalogued resource's timeliness at `at` (naive UTC, as the engine stores it)."""
    last = last_publications(spark, settings)
    return [
        assess(r, last.get(r.qualified_name), at=at, grace_fraction=settings.timeliness_grace)
        for r in catalog
    ]


#: Extract statuses that count as delivered: past the quality gate.
DELIVERED = ("validated", "merged", "published")


def last_deliveries(spark: SparkSession, settings: Settings) -> dict[tuple[str, str], datetime]:
    """Latest as-of time per (resource, provider) among delivered extracts."""
    extracts, _ = ops_tables(settings.warehouse_location)
    register(spark, extracts)
    statuses = ", ".join(sql_literal(s) for s in DELIVERED)
    rows = spark.sql(
        f"SELECT resource, provider, max(coalesce(as_of, ingested_at)) AS last "
        f"FROM {extracts.sql_name} WHERE status IN ({statuses}) GROUP BY resource, provider"
    ).collect()
    return {(row.resource, row.provider): row.last for row in rows}


def deliveries(
    spark: SparkSession, catalog: Catalog, settings: Settings, *, at: datetime
) -> list[Timeliness]:
    """Every (resource, source provider)'s delivery timeliness at `at` (naive UTC)."""
    last = last_deliveries(spark, settings)
    return [
        assess(
            r,
            last.get((r.qualified_name, p)),
            at=at,
            grace_fraction=settings.timeliness_grace,
            provider=p,
        )
        for r in catalog
        for p in r.providers
    ]
