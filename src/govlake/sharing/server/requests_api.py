"""REST endpoints for access and verification requests, under `/govlake/v1` (outside the
Delta Sharing paths). The bearer token's department files as itself and decides as the
provider; it sees its own requests and those addressed to it, nothing else.

Errors are domain errors, answered by the application (`govlake.sharing.server.errors`): a
broken rule or a bad body is `SharingError`, a decision by anyone but the provider
`AccessError`, a request the caller may not see `RequestNotFound`. Each call is journaled
once: a change by the domain function's entry in the route's transaction (`journaled`), a
read as `request.view`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from govlake.core.catalog import Catalog, CatalogError
from govlake.core.runs import naive_utc
from govlake.platform.database import (
    USAGE_SCOPES,
    AccessRequest,
    Base,
    Grant,
    VerificationRequest,
)
from govlake.sharing import requests as domain
from govlake.sharing.server.deps import (
    CatalogDep,
    ConsumerDep,
    DbDep,
    InvalidParameterRoute,
    NowDep,
    SettingsDep,
)
from govlake.sharing.server.gate import journal, journaled

PREFIX = "/govlake/v1"
#: The largest row id the platform database holds: ids are `Integer` columns, 32-bit on
#: PostgreSQL (which refuses a larger parameter) and 64-bit on SQLite (an OverflowError).
#: A larger id in a path names nothing (not found), rather than a database error.
MAX_ID = 2**31 - 1

_View = TypeVar("_View", bound=BaseModel)
_Request = TypeVar("_Request", AccessRequest, VerificationRequest)


def in_id_range(row_id: int) -> bool:
    return 0 < row_id <= MAX_ID


router = APIRouter(prefix=PREFIX, tags=["requests"], route_class=InvalidParameterRoute)


# -- bodies ---------------------------------------------------------------------------------
def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class Body(BaseModel):
    """A request body: no unknown fields, and no NUL character in any text (PostgreSQL
    cannot store one: an invalid body here rather than a database error)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text may not contain NUL characters")
        return data


class AccessRequestBody(Body):
    """The application form (中科院 annex 1) for conditional items of one resource."""

    resource: str = Field(description="qualified name, e.g. population.residents")
    items: list[str] = Field(description="conditional items asked for")
    applicant_name: str = Field(description="申请方联系人姓名")
    applicant_phone: str = Field(description="联系电话")
    applicant_email: str = Field(description="联系邮箱")
    using_department: str = Field(description="使用方名称")
    using_contact: str = Field(description="使用方联系人 (name, phone, mail)")
    service_scenario: str = Field(description="办事场景")
    usage_scope: str = Field(description=f"使用范围: one of {', '.join(USAGE_SCOPES)}")
    usage_scope_other: str | None = Field(default=None, description="for usage_scope other")
    business_system: str = Field(description="使用本资源的业务系统")
    justification: str = Field(description="why the department's duties need the items")


class ApproveBody(Body):
    by: str | None = Field(default=None, description="who decides; default the department")
    expires_at: datetime | None = Field(
        default=None, description="end of the grant: UTC, or ISO 8601 with `Z` or an offset"
    )

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # The platform stores naive UTC; an aware time would not compare with it.
        try:
            return None if value is None else naive_utc(value)
        except OverflowError as exc:  # pydantic reports only a ValueError as invalid
            raise ValueError("expires_at is out of the calendar's range in UTC") from exc


class RefuseBody(Body):
    reason: str = Field(description="the reasons for the refusal (51号 art. 12)")
    by: str | None = None


class VerificationBody(Body):
    resource: str
    key: str | dict[str, str] = Field(
        description="the record's key value, or key item → value for a composite key"
    )
    item: str
    doubted_value: str | None = Field(default=None, description="None: the value is missing")
    evidence: str = Field(description="why the value is doubted, e.g. the citizen's document")


class AnswerBody(Body):
    outcome: str = Field(description="confirmed or corrected")
    answer: str
    corrected_value: str | None = None
    by: str | None = None


# -- views ----------------------------------------------------------------------------------
class AccessRequestView(BaseModel):
    id: int
    resource: str
    provider: str
    consumer: str
    items: list[str]
    applicant_name: str
    applicant_phone: str
    applicant_email: str
    using_department: str
    using_contact: str
    service_scenario: str
    usage_scope: str
    usage_scope_other: str | None
    business_system: str
    justification: str
    filed_at: datetime
    due_on: date
    due_basis: str
    overdue: bool
    status: str
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None
    expires_at: datetime | None
    escalated_at: datetime | None
    grant_id: int | None


class VerificationView(BaseModel):
    id: int
    consumer: str
    resource: str
    provider: str
    key: dict[str, str]
    item: str
    doubted_value: str | None
    evidence: str
    filed_at: datetime
    due_on: date
    due_basis: str
    overdue: bool
    status: str
    answered_at: datetime | None
    answered_by: str | None
    answer: str | None
    corrected_value: str | None
    fixed_table: str | None
    fixed_version: int | None
    fixed_at: datetime | None


def view_of(view: type[_View], row: Base, **computed: Any) -> _View:
    """The answer's `view` of a platform row: each field the row's column of that name,
    but those `computed` (what the row does not hold as the answer gives it)."""
    fields = {name: getattr(row, name) for name in view.model_fields if name not in computed}
    return view(**fields, **computed)


def _access_view(s: Session, request: AccessRequest, at: datetime) -> AccessRequestView:
    return view_of(
        AccessRequestView,
        request,
        items=domain.request_items(request),
        overdue=request.status == "pending" and domain.overdue(request.due_on, at),
        grant_id=s.scalar(select(Grant.id).where(Grant.request_id == request.id)),
    )


