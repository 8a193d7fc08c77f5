"""`govlake share subscription …`: subscriptions to new published versions (订阅), their webhook
deliveries, and the later retries of deliveries that failed. Each command is one
transaction on the platform database (a retry: a few short ones); a broken rule prints in
red and exits with code 2, as in `govlake share`."""

from __future__ import annotations

from typing import Annotated, cast

import typer
from rich.table import Table as RichTable

from govlake.core.catalog import CatalogError, SharingClass
from govlake.platform.database import WebhookDelivery
from govlake.sharing import access, sealing
from govlake.sharing import subscriptions as domain
from govlake.sharing.access import AccessError, SharingError
from govlake_app.cli.console import (
    By,
    OnlyConsumer,
    console,
    fail,
    load_catalog,
    load_settings,
    now,
    user,
    work,
)

subscription_app = typer.Typer(
    help="Subscriptions (订阅): mail and webhook notices of new published versions.",
    no_args_is_help=True,
)

#: The errors of a broken rule: the transaction rolls back and the command exits 2.
REFUSED = (SharingError, AccessError, CatalogError)


def _sharing_class(value: str | None) -> SharingClass | None:
    if value is None:
        return None
    if value not in domain.SHARING_CLASSES:
        raise typer.BadParameter(
            f"--class {value!r} is not one of {', '.join(domain.SHARING_CLASSES)}"
        )
    return cast(SharingClass, value)


@subscription_app.command("add")
def subscription_add(
    consumer: Annotated[str, typer.Argument(help="the subscribing consumer (department code)")],
    resource: Annotated[str, typer.Argument(help="e.g. population.residents")],
    email: Annotated[
        str | None, typer.Option(help="where notices go; default the consumer's contact")
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(help="URL that receives a signed JSON POST per version")
    ] = None,
    sharing_class: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="only this table (unconditional or conditional); default every "
            "table the consumer may read when a version comes out",
        ),
    ] = None,
    by: By = None,
) -> None:
    """Subscribe a consumer to the new versions of a resource it may read."""
    at = now()
    chosen = _sharing_class(sharing_class)
    with work(*REFUSED) as (settings, catalog, s):
        made, secret = domain.subscribe(
            s,
            catalog,
            settings,
            consumer=consumer,
            resource=resource,
            sharing_class=chosen,
            email=email,
            webhook_url=webhook,
            by=by or user(),
            at=at,
        )
        now_readable = [
            table.full_name
            for table, decision in domain.readable(
                s,
                catalog,
                settings,
                consumer=access.consumer(s, consumer),
                resource=made.resource,
                sharing_class=chosen,
                at=at,
            )
            if decision.allowed
        ]
    console.print(
        f"subscription {made.id}: {made.consumer} is notified of new versions of "
        f"{made.resource} ({made.sharing_class or 'every table it may read'}) at {made.email}"
        + (f" and {made.webhook_url}" if made.webhook_url else ""),
        highlight=False,
    )
    console.print(f"it may read now: {', '.join(now_readable)}", highlight=False)
    if secret is not None:
        console.print(
            "webhook secret (shown once, keep it safe; requests carry X-Govlake-Signature: "
            "sha256=HMAC-SHA256(secret, '<X-Govlake-Timestamp>.' + body)):",
            highlight=False,
        )
        console.print(secret, highlight=False, soft_wrap=True)


@subscription_app.command("list")
def subscription_list(
    consumer: OnlyConsumer = None,
    resource: Annotated[str | None, typer.Option(help="only this resource's")] = None,
    all_: Annotated[bool, typer.Option("--all", help="cancelled ones too")] = False,
) -> None:
    """Subscriptions (in force, or all) with their last webhook delivery."""
    with work(*REFUSED) as (_, _catalog, s):
        found = domain.list_subscriptions(
            s, consumer=consumer, resource=resource, include_cancelled=all_
        )
        last: dict[int, WebhookDelivery | None] = {}
        for sub in found:
            sent = domain.deliveries(s, subscription_id=sub.id)
            last[sub.id] = sent[-1] if sent else None
    table = RichTable(title="subscriptions")
    for column in ("id", "consumer", "resource", "class"):
        table.add_column(column, no_wrap=True)
    table.add_column("notices to", overflow="fold", min_width=30)
    for column in ("state", "last delivery"):
        table.add_column(column, overflow="fold", min_width=12)
    for sub in found:
        delivery = last[sub.id]
        state = f"since {sub.created_at:%Y-%m-%d}"
        if sub.cancelled_at is not None:
            state = f"cancelled {sub.cancelled_at:%Y-%m-%d} by {sub.cancelled_by}"
        table.add_row(
            str(sub.id),
            sub.consumer,
            sub.resource,
            sub.sharing_class or "all readable",
            "\n".join(filter(None, [sub.email, sub.webhook_url])),
            state,
            f"{delivery.status}, {delivery.attempts} attempt(s)" if delivery else "",
        )
    console.print(table)
    console.print(f"{len(found)} subscription(s)")


