"""The catalogue's change register (51号 art. 8, 宝鸡 art. 10): every change to an entry is
recorded with its reason and effective date, a law or duty change puts the provider's
entries due for update within 15 working days, and every entry is reviewed each quarter.

The catalogue entries are the YAML files; the register, in the platform database, holds
what each entry was when it was last recorded (`catalogue_revisions`) and the law or duty
changes registered against providers (`duty_changes`).

- **Revisions.** An entry is registered (revision 1) the first time the platform meets it
  (`sync`). After that, `record_change` records an edited entry as a new revision: the
  tracked fields (items, key, sharing type, update cycle, provider and sources, open
  attribute, resource version) are compared with the last revision, the differences are
  kept, and a breaking change (an item removed, the key changed, an item's type narrowed or
  changed to one its values do not fit) is refused unless the entry also raises its
  resource `version`, whose tables are then new ones (`residents_v2_*`). `record_review`
  records that the steward went over the entry and found it current.
- **Upkeep.** `upkeep` says, per entry, where it stands: the quarterly review (due three
  months after the last review: the entry's `reviewed_on` or a recorded review or change),
  each registered duty change not yet answered by a change or review of the entry (due 15
  working days after it takes effect, or after it was registered if that is later: the
  calendar of access requests), and an edit of the YAML not recorded in the register.
  The timeliness monitor and the steward report show these; an overdue one fails the
  monitor's DAG run like a late publication.

Every record is in the audit journal.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from dateutil.relativedelta import relativedelta
from sqlalchemy import Date, DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from govlake.core.catalog import Catalog, CatalogError, Department, Resource, widens
from govlake.core.settings import Settings
from govlake.platform import audit
from govlake.platform.database import Base, Notification, engine, session
from govlake.platform.mail import MailError, send_mail
from govlake.platform.workdays import add_working_days, china_date, default_holidays_file

log = logging.getLogger(__name__)

#: Working days a provider has to update its entries after a law or duty change (51号 art. 8).
UPDATE_WORKING_DAYS = 15
#: Months between two reviews of an entry (宝鸡 art. 10: at least quarterly).
REVIEW_MONTHS = 3
#: Days before the review date from which a review shows as due.
REVIEW_NOTICE_DAYS = 14
PLATFORM = "platform"

State = Literal["on_time", "due", "overdue"]
Kind = Literal["registration", "change", "review"]


class ChangeError(CatalogError):
    """A change cannot be recorded as asked (nothing changed, unknown entry, bad date)."""


class BreakingChange(ChangeError):
    """An edit that would break the tables or their consumers, without a new version."""


class CatalogueRevision(Base):
    """One recorded state of a catalogue entry: what changed since the revision before, why,
    and from when."""

    __tablename__ = "catalogue_revisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource: Mapped[str] = mapped_column(String(128), index=True)
    revision: Mapped[int] = mapped_column(Integer)  # 1, 2, … per resource
    kind: Mapped[str] = mapped_column(String(16))  # registration | change | review
    resource_version: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(64), index=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
    recorded_by: Mapped[str] = mapped_column(String(100))
    effective_on: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text)
    changes: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{field, detail}]
    entry: Mapped[str] = mapped_column(Text)  # JSON: the tracked fields
    fingerprint: Mapped[str] = mapped_column(String(64))


class DutyChange(Base):
    """A change in law or in a provider's duties: the provider's entries are due for update."""

    __tablename__ = "duty_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)
    basis: Mapped[str] = mapped_column(Text)  # the law, regulation or decision
    reason: Mapped[str] = mapped_column(Text)
    effective_on: Mapped[date] = mapped_column(Date)
    registered_at: Mapped[datetime] = mapped_column(DateTime)
    registered_by: Mapped[str] = mapped_column(String(100))
    due_on: Mapped[date] = mapped_column(Date)
    due_basis: Mapped[str] = mapped_column(String(200))
    resources: Mapped[str] = mapped_column(Text)  # JSON: the entries due at registration


_ready: set[str] = set()


def ensure_tables(settings: Settings) -> None:
    """The platform database may predate the register: create its tables once."""
    if settings.database_url not in _ready:
        bind = engine(settings.database_url)
        for model in (CatalogueRevision, DutyChange):
            model.__table__.create(bind, checkfirst=True)  # type: ignore[attr-defined]
        _ready.add(settings.database_url)


# -- pure: an entry's tracked fields, their differences, and what breaks ---------------------
def snapshot(resource: Resource) -> dict[str, Any]:
    """The fields of an entry whose change must be recorded (51号 art. 8): items, sharing
    type, update cycle, provider duties, and what the tables depend on."""
    return {
        "version": resource.version,
        "provider": resource.provider,
        "sharing": resource.sharing,
        "update_cycle": resource.update_cycle,
        "open_attribute": resource.open_attribute,
        "key": list(resource.key),
        "sources": {p: resource.supplied_items(p) for p in sorted(resource.sources)},
        "items": {
            item.name: {
                "type": item.type,
                "required": item.required,
                "pii": item.pii,
                "base_item": item.base_item,
                "sharing": resource.sharing_of(item),
                "authority": item.authority,
                "open": resource.open_rule(item) if resource.is_open else None,
            }
            for item in resource.items
        },
    }


def fingerprint(entry: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Difference:
    field: str
    detail: str
    breaking: bool = False


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[Difference]:
    """What changed from `old` to `new` (two snapshots), each marked breaking or not."""
    found: list[Difference] = []
    for name in ("provider", "sharing", "update_cycle", "open_attribute", "version"):
        if old.get(name) != new.get(name):
            found.append(Difference(name, f"{name} {old.get(name)} → {new.get(name)}"))
    if old["key"] != new["key"]:
        found.append(
            Difference(
                "key", f"key {', '.join(old['key'])} → {', '.join(new['key'])}", breaking=True
            )
        )
    old_items, new_items = old["items"], new["items"]
    for name in old_items:
        if name not in new_items:
            what = "key item" if name in old["key"] else "item"
            found.append(Difference("items", f"{what} {name} removed", breaking=True))
    for name, item in new_items.items():
        before = old_items.get(name)
        if before is None:
            found.append(Difference("items", f"item {name} ({item['type']}) added"))
            continue
        if before["type"] != item["type"]:
            if widens(before["type"], item["type"]):
                found.append(
                    Difference("items", f"{name}: type {before['type']} → {item['type']} (widened)")
                )
            else:
                found.append(
                    Difference(
                        "items",
                        f"{name}: type {before['type']} → {item['type']} is not a widening",
                        breaking=True,
                    )
                )
        for attribute in ("required", "pii", "base_item", "sharing", "authority", "open"):
            if before.get(attribute) != item.get(attribute):
                found.append(
                    Difference(
                        "items", f"{name}: {attribute} {before.get(attribute)} → {item[attribute]}"
                    )
                )
    old_sources, new_sources = old["sources"], new["sources"]
    for provider in sorted(set(old_sources) | set(new_sources)):
        was, now = set(old_sources.get(provider, [])), set(new_sources.get(provider, []))
        if was == now:
            continue
        if not was:
            found.append(
                Difference("sources", f"{provider} added, supplies {', '.join(sorted(now))}")
            )
        elif not now:
            found.append(Difference("sources", f"{provider} no longer supplies the resource"))
        else:
            parts = [f"+{n}" for n in sorted(now - was)] + [f"-{n}" for n in sorted(was - now)]
            found.append(Difference("sources", f"{provider}: {' '.join(parts)}"))
    return found


def breaking_reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The breaking differences between two snapshots of the same resource version."""
    return [d.detail for d in differences(old, new) if d.breaking]


