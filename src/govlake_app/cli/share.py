"""`govlake share …`: consumers and their tokens, grants, access and verification requests,
suspensions. Each command is one transaction on the platform database and appends what it
changes to the audit journal; a broken rule prints in red and exits with code 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table as RichTable
from sqlalchemy import select
from sqlalchemy.orm import Session

from govlake.core.catalog import CatalogError
from govlake.core.settings import get_settings
from govlake.platform import audit
from govlake.platform.database import AccessRequest, Consumer, Grant, Suspension, Token, session
from govlake.platform.workdays import CalendarError
from govlake.sharing import access
from govlake.sharing import requests as domain
from govlake.sharing.access import AccessError, SharingError
from govlake_app.cli.console import (
    By,
    OnlyConsumer,
    at_moment,
    console,
    fail,
    now,
    user,
    work,
)
from govlake_app.cli.subscriptions import subscription_app

share_app = typer.Typer(
    help="Sharing: consumers, tokens, grants, access and verification requests, suspensions.",
    no_args_is_help=True,
)
consumer_app = typer.Typer(
    help="Using departments registered to read shared data.", no_args_is_help=True
)
token_app = typer.Typer(help="Bearer tokens of consumers (shown once).", no_args_is_help=True)
grant_app = typer.Typer(help="Grants of conditional tables.", no_args_is_help=True)
request_app = typer.Typer(
    help="Access requests (共享申请): answered within 10 working days.", no_args_is_help=True
)
verify_app = typer.Typer(help="Verification requests (快速校核).", no_args_is_help=True)
suspend_app = typer.Typer(
    help="Suspensions of a department's access (宝鸡 art. 29).", no_args_is_help=True
)
share_app.add_typer(consumer_app, name="consumer")
share_app.add_typer(token_app, name="token")
share_app.add_typer(grant_app, name="grant")
share_app.add_typer(subscription_app, name="subscription")
share_app.add_typer(request_app, name="request")
share_app.add_typer(verify_app, name="verify")
share_app.add_typer(suspend_app, name="suspend")


#: The errors of a broken rule: the transaction rolls back and the command exits 2.
REFUSED = (SharingError, AccessError, CalendarError, CatalogError)

OnlyProvider = Annotated[str | None, typer.Option(help="only those addressed to it")]
JudgedAt = Annotated[str | None, typer.Option(help="judge overdue at this UTC time (ISO)")]


def _journal(
    s: Session, at: datetime, action: str, consumer: str, detail: dict[str, object],
    *, purpose: str | None = None, resource: str | None = None,
) -> None:  # fmt: skip
    """A platform action on a consumer (a grant's: with its purpose and resource) in the audit
    journal."""
    audit.record(s, at=at, actor=domain.PLATFORM, action=action, consumer=consumer,
                 purpose=purpose, resource=resource, detail=detail)  # fmt: skip


# -- consumers ------------------------------------------------------------------------------
@consumer_app.command("add")
def consumer_add(
    code: Annotated[str, typer.Argument(help="department code from schemas/departments.yaml")],
    email: Annotated[
        str | None, typer.Option(help="contact mail; default the department's steward")
    ] = None,
    by: By = None,
) -> None:
    """Register a department as a consumer of shared data."""
    at = now()
    with work(*REFUSED) as (_, catalog, s):
        made = access.register_consumer(s, catalog, code, email=email, at=at)
        _journal(
            s, at, "consumer.register", code, {"by": by or user(), "email": made.contact_email}
        )
    console.print(
        f"registered {made.code} ({made.name}), contact {made.contact_email}", highlight=False
    )
    console.print(f"issue its token: govlake share token issue {made.code}", highlight=False)


@consumer_app.command("list")
def consumer_list() -> None:
    """Registered consumers, their live tokens and any suspension."""
    at = now()
    with work(*REFUSED) as (_, _catalog, s):
        table = RichTable(
            "consumer", "name", "contact", "registered", "active", "live tokens", "suspended"
        )
        for found in s.scalars(select(Consumer).order_by(Consumer.code)):
            live = [
                t
                for t in s.scalars(select(Token).where(Token.consumer == found.code))
                if t.expires_at > at and (t.revoked_at is None or t.revoked_at > at)
            ]
            suspension = access.active_suspension(s, found.code, at=at)
            table.add_row(
                found.code,
                found.name,
                found.contact_email,
                f"{found.registered_at:%Y-%m-%d}",
                "yes" if found.active else "[red]no[/red]",
                str(len(live)),
                f"[red]since {suspension.suspended_at:%Y-%m-%d}[/red]" if suspension else "",
            )
    console.print(table)


# -- tokens ---------------------------------------------------------------------------------
Days = Annotated[int, typer.Option(help="days the token is valid")]


@token_app.command("issue")
def token_issue(code: str, days: Days = access.DEFAULT_TOKEN_DAYS, by: By = None) -> None:
    """A new bearer token for a consumer: printed once, stored only as its hash."""
    at = now()
    with work(*REFUSED) as (_, _catalog, s):
        value = access.issue_token(s, code, at=at, days=days)
        _journal(s, at, "token.issue", code, {"by": by or user(), "days": days})
    _show_token(code, value, at + timedelta(days=days))


@token_app.command("rotate")
def token_rotate(
    code: str,
    days: Days = access.DEFAULT_TOKEN_DAYS,
    overlap_hours: Annotated[float, typer.Option(help="hours the old tokens keep working")] = 0.0,
    by: By = None,
) -> None:
    """Issue a new token and end the consumer's other tokens (after the overlap)."""
    at = now()
    if overlap_hours < 0:
        raise typer.BadParameter("--overlap-hours cannot be negative")
    with work(*REFUSED) as (_, _catalog, s):
        value = access.rotate_token(
            s, code, at=at, days=days, overlap=timedelta(hours=overlap_hours)
        )
        _journal(
            s,
            at,
            "token.rotate",
            code,
            {"by": by or user(), "days": days, "overlap_hours": overlap_hours},
        )
    _show_token(code, value, at + timedelta(days=days))


def _show_token(code: str, value: str, expires: datetime) -> None:
    console.print(
        f"bearer token of {code}, valid until {expires:%Y-%m-%d %H:%M} UTC "
        "(shown once, keep it safe):",
        highlight=False,
    )
    console.print(value, highlight=False, soft_wrap=True)


# -- grants ---------------------------------------------------------------------------------
@grant_app.command("list")
def grant_list(
    consumer: Annotated[str | None, typer.Option(help="only this consumer")] = None,
    all_: Annotated[bool, typer.Option("--all", help="revoked and expired ones too")] = False,
) -> None:
    """Grants of conditional tables; by default only those in force."""
    at = now()
    with work(*REFUSED) as (_, _catalog, s):
        query = select(Grant).order_by(Grant.granted_at, Grant.id)
        if consumer is not None:
            query = query.where(Grant.consumer == consumer)
        table = RichTable(
            "grant",
            "consumer",
            "resource",
            "class",
            "purpose",
            "granted",
            "by",
            "request",
            "expires",
            "state",
        )
        for found in s.scalars(query):
            state = _grant_state(found, at)
            if state != "active" and not all_:
                continue
            table.add_row(
                str(found.id),
                found.consumer,
                found.resource,
                found.sharing_class,
                found.purpose,
                f"{found.granted_at:%Y-%m-%d}",
                found.granted_by,
                str(found.request_id or ""),
                f"{found.expires_at:%Y-%m-%d}" if found.expires_at else "",
                state,
            )
    console.print(table)


def _grant_state(found: Grant, at: datetime) -> str:
    if found.revoked_at is not None and found.revoked_at <= at:
        return f"revoked {found.revoked_at:%Y-%m-%d}"
    if found.expires_at is not None and found.expires_at <= at:
        return "expired"
    return "active"


@grant_app.command("revoke")
def grant_revoke(
    grant_id: int,
    reason: Annotated[str, typer.Option(help="why the grant ends (recorded)")],
    by: By = None,
) -> None:
    """End a grant now: the consumer can no longer read the conditional table."""
    at = now()
    if not reason.strip():
        raise fail("a revocation needs its reason")
    with work(*REFUSED) as (_, _catalog, s):
        found = access.revoke(s, grant_id, reason=reason.strip(), at=at)
        _journal(
            s,
            at,
            "grant.revoke",
            found.consumer,
            {"grant": grant_id, "reason": reason.strip(), "by": by or user()},
            purpose=found.purpose,
            resource=found.resource,
        )
    console.print(
        f"revoked grant {grant_id}: {found.consumer} on {found.resource}", highlight=False
    )


# -- access requests ------------------------------------------------------------------------
@request_app.command("file")
def request_file(
    consumer: Annotated[str, typer.Option(help="using department (a registered consumer)")],
    resource: Annotated[str, typer.Option(help="e.g. population.residents")],
    item: Annotated[list[str], typer.Option(help="a conditional item; repeat for several")],
    applicant_name: Annotated[str, typer.Option(help="申请方联系人姓名")],
    applicant_phone: Annotated[str, typer.Option(help="联系电话")],
    applicant_email: Annotated[str, typer.Option(help="联系邮箱")],
    using_department: Annotated[str, typer.Option(help="使用方名称")],
    using_contact: Annotated[str, typer.Option(help="使用方联系人")],
    service_scenario: Annotated[str, typer.Option(help="办事场景")],
    usage_scope: Annotated[str, typer.Option(help="使用范围: " + ", ".join(domain.USAGE_SCOPES))],
    business_system: Annotated[str, typer.Option(help="使用本资源的业务系统")],
    justification: Annotated[str, typer.Option(help="why the department's duties need it")],
    usage_scope_other: Annotated[
        str | None, typer.Option(help="the use, for --usage-scope other")
    ] = None,
) -> None:
    """File an access request for conditional items (the application form)."""
    at = now()
    with work(*REFUSED) as (settings, catalog, s):
        made = domain.file_access_request(
            s,
            catalog,
            settings,
            consumer=consumer,
            resource=resource,
            items=item,
            applicant_name=applicant_name,
            applicant_phone=applicant_phone,
            applicant_email=applicant_email,
            using_department=using_department,
            using_contact=using_contact,
            service_scenario=service_scenario,
            usage_scope=usage_scope,
            usage_scope_other=usage_scope_other,
            business_system=business_system,
            justification=justification,
            at=at,
        )
    console.print(
        f"filed access request {made.id}: {made.consumer} asks {made.provider} for "
        f"{made.resource} ({', '.join(domain.request_items(made))}); due {made.due_on} "
        f"({made.due_basis})",
        highlight=False,
    )


@request_app.command("list")
def request_list(
    consumer: OnlyConsumer = None,
    provider: OnlyProvider = None,
    status: Annotated[str | None, typer.Option(help="pending, approved or refused")] = None,
    overdue_only: Annotated[bool, typer.Option("--overdue", help="only overdue ones")] = False,
    at: JudgedAt = None,
) -> None:
    """Access requests with their status, due date and whether they are overdue."""
    if status is not None and status not in REQUEST_STATUSES:
        raise typer.BadParameter(
            f"unknown status {status!r}; one of {', '.join(REQUEST_STATUSES)}",
            param_hint="--status",
        )
    moment = at_moment(at)
    with work(*REFUSED) as (_, _catalog, s):
        found = domain.access_requests(s, consumer=consumer, provider=provider, status=status)
    late = {r.id for r in found if r.status == "pending" and domain.overdue(r.due_on, moment)}
    if overdue_only:
        found = [r for r in found if r.id in late]
    table = _table(
        "access requests",
        "id",
        "consumer",
        "resource",
        "provider",
        "due",
        wrap=("status", "items", "scope", "decided"),
    )
    for r in found:
        state = r.status
        if r.id in late:
            state = "[red]pending, overdue[/red]"
        if r.escalated_at is not None:
            state += f", escalated {r.escalated_at:%Y-%m-%d}"
        table.add_row(
            str(r.id),
            r.consumer,
            r.resource,
            r.provider,
            r.due_on.isoformat(),
            state,
            ", ".join(domain.request_items(r)),
            r.usage_scope if r.usage_scope != "other" else f"other: {r.usage_scope_other}",
            _decision(r.decided_at, r.decided_by, r.reason),
        )
    console.print(table)
    console.print(f"{len(found)} request(s)" + (f", {len(late)} overdue" if late else ""))


def _table(title: str, *columns: str, wrap: tuple[str, ...] = ()) -> RichTable:
    """A table whose identifying columns never wrap; the `wrap` columns (free text) do."""
    table = RichTable(title=title)
    for name in columns:
        table.add_column(name, no_wrap=True)
    for name in wrap:
        table.add_column(name, overflow="fold", min_width=12)
    return table


def _decision(at: datetime | None, by: str | None, reason: str | None) -> str:
    if at is None:
        return ""
    return f"{at:%Y-%m-%d} by {by}" + (f": {reason}" if reason else "")


def _expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time())
    except ValueError as exc:
        raise typer.BadParameter(f"--expires {value!r} is not a date (YYYY-MM-DD)") from exc