@subscription_app.command("cancel")
def subscription_cancel(subscription_id: int, by: By = None) -> None:
    """Cancel a subscription: no more notices; its waiting retries are dropped."""
    at = now()
    with work(*REFUSED) as (_, _catalog, s):
        found = domain.unsubscribe(s, subscription_id, by=by or user(), at=at)
    console.print(
        f"cancelled subscription {found.id}: {found.consumer} on {found.resource}",
        highlight=False,
    )


@subscription_app.command("deliveries")
def subscription_deliveries(
    subscription_id: Annotated[int | None, typer.Option("--subscription", help="only its")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending, delivered, retrying, failed or dropped")
    ] = None,
) -> None:
    """Webhook deliveries with their attempts and where they stand."""
    with work(*REFUSED) as (_, _catalog, s):
        found = domain.deliveries(s, subscription_id=subscription_id, status=status)
    table = RichTable(title="webhook deliveries")
    for column in ("delivery", "subscription", "consumer", "resource", "created", "status"):
        table.add_column(column, no_wrap=True)
    for column in ("attempts", "last answer", "next retry"):
        table.add_column(column, overflow="fold", min_width=10)
    for d in found:
        table.add_row(
            d.delivery_id,
            str(d.subscription_id),
            d.consumer,
            d.resource,
            f"{d.created_at:%Y-%m-%d %H:%M}",
            d.status,
            str(d.attempts),
            d.last_error or (f"HTTP {d.last_status_code}" if d.last_status_code else ""),
            f"{d.next_retry_at:%Y-%m-%d %H:%M}" if d.next_retry_at else "",
        )
    console.print(table)
    console.print(f"{len(found)} delivery(ies)")


@subscription_app.command("retry")
def subscription_retry() -> None:
    """Send again the webhook deliveries whose retry time has come (one attempt each)."""
    at = now()
    settings = load_settings()
    catalog = load_catalog(settings)
    notices = domain.retry_deliveries(settings, at=at, catalog=catalog)
    if not notices:
        console.print("no webhook delivery is due for a retry")
        return
    for notice in notices:
        state = notice.outcome + (f": {notice.detail}" if notice.detail else "")
        console.print(
            f"delivery {notice.delivery_id} (subscription {notice.subscription_id}, "
            f"{notice.consumer}) {state}",
            highlight=False,
        )


@subscription_app.command("rotate-key")
def subscription_rotate_key(
    new_key: Annotated[
        bool,
        typer.Option("--new-key", help="first put a fresh key first in the key file"),
    ] = False,
    retire: Annotated[
        bool,
        typer.Option("--retire", help="then keep only the newest key in the key file"),
    ] = False,
) -> None:
    """Seal every stored webhook secret again under the newest platform key (and seal the
    secrets an earlier version stored in plain text). Keys: GOVLAKE_SECRETS_KEY, newest
    first, or the key file."""
    settings = load_settings()
    try:
        if new_key:
            path = sealing.add_key(settings)
            console.print(f"a new key is first in {path}", highlight=False)
        done = sealing.rotate(settings, by=user(), at=now(), retire=retire)
    except sealing.SealingError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"{done.resealed} webhook secret(s) sealed again under the newest of {done.keys} "
        f"key(s); {done.plain} stored in plain text sealed",
        highlight=False,
    )
    if done.retired:
        console.print(f"{done.retired} older key(s) removed from the key file", highlight=False)
    elif done.keys > 1:
        console.print(
            "every secret opens with the newest key alone now: the older keys may be removed",
            highlight=False,
        )
