"""REST endpoints for subscriptions (订阅) under `/govlake/v1`, next to the requests API: the
bearer token's department subscribes itself to a resource it may read, lists and cancels
its own subscriptions and sees their webhook deliveries; nothing of another department's.

Errors as in `requests_api`: a bad body or a broken rule is `SharingError`, a resource the
caller may not read `SubscriptionRefused`, another department's or an unknown subscription
`SubscriptionNotFound`. The webhook secret is in the answer to
the POST and nowhere else. Of a delivery the consumer sees whether it went through and the
class of the receiver's last answer (`2xx`…`5xx`, or `unreachable`), never the error or the
exact code: those would tell it how an address it named answers the platform. Operators find
the detail in the journal, the delivery's row and `govlake share subscription deliveries`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from govlake.core.catalog import SharingClass
from govlake.platform.database import Subscription, WebhookDelivery
from govlake.sharing import subscriptions as domain
from govlake.sharing.server import deps
from govlake.sharing.server.deps import CatalogDep, ConsumerDep, DbDep, NowDep, SettingsDep
from govlake.sharing.server.gate import journal, journaled
from govlake.sharing.server.requests_api import PREFIX, Body, in_id_range, view_of

router = APIRouter(prefix=PREFIX, tags=["subscriptions"], route_class=deps.InvalidParameterRoute)


class SubscriptionBody(Body):
    resource: str = Field(description="qualified name, e.g. population.residents")
    sharing_class: SharingClass | None = Field(
        default=None,
        description="only this table; default every table of the resource the department "
        "may read when a version comes out",
    )
    email: str | None = Field(default=None, description="default the department's contact")
    webhook_url: str | None = Field(
        default=None, description="http(s) URL receiving a signed JSON POST per new version"
    )


class SubscriptionView(BaseModel):
    id: int
    consumer: str
    resource: str
    sharing_class: str | None
    email: str
    webhook_url: str | None
    created_at: datetime
    created_by: str
    cancelled_at: datetime | None
    cancelled_by: str | None
    active: bool


class CreatedSubscription(SubscriptionView):
    webhook_secret: str | None = Field(
        description="the webhook's HMAC key, shown only in this answer: X-Govlake-Signature "
        "is sha256=<hex HMAC-SHA256(secret, '<X-Govlake-Timestamp>.' + raw body)>"
    )


class DeliveryView(BaseModel):
    delivery_id: str
    subscription_id: int
    resource: str
    url: str
    created_at: datetime
    status: str
    attempts: int
    last_result: Literal["2xx", "3xx", "4xx", "5xx", "unreachable"] | None = Field(
        description="the class of the receiver's last answer; unreachable: no answer (no "
        "connection, a timeout, or an address webhooks may not go to); null: not sent yet"
    )
    next_retry_at: datetime | None
    delivered_at: datetime | None


def _view(sub: Subscription) -> SubscriptionView:
    return view_of(SubscriptionView, sub, active=sub.cancelled_at is None)


def _result_class(
    d: WebhookDelivery,
) -> Literal["2xx", "3xx", "4xx", "5xx", "unreachable"] | None:
    if d.attempts == 0:
        return None
    code = d.last_status_code
    if code is None or not 200 <= code < 600:
        return "unreachable"
    return ("2xx", "3xx", "4xx", "5xx")[code // 100 - 2]


def _delivery_view(d: WebhookDelivery) -> DeliveryView:
    return view_of(DeliveryView, d, last_result=_result_class(d))


def _checked(subscription_id: int) -> int:
    """`subscription_id`, if the database can hold it: beyond its range, no subscription
    rather than a database error."""
    if not in_id_range(subscription_id):
        raise domain.SubscriptionNotFound(f"no subscription {subscription_id}")
    return subscription_id


def _own(s: Session, subscription_id: int, who: str) -> Subscription:
    return domain.subscription(s, _checked(subscription_id), consumer=who)


@router.post("/subscriptions", status_code=201)
def create_subscription(
    call: Request,
    body: SubscriptionBody,
    s: DbDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    at: NowDep,
    who: ConsumerDep,
) -> CreatedSubscription:
    """Subscribe the token's department to the new versions of a resource it may read."""
    made, secret = domain.subscribe(
        s, catalog, settings, consumer=who.code, at=at, **body.model_dump()
    )
    journaled(call)  # subscription.create, in this transaction
    return CreatedSubscription(**_view(made).model_dump(), webhook_secret=secret)


@router.get("/subscriptions")
def list_subscriptions(
    call: Request, s: DbDep, who: ConsumerDep, include_cancelled: bool = False
) -> list[SubscriptionView]:
    """The department's subscriptions, oldest first (in force, or all)."""
    found = domain.list_subscriptions(s, consumer=who.code, include_cancelled=include_cancelled)
    journal(call, "request.view", detail={"items": len(found)})
    return [_view(sub) for sub in found]


@router.get("/subscriptions/{subscription_id}")
def get_subscription(
    call: Request, subscription_id: int, s: DbDep, who: ConsumerDep
) -> SubscriptionView:
    sub = _own(s, subscription_id, who.code)
    journal(call, "request.view", resource=sub.resource, detail={"subscription": sub.id})
    return _view(sub)


@router.delete("/subscriptions/{subscription_id}")
def cancel_subscription(
    call: Request, subscription_id: int, s: DbDep, at: NowDep, who: ConsumerDep
) -> SubscriptionView:
    """Cancel one of the department's subscriptions."""
    cancelled = domain.unsubscribe(s, _checked(subscription_id), consumer=who.code, at=at)
    journaled(call)  # subscription.cancel, in this transaction
    return _view(cancelled)


@router.get("/subscriptions/{subscription_id}/deliveries")
def list_deliveries(
    call: Request, subscription_id: int, s: DbDep, who: ConsumerDep
) -> list[DeliveryView]:
    """The webhook deliveries of one of the department's subscriptions, oldest first."""
    sub = _own(s, subscription_id, who.code)
    found = domain.deliveries(s, subscription_id=sub.id)
    journal(call, "request.view", resource=sub.resource,
            detail={"subscription": sub.id, "items": len(found)})  # fmt: skip
    return [_delivery_view(d) for d in found]
