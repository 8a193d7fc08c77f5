"""What follows a publication: the step after the publish stage.

The publish stage (`jobs.publish`) writes the published tables and records each new version
in `ops.publications`, nothing more. `announce` then reads what it recorded for the run's
interval (the rows stamped with the interval's end) and, for the versions the audit journal
does not have yet:

1. journals each one (`pipeline.publish`, actor `pipeline`), and in the same transaction
   links the verification requests whose correction a published version carries
   (`govlake.sharing.requests.link_fixes`);
2. once that is committed, tells the resource's subscribers of the shared tables' new
   versions (`govlake.sharing.subscriptions.notify_publication`; the open variant is public
   and has no subscribers). A failing mail server or webhook is recorded, never raised.

Once only: a version is announced when its journal entry is committed, before any notice
goes out, so running `announce` again for the same interval journals and notifies nothing
twice (as before, a version is journaled once, right after it is recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from deltalake import DeltaTable
from sqlalchemy import select
from sqlalchemy.orm import Session

from govlake.core.catalog import Catalog, Resource, SharingClass
from govlake.core.runs import Interval, naive_utc
from govlake.core.settings import Settings
from govlake.lake.reads import query_delta
from govlake.lake.tables import ops_tables
from govlake.platform import audit
from govlake.platform.database import AuditEntry, session
from govlake.sharing.requests import link_fixes
from govlake.sharing.subscriptions import Notice, PublishedVersion, notify_publication

ACTION = "pipeline.publish"


@dataclass(frozen=True)
class Publication:
    """One row of `ops.publications`: one published version of one table."""

    sharing_class: str
    table_name: str
    version: int
    published_at: datetime  # naive UTC
    rows: int
    silver_version: int
    sources: str  # the extract ids it carries, comma-separated

    @property
    def extracts(self) -> list[str]:
        return self.sources.split(",") if self.sources else []


@dataclass(frozen=True)
class Announcement:
    """What `announce` did: the versions it journaled, the verification requests it marked
    fixed and the subscription notices it sent (none when it had already announced them)."""

    resource: str
    journaled: tuple[Publication, ...] = ()
    fixed: int = 0
    notices: tuple[Notice, ...] = ()


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def recorded(settings: Settings, resource: Resource, *, at: datetime) -> list[Publication]:
    """The versions of `resource` that `ops.publications` records as published at `at`, in
    the order the publish stage records them (sharing classes, then the open variant)."""
    _, publications = ops_tables(settings.warehouse_location)
    location = publications.location
    if not location.is_delta_table():
        return []
    table = DeltaTable(location.uri, storage_options=location.storage_options())
    rows = query_delta(
        table,
        "SELECT sharing_class, table_name, version, published_at, rows, silver_version, "
        f"source_extracts FROM publications WHERE resource = {_text(resource.qualified_name)} "
        f"AND published_at = TIMESTAMP '{naive_utc(at):%Y-%m-%d %H:%M:%S.%f}'",
        name="publications",
    ).to_pylist()
    order = {
        sharing_class: i for i, sharing_class in enumerate([*resource.sharing_classes, "open"])
    }
    found = [
        Publication(
            sharing_class=row["sharing_class"],
            table_name=row["table_name"],
            version=int(row["version"]),
            published_at=naive_utc(row["published_at"]),
            rows=int(row["rows"]),
            silver_version=int(row["silver_version"]),
            sources=row["source_extracts"] or "",
        )
        for row in rows
    ]
    return sorted(found, key=lambda p: (order.get(p.sharing_class, len(order)), p.version))


def unannounced(s: Session, resource: Resource, found: list[Publication]) -> list[Publication]:
    """Those of `found` that have no journal entry yet."""
    if not found:
        return []
    rows = s.execute(
        select(AuditEntry.table_name, AuditEntry.version).where(
            AuditEntry.action == ACTION,
            AuditEntry.resource == resource.qualified_name,
            AuditEntry.table_name.in_({p.table_name for p in found}),
            AuditEntry.version.in_({p.version for p in found}),
        )
    )
    journaled = {(table_name, version) for table_name, version in rows}
    return [p for p in found if (p.table_name, p.version) not in journaled]


def journal(s: Session, resource: Resource, published: list[Publication], *, at: datetime) -> None:
    """One `pipeline.publish` entry per published version, in the caller's transaction."""
    for p in published:
        audit.record(s, at=at, actor="pipeline", action=ACTION,
                     resource=resource.qualified_name, table_name=p.table_name,
                     version=p.version, rows=p.rows,
                     detail={"sharing_class": p.sharing_class,
                             "silver_version": p.silver_version,
                             "extracts": p.extracts})  # fmt: skip


def notify(
    settings: Settings, catalog: Catalog, resource: Resource, published: list[Publication], *,
    at: datetime,
) -> list[Notice]:  # fmt: skip
    """Tell the subscribers of the shared tables' new versions (the open variant is public:
    nobody subscribes to it)."""
    shared = [
        PublishedVersion(
            cast(SharingClass, p.sharing_class), p.table_name, p.version, p.rows, p.published_at
        )
        for p in published
        if p.sharing_class in resource.sharing_classes
    ]
    if not shared:
        return []
    return notify_publication(settings, catalog, resource=resource.qualified_name,
                              versions=shared, at=at)  # fmt: skip


def announce(settings: Settings, *, resource: Resource, interval: Interval) -> Announcement:
    """Journal, link the fixes of, and notify the subscribers of what the publish stage
    published for `resource` in `interval`; nothing for versions already announced."""
    at = interval.end_naive_utc
    found = recorded(settings, resource, at=at)
    if not found:
        return Announcement(resource.qualified_name)
    catalog = Catalog.load(settings.catalog_dir)
    with session(settings) as s:
        new = unannounced(s, resource, found)
        if not new:
            return Announcement(resource.qualified_name)
        journal(s, resource, new, at=at)
        fixed = link_fixes(s, None, catalog, settings, at=at)
    notices = notify(settings, catalog, resource, new, at=at)
    return Announcement(resource.qualified_name, tuple(new), len(fixed), tuple(notices))
