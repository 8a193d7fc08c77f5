"""Access requests and verification requests on a real platform database (SQLite and
PostgreSQL): the whole flow from filing to grant, every refusal rule, escalation once with
the mail delivered to a real SMTP server, and a correction linked to the published Delta
version that carries it."""

from __future__ import annotations

import email
import email.policy
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from support import FORM, Inbox
from typer.testing import CliRunner

from govlake.core.catalog import Catalog, Resource, check_rules
from govlake.core.net import free_port
from govlake.core.settings import Settings
from govlake.lake.tables import TableSet
from govlake.platform.database import (
    AccessRequest,
    AuditEntry,
    Grant,
    Notification,
    VerificationRequest,
    session,
)
from govlake.platform.workdays import add_working_days, china_date
from govlake.sharing import access
from govlake.sharing import requests as req
from govlake.sharing.access import AccessError, SharingError, decide, shared_tables
from govlake_app.cli.share import share_app

#: Every test that uses `settings` runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.platform_state

AT = datetime(2026, 9, 30, 2, 0)  # naive UTC: 10:00 in China on Wednesday 30 September
DUE = date(2026, 10, 20)  # 10 working days: National Day off, Saturday 10 October worked
RESIDENTS = "population.residents"
USER, PROVIDER = "market_regulation", "public_security"
PERSON_A, PERSON_B, PERSON_C = "11010519491231002X", "110105194912310037", "110105195001010019"


def form(**overrides: Any) -> dict[str, Any]:
    """The application form as a using department fills it in."""
    fields: dict[str, Any] = {
        **FORM,
        "consumer": USER,
        "resource": RESIDENTS,
        "items": ["residence_address", "marital_status"],
        "usage_scope": "data_verification",
        "business_system": "企业登记系统（应用系统）",
        "justification": "核验法定代表人登记住址，避免重复向群众索要证明",
        "at": AT,
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def db(settings: Settings, catalog: Catalog) -> Settings:
    """A platform database with the using and providing departments registered."""
    with session(settings) as s:
        for code in (USER, PROVIDER, "civil_affairs", "taxation"):
            access.register_consumer(s, catalog, code, email=None, at=AT - timedelta(days=30))
    return settings


def _file(settings: Settings, catalog: Catalog, **overrides: Any) -> int:
    with session(settings) as s:
        return req.file_access_request(s, catalog, settings, **form(**overrides)).id


def _conditional(catalog: Catalog, settings: Settings) -> access.SharedTable:
    return next(
        t
        for t in shared_tables(catalog, settings)
        if t.resource.qualified_name == RESIDENTS and t.sharing_class == "conditional"
    )


def _actions(s: Session) -> list[str]:
    return list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)))


# -- access requests ------------------------------------------------------------------------
def test_approved_request_grants_the_conditional_table_until_revoked(
    db: Settings, catalog: Catalog
) -> None:
    table = _conditional(catalog, db)
    request_id = _file(db, catalog)
    with session(db) as s:
        filed = s.get(AccessRequest, request_id)
        assert filed is not None
        assert (filed.status, filed.provider, filed.due_on) == ("pending", PROVIDER, DUE)
        assert json.loads(filed.items) == ["residence_address", "marital_status"]
        assert "official calendar 2026" in filed.due_basis
        user = access.consumer(s, USER)
        assert not decide(s, user, table, at=AT + timedelta(hours=1)).allowed

    decided_at = AT + timedelta(days=3)
    with session(db) as s:
        grant = req.approve(
            s,
            catalog,
            request_id,
            provider=PROVIDER,
            by="王建国",
            at=decided_at,
            expires_at=datetime(2027, 9, 30),
        )
        grant_id = grant.id
    with session(db) as s:
        user = access.consumer(s, USER)
        allowed = decide(s, user, table, at=decided_at + timedelta(minutes=1))
        assert allowed.allowed and allowed.grant_id == grant_id
        assert allowed.purpose == "data_verification"
        approved = s.get(AccessRequest, request_id)
        assert approved is not None and approved.status == "approved"
        assert approved.decided_by == "王建国" and approved.expires_at == datetime(2027, 9, 30)
        # The grant ends when it expires.
        assert not decide(s, user, table, at=datetime(2027, 9, 30, 0, 1)).allowed
        assert _actions(s) == ["request.file", "request.approve", "grant.create"]

    with session(db) as s:
        access.revoke(s, grant_id, reason="purpose fulfilled", at=decided_at + timedelta(days=1))
    with session(db) as s:
        refused = decide(s, access.consumer(s, USER), table, at=decided_at + timedelta(days=2))
        assert not refused.allowed and "no active grant" in refused.reason