#: What `share request list --status` accepts.
REQUEST_STATUSES = ("pending", "approved", "refused")

Provider = Annotated[str, typer.Option(help="the deciding department (must be the provider)")]


@contextmanager
def _journal_refusal(
    action: str, request_id: int, provider: str, by: str | None, at: datetime
) -> Iterator[None]:
    """A decision the platform refuses (a department that is not the request's provider, a
    request that does not exist) is journaled as refused (or not found), in a transaction of
    its own after the decision's own transaction rolled back, as the server journals its
    refusals: the trail shows who tried to decide what."""
    try:
        yield
    except typer.Exit as refused:
        cause = refused.__cause__
        if not isinstance(cause, AccessError):
            raise
        with session(get_settings()) as s:
            found = s.get(AccessRequest, request_id)
            audit.record(
                s,
                at=at,
                actor=provider,
                action=action,
                consumer=found.consumer if found else None,
                purpose=found.usage_scope if found else None,
                resource=found.resource if found else None,
                outcome="refused" if found else "not_found",
                detail={"request": request_id, "by": by or user(), "reason": str(cause)},
            )
        raise


@request_app.command("approve")
def request_approve(
    request_id: int,
    provider: Provider,
    by: By = None,
    expires: Annotated[str | None, typer.Option(help="grant ends this day (UTC)")] = None,
) -> None:
    """Approve as the provider: the consumer gets the resource's conditional table."""
    at = now()
    expires_at = _expiry(expires)
    journal = _journal_refusal("request.approve", request_id, provider, by, at)
    with journal, work(*REFUSED) as (_, catalog, s):
        made = domain.approve(
            s,
            catalog,
            request_id,
            provider=provider,
            by=by or user(),
            at=at,
            expires_at=expires_at,
        )
    console.print(
        f"approved access request {request_id}: grant {made.id} gives {made.consumer} "
        f"{made.resource} ({made.sharing_class}) for {made.purpose}"
        + (f" until {made.expires_at:%Y-%m-%d}" if made.expires_at else ""),
        highlight=False,
    )