def refuse_breaking(resource: Resource, old: dict[str, Any], *, where: str) -> None:
    """Raise `BreakingChange` when `resource` breaks `old` without raising its version."""
    new = snapshot(resource)
    if new["version"] < old["version"]:
        raise BreakingChange(
            f"{where}: {resource.qualified_name}: version {new['version']} is older than the "
            f"recorded version {old['version']}; a resource version never goes back"
        )
    if new["version"] > old["version"]:
        return
    reasons = breaking_reasons(old, new)
    if reasons:
        raise BreakingChange(
            f"{where}: {resource.qualified_name}: breaking change refused ({'; '.join(reasons)}): "
            f"the tables and their consumers depend on it. Publish it as a new resource version "
            f"(`version: {old['version'] + 1}` in the entry; its tables become "
            f"{resource.name}_v{old['version'] + 1}_*), or make the change additive"
        )


# -- the register -----------------------------------------------------------------------------
def revisions(s: Session, resource: str | None = None) -> list[CatalogueRevision]:
    query = select(CatalogueRevision).order_by(
        CatalogueRevision.resource, CatalogueRevision.revision
    )
    if resource is not None:
        query = query.where(CatalogueRevision.resource == resource)
    return list(s.scalars(query))


def latest(s: Session, resource: str) -> CatalogueRevision | None:
    return s.scalar(
        select(CatalogueRevision)
        .where(CatalogueRevision.resource == resource)
        .order_by(CatalogueRevision.revision.desc())
        .limit(1)
    )