def test_filing_date_is_the_date_in_china(db: Settings, catalog: Catalog) -> None:
    # 17:00 UTC on Friday 9 October is Saturday 10 October in China, a make-up working day:
    # the count starts on Monday 12 October.
    request_id = _file(db, catalog, at=datetime(2026, 10, 9, 17, 0))
    with session(db) as s:
        filed = s.get(AccessRequest, request_id)
        assert filed is not None and filed.due_on == date(2026, 10, 23)


def _not_shared_marital_status(catalog: Catalog) -> Catalog:
    """The catalogue with marital status not shared, on a (test) legal basis."""
    raw = catalog.get(RESIDENTS).model_dump()
    for item in raw["items"]:
        if item["name"] == "marital_status":
            item["sharing"] = "not_shared"
            item["legal_basis"] = "《婚姻登记条例》 (test basis)"
    changed = Resource.model_validate(raw)
    check_rules(changed)
    others = [r for r in catalog if r.qualified_name != RESIDENTS]
    return Catalog([changed, *others], catalog.departments)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"items": ["name"]}, "name is shared unconditionally and needs no request"),
        ({"items": ["residence_address", "gender"]}, "gender is shared unconditionally"),
        ({"items": ["income"]}, "income is not an item of population.residents"),
        ({"items": []}, "name at least one item"),
        ({"usage_scope": "everything"}, "usage scope 'everything' is not one of"),
        ({"usage_scope": "other"}, "usage scope 'other' needs usage_scope_other"),
        ({"usage_scope_other": "also this"}, "only for usage scope 'other'"),
        ({"applicant_name": "  "}, "needs applicant_name"),
        ({"justification": "", "business_system": ""}, "needs business_system, justification"),
        ({"applicant_email": "zhang.wei"}, "not a mail address"),
        ({"applicant_phone": "0" * 41}, "applicant_phone has 41 characters, at most 40"),
        ({"consumer": "police"}, "no consumer police"),
        ({"consumer": PROVIDER}, "is the responsible provider"),
        ({"resource": "population.pets"}, "unknown resource 'population.pets'"),
    ],
)
def test_a_request_that_breaks_a_rule_is_refused_and_not_stored(
    db: Settings, catalog: Catalog, overrides: dict[str, Any], problem: str
) -> None:
    with session(db) as s, pytest.raises(SharingError, match=problem):
        req.file_access_request(s, catalog, db, **form(**overrides))
    with session(db) as s:
        assert s.scalar(select(func.count()).select_from(AccessRequest)) == 0
        assert _actions(s) == []


def test_not_shared_item_is_refused_with_its_basis(db: Settings, catalog: Catalog) -> None:
    changed = _not_shared_marital_status(catalog)
    with session(db) as s, pytest.raises(SharingError) as refused:
        req.file_access_request(s, changed, db, **form())
    message = str(refused.value)
    assert "marital_status is not shared (《婚姻登记条例》 (test basis))" in message
    assert "cannot be requested" in message and "arbitrates" in message
    # The other, conditional item alone is accepted.
    with session(db) as s:
        ok = req.file_access_request(s, changed, db, **form(items=["residence_address"]))
        assert ok.status == "pending"


