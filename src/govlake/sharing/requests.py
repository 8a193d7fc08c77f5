"""Access requests (共享申请) and verification requests (快速校核): what a using department
asks of a provider, the provider's answer within its deadline, escalation of what is
overdue, and the link from a corrected value to the published version that carries it.

- An access request asks for conditional items of one resource, with the fields of the
  application form (中科院 annex 1); the resource's responsible provider answers within
  10 working days (51号 art. 12) and gives its reasons when it refuses. An approval is a
  grant of the resource's conditional table for the stated usage scope.
- A pending request past its due date is escalated once: its provider's steward and the
  competent authority are notified (and mailed; a mail failure is recorded, never lost).
- A verification request doubts one value of one record; the item's authority (one data,
  one source) confirms or corrects it. A correction arrives through the provider's next
  extract, and `link_fixes` finds the first published version that carries it.

Every state change is appended to the audit journal in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Unpack, get_args

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from govlake.core.catalog import Catalog, CatalogError, Item, Resource
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings
from govlake.lake.reads import delta_schema, scan_delta
from govlake.lake.tables import TableSet
from govlake.platform import audit
from govlake.platform.database import (
    USAGE_SCOPES,
    AccessRequest,
    Consumer,
    Grant,
    Notification,
    VerificationRequest,
    overlong,
)
from govlake.platform.mail import MailError, send_mail
from govlake.platform.workdays import (
    Due,
    add_working_days,
    china_date,
    default_holidays_file,
    working_days_between,
)
from govlake.sharing import access
from govlake.sharing.access import AccessError, SharingError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: 51号 art. 12: the provider answers an access request within 10 working days.
ACCESS_DUE_WORKING_DAYS = 10
#: The rules set no deadline for a verification (51号 art. 15 says "promptly"); the platform
#: asks the authority to confirm or correct within 5 working days.
VERIFICATION_DUE_WORKING_DAYS = 5
#: The competent authority (主管部门) that runs the platform and arbitrates: the second
#: recipient of every escalation. Meant to become a setting.
AUTHORITY_EMAIL = "authority@platform.gov.example"
#: The audit actor for what the platform does by itself (escalation, linking fixes).
PLATFORM = "platform"

Outcome = Literal["confirmed", "corrected"]
VERIFICATION_OUTCOMES: tuple[str, ...] = get_args(Outcome)


_Request = TypeVar("_Request", AccessRequest, VerificationRequest)
_KINDS: dict[type[AccessRequest | VerificationRequest], str] = {
    AccessRequest: "access request",
    VerificationRequest: "verification request",
}


class RequestNotFound(AccessError):
    """No such request, or none the caller may see."""


# -- shared checks --------------------------------------------------------------------------
def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _require(fields: Mapping[str, str | None], what: str) -> None:
    missing = [name for name, value in fields.items() if _blank(value)]
    if missing:
        raise SharingError(f"{what} needs {', '.join(missing)} (blank or missing)")


def _fits(model: type[AccessRequest | VerificationRequest], what: str, **values: str) -> None:
    """Refuse text longer than its column, on SQLite as on PostgreSQL."""
    if too_long := overlong(model, {name: value.strip() for name, value in values.items()}):
        raise SharingError(f"{what}: {'; '.join(too_long)}")


def _active_consumer(s: Session, code: str) -> Consumer:
    found = access.consumer(s, code)
    if not found.active:
        raise SharingError(f"consumer {code} is not active")
    return found


def _legal_basis(resource: Resource, item: Item) -> str:
    return item.legal_basis or resource.legal_basis or "no legal basis recorded"


def overdue(due_on: date, at: datetime) -> bool:
    """Past its due date at `at`: answering on the due date itself is on time."""
    return china_date(at) > due_on


def _due(settings: Settings, at: datetime, working_days: int) -> Due:
    """The due date `working_days` after the filing date (China), on the official calendar."""
    return add_working_days(
        china_date(at), working_days, holidays_file=default_holidays_file(settings.catalog_dir)
    )


def _file(
    s: Session, request: AccessRequest | VerificationRequest, due: Due, *, at: datetime
) -> None:
    """Add a new request to the session, filed at `at` and due as `due` says; it gets its id."""
    request.filed_at, request.due_on, request.due_basis = at, due.due_on, due.basis[:200]
    s.add(request)
    s.flush()


def _journal(
    s: Session,
    request: AccessRequest | VerificationRequest,
    action: str,
    *,
    actor: str,
    at: datetime,
    detail: Mapping[str, object],
    **fields: Any,
) -> None:
    """Journal `action` on `request`: its consumer and resource (and an access request's
    usage scope as the purpose), with the request's id in `detail`."""
    purpose = request.usage_scope if isinstance(request, AccessRequest) else None
    detail = {"request": request.id, **detail}
    audit.record_about(
        s, request, at=at, actor=actor, action=action, purpose=purpose, detail=detail, **fields
    )