def _add(
    s: Session,
    resource: Resource,
    *,
    kind: Kind,
    by: str,
    at: datetime,
    effective_on: date,
    reason: str,
    found: Sequence[Difference],
) -> CatalogueRevision:
    previous = latest(s, resource.qualified_name)
    entry = snapshot(resource)
    revision = CatalogueRevision(
        resource=resource.qualified_name,
        revision=(previous.revision if previous else 0) + 1,
        kind=kind,
        resource_version=resource.version,
        provider=resource.provider,
        recorded_at=at,
        recorded_by=by,
        effective_on=effective_on,
        reason=reason,
        changes=json.dumps(
            [{"field": d.field, "detail": d.detail} for d in found], ensure_ascii=False
        ),
        entry=json.dumps(entry, sort_keys=True, ensure_ascii=False),
        fingerprint=fingerprint(entry),
    )
    s.add(revision)
    s.flush()
    audit.record(
        s,
        at=at,
        actor=by,
        action=f"catalog.{kind}",
        resource=resource.qualified_name,
        version=resource.version,
        detail={
            "revision": revision.revision,
            "reason": reason,
            "effective_on": effective_on.isoformat(),
            "changes": [d.detail for d in found],
        },
    )
    return revision


def _register(s: Session, resource: Resource, *, at: datetime) -> CatalogueRevision:
    """Revision 1 of an entry the register meets for the first time."""
    return _add(s, resource, kind="registration", by=PLATFORM, at=at,
                effective_on=resource.reviewed_on or china_date(at),
                reason="entered in the catalogue", found=[])  # fmt: skip


def sync(s: Session, catalog: Catalog, *, at: datetime) -> list[CatalogueRevision]:
    """Register every entry the register has not met yet as its revision 1."""
    return [
        _register(s, resource, at=at)
        for resource in catalog
        if latest(s, resource.qualified_name) is None
    ]


def sync_register(settings: Settings, catalog: Catalog, *, at: datetime) -> None:
    """The register's tables made and every entry it has not met yet registered: the step
    its readers (the steward's quality report) run first, so that reading writes nothing."""
    ensure_tables(settings)
    with session(settings) as s:
        sync(s, catalog, at=at)


def pending_edit(s: Session, resource: Resource) -> list[Difference] | None:
    """The differences between the entry and its last revision; None when never recorded."""
    previous = latest(s, resource.qualified_name)
    if previous is None:
        return None
    return differences(json.loads(previous.entry), snapshot(resource))


def record_change(
    s: Session,
    catalog: Catalog,
    name: str,
    *,
    reason: str,
    effective_on: date,
    by: str,
    at: datetime,
) -> CatalogueRevision:
    """Record the entry `name` as it now is: a new revision with what changed, why and from
    when. Refused when nothing changed or when the change breaks the tables without a new
    resource version."""
    resource = catalog.get(name)
    if not reason.strip():
        raise ChangeError(f"{name}: a catalogue change needs its reason (51号 art. 8)")
    if not by.strip():
        raise ChangeError(f"{name}: say who records the change")
    previous = latest(s, name)
    found: list[Difference] = []
    if previous is not None:
        old = json.loads(previous.entry)
        refuse_breaking(resource, old, where=f"revision {previous.revision + 1}")
        found = differences(old, snapshot(resource))
        if not found:
            raise ChangeError(
                f"{name}: the entry is the same as revision {previous.revision} "
                f"({previous.recorded_at:%Y-%m-%d}); record a review instead "
                f"(`govlake catalog review {name}`)"
            )
    return _add(
        s,
        resource,
        kind="registration" if previous is None else "change",
        by=by,
        at=at,
        effective_on=effective_on,
        reason=reason.strip(),
        found=found,
    )