def test_usage_scope_other_with_its_description_is_accepted(db: Settings, catalog: Catalog) -> None:
    request_id = _file(db, catalog, usage_scope="other", usage_scope_other="统计分析")
    with session(db) as s:
        grant = req.approve(s, catalog, request_id, provider=PROVIDER, by="王建国", at=AT)
        assert grant.purpose == "other"
        stored = s.get(AccessRequest, request_id)
        assert stored is not None and stored.usage_scope_other == "统计分析"


def test_a_second_pending_request_for_the_same_resource_is_refused(
    db: Settings, catalog: Catalog
) -> None:
    first = _file(db, catalog)
    with session(db) as s, pytest.raises(SharingError, match=f"already has request {first}"):
        req.file_access_request(s, catalog, db, **form(items=["residence_address"]))


def test_refusal_needs_reasons(db: Settings, catalog: Catalog) -> None:
    request_id = _file(db, catalog)
    with session(db) as s, pytest.raises(SharingError, match="must give its reasons"):
        req.refuse(s, request_id, provider=PROVIDER, by="王建国", reason="   ", at=AT)
    with session(db) as s:
        still = s.get(AccessRequest, request_id)
        assert still is not None and still.status == "pending"
    with session(db) as s:
        req.refuse(
            s,
            request_id,
            provider=PROVIDER,
            by="王建国",
            reason="住址属个人隐私，企业开办核验无需住址",
            at=AT + timedelta(days=1),
        )
    with session(db) as s:
        refused = s.get(AccessRequest, request_id)
        assert refused is not None and refused.status == "refused"
        assert refused.reason == "住址属个人隐私，企业开办核验无需住址"
        assert s.scalar(select(func.count()).select_from(Grant)) == 0
        assert _actions(s) == ["request.file", "request.refuse"]


def test_only_the_provider_decides(db: Settings, catalog: Catalog) -> None:
    request_id = _file(db, catalog)
    for intruder in (USER, "civil_affairs"):
        with session(db) as s, pytest.raises(AccessError, match="only the provider public_"):
            req.approve(s, catalog, request_id, provider=intruder, by="someone", at=AT)
        with session(db) as s, pytest.raises(AccessError, match="only the provider public_"):
            req.refuse(s, request_id, provider=intruder, by="someone", reason="no", at=AT)
    with session(db) as s:
        still = s.get(AccessRequest, request_id)
        assert still is not None and still.status == "pending"
        assert s.scalar(select(func.count()).select_from(Grant)) == 0


def test_a_request_is_decided_once(db: Settings, catalog: Catalog) -> None:
    request_id = _file(db, catalog)
    with session(db) as s:
        req.approve(s, catalog, request_id, provider=PROVIDER, by="王建国", at=AT)
    with session(db) as s, pytest.raises(SharingError, match="already approved on 2026-09-30"):
        req.approve(s, catalog, request_id, provider=PROVIDER, by="王建国", at=AT)
    with session(db) as s, pytest.raises(SharingError, match="already approved"):
        req.refuse(s, request_id, provider=PROVIDER, by="王建国", reason="changed", at=AT)
    with session(db) as s:
        assert s.scalar(select(func.count()).select_from(Grant)) == 1
    with session(db) as s, pytest.raises(req.RequestNotFound, match="no access request 99"):
        req.approve(s, catalog, 99, provider=PROVIDER, by="王建国", at=AT)


