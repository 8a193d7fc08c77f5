"""Who may read what: consumers and their bearer tokens, grants by sharing type, suspensions.

- Tokens are random 256-bit strings handed out once; only their SHA-256 hash is stored.
  Each has an expiry; rotation issues a new token and ends the old ones (optionally after
  an overlap so that a department can roll its profile file over).
- Shares are the themes, each with one schema of the same name, and the tables are the
  published tables: `population.population.residents_unconditional` is share `population`,
  schema `population`, table `residents_unconditional`, the same name as in SQL after the
  share. `not_shared` items are never published, so there is nothing to expose.
- Unconditional tables are readable by every active consumer; conditional tables only
  through an active grant (from an approved access request) or by the resource's
  responsible provider. A suspended department (宝鸡 art. 29) reads nothing but its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from govlake.core.catalog import Catalog, CatalogError, Resource, SharingClass
from govlake.core.errors import GovlakeError
from govlake.core.location import Location
from govlake.core.settings import Settings
from govlake.lake.tables import TableSet
from govlake.platform.database import Base, Consumer, Grant, Suspension, Token, overlong

DEFAULT_TOKEN_DAYS = 90

_Row = TypeVar("_Row")


class AccessError(GovlakeError):
    """A refusal: the caller may not do or see what it asks."""


class Unauthenticated(AccessError):
    """No bearer token, or one that does not (or no longer) authenticates a consumer."""


class SharingError(GovlakeError, ValueError):
    """A request to the platform that breaks a rule (unknown consumer, bad grant, ...)."""


# -- consumers and tokens -----------------------------------------------------------------------
def _fits(model: type[Base], **values: str | None) -> None:
    """Refuse text longer than its column, on SQLite as on PostgreSQL."""
    if too_long := overlong(model, values):
        raise SharingError("; ".join(too_long))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def register_consumer(
    s: Session, catalog: Catalog, code: str, *, email: str | None, at: datetime
) -> Consumer:
    """Register a department of the catalogue's department list as a consumer."""
    department = catalog.department(code)
    if s.get(Consumer, code) is not None:
        raise SharingError(f"consumer {code} is already registered")
    _fits(Consumer, contact_email=email)
    consumer = Consumer(
        code=code,
        name=department.name,
        contact_email=email or department.steward.email,
        registered_at=at,
        active=True,
    )
    s.add(consumer)
    s.flush()
    return consumer


def consumer(s: Session, code: str) -> Consumer:
    found = s.get(Consumer, code)
    if found is None:
        raise SharingError(f"no consumer {code}: register it with `govlake share consumer add`")
    return found


def resource(catalog: Catalog, name: str) -> Resource:
    """The catalogue's resource `name`; an unknown one is a `SharingError`."""
    try:
        return catalog.get(name)
    except CatalogError as exc:
        raise SharingError(str(exc)) from exc


def where_given(query: Select[_Row], model: type[Base], **values: object) -> Select[_Row]:
    """`query` narrowed to the rows of `model` whose columns equal the values given (not
    None): the filters of the listings of requests, subscriptions and deliveries."""
    for column, value in values.items():
        if value is not None:
            query = query.where(getattr(model, column) == value)
    return query


def issue_token(s: Session, code: str, *, at: datetime, days: int = DEFAULT_TOKEN_DAYS) -> str:
    """A new bearer token for `code`; the plain value is returned once and never stored."""
    if days < 1:
        raise SharingError(f"a token must be valid for at least one day, got {days}")
    consumer(s, code)
    value = secrets.token_urlsafe(32)
    s.add(
        Token(
            consumer=code,
            token_hash=hash_token(value),
            issued_at=at,
            expires_at=at + timedelta(days=days),
        )
    )
    s.flush()
    return value


def rotate_token(
    s: Session,
    code: str,
    *,
    at: datetime,
    days: int = DEFAULT_TOKEN_DAYS,
    overlap: timedelta = timedelta(0),
) -> str:
    """Issue a new token and end every other live token of `code` after `overlap` (not the
    access tokens of its OAuth clients: revoking a client ends those)."""
    ends = at + overlap
    for token in s.scalars(select(Token).where(Token.consumer == code, Token.revoked_at.is_(None),
                                               Token.client_id.is_(None))):  # fmt: skip
        token.revoked_at = min(ends, token.expires_at)
    return issue_token(s, code, at=at, days=days)


def authenticate(s: Session, bearer: str | None, *, at: datetime) -> Consumer:
    """The consumer a bearer token belongs to, or `Unauthenticated`."""
    return authenticated(s, bearer, at=at)[0]


def authenticated(s: Session, bearer: str | None, *, at: datetime) -> tuple[Consumer, datetime]:
    """The consumer a bearer token belongs to and the moment the token stops authenticating
    it (its expiry, or its revocation when one is set for later); `Unauthenticated` if it
    does not at `at`."""
    if not bearer:
        raise Unauthenticated("a bearer token is required")
    digest = hash_token(bearer)
    token = s.scalar(select(Token).where(Token.token_hash == digest))
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise Unauthenticated("the bearer token is not valid")
    if token.expires_at <= at:
        raise Unauthenticated(f"the bearer token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC")
    if token.revoked_at is not None and token.revoked_at <= at:
        raise Unauthenticated("the bearer token was replaced or revoked")
    found = s.get(Consumer, token.consumer)
    if found is None or not found.active:
        raise Unauthenticated(f"consumer {token.consumer} is not active")
    return found, min(token.expires_at, token.revoked_at or datetime.max)


# -- suspensions ----------------------------------------------------------------------------
def active_suspension(s: Session, department: str, *, at: datetime) -> Suspension | None:
    return s.scalar(
        select(Suspension)
        .where(
            Suspension.department == department,
            Suspension.suspended_at <= at,
            Suspension.lifted_at.is_(None),
        )
        .order_by(Suspension.suspended_at.desc())
    )