def record_review(
    s: Session, catalog: Catalog, name: str, *, by: str, note: str, at: datetime
) -> CatalogueRevision:
    """Record that the entry was reviewed and is current (宝鸡 art. 10)."""
    resource = catalog.get(name)
    if not by.strip():
        raise ChangeError(f"{name}: say who reviewed the entry")
    edit = pending_edit(s, resource)
    if edit:
        raise ChangeError(
            f"{name}: the entry differs from its last revision "
            f"({'; '.join(d.detail for d in edit)}); record the change with its reason first "
            f"(`govlake catalog change {name} --reason … --effective …`)"
        )
    return _add(
        s,
        resource,
        kind="review",
        by=by,
        at=at,
        effective_on=china_date(at),
        reason=note.strip() or "reviewed: current",
        found=[],
    )


def register_duty_change(
    s: Session,
    catalog: Catalog,
    settings: Settings,
    *,
    provider: str,
    basis: str,
    reason: str,
    effective_on: date,
    by: str,
    at: datetime,
) -> DutyChange:
    """Register a change in law or in `provider`'s duties: each entry it is responsible for is
    due for update within 15 working days. Its steward is told by mail (a failing mail server
    is recorded on the notification; the registration stands)."""
    department = catalog.department(provider)
    entries = [r.qualified_name for r in catalog if r.provider == provider]
    if not entries:
        raise ChangeError(f"{provider} is responsible for no catalogue entry")
    if not basis.strip() or not reason.strip():
        raise ChangeError(f"{provider}: a duty change names its legal basis and its reason")
    start = max(effective_on, china_date(at))
    due = add_working_days(
        start, UPDATE_WORKING_DAYS, holidays_file=default_holidays_file(settings.catalog_dir)
    )
    change = DutyChange(
        provider=provider,
        basis=basis.strip(),
        reason=reason.strip(),
        effective_on=effective_on,
        registered_at=at,
        registered_by=by,
        due_on=due.due_on,
        due_basis=due.basis[:200],
        resources=json.dumps(entries),
    )
    s.add(change)
    s.flush()
    notice = _notify_steward(s, settings, department, change, entries)
    audit.record(
        s,
        at=at,
        actor=by,
        action="catalog.duty_change",
        detail={
            "duty_change": change.id,
            "provider": provider,
            "basis": change.basis,
            "effective_on": effective_on.isoformat(),
            "due_on": change.due_on.isoformat(),
            "resources": entries,
            "notified": notice.recipient,
            "mailed": notice.sent,
        },
    )
    return change


def _duty_change_body(department: Department, change: DutyChange, entries: list[str]) -> str:
    return "\n".join(
        [
            f"Dear {department.steward.name},",
            "",
            f"A change in law or duties was registered for {department.name} ({change.provider}):",
            f"  basis:     {change.basis}",
            f"  reason:    {change.reason}",
            f"  effective: {change.effective_on}",
            "",
            f"Update these catalogue entries within {UPDATE_WORKING_DAYS} working days, by "
            f"{change.due_on} (51号 art. 8), or record a review if they need no change:",
            *(f"  - {name}" for name in entries),
            "",
            "  govlake catalog change RESOURCE --reason … --effective YYYY-MM-DD",
            "  govlake catalog review RESOURCE --by NAME",
        ]
    )