@request_app.command("refuse")
def request_refuse(
    request_id: int,
    provider: Provider,
    reason: Annotated[str, typer.Option(help="the reasons (51号 art. 12)")],
    by: By = None,
) -> None:
    """Refuse as the provider, with reasons."""
    at = now()
    journal = _journal_refusal("request.refuse", request_id, provider, by, at)
    with journal, work(*REFUSED) as (_, _catalog, s):
        domain.refuse(s, request_id, provider=provider, by=by or user(), reason=reason, at=at)
    console.print(f"refused access request {request_id}: {reason.strip()}", highlight=False)


@request_app.command("escalate")
def request_escalate() -> None:
    """Escalate overdue requests (once each) to the provider's steward and the authority."""
    at = now()
    with work(*REFUSED) as (settings, catalog, s):
        escalated = domain.escalate(s, catalog, settings, at=at)
    if not escalated:
        console.print("no overdue request left to escalate")
        return
    for escalation in escalated:
        r = escalation.request
        console.print(
            f"escalated access request {r.id} ({r.provider}, due {r.due_on})", highlight=False
        )
        for notice in escalation.notifications:
            state = "mailed" if notice.sent else f"[yellow]not mailed: {notice.error}[/yellow]"
            console.print(f"  {notice.recipient}: {state}", highlight=False)