def _addressed(
    s: Session, model: type[_Request], request_id: int, provider: str, *, role: str, verb: str
) -> _Request:
    """The request, locked until the caller's answer commits (PostgreSQL; SQLite has one
    writer at a time) so that two answers cannot both find it open. Only the party it is
    addressed to (its `role`: provider, authority) `verb`s it (decides, answers)."""
    what = _KINDS[model]
    request = s.get(model, request_id, with_for_update=True)
    if request is None:
        raise RequestNotFound(f"no {what} {request_id}")
    if provider != request.provider:
        raise AccessError(
            f"only the {role} {request.provider} {verb} {what} {request_id}; {provider} may not"
        )
    return request


class Filters(TypedDict, total=False):
    """The filters of a listing of requests: `party` (as consumer or as provider), or by role
    (`consumer`, `provider`), and `status`; None or left out: any."""

    party: str | None
    consumer: str | None
    provider: str | None
    status: str | None


def _listed(
    s: Session,
    model: type[_Request],
    *,
    party: str | None = None,
    consumer: str | None = None,
    provider: str | None = None,
    status: str | None = None,
) -> list[_Request]:
    """Requests, oldest first: of `party` as consumer or as provider, or filtered by role."""
    query = select(model).order_by(model.filed_at, model.id)
    if party is not None:
        query = query.where(or_(model.consumer == party, model.provider == party))
    query = access.where_given(query, model, consumer=consumer, provider=provider, status=status)
    return list(s.scalars(query))


# -- access requests ------------------------------------------------------------------------
def _conditional_items(resource: Resource, items: Sequence[str]) -> list[str]:
    """The requested items, each checked to be one a request can give."""
    name = resource.qualified_name
    wanted = list(dict.fromkeys(i.strip() for i in items if i.strip()))
    conditional = [i.name for i in resource.items if resource.sharing_of(i) == "conditional"]
    if not wanted:
        raise SharingError(
            f"name at least one item of {name} to request; its conditional items: "
            f"{', '.join(conditional) or 'none'}"
        )
    problems = []
    for item_name in wanted:
        if item_name not in resource.item_map:
            problems.append(
                f"{item_name} is not an item of {name} (its items: {', '.join(resource.item_map)})"
            )
            continue
        item = resource.item(item_name)
        sharing = resource.sharing_of(item)
        if sharing == "unconditional":
            problems.append(
                f"{item_name} is shared unconditionally and needs no request: every "
                f"department reads it in {name}_unconditional"
            )
        elif sharing == "not_shared":
            problems.append(
                f"{item_name} is not shared ({_legal_basis(resource, item)}): it cannot be "
                "requested; a department with a real need negotiates with the provider, "
                "then the competent authority arbitrates (51号 art. 12)"
            )
    if problems:
        raise SharingError("; ".join(problems))
    return wanted