def _notify_steward(
    s: Session, settings: Settings, department: Department, change: DutyChange, entries: list[str]
) -> Notification:
    """The notification of a duty change to the department's steward, mailed; a mail that
    fails is recorded on it."""
    subject = f"[govlake] catalogue entries of {change.provider} due for update by {change.due_on}"
    body = _duty_change_body(department, change, entries)
    notice = Notification(
        created_at=change.registered_at,
        kind="catalog.duty_change",
        recipient=department.steward.email,
        subject=subject,
        body=body,
        sent=False,
    )
    s.add(notice)
    s.flush()
    try:
        send_mail(settings, to=notice.recipient, subject=subject, text=body)
    except MailError as exc:
        log.warning("duty change notice %s not mailed: %s", notice.id, exc)
        notice.error = str(exc)
    else:
        notice.sent = True
    return notice


def duty_changes(s: Session, provider: str | None = None) -> list[DutyChange]:
    query = select(DutyChange).order_by(DutyChange.registered_at, DutyChange.id)
    if provider is not None:
        query = query.where(DutyChange.provider == provider)
    return list(s.scalars(query))


# -- upkeep: where each entry stands -----------------------------------------------------------
@dataclass(frozen=True)
class Upkeep:
    """One duty of keeping an entry current, and where it stands on `today` (China date)."""

    resource: str
    provider: str
    duty: Literal["review", "update", "record"]
    due_on: date | None
    state: State
    detail: str
    today: date

    @property
    def days_late(self) -> int:
        if self.due_on is None or self.today <= self.due_on:
            return 0
        return (self.today - self.due_on).days


def next_review(last: date | None) -> date | None:
    return None if last is None else last + relativedelta(months=REVIEW_MONTHS)


def upkeep(s: Session, catalog: Catalog, *, at: datetime) -> list[Upkeep]:
    """Every entry's quarterly review, its pending updates after duty changes, and any edit
    not recorded in the register, as of `at`."""
    today = china_date(at)
    found: list[Upkeep] = []
    history: dict[str, list[CatalogueRevision]] = {}
    for revision in revisions(s):
        history.setdefault(revision.resource, []).append(revision)
    changes = duty_changes(s)
    for resource in catalog:
        name, provider = resource.qualified_name, resource.provider
        recorded = history.get(name, [])
        looked_at = [china_date(r.recorded_at) for r in recorded if r.kind != "registration"]
        last_review = max(
            [d for d in [resource.reviewed_on, *looked_at] if d is not None], default=None
        )
        due = next_review(last_review)
        if due is None:
            found.append(Upkeep(name, provider, "review", None, "overdue", "never reviewed", today))
        else:
            state: State = (
                "overdue"
                if today > due
                else "due"
                if today >= due - timedelta(days=REVIEW_NOTICE_DAYS)
                else "on_time"
            )
            found.append(
                Upkeep(name, provider, "review", due, state, f"last reviewed {last_review}", today)
            )
        for change in changes:
            if change.provider != provider:
                continue
            answered = [
                r
                for r in recorded
                if r.kind != "registration" and r.recorded_at >= change.registered_at
            ]
            if answered:
                continue
            state = "overdue" if today > change.due_on else "due"
            found.append(
                Upkeep(
                    name,
                    provider,
                    "update",
                    change.due_on,
                    state,
                    f"duty change {change.id} ({change.basis}, effective {change.effective_on})",
                    today,
                )
            )
        if recorded:
            edit = differences(json.loads(recorded[-1].entry), snapshot(resource))
            if edit:
                found.append(
                    Upkeep(
                        name,
                        provider,
                        "record",
                        None,
                        "overdue",
                        "entry edited without a change record: "
                        + "; ".join(d.detail for d in edit),
                        today,
                    )
                )
    return found


def check_entry(settings: Settings, resource: Resource, *, at: datetime) -> None:
    """Before a pipeline writes `resource`'s tables: register the entry if it is new, and
    refuse a breaking edit that was not published as a new resource version."""
    ensure_tables(settings)
    with session(settings) as s:
        previous = latest(s, resource.qualified_name)
        if previous is None:
            _register(s, resource, at=at)
            return
        refuse_breaking(
            resource,
            json.loads(previous.entry),
            where=str(settings.catalog_dir / resource.theme / f"{resource.name}.yaml"),
        )