# -- verification requests ------------------------------------------------------------------
def _key_option(values: list[str]) -> str | dict[str, str]:
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep:
            raise typer.BadParameter(f"--key {value!r}: give item=value for a composite key")
        pairs[name.strip()] = text
    return pairs


def _show_key(stored: str) -> str:
    """`item=value, …` for a composite key (stored as JSON), the value itself otherwise."""
    if not stored.startswith("{"):
        return stored
    try:
        values = json.loads(stored)
    except ValueError:
        return stored
    return ", ".join(f"{name}={value}" for name, value in values.items())


@verify_app.command("file")
def verify_file(
    consumer: Annotated[str, typer.Option(help="the department that doubts the value")],
    resource: Annotated[str, typer.Option(help="e.g. population.residents")],
    key: Annotated[
        list[str], typer.Option(help="the record's key value, or item=value per key item")
    ],
    item: Annotated[str, typer.Option(help="the doubted item")],
    evidence: Annotated[str, typer.Option(help="why it is doubted (proof seen, source)")],
    doubted_value: Annotated[
        str | None, typer.Option(help="the value as published; omit if it is missing")
    ] = None,
) -> None:
    """Flag a doubted value to the item's authority (快速校核)."""
    at = now()
    with work(*REFUSED) as (settings, catalog, s):
        made = domain.file_verification(
            s,
            catalog,
            settings,
            consumer=consumer,
            resource=resource,
            key=_key_option(key),
            item=item,
            doubted_value=doubted_value,
            evidence=evidence,
            at=at,
        )
    console.print(
        f"filed verification request {made.id}: {made.resource}.{made.item} of "
        f"{_show_key(made.key)}, "
        f"for {made.provider}; due {made.due_on} ({made.due_basis})",
        highlight=False,
    )