# -- escalation -----------------------------------------------------------------------------
def test_overdue_request_is_escalated_once_and_mailed(
    db: Settings, catalog: Catalog, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    settings = db.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})
    late = _file(settings, catalog)
    answered = _file(settings, catalog, consumer="taxation")
    with session(settings) as s:
        req.approve(s, catalog, answered, provider=PROVIDER, by="王建国", at=AT)

    # On the due date itself (China) the provider is still on time.
    on_due_date = datetime(2026, 10, 20, 15, 0)  # 23:00 in China
    with session(settings) as s:
        assert req.escalate_overdue(s, catalog, settings, at=on_due_date) == []
        assert req.overdue_requests(s, on_due_date) == []

    next_day = datetime(2026, 10, 20, 16, 30)  # 00:30 on 21 October in China
    with session(settings) as s:
        escalated = req.escalate_overdue(s, catalog, settings, at=next_day)
        assert [r.id for r in escalated] == [late]
    with session(settings) as s:
        stored = s.get(AccessRequest, late)
        assert stored is not None and stored.escalated_at == next_day
        notices = list(s.scalars(select(Notification).order_by(Notification.id)))
        steward = catalog.department(PROVIDER).steward.email
        assert [(n.recipient, n.sent, n.error) for n in notices] == [
            (steward, True, None),
            (req.AUTHORITY_EMAIL, True, None),
        ]
        assert f"Overdue access request {late}" in notices[0].subject
        assert "due 2026-10-20" in notices[0].subject
        assert [r.id for r in req.overdue_requests(s, next_day)] == [late]

    assert sorted(tuple(e.rcpt_tos) for e in inbox.envelopes) == sorted(
        [(steward,), (req.AUTHORITY_EMAIL,)]
    )
    message = email.message_from_bytes(inbox.envelopes[0].content, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert f"Access request {late} is unanswered" in text and "市场监督管理局" in text
    assert "residence_address, marital_status" in text

    # A second run a week later escalates nothing and mails nobody; the request stays overdue.
    with session(settings) as s:
        assert req.escalate_overdue(s, catalog, settings, at=next_day + timedelta(days=7)) == []
        assert s.scalar(select(func.count()).select_from(Notification)) == 2
        assert [r.id for r in req.overdue_requests(s, next_day + timedelta(days=7))] == [late]
        assert _actions(s).count("request.escalate") == 1
    assert len(inbox.envelopes) == 2


def test_a_mail_failure_does_not_lose_the_escalation(db: Settings, catalog: Catalog) -> None:
    settings = db.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": free_port()})
    late = _file(settings, catalog)
    with session(settings) as s:
        escalated = req.escalate_overdue(s, catalog, settings, at=datetime(2026, 10, 22))
        assert [r.id for r in escalated] == [late]
    with session(settings) as s:
        stored = s.get(AccessRequest, late)
        assert stored is not None and stored.escalated_at == datetime(2026, 10, 22)
        notices = list(s.scalars(select(Notification)))
        assert len(notices) == 2 and not any(n.sent for n in notices)
        assert all(n.error and "could not mail" in n.error for n in notices)
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "request.escalate"))
        assert entry is not None and json.loads(entry.detail)["mailed"] == []


# -- verification requests ------------------------------------------------------------------
def _publish(settings: Settings, catalog: Catalog, statuses: dict[str, str]) -> None:
    """Write one version of the residents' conditional table (what the pipeline publishes)."""
    location = (
        TableSet(catalog.get(RESIDENTS), settings.warehouse_location)
        .published("conditional")
        .location
    )
    people = sorted(statuses)
    rows = pa.table(
        {
            "citizen_id": people,
            "name": [f"居民{i}" for i in range(len(people))],
            "marital_status": [statuses[p] for p in people],
        }
    )
    exists = location.is_delta_table()
    write_deltalake(location.uri, rows, mode="overwrite" if exists else "error")
    time.sleep(0.02)  # commit times are in milliseconds: keep the steps apart


def _now() -> datetime:
    moment = datetime.now(UTC).replace(tzinfo=None)
    time.sleep(0.02)
    return moment


def _doubt(settings: Settings, catalog: Catalog, person: str, at: datetime) -> int:
    with session(settings) as s:
        return req.file_verification(
            s,
            catalog,
            settings,
            consumer=USER,
            resource=RESIDENTS,
            key=person,
            item="marital_status",
            doubted_value="10",
            evidence="结婚证 (marriage certificate) shown at the counter",
            at=at,
        ).id


def _answer(
    settings: Settings, catalog: Catalog, request_id: int, outcome: str, value: str | None
) -> None:
    with session(settings) as s:
        req.answer_verification(
            s,
            catalog,
            request_id,
            provider="civil_affairs",
            by="赵磊",
            at=_now(),
            outcome=outcome,
            answer="checked the marriage register",
            corrected_value=value,
        )