def file_access_request(
    s: Session,
    catalog: Catalog,
    settings: Settings,
    *,
    consumer: str,
    resource: str,
    items: Sequence[str],
    applicant_name: str,
    applicant_phone: str,
    applicant_email: str,
    using_department: str,
    using_contact: str,
    service_scenario: str,
    usage_scope: str,
    usage_scope_other: str | None = None,
    business_system: str,
    justification: str,
    at: datetime,
) -> AccessRequest:
    """File a request for conditional items of `resource` on behalf of `consumer`; it is due
    10 working days after the filing date (China), on the official calendar."""
    who = _active_consumer(s, consumer)
    entry = access.resource(catalog, resource)
    if who.code == entry.provider:
        raise SharingError(
            f"{who.code} is the responsible provider of {entry.qualified_name} and reads its "
            "conditional table already"
        )
    chosen = _conditional_items(entry, items)
    _check_usage_scope(usage_scope, usage_scope_other)
    form = {
        "applicant_name": applicant_name,
        "applicant_phone": applicant_phone,
        "applicant_email": applicant_email,
        "using_department": using_department,
        "using_contact": using_contact,
        "service_scenario": service_scenario,
        "business_system": business_system,
        "justification": justification,
    }
    _check_form(form)
    _none_pending(s, who.code, entry)
    due = _due(settings, at, ACCESS_DUE_WORKING_DAYS)
    request = AccessRequest(
        resource=entry.qualified_name,
        provider=entry.provider,
        items=json.dumps(chosen),
        consumer=who.code,
        **{name: value.strip() for name, value in form.items()},
        usage_scope=usage_scope,
        usage_scope_other=usage_scope_other.strip() if usage_scope_other else None,
        status="pending",
    )
    _file(s, request, due, at=at)
    _journal_filing(s, request, chosen, due, at=at)
    return request


def _check_usage_scope(usage_scope: str, usage_scope_other: str | None) -> None:
    if usage_scope not in USAGE_SCOPES:
        raise SharingError(
            f"usage scope {usage_scope!r} is not one of {', '.join(USAGE_SCOPES)} (使用范围)"
        )
    if usage_scope == "other" and _blank(usage_scope_other):
        raise SharingError("usage scope 'other' needs usage_scope_other saying what the use is")
    if usage_scope != "other" and not _blank(usage_scope_other):
        raise SharingError("usage_scope_other is only for usage scope 'other'")


def _check_form(form: Mapping[str, str]) -> None:
    """The application form's text: each field given, none longer than its column, and a
    mail address that looks like one."""
    _require(form, "an access request")
    _fits(AccessRequest, "an access request", **form)
    if "@" not in form["applicant_email"]:
        raise SharingError(f"applicant_email {form['applicant_email']!r} is not a mail address")


def _none_pending(s: Session, consumer: str, entry: Resource) -> None:
    """Refuse a second request of `consumer` for `entry` while one is pending."""
    pending = s.scalar(
        select(AccessRequest).where(
            AccessRequest.consumer == consumer,
            AccessRequest.resource == entry.qualified_name,
            AccessRequest.status == "pending",
        )
    )
    if pending is not None:
        raise SharingError(
            f"{consumer} already has request {pending.id} for {entry.qualified_name} pending "
            f"(due {pending.due_on})"
        )


def _journal_filing(
    s: Session, request: AccessRequest, chosen: list[str], due: Due, *, at: datetime
) -> None:
    detail = {
        "items": chosen,
        "provider": request.provider,
        "due_on": due.due_on.isoformat(),
        "due_basis": due.basis,
    }
    _journal(s, request, "request.file", actor=request.consumer, at=at, detail=detail)


def request_items(request: AccessRequest) -> list[str]:
    items: list[str] = json.loads(request.items)
    return items


def _decidable(s: Session, request_id: int, provider: str, by: str) -> AccessRequest:
    request = _addressed(s, AccessRequest, request_id, provider, role="provider", verb="decides")
    if request.status != "pending":
        when = f" on {request.decided_at:%Y-%m-%d}" if request.decided_at else ""
        raise SharingError(
            f"access request {request_id} was already {request.status}{when} "
            f"by {request.decided_by}"
        )
    _require({"by": by}, "a decision")
    _fits(AccessRequest, "a decision", decided_by=by)
    return request