@verify_app.command("list")
def verify_list(
    consumer: OnlyConsumer = None,
    provider: OnlyProvider = None,
    status: Annotated[str | None, typer.Option(help="open, confirmed, corrected or fixed")] = None,
    at: JudgedAt = None,
) -> None:
    """Verification requests with their answer and the version that carries a fix."""
    moment = at_moment(at)
    with work(*REFUSED) as (_, _catalog, s):
        found = domain.verification_requests(s, consumer=consumer, provider=provider, status=status)
    table = _table(
        "verification requests",
        "id",
        "consumer",
        "resource",
        "item",
        "provider",
        "due",
        "status",
        wrap=("key", "doubted", "answer", "fixed in"),
    )
    for r in found:
        state = r.status
        if r.status == "open" and domain.overdue(r.due_on, moment):
            state = "[red]open, overdue[/red]"
        table.add_row(
            str(r.id),
            r.consumer,
            r.resource,
            r.item,
            r.provider,
            r.due_on.isoformat(),
            state,
            _show_key(r.key),
            r.doubted_value if r.doubted_value is not None else "(missing)",
            (r.answer or "") + (f" → {r.corrected_value}" if r.corrected_value else ""),
            f"{r.fixed_table} version {r.fixed_version}" if r.fixed_table else "",
        )
    console.print(table)
    console.print(f"{len(found)} request(s)")


@verify_app.command("answer")
def verify_answer(
    request_id: int,
    provider: Annotated[str, typer.Option(help="the answering department (the authority)")],
    outcome: Annotated[str, typer.Option(help="confirmed or corrected")],
    answer: Annotated[str, typer.Option(help="what was checked and found")],
    corrected_value: Annotated[
        str | None, typer.Option(help="the right value, for --outcome corrected")
    ] = None,
    by: By = None,
) -> None:
    """Confirm or correct a doubted value, as the item's authority."""
    at = now()
    with work(*REFUSED) as (_, catalog, s):
        found = domain.answer_verification(
            s,
            catalog,
            request_id,
            provider=provider,
            by=by or user(),
            at=at,
            outcome=outcome,
            answer=answer,
            corrected_value=corrected_value,
        )
    console.print(f"verification request {request_id} {found.status}", highlight=False)
    if found.status == "corrected":
        console.print(
            "the fix is linked once a published version carries it: govlake share verify link"
        )


@verify_app.command("link")
def verify_link() -> None:
    """Link corrected values to the first published version that carries them."""
    at = now()
    with work(*REFUSED) as (settings, catalog, s):
        linked = domain.link_fixes(s, None, catalog, settings, at=at)
        waiting = len(domain.verification_requests(s, status="corrected"))
    for r in linked:
        console.print(
            f"verification request {r.id}: fixed in {r.fixed_table} version {r.fixed_version}",
            highlight=False,
        )
    console.print(f"{len(linked)} linked, {waiting} correction(s) not published yet")


# -- suspensions ----------------------------------------------------------------------------
@suspend_app.command("start")
def suspend_start(
    department: str,
    reason: Annotated[str, typer.Option(help="the missed rectification (宝鸡 art. 29)")],
    by: By = None,
) -> None:
    """Suspend a department's access to others' shared data."""
    at = now()
    who = by or user()
    with work(*REFUSED) as (_, catalog, s):
        access.suspend(s, catalog, department, reason=reason, by=who, at=at)
        _journal(s, at, "suspension.start", department, {"by": who, "reason": reason})
    console.print(f"suspended {department}: {reason}", highlight=False)


@suspend_app.command("lift")
def suspend_lift(department: str, by: By = None) -> None:
    """Lift a department's suspension."""
    at = now()
    who = by or user()
    with work(*REFUSED) as (_, _catalog, s):
        found = access.lift(s, department, by=who, at=at)
        _journal(s, at, "suspension.lift", department, {"by": who, "suspension": found.id})
    console.print(f"lifted the suspension of {department}", highlight=False)


@suspend_app.command("list")
def suspend_list(
    all_: Annotated[bool, typer.Option("--all", help="lifted ones too")] = False,
) -> None:
    """Suspensions in force (or all of them)."""
    with work(*REFUSED) as (_, _catalog, s):
        query = select(Suspension).order_by(Suspension.suspended_at)
        if not all_:
            query = query.where(Suspension.lifted_at.is_(None))
        found = list(s.scalars(query))
    table = RichTable("department", "since", "by", "reason", "lifted")
    for x in found:
        table.add_row(
            x.department,
            f"{x.suspended_at:%Y-%m-%d}",
            x.suspended_by,
            x.reason,
            f"{x.lifted_at:%Y-%m-%d} by {x.lifted_by}" if x.lifted_at else "",
        )
    console.print(table)