def test_correction_is_linked_to_the_first_published_version_carrying_it(
    db: Settings, catalog: Catalog
) -> None:
    _publish(db, catalog, {PERSON_A: "10", PERSON_B: "10", PERSON_C: "20"})  # version 0
    filed_at = _now()
    a, b, c = (_doubt(db, catalog, p, filed_at) for p in (PERSON_A, PERSON_B, PERSON_C))
    with session(db) as s:
        doubt = s.get(VerificationRequest, a)
        assert doubt is not None
        # Marital status is governed by civil affairs, not by the resource's provider.
        assert doubt.provider == "civil_affairs" and doubt.status == "open"
        assert doubt.due_on == add_working_days(china_date(filed_at), 5).due_on
    # Civil affairs corrects B at the source before answering; its fix is in version 1.
    _publish(db, catalog, {PERSON_A: "10", PERSON_B: "20", PERSON_C: "20"})  # version 1
    _answer(db, catalog, a, "corrected", "20")
    _answer(db, catalog, b, "corrected", "20")
    _answer(db, catalog, c, "confirmed", None)
    with session(db) as s:
        assert [r.id for r in req.link_fixes(s, None, catalog, db, at=_now())] == [b]
    _publish(db, catalog, {PERSON_A: "20", PERSON_B: "20", PERSON_C: "20"})  # version 2
    with session(db) as s:
        assert [r.id for r in req.link_fixes(s, None, catalog, db, at=_now())] == [a]

    with session(db) as s:
        fixed = {r.id: r for r in s.scalars(select(VerificationRequest))}
        assert (fixed[a].status, fixed[a].fixed_table, fixed[a].fixed_version) == (
            "fixed",
            "population.residents_conditional",
            2,
        )
        assert (fixed[b].status, fixed[b].fixed_version) == ("fixed", 1)
        assert fixed[a].fixed_at is not None and fixed[a].fixed_at > filed_at
        # A confirmed value has nothing to link.
        assert (fixed[c].status, fixed[c].fixed_version) == ("confirmed", None)
        entries = list(
            s.scalars(select(AuditEntry).where(AuditEntry.action == "verification.fixed"))
        )
        assert sorted((e.table_name, e.version) for e in entries) == [
            ("population.residents_conditional", 1),
            ("population.residents_conditional", 2),
        ]
        assert req.link_fixes(s, None, catalog, db, at=_now()) == []


def test_a_correction_not_yet_published_stays_corrected(db: Settings, catalog: Catalog) -> None:
    _publish(db, catalog, {PERSON_A: "10"})
    request_id = _doubt(db, catalog, PERSON_A, _now())
    _answer(db, catalog, request_id, "corrected", "20")
    _publish(db, catalog, {PERSON_A: "10"})  # the next extract does not carry the fix yet
    with session(db) as s:
        assert req.link_fixes(s, None, catalog, db, at=_now()) == []
        still = s.get(VerificationRequest, request_id)
        assert still is not None and still.status == "corrected" and still.fixed_version is None