def approve(
    s: Session,
    catalog: Catalog,
    request_id: int,
    *,
    provider: str,
    by: str,
    at: datetime,
    expires_at: datetime | None = None,
) -> Grant:
    """The provider approves: the consumer gets the resource's conditional table for the
    stated usage scope (until `expires_at`, if given). Only the request's provider decides,
    and only once."""
    request = _decidable(s, request_id, provider, by)
    made = access.grant(
        s,
        catalog,
        request.consumer,
        request.resource,
        purpose=request.usage_scope,
        by=provider,
        at=at,
        expires_at=expires_at,
        request_id=request.id,
    )
    request.status = "approved"
    request.decided_at, request.decided_by = at, by.strip()
    request.expires_at = expires_at
    on_time = not overdue(request.due_on, at)
    detail = {"by": by, "grant": made.id, "on_time": on_time}
    _journal(s, request, "request.approve", actor=provider, at=at, detail=detail)
    audit.record_about(
        s,
        made,
        at=at,
        actor=provider,
        action="grant.create",
        purpose=made.purpose,
        detail={
            "grant": made.id,
            "request": request.id,
            "sharing_class": made.sharing_class,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return made


def refuse(
    s: Session, request_id: int, *, provider: str, by: str, reason: str, at: datetime
) -> AccessRequest:
    """The provider refuses, giving its reasons (51号 art. 12: 对不予共享的，提供部门应说明理由)."""
    request = _decidable(s, request_id, provider, by)
    if _blank(reason):
        raise SharingError("a refusal must give its reasons (51号 art. 12)")
    request.status = "refused"
    request.decided_at, request.decided_by = at, by.strip()
    request.reason = reason.strip()
    on_time = not overdue(request.due_on, at)
    detail = {"by": by, "reason": request.reason, "on_time": on_time}
    _journal(s, request, "request.refuse", actor=provider, at=at, detail=detail)
    return request


def access_requests(s: Session, **filters: Unpack[Filters]) -> list[AccessRequest]:
    """Requests, oldest first: of `party` as consumer or as provider, or filtered by role."""
    return _listed(s, AccessRequest, **filters)


def overdue_requests(s: Session, at: datetime) -> list[AccessRequest]:
    """Pending requests past their due date at `at` (escalated or not), most overdue first."""
    return list(
        s.scalars(
            select(AccessRequest)
            .where(AccessRequest.status == "pending", AccessRequest.due_on < china_date(at))
            .order_by(AccessRequest.due_on, AccessRequest.id)
        )
    )


@dataclass(frozen=True)
class Awaiting:
    """A request waiting for a provider's answer, as the steward report lists it."""

    kind: str  # "access request" | "verification request"
    id: int
    resource: str
    consumer: str
    filed_at: datetime
    due_on: date
    overdue: bool
    escalated: bool


def awaiting_answer(s: Session, provider: str, *, at: datetime) -> list[Awaiting]:
    """Access requests addressed to `provider` and verification requests on items it is the
    authority for that still wait for its answer, overdue ones first."""
    found = [
        Awaiting(
            "access request",
            r.id,
            r.resource,
            r.consumer,
            r.filed_at,
            r.due_on,
            overdue(r.due_on, at),
            r.escalated_at is not None,
        )
        for r in s.scalars(
            select(AccessRequest).where(
                AccessRequest.provider == provider, AccessRequest.status == "pending"
            )
        )
    ]
    found += [
        Awaiting(
            "verification request",
            v.id,
            v.resource,
            v.consumer,
            v.filed_at,
            v.due_on,
            overdue(v.due_on, at),
            False,
        )
        for v in s.scalars(
            select(VerificationRequest).where(
                VerificationRequest.provider == provider, VerificationRequest.status == "open"
            )
        )
    ]
    return sorted(found, key=lambda a: (not a.overdue, a.due_on, a.kind, a.id))


@dataclass(frozen=True)
class _Message:
    subject: str
    body: str


def _escalation(
    request: AccessRequest, catalog: Catalog, settings: Settings, at: datetime
) -> _Message:
    late = working_days_between(
        request.due_on,
        china_date(at),
        holidays_file=default_holidays_file(settings.catalog_dir),
    )
    department = catalog.department(request.provider)
    subject = (
        f"Overdue access request {request.id}: {request.consumer} asked {request.provider} "
        f"for {request.resource}, due {request.due_on}"
    )
    body = "\n".join(
        [
            f"Access request {request.id} is unanswered {late} working day(s) after its due "
            f"date {request.due_on} (10 working days, 51号 art. 12; {request.due_basis}).",
            "",
            f"Provider:        {department.name} ({request.provider}), steward "
            f"{department.steward.name} <{department.steward.email}>",
            f"Using department: {request.using_department} ({request.consumer})",
            f"Resource:        {request.resource}",
            f"Items:           {', '.join(request_items(request))}",
            f"Usage scope:     {request.usage_scope}"
            + (f" ({request.usage_scope_other})" if request.usage_scope_other else ""),
            f"Filed at:        {request.filed_at:%Y-%m-%d %H:%M} UTC by {request.applicant_name} "
            f"<{request.applicant_email}>, {request.applicant_phone}",
            f"Justification:   {request.justification}",
            "",
            "Please approve or refuse it with reasons: "
            f"govlake share request approve|refuse {request.id} --provider {request.provider}",
            "The competent authority receives a copy of this notice.",
        ]
    )
    return _Message(subject, body)


@dataclass(frozen=True)
class Escalation:
    """An escalated request and the notifications it sent (or could not send)."""

    request: AccessRequest
    notifications: list[Notification]


def escalate(s: Session, catalog: Catalog, settings: Settings, *, at: datetime) -> list[Escalation]:
    """Escalate every pending request past its due date that was not escalated yet: notify
    the provider's steward and the competent authority, and try to mail both. A mail that
    cannot be sent is recorded on its notification; the escalation stands."""
    due = [request for request in overdue_requests(s, at) if request.escalated_at is None]
    made = []
    for request in due:
        request.escalated_at = at
        message = _escalation(request, catalog, settings, at)
        steward = catalog.department(request.provider).steward.email
        notices = [
            Notification(
                created_at=at,
                kind="request.escalate",
                recipient=recipient,
                subject=message.subject,
                body=message.body,
                sent=False,
            )
            for recipient in dict.fromkeys([steward, AUTHORITY_EMAIL])
        ]
        s.add_all(notices)
        made.append(Escalation(request, notices))
    s.flush()
    # Mail after the escalations are in the transaction, so a failing server loses nothing.
    for escalation in made:
        for notice in escalation.notifications:
            try:
                send_mail(settings, to=notice.recipient, subject=notice.subject, text=notice.body)
            except MailError as exc:
                log.warning("escalation notice %s not mailed: %s", notice.id, exc)
                notice.error = str(exc)
            else:
                notice.sent = True
    for escalation in made:
        request, notices = escalation.request, escalation.notifications
        detail = {
            "provider": request.provider,
            "due_on": request.due_on.isoformat(),
            "notified": [n.recipient for n in notices],
            "mailed": [n.recipient for n in notices if n.sent],
            "notifications": [n.id for n in notices],
        }
        _journal(s, request, "request.escalate", actor=PLATFORM, at=at, detail=detail)
    return made


def escalate_overdue(
    s: Session, catalog: Catalog, settings: Settings, *, at: datetime
) -> list[AccessRequest]:
    """The requests `escalate` escalated (see there)."""
    return [escalation.request for escalation in escalate(s, catalog, settings, at=at)]


# -- verification requests ------------------------------------------------------------------
def key_text(resource: Resource, key: str | Mapping[str, str]) -> str:
    """The stored form of a record's key: the value itself for a one-item key, else a JSON
    object in key order (`{"credit_code": …, "decision_number": …}`)."""
    names = resource.key
    if isinstance(key, str):
        if len(names) != 1:
            raise SharingError(
                f"{resource.qualified_name} is keyed by {', '.join(names)}: give each of them"
            )
        values = {names[0]: key}
    else:
        values = dict(key)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise SharingError(
            f"{', '.join(unknown)} not in the key of {resource.qualified_name} ({', '.join(names)})"
        )
    missing = [name for name in names if _blank(values.get(name))]
    if missing:
        raise SharingError(f"the record's key needs {', '.join(missing)}")
    if len(names) == 1:
        return values[names[0]].strip()
    return json.dumps({name: values[name].strip() for name in names}, ensure_ascii=False)


def key_values(resource: Resource, text: str) -> dict[str, str]:
    """The key items and values of a stored key (the inverse of `key_text`)."""
    if len(resource.key) == 1:
        return {resource.key[0]: text}
    values: dict[str, str] = json.loads(text)
    return values


def _check_value(resource: Resource, item: Item, text: str) -> None:
    """Refuse a corrected value the item can never hold (it would never be published)."""
    where = f"{resource.qualified_name}.{item.name}"
    if item.values is not None and text not in item.values:
        raise SharingError(
            f"{text!r} is not an allowed value of {where} ({', '.join(item.values)})"
        )
    kind = item.type
    try:
        if kind == "date":
            date.fromisoformat(text)
        elif kind == "timestamp":
            datetime.fromisoformat(text)
        elif kind in ("integer", "bigint"):
            int(text)
        elif kind == "double" or kind.startswith("decimal"):
            Decimal(text)
        elif kind == "boolean" and text.lower() not in ("true", "false"):
            raise ValueError(text)
    except (ValueError, InvalidOperation) as exc:
        raise SharingError(f"{text!r} is not a {kind} value for {where}") from exc


def file_verification(
    s: Session,
    catalog: Catalog,
    settings: Settings,
    *,
    consumer: str,
    resource: str,
    key: str | Mapping[str, str],
    item: str,
    doubted_value: str | None,
    evidence: str,
    at: datetime,
) -> VerificationRequest:
    """Flag a doubted value of one record to the item's authority (一数一源), due 5 working
    days after the filing date. `doubted_value` None means the value is missing."""
    who = _active_consumer(s, consumer)
    entry = access.resource(catalog, resource)
    if item not in entry.item_map:
        raise SharingError(
            f"{item} is not an item of {entry.qualified_name} (its items: "
            f"{', '.join(entry.item_map)})"
        )
    if item in entry.key:
        raise SharingError(
            f"{item} is the key that identifies the record: name the item whose value you doubt"
        )
    declared = entry.item(item)
    if entry.sharing_of(declared) == "not_shared":
        raise SharingError(f"{entry.qualified_name}.{item} is not shared, so never published")
    if declared.authority == who.code:
        raise SharingError(
            f"{who.code} is the authority for {entry.qualified_name}.{item}: correct it at the "
            "source, its next extract publishes the fix"
        )
    stored_key = key_text(entry, key)
    _require({"evidence": evidence}, "a verification request")
    _fits(VerificationRequest, "a verification request", key=stored_key)
    due = _due(settings, at, VERIFICATION_DUE_WORKING_DAYS)
    request = VerificationRequest(
        consumer=who.code,
        resource=entry.qualified_name,
        provider=declared.authority,
        key=stored_key,
        item=item,
        doubted_value=doubted_value,
        evidence=evidence.strip(),
        status="open",
    )
    _file(s, request, due, at=at)
    detail = {
        "key": stored_key,
        "item": item,
        "provider": declared.authority,
        "due_on": due.due_on.isoformat(),
    }
    _journal(s, request, "verification.file", actor=who.code, at=at, detail=detail)
    return request


def answer_verification(
    s: Session,
    catalog: Catalog,
    request_id: int,
    *,
    provider: str,
    by: str,
    at: datetime,
    outcome: str,
    answer: str,
    corrected_value: str | None = None,
) -> VerificationRequest:
    """The item's authority confirms the value or corrects it (with the right value)."""
    request = _addressed(
        s, VerificationRequest, request_id, provider, role="authority", verb="answers"
    )
    if request.status != "open":
        raise SharingError(
            f"verification request {request_id} was already answered ({request.status}) on "
            f"{request.answered_at:%Y-%m-%d} by {request.answered_by}"
        )
    if outcome not in VERIFICATION_OUTCOMES:
        raise SharingError(f"outcome {outcome!r} is not one of {', '.join(VERIFICATION_OUTCOMES)}")
    _require({"answer": answer, "by": by}, "an answer")
    _fits(VerificationRequest, "an answer", answered_by=by)
    if outcome == "corrected":
        if corrected_value is None or _blank(corrected_value):
            raise SharingError("a correction needs the corrected value")
        corrected_value = corrected_value.strip()
        entry = access.resource(catalog, request.resource)
        _check_value(entry, entry.item(request.item), corrected_value)
    elif corrected_value is not None:
        raise SharingError("a confirmed value has no corrected value")
    request.status = outcome
    request.answered_at, request.answered_by = at, by.strip()
    request.answer = answer.strip()
    request.corrected_value = corrected_value
    detail = {
        "by": by,
        "outcome": outcome,
        "key": request.key,
        "item": request.item,
        "corrected_value": corrected_value,
        "on_time": not overdue(request.due_on, at),
    }
    _journal(s, request, "verification.answer", actor=provider, at=at, detail=detail)
    return request


def verification_requests(s: Session, **filters: Unpack[Filters]) -> list[VerificationRequest]:
    """Verification requests, oldest first, filtered like `access_requests`."""
    return _listed(s, VerificationRequest, **filters)


# -- linking corrections to published versions ----------------------------------------------
def _same(value: object, text: str) -> bool:
    """Whether a published value is the corrected value given as text."""
    if value is None:
        return False
    text = text.strip()
    if isinstance(value, datetime):
        try:
            wanted = datetime.fromisoformat(text)
        except ValueError:
            return False
        return naive_utc(value) == naive_utc(wanted)
    if isinstance(value, date):
        return value.isoformat() == text
    if isinstance(value, bool):
        return str(value).lower() == text.lower()
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(str(value)) == Decimal(text)
        except InvalidOperation:
            return False
    return str(value).strip() == text


def _carries(table: DeltaTable, keys: Mapping[str, str], item: str, expected: str) -> bool:
    """Whether this version of a published table has the record with `expected` as `item`."""
    schema = delta_schema(table)
    if item not in schema.names or any(name not in schema.names for name in keys):
        return False
    condition = None
    for name, value in keys.items():
        try:
            scalar = pa.scalar(value).cast(schema.field(name).type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False  # a key value the column cannot hold matches no row
        term = pc.field(name) == scalar
        condition = term if condition is None else condition & term
    # Read through delta-rs's engine, not a pyarrow dataset scan: that scan can make the
    # process (an Airflow task) abort at exit. Batches come typed as in the table's schema,
    # so the key values compare as the column's type, as before.
    for batch in scan_delta(table, list(dict.fromkeys([*keys, item]))):
        found = batch.filter(condition).column(item).to_pylist()
        if any(_same(value, expected) for value in found):
            return True
    return False


@dataclass(frozen=True)
class Fix:
    table: str  # qualified name of the published table
    version: int
    published_at: datetime  # the version's commit time, naive UTC


def find_fix(resource: Resource, settings: Settings, request: VerificationRequest) -> Fix | None:
    """The first published version committed after the request was filed whose record for
    the key carries the corrected value; tables in sharing-class order (unconditional
    first)."""
    if request.corrected_value is None:
        return None
    keys = key_values(resource, request.key)
    tables = TableSet(resource, settings.warehouse_location)
    for sharing_class in resource.sharing_classes:
        if request.item not in resource.class_items(sharing_class):
            continue
        table = tables.published(sharing_class)
        if not table.location.is_delta_table():
            continue
        options = table.location.storage_options()
        commits = sorted(
            DeltaTable(table.location.uri, storage_options=options).history(),
            key=lambda commit: int(commit["version"]),
        )
        for commit in commits:
            published_at = datetime.fromtimestamp(int(commit["timestamp"]) / 1000, UTC)
            published_at = published_at.replace(tzinfo=None)
            if published_at <= request.filed_at:
                continue
            version = int(commit["version"])
            try:
                snapshot = DeltaTable(table.location.uri, version=version, storage_options=options)
                carried = _carries(snapshot, keys, request.item, request.corrected_value)
            except (DeltaError, OSError, pa.ArrowException) as exc:
                # A version whose files were vacuumed can no longer be read: skip it.
                log.warning("%s version %s unreadable: %s", table.qualified_name, version, exc)
                continue
            if carried:
                return Fix(table.qualified_name, version, published_at)
    return None


def link_fixes(
    s: Session,
    spark: SparkSession | None,
    catalog: Catalog,
    settings: Settings,
    *,
    at: datetime,
) -> list[VerificationRequest]:
    """Link each corrected verification request to the published version that carries its
    corrected value, and mark it `fixed`. Requests whose fix has not been published yet stay
    `corrected` and are looked at again next time.

    The published tables are read with delta-rs, so `spark` may be None; it is accepted so
    that jobs call this like the other jobs.
    """
    linked = []
    for request in verification_requests(s, status="corrected"):
        try:
            resource = catalog.get(request.resource)
        except CatalogError as exc:
            log.warning("verification request %s: %s", request.id, exc)
            continue
        fix = find_fix(resource, settings, request)
        if fix is None:
            continue
        request.status = "fixed"
        request.fixed_table, request.fixed_version = fix.table, fix.version
        request.fixed_at = fix.published_at
        linked.append(request)
    for request in linked:
        _journal(
            s,
            request,
            "verification.fixed",
            actor=PLATFORM,
            at=at,
            table_name=request.fixed_table,
            version=request.fixed_version,
            detail={
                "key": request.key,
                "item": request.item,
                "corrected_value": request.corrected_value,
                "published_at": request.fixed_at.isoformat() if request.fixed_at else None,
            },
        )
    return linked