def _key(catalog: Catalog, request: VerificationRequest) -> dict[str, str]:
    try:
        return domain.key_values(catalog.get(request.resource), request.key)
    except CatalogError:
        return {"key": request.key}  # the resource left the catalogue


def _verification_view(
    catalog: Catalog, request: VerificationRequest, at: datetime
) -> VerificationView:
    return view_of(
        VerificationView,
        request,
        key=_key(catalog, request),
        overdue=request.status == "open" and domain.overdue(request.due_on, at),
    )


def _visible(s: Session, model: type[_Request], request_id: int, who: str) -> _Request:
    """The request, if `who` filed it or is the party it is addressed to."""
    request = s.get(model, request_id) if in_id_range(request_id) else None
    if request is None or who not in (request.consumer, request.provider):
        what = "access" if model is AccessRequest else "verification"
        raise domain.RequestNotFound(f"no {what} request {request_id}")
    return request


# -- access requests ------------------------------------------------------------------------
@router.post("/access-requests", status_code=201)
def file_access_request(
    call: Request,
    body: AccessRequestBody,
    s: DbDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    at: NowDep,
    who: ConsumerDep,
) -> AccessRequestView:
    """File an access request for conditional items, as the token's department."""
    request = domain.file_access_request(
        s, catalog, settings, consumer=who.code, at=at, **body.model_dump()
    )
    journaled(call)  # request.file, in this transaction
    return _access_view(s, request, at)


@router.get("/access-requests")
def list_access_requests(
    call: Request, s: DbDep, at: NowDep, who: ConsumerDep, status: str | None = None
) -> list[AccessRequestView]:
    """The caller's own requests and those addressed to it as provider, oldest first."""
    found = domain.access_requests(s, party=who.code, status=status)
    views = [_access_view(s, request, at) for request in found]
    journal(call, "request.view", detail={"items": len(views), "status": status})
    return views


@router.get("/access-requests/{request_id}")
def get_access_request(
    call: Request, request_id: int, s: DbDep, at: NowDep, who: ConsumerDep
) -> AccessRequestView:
    view = _access_view(s, _visible(s, AccessRequest, request_id, who.code), at)
    journal(call, "request.view", resource=view.resource, detail={"request": request_id})
    return view


@router.post("/access-requests/{request_id}/approve")
def approve_access_request(
    call: Request,
    request_id: int,
    body: ApproveBody,
    s: DbDep,
    catalog: CatalogDep,
    at: NowDep,
    who: ConsumerDep,
) -> AccessRequestView:
    """Approve as the request's provider: the consumer gets the conditional table."""
    request = _visible(s, AccessRequest, request_id, who.code)
    domain.approve(
        s,
        catalog,
        request.id,
        provider=who.code,
        by=body.by or who.code,
        at=at,
        expires_at=body.expires_at,
    )
    journaled(call)  # request.approve (and grant.create), in this transaction
    return _access_view(s, request, at)


@router.post("/access-requests/{request_id}/refuse")
def refuse_access_request(
    call: Request, request_id: int, body: RefuseBody, s: DbDep, at: NowDep, who: ConsumerDep
) -> AccessRequestView:
    """Refuse as the request's provider, with reasons."""
    request = _visible(s, AccessRequest, request_id, who.code)
    domain.refuse(
        s, request.id, provider=who.code, by=body.by or who.code, reason=body.reason, at=at
    )
    journaled(call)  # request.refuse, in this transaction
    return _access_view(s, request, at)


# -- verification requests ------------------------------------------------------------------
@router.post("/verification-requests", status_code=201)
def file_verification_request(
    call: Request,
    body: VerificationBody,
    s: DbDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    at: NowDep,
    who: ConsumerDep,
) -> VerificationView:
    """Flag a doubted value to the item's authority (快速校核, 51号 art. 15)."""
    request = domain.file_verification(
        s, catalog, settings, consumer=who.code, at=at, **body.model_dump()
    )
    journaled(call)  # verification.file, in this transaction
    return _verification_view(catalog, request, at)


@router.get("/verification-requests")
def list_verification_requests(
    call: Request,
    s: DbDep,
    catalog: CatalogDep,
    at: NowDep,
    who: ConsumerDep,
    status: str | None = None,
) -> list[VerificationView]:
    found = domain.verification_requests(s, party=who.code, status=status)
    views = [_verification_view(catalog, request, at) for request in found]
    journal(call, "request.view", detail={"items": len(views), "status": status})
    return views


@router.get("/verification-requests/{request_id}")
def get_verification_request(
    call: Request, request_id: int, s: DbDep, catalog: CatalogDep, at: NowDep, who: ConsumerDep
) -> VerificationView:
    view = _verification_view(catalog, _visible(s, VerificationRequest, request_id, who.code), at)
    journal(call, "request.view", resource=view.resource, detail={"verification": request_id})
    return view


@router.post("/verification-requests/{request_id}/answer")
def answer_verification_request(
    call: Request,
    request_id: int,
    body: AnswerBody,
    s: DbDep,
    catalog: CatalogDep,
    at: NowDep,
    who: ConsumerDep,
) -> VerificationView:
    """Confirm or correct the value, as the item's authority."""
    request = _visible(s, VerificationRequest, request_id, who.code)
    domain.answer_verification(
        s,
        catalog,
        request.id,
        provider=who.code,
        by=body.by or who.code,
        at=at,
        outcome=body.outcome,
        answer=body.answer,
        corrected_value=body.corrected_value,
    )
    journaled(call)  # verification.answer, in this transaction
    return _verification_view(catalog, request, at)