def test_only_the_authority_answers_and_only_once(db: Settings, catalog: Catalog) -> None:
    request_id = _doubt(db, catalog, PERSON_A, AT)
    with session(db) as s, pytest.raises(AccessError, match="only the authority civil_affairs"):
        req.answer_verification(
            s,
            catalog,
            request_id,
            provider=PROVIDER,
            by="王建国",
            at=AT,
            outcome="confirmed",
            answer="looks fine",
        )
    rules = [
        ({"outcome": "corrected", "corrected_value": None}, "needs the corrected value"),
        ({"outcome": "corrected", "corrected_value": "99"}, "'99' is not an allowed value"),
        ({"outcome": "confirmed", "corrected_value": "20"}, "has no corrected value"),
        ({"outcome": "maybe", "corrected_value": None}, "outcome 'maybe' is not one of"),
        ({"outcome": "confirmed", "answer": " "}, "an answer needs answer"),
    ]
    for overrides, problem in rules:
        fields: dict[str, Any] = {"answer": "checked the register", **overrides}
        with session(db) as s, pytest.raises(SharingError, match=problem):
            req.answer_verification(
                s, catalog, request_id, provider="civil_affairs", by="赵磊", at=AT, **fields
            )
    with session(db) as s:
        req.answer_verification(
            s,
            catalog,
            request_id,
            provider="civil_affairs",
            by="赵磊",
            at=AT,
            outcome="confirmed",
            answer="the register says 10",
        )
    with session(db) as s, pytest.raises(SharingError, match="already answered"):
        req.answer_verification(
            s,
            catalog,
            request_id,
            provider="civil_affairs",
            by="赵磊",
            at=AT,
            outcome="corrected",
            answer="oops",
            corrected_value="20",
        )
    with session(db) as s:
        assert _actions(s) == ["verification.file", "verification.answer"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"item": "citizen_id"}, "is the key that identifies the record"),
        ({"item": "income"}, "income is not an item"),
        ({"key": " "}, "the record's key needs citizen_id"),
        ({"evidence": ""}, "a verification request needs evidence"),
        ({"consumer": "civil_affairs"}, "civil_affairs is the authority"),
        ({"resource": "credit.records", "item": "content"}, "keyed by credit_code, decision_n"),
        (
            {
                "resource": "credit.records",
                "item": "content",
                "key": {"credit_code": "91110000100000000X"},
            },
            "needs decision_number",
        ),
    ],
)
def test_a_verification_request_that_breaks_a_rule_is_refused(
    db: Settings, catalog: Catalog, overrides: dict[str, Any], problem: str
) -> None:
    fields: dict[str, Any] = {
        "consumer": USER,
        "resource": RESIDENTS,
        "key": PERSON_A,
        "item": "marital_status",
        "doubted_value": "10",
        "evidence": "结婚证",
        "at": AT,
        **overrides,
    }
    with session(db) as s, pytest.raises(SharingError, match=problem):
        req.file_verification(s, catalog, db, **fields)


def test_a_composite_key_is_stored_in_key_order(db: Settings, catalog: Catalog) -> None:
    key = {"decision_number": "京市监罚〔2026〕12号", "credit_code": "91110000100000000X"}
    with session(db) as s:
        made = req.file_verification(
            s,
            catalog,
            db,
            consumer=USER,
            resource="credit.records",
            key=key,
            item="content",
            doubted_value="罚款",
            evidence="行政复议决定书",
            at=AT,
        )
        resource = catalog.get("credit.records")
        assert made.provider == resource.item("content").authority
        assert list(json.loads(made.key)) == ["credit_code", "decision_number"]
        assert req.key_values(resource, made.key) == key
        assert made.due_on == date(2026, 10, 13)  # 5 working days: 8, 9, 10, 12, 13 October


# -- command line ---------------------------------------------------------------------------
@pytest.fixture
def cli(settings: Settings, cli_runner: Callable[..., CliRunner]) -> CliRunner:
    """A runner whose `get_settings()` reads the test's platform database."""
    return cli_runner(settings)


def _cli_form() -> list[str]:
    fields = form()
    options = ["request", "file", "--consumer", USER, "--resource", RESIDENTS]
    for item in fields["items"]:
        options += ["--item", item]
    for name in (
        "applicant_name",
        "applicant_phone",
        "applicant_email",
        "using_department",
        "using_contact",
        "service_scenario",
        "usage_scope",
        "business_system",
        "justification",
    ):
        options += ["--" + name.replace("_", "-"), fields[name]]
    return options