def suspend(
    s: Session, catalog: Catalog, department: str, *, reason: str, by: str, at: datetime
) -> Suspension:
    catalog.department(department)
    if not reason.strip():
        raise SharingError("a suspension needs its reason (the missed rectification)")
    if active_suspension(s, department, at=at) is not None:
        raise SharingError(f"{department} is already suspended")
    _fits(Suspension, suspended_by=by)
    suspension = Suspension(department=department, reason=reason, suspended_at=at, suspended_by=by)
    s.add(suspension)
    s.flush()
    return suspension


def lift(s: Session, department: str, *, by: str, at: datetime) -> Suspension:
    suspension = active_suspension(s, department, at=at)
    if suspension is None:
        raise SharingError(f"{department} is not suspended")
    _fits(Suspension, lifted_by=by)
    suspension.lifted_at, suspension.lifted_by = at, by
    return suspension


# -- grants ---------------------------------------------------------------------------------
def grant(
    s: Session,
    catalog: Catalog,
    code: str,
    resource_name: str,
    *,
    purpose: str,
    by: str,
    at: datetime,
    expires_at: datetime | None = None,
    request_id: int | None = None,
) -> Grant:
    """Give `code` the conditional table of a resource, for a purpose."""
    consumer(s, code)
    resource = catalog.get(resource_name)
    if "conditional" not in resource.sharing_classes:
        raise SharingError(
            f"{resource_name} publishes no conditional items: "
            + (
                "its unconditional table needs no grant"
                if resource.sharing_classes
                else "it is not shared"
            )
        )
    if expires_at is not None and expires_at <= at:
        raise SharingError("a grant's expiry must be after the time it is granted")
    _fits(Grant, purpose=purpose, granted_by=by)
    made = Grant(
        consumer=code,
        resource=resource.qualified_name,
        sharing_class="conditional",
        purpose=purpose,
        granted_at=at,
        granted_by=by,
        expires_at=expires_at,
        request_id=request_id,
    )
    s.add(made)
    s.flush()
    return made


def revoke(s: Session, grant_id: int, *, reason: str, at: datetime) -> Grant:
    found = s.get(Grant, grant_id)
    if found is None:
        raise SharingError(f"no grant {grant_id}")
    if found.revoked_at is not None:
        raise SharingError(f"grant {grant_id} was already revoked")
    found.revoked_at, found.revoke_reason = at, reason
    return found


def active_grant(s: Session, code: str, resource: str, *, at: datetime) -> Grant | None:
    return s.scalar(
        select(Grant)
        .where(
            Grant.consumer == code,
            Grant.resource == resource,
            Grant.granted_at <= at,
            Grant.revoked_at.is_(None) | (Grant.revoked_at > at),
            Grant.expires_at.is_(None) | (Grant.expires_at > at),
        )
        .order_by(Grant.granted_at.desc())
    )


# -- shared tables --------------------------------------------------------------------------
@dataclass(frozen=True)
class SharedTable:
    """A published table as the sharing protocol names it."""

    share: str
    schema: str
    name: str
    resource: Resource
    sharing_class: SharingClass
    location: Location

    @property
    def full_name(self) -> str:
        return f"{self.share}.{self.schema}.{self.name}"


def shared_tables(catalog: Catalog, settings: Settings) -> list[SharedTable]:
    """Every table the catalogue publishes, published yet or not."""
    found = []
    for resource in catalog:
        tables = TableSet(resource, settings.warehouse_location)
        for sharing_class in resource.sharing_classes:
            table = tables.published(sharing_class)
            found.append(
                SharedTable(
                    resource.theme,
                    resource.theme,
                    table.name,
                    resource,
                    sharing_class,
                    table.location,
                )
            )
    return found


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    purpose: str | None = None
    grant_id: int | None = None


def decide(s: Session, who: Consumer, table: SharedTable, *, at: datetime) -> Decision:
    """May `who` read `table` at `at`, and under which purpose."""
    own = who.code == table.resource.provider
    suspension = active_suspension(s, who.code, at=at)
    if suspension is not None and not own:
        return Decision(
            False,
            f"department {who.code} is suspended since "
            f"{suspension.suspended_at:%Y-%m-%d}: {suspension.reason}",
        )
    if table.sharing_class == "unconditional":
        return Decision(True, "unconditional")
    if own:
        return Decision(True, "responsible provider")
    found = active_grant(s, who.code, table.resource.qualified_name, at=at)
    if found is None:
        return Decision(
            False,
            f"{table.full_name} is conditional: {who.code} holds no active "
            "grant (file an access request)",
        )
    return Decision(True, f"grant {found.id}", purpose=found.purpose, grant_id=found.id)


def decided_until(s: Session, who: Consumer, table: SharedTable, *, at: datetime) -> datetime:
    """The first moment after `at` at which `decide` may answer otherwise for `who` and
    `table` with the platform's rows as they are: a suspension of `who` set to start, a
    grant of the table's resource set to start, expire or be revoked (`datetime.max`: none).
    A row written later changes the answer sooner; that is the caches' concern."""
    moments = [datetime.max]
    moments += s.scalars(select(Suspension.suspended_at).where(
        Suspension.department == who.code, Suspension.suspended_at > at,
        Suspension.lifted_at.is_(None)))  # fmt: skip
    if table.sharing_class != "unconditional" and who.code != table.resource.provider:
        grants = select(Grant.granted_at, Grant.expires_at, Grant.revoked_at).where(
            Grant.consumer == who.code, Grant.resource == table.resource.qualified_name
        )
        for row in s.execute(grants):
            moments += [m for m in row if m is not None and m > at]
    return min(moments)