def test_cli_files_lists_and_approves(cli: CliRunner, settings: Settings) -> None:
    for code in (USER, PROVIDER):
        added = cli.invoke(share_app, ["consumer", "add", code])
        assert added.exit_code == 0, added.output
    filed = cli.invoke(share_app, _cli_form())
    assert filed.exit_code == 0, filed.output
    with session(settings) as s:
        stored = s.scalars(select(AccessRequest)).one()
        due = stored.due_on
    assert f"filed access request {stored.id}" in filed.output
    assert f"due {due}" in filed.output
    assert due == add_working_days(china_date(stored.filed_at), 10).due_on

    listed = cli.invoke(share_app, ["request", "list"])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if f" {stored.id} " in line)
    assert "pending" in row and str(due) in row and "overdue" not in row
    # Judged a day after the due date it is overdue.
    later = datetime.combine(due + timedelta(days=1), datetime.min.time()) + timedelta(hours=4)
    late = cli.invoke(share_app, ["request", "list", "--overdue", "--at", later.isoformat()])
    assert late.exit_code == 0 and "overdue" in late.output and RESIDENTS in late.output

    wrong = cli.invoke(share_app, ["request", "approve", str(stored.id), "--provider", USER])
    assert wrong.exit_code == 2
    assert "only the provider public_security decides" in wrong.output
    approved = cli.invoke(
        share_app, ["request", "approve", str(stored.id), "--provider", PROVIDER, "--by", "王建国"]
    )
    assert approved.exit_code == 0, approved.output
    assert "grant 1 gives market_regulation population.residents (conditional)" in approved.output
    again = cli.invoke(share_app, ["request", "list", "--status", "approved"])
    assert "approved" in again.output and "王建国" in again.output
    grants = cli.invoke(share_app, ["grant", "list"])
    assert "market_regulation" in grants.output and "data_verification" in grants.output
    with session(settings) as s:
        assert _actions(s) == [
            "consumer.register",
            "consumer.register",
            "request.file",
            "request.approve",  # the wrong department's attempt, journaled as refused
            "request.approve",
            "grant.create",
        ]
        outcomes = s.scalars(select(AuditEntry.outcome).order_by(AuditEntry.seq)).all()
        assert outcomes[3:5] == ["refused", "ok"]


def test_cli_refuses_an_unconditional_item_with_exit_code_2(
    cli: CliRunner, settings: Settings
) -> None:
    assert cli.invoke(share_app, ["consumer", "add", USER]).exit_code == 0
    options = _cli_form()
    options[options.index("residence_address")] = "name"
    refused = cli.invoke(share_app, options)
    assert refused.exit_code == 2
    assert "name is shared unconditionally and needs no request" in refused.output
    with session(settings) as s:
        assert s.scalar(select(func.count()).select_from(AccessRequest)) == 0


def test_cli_token_is_shown_once_and_authenticates(cli: CliRunner, settings: Settings) -> None:
    assert cli.invoke(share_app, ["consumer", "add", USER]).exit_code == 0
    issued = cli.invoke(share_app, ["token", "issue", USER, "--days", "30"])
    assert issued.exit_code == 0, issued.output
    token = issued.output.strip().splitlines()[-1]
    with session(settings) as s:
        who = access.authenticate(s, token, at=datetime.now(UTC).replace(tzinfo=None))
        assert who.code == USER
    rotated = cli.invoke(share_app, ["token", "rotate", USER])
    assert rotated.exit_code == 0
    with session(settings) as s, pytest.raises(access.Unauthenticated, match="replaced"):
        access.authenticate(s, token, at=datetime.now(UTC).replace(tzinfo=None))
    suspended = cli.invoke(share_app, ["suspend", "start", USER, "--reason", "目录逾期未更新"])
    assert suspended.exit_code == 0
    assert "目录逾期未更新" in cli.invoke(share_app, ["suspend", "list"]).output
    twice = cli.invoke(share_app, ["suspend", "start", USER, "--reason", "again"])
    assert twice.exit_code == 2 and "already suspended" in twice.output
    assert cli.invoke(share_app, ["suspend", "lift", USER]).exit_code == 0
    with session(settings) as s:
        assert _actions(s) == [
            "consumer.register",
            "token.issue",
            "token.rotate",
            "suspension.start",
            "suspension.lift",
        ]
