"""Subscriptions on a real platform database (SQLite and PostgreSQL), with real receivers: an
aiosmtpd mail server and an HTTP webhook receiver that checks every signature with the
subscription's secret and fails on demand (503s, a 400, a slow answer) to prove the retries.
One end-to-end test publishes a generated resource through the pipeline and reads the
notified version back with delta-rs."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support import (
    AT,
    GRANTED,
    PROVIDER,
    RESIDENTS,
    USER,
    Inbox,
    Receiver,
    delivery_of,
    hooked,
    journal_entries,
    lake_settings,
    subscribe,
    subscriptions_app,
    versions,
)
from typer.testing import CliRunner

from govlake.core.catalog import Catalog, Resource, check_rules
from govlake.core.net import free_port
from govlake.core.settings import Settings
from govlake.lake.reads import read_delta
from govlake.platform.database import (
    Notification,
    Subscription,
    session,
)
from govlake.sharing import access, sealing
from govlake.sharing import subscriptions as subs
from govlake.sharing.access import SharingError
from govlake.sharing.subscriptions import PublishedVersion
from govlake_app.cli.subscriptions import subscription_app

#: Every test that uses `settings` runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.platform_state

UNCONDITIONAL = "population.population.residents_unconditional"
CONDITIONAL = "population.population.residents_conditional"


def _conditional_only(catalog: Catalog) -> Catalog:
    """The catalogue with the residents shared only conditionally (no base items)."""
    raw = catalog.get(RESIDENTS).model_dump()
    for item in raw["items"]:
        if item["name"] != "citizen_id":
            item["base_item"], item["sharing"] = False, None
    changed = Resource.model_validate(raw)
    check_rules(changed)
    others = [r for r in catalog if r.qualified_name != RESIDENTS]
    return Catalog([changed, *others], catalog.departments)


# -- subscribing ----------------------------------------------------------------------------
def test_subscribing_needs_a_table_the_consumer_may_read(db: Settings, catalog: Catalog) -> None:
    only_conditional = _conditional_only(catalog)
    refused = [
        (catalog, {"consumer": "police"}, SharingError, "no consumer police"),
        (catalog, {"resource": "population.pets"}, SharingError, "unknown resource"),
        (
            only_conditional,
            {},
            subs.SubscriptionRefused,
            f"{USER} may not subscribe to {RESIDENTS}: it may read none of it "
            f"\\({CONDITIONAL} is conditional: {USER} holds no active grant",
        ),
        (
            catalog,
            {"sharing_class": "conditional"},
            subs.SubscriptionRefused,
            f"{USER} may not subscribe to the conditional table of {RESIDENTS}",
        ),
        (catalog, {"email": "nobody"}, SharingError, "'nobody' is not a mail address"),
        (catalog, {"webhook_url": "ftp://x.example/hook"}, SharingError, "http:// or https://"),
        (catalog, {"webhook_url": "https://u:p@x.example/"}, SharingError, "credentials"),
        (
            catalog,
            {"webhook_url": "https://x.example/" + "a" * 500},
            SharingError,
            "webhook_url has 518 characters, at most 500",
        ),
    ]
    for used, overrides, error, message in refused:
        options: dict[str, Any] = {"consumer": USER, "resource": RESIDENTS, **overrides}
        with session(db) as s, pytest.raises(error, match=message):
            subs.subscribe(s, used, db, at=AT, **options)
    # The provider reads its own conditional table; a grant holder reads it too.
    assert subscribe(db, only_conditional, PROVIDER)[1] is None
    assert subscribe(db, only_conditional, GRANTED, sharing_class="conditional")[1] is None
    with session(db) as s:
        access.suspend(s, catalog, USER, reason="catalogue not updated", by="bureau", at=AT)
    with session(db) as s, pytest.raises(subs.SubscriptionRefused, match="suspended since"):
        subs.subscribe(s, catalog, db, consumer=USER, resource=RESIDENTS, at=AT)
    with session(db) as s:
        stored = s.scalars(select(Subscription).order_by(Subscription.id)).all()
        assert [(x.consumer, x.sharing_class) for x in stored] == [
            (PROVIDER, None),
            (GRANTED, "conditional"),
        ]
        assert stored[0].email == f"data@{PROVIDER}.gov.example"  # the contact by default
    created = journal_entries(db, "subscription.create")
    assert [json.loads(e.detail)["readable_now"] for e in created] == [[CONDITIONAL]] * 2


def test_a_duplicate_is_refused_and_only_the_owner_cancels(db: Settings, catalog: Catalog) -> None:
    sub_id, _ = subscribe(db, catalog, USER)
    with session(db) as s, pytest.raises(SharingError, match=f"already subscribes .*{sub_id}"):
        subs.subscribe(s, catalog, db, consumer=USER, resource=RESIDENTS, at=AT)
    # Another address is another subscription.
    subscribe(db, catalog, USER, email="other@market.gov.example")
    with session(db) as s, pytest.raises(subs.SubscriptionNotFound):
        subs.unsubscribe(s, sub_id, consumer=GRANTED, at=AT)
    with session(db) as s:
        subs.unsubscribe(s, sub_id, consumer=USER, at=AT + timedelta(hours=1))
    with session(db) as s, pytest.raises(SharingError, match="already cancelled"):
        subs.unsubscribe(s, sub_id, at=AT + timedelta(hours=2))
    with session(db) as s:
        assert [x.email for x in subs.list_subscriptions(s, consumer=USER)] == [
            "other@market.gov.example"
        ]
        assert len(subs.list_subscriptions(s, include_cancelled=True)) == 2
    (cancelled,) = journal_entries(db, "subscription.cancel")
    assert (cancelled.actor, cancelled.consumer) == (USER, USER)
    # Once cancelled, the same subscription may be made again.
    subscribe(db, catalog, USER)


# -- notices --------------------------------------------------------------------------------
def test_each_subscriber_hears_of_the_tables_it_may_read(
    db: Settings, catalog: Catalog, smtp: tuple[Inbox, int], receiver: Receiver
) -> None:
    inbox, _ = smtp
    user_sub = hooked(db, catalog, receiver, USER, "/market")
    assert subscribe(db, catalog, GRANTED)[1] is None  # no webhook, no secret

    notices = subs.notify_publication(
        db, catalog, resource=RESIDENTS, versions=versions(), at=AT + timedelta(minutes=5)
    )
    by_channel = {(n.consumer, n.channel): n for n in notices}
    assert by_channel[(USER, "none")].tables == (CONDITIONAL,)
    assert "holds no active grant" in str(by_channel[(USER, "none")].detail)
    assert by_channel[(USER, "email")].tables == (UNCONDITIONAL,)
    assert by_channel[(USER, "email")].outcome == "sent"
    assert by_channel[(USER, "webhook")].outcome == "delivered"
    assert by_channel[(GRANTED, "email")].tables == (UNCONDITIONAL, CONDITIONAL)
    assert (GRANTED, "webhook") not in by_channel

    # The mail names the table as the sharing client does, the version, rows and how to read.
    (user_mail,) = inbox.texts(f"data@{USER}.gov.example")
    assert "residents_unconditional v3" in user_mail.splitlines()[0]
    for expected in (
        UNCONDITIONAL,
        "Version:    3",
        "Rows:       600",
        "Published:  2026-11-04 02:00:00 UTC",
        "load_as_pandas(table, version=3)",
        "https://share.platform.gov.example/delta-sharing",
        f"subscription cancel {user_sub}",
    ):
        assert expected in user_mail
    assert CONDITIONAL not in user_mail
    (granted_mail,) = inbox.texts(f"data@{GRANTED}.gov.example")
    assert UNCONDITIONAL in granted_mail and CONDITIONAL in granted_mail
    assert "grant 1 for administrative_basis" in granted_mail

    # The webhook: one signed request naming only the readable table.
    (hit,) = receiver.at("/market")
    assert hit.verified and hit.answered == 200
    assert hit.headers["x-govlake-event"] == "subscription.version"
    assert hit.headers["x-govlake-delivery"] == hit.payload["delivery_id"]
    assert hit.headers["x-govlake-attempt"] == "1"
    assert hit.payload["subscription_id"] == user_sub
    assert [
        (t["full_name"], t["version"], t["rows"], t["published_at"]) for t in hit.payload["tables"]
    ] == [(UNCONDITIONAL, 3, 600, "2026-11-04T02:00:00Z")]
    delivery = delivery_of(db, user_sub)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.next_retry_at is None and delivery.delivered_at == AT + timedelta(minutes=5)

    with session(db) as s:
        notes = s.scalars(select(Notification).order_by(Notification.id)).all()
        assert [(n.kind, n.recipient, n.sent, n.error) for n in notes] == [
            ("subscription.version", f"data@{USER}.gov.example", True, None),
            ("subscription.version", f"data@{GRANTED}.gov.example", True, None),
        ]
    journal = [
        (e.consumer, json.loads(e.detail)["channel"], e.table_name, e.version, e.outcome)
        for e in journal_entries(db)
    ]
    assert sorted(journal) == sorted(
        [
            (USER, "none", CONDITIONAL, 3, "refused"),
            (USER, "email", UNCONDITIONAL, 3, "ok"),
            (USER, "webhook", UNCONDITIONAL, 3, "ok"),
            (GRANTED, "email", UNCONDITIONAL, 3, "ok"),
            (GRANTED, "email", CONDITIONAL, 3, "ok"),
        ]
    )
    granted_conditional = next(
        e for e in journal_entries(db) if e.table_name == CONDITIONAL and e.consumer == GRANTED
    )
    assert granted_conditional.purpose == "administrative_basis"


def test_a_revoked_grant_or_a_suspension_stops_the_notices(
    db: Settings, catalog: Catalog, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    subscribe(db, catalog, GRANTED, sharing_class="conditional")
    subscribe(db, catalog, USER, sharing_class="unconditional")
    first = subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(3, 3), at=AT)
    assert sorted((n.consumer, n.outcome) for n in first) == [(USER, "sent"), (GRANTED, "sent")]

    with session(db) as s:
        access.revoke(s, 1, reason="purpose fulfilled", at=AT + timedelta(days=1))
        access.suspend(
            s,
            catalog,
            USER,
            reason="data not provided in time",
            by="bureau",
            at=AT + timedelta(days=1),
        )
    second = subs.notify_publication(
        db, catalog, resource=RESIDENTS, versions=versions(4, 4), at=AT + timedelta(days=2)
    )
    assert [(n.consumer, n.channel, n.outcome) for n in second] == [
        (GRANTED, "none", "refused"),
        (USER, "none", "refused"),
    ]
    assert "holds no active grant" in str(second[0].detail)
    assert "suspended since 2026-11-05: data not provided in time" in str(second[1].detail)
    assert len(inbox.envelopes) == 2  # nothing mailed for version 4

    with session(db) as s:
        access.lift(s, USER, by="bureau", at=AT + timedelta(days=3))
    third = subs.notify_publication(
        db, catalog, resource=RESIDENTS, versions=versions(5, 5), at=AT + timedelta(days=4)
    )
    assert sorted((n.consumer, n.outcome) for n in third) == [(USER, "sent"), (GRANTED, "refused")]
    refusals = [e for e in journal_entries(db) if e.outcome == "refused"]
    assert [(e.consumer, e.version) for e in refusals] == [(GRANTED, 4), (USER, 4), (GRANTED, 5)]
    assert json.loads(refusals[1].detail)["reason"].startswith(f"department {USER} is suspended")


def test_503s_are_retried_with_the_same_body_until_delivered(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    sub_id = hooked(db, catalog, receiver, USER, "/flaky")
    receiver.fail_first["/flaky"] = 2
    started = time.monotonic()
    (_, hook) = [
        n
        for n in subs.notify_publication(
            db, catalog, resource=RESIDENTS, versions=versions(), at=AT
        )
        if n.channel != "none"
    ]
    assert time.monotonic() - started >= 0.05 + 0.1  # the pauses grow: 0.05 s, then 0.1 s
    assert hook.outcome == "delivered"
    hits = receiver.at("/flaky")
    assert [h.answered for h in hits] == [503, 503, 200]
    assert all(h.verified for h in hits)
    assert len({h.body for h in hits}) == 1  # the same body, signed afresh each time
    assert len({h.headers["x-govlake-delivery"] for h in hits}) == 1
    assert [h.headers["x-govlake-attempt"] for h in hits] == ["1", "2", "3"]
    delivery = delivery_of(db, sub_id)
    assert (delivery.status, delivery.attempts, delivery.rounds) == ("delivered", 3, 1)
    log = json.loads(delivery.attempt_log)
    assert [(a["attempt"], a["status_code"]) for a in log] == [(1, 503), (2, 503), (3, 200)]
    assert log[0]["error"].startswith("HTTP 503")
    (entry,) = [e for e in journal_entries(db) if json.loads(e.detail)["channel"] == "webhook"]
    assert entry.outcome == "ok" and json.loads(entry.detail)["attempts"] == 3


def test_a_timeout_is_retried(db: Settings, catalog: Catalog, receiver: Receiver) -> None:
    sub_id = hooked(db, catalog, receiver, USER, "/slow")
    receiver.slow_first["/slow"] = 1
    subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    delivery = delivery_of(db, sub_id)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    first = json.loads(delivery.attempt_log)[0]
    assert first["status_code"] is None and first["error"].startswith("timed out after 0.5 s")


def test_a_4xx_is_final(db: Settings, catalog: Catalog, receiver: Receiver) -> None:
    sub_id = hooked(db, catalog, receiver, USER, "/gone")
    receiver.status["/gone"] = 400
    notices = subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    (hook,) = [n for n in notices if n.channel == "webhook"]
    assert (hook.outcome, hook.detail) == ("failed", "HTTP 400: no (400)")
    assert len(receiver.at("/gone")) == 1
    delivery = delivery_of(db, sub_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, 400)
    assert delivery.next_retry_at is None
    assert subs.retry_deliveries(db, at=AT + timedelta(days=1), catalog=catalog) == []
    (entry,) = [e for e in journal_entries(db) if json.loads(e.detail)["channel"] == "webhook"]
    assert entry.outcome == "error" and json.loads(entry.detail)["status_code"] == 400


def test_later_retries_deliver_then_give_up(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    # Down for the 3 immediate attempts and the first later retry, then up.
    sub_id = hooked(db, catalog, receiver, USER, "/down")
    receiver.fail_first["/down"] = 4
    subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    delivery = delivery_of(db, sub_id)
    assert (delivery.status, delivery.attempts) == ("retrying", 3)
    assert delivery.next_retry_at == AT + subs.RETRY_DELAYS[0]
    assert subs.retry_deliveries(db, at=AT + timedelta(minutes=4), catalog=catalog) == []
    (again,) = subs.retry_deliveries(db, at=AT + timedelta(minutes=5), catalog=catalog)
    assert again.outcome == "retrying"
    assert delivery_of(db, sub_id).next_retry_at == AT + timedelta(minutes=5) + subs.RETRY_DELAYS[1]
    (done,) = subs.retry_deliveries(db, at=AT + timedelta(hours=1), catalog=catalog)
    assert done.outcome == "delivered"
    assert [h.answered for h in receiver.at("/down")] == [503] * 4 + [200]
    assert all(h.verified for h in receiver.at("/down"))

    # A receiver that never answers: the immediate attempts, then one per later retry.
    dead = f"http://127.0.0.1:{free_port()}/hook"
    dead_sub, _ = subscribe(db, catalog, GRANTED, webhook_url=dead)
    subs.notify_publication(
        db, catalog, resource=RESIDENTS, versions=versions(4, 4), at=AT + timedelta(days=1)
    )
    moment = AT + timedelta(days=1)
    outcomes = []
    for delay in subs.RETRY_DELAYS:
        moment += delay
        (notice,) = subs.retry_deliveries(db, at=moment, catalog=catalog)
        outcomes.append(notice.outcome)
    assert outcomes == ["retrying"] * (len(subs.RETRY_DELAYS) - 1) + ["failed"]
    given_up = delivery_of(db, dead_sub)
    assert given_up.attempts == 3 + len(subs.RETRY_DELAYS)
    assert "ConnectError" in str(given_up.last_error) and "gave up after 8 attempts" in str(
        given_up.last_error
    )
    assert subs.retry_deliveries(db, at=moment + timedelta(days=1), catalog=catalog) == []
    retried = [e for e in journal_entries(db) if json.loads(e.detail).get("retry")]
    assert len(retried) == 2 + len(subs.RETRY_DELAYS) * 2  # one entry per table notified
    assert {e.outcome for e in retried} == {"ok", "error"}


def test_a_cancelled_subscription_or_revoked_grant_drops_waiting_retries(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    cancelled = hooked(db, catalog, receiver, USER, "/a")
    revoked = hooked(db, catalog, receiver, GRANTED, "/b", sharing_class="conditional")
    receiver.fail_first["/a"] = receiver.fail_first["/b"] = 100
    subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    with session(db) as s:
        subs.unsubscribe(s, cancelled, at=AT + timedelta(minutes=1))
        access.revoke(s, 1, reason="purpose fulfilled", at=AT + timedelta(minutes=1))
    dropped = subs.retry_deliveries(db, at=AT + timedelta(minutes=5), catalog=catalog)
    assert sorted((n.consumer, n.outcome) for n in dropped) == [
        (USER, "dropped"),
        (GRANTED, "dropped"),
    ]
    assert f"subscription {cancelled} was cancelled" in str(dropped[0].detail)
    assert "holds no active grant" in str(delivery_of(db, revoked).last_error)
    assert len(receiver.hits) == 6  # the immediate attempts only
    # A cancelled subscription hears of nothing more.
    later = subs.notify_publication(
        db, catalog, resource=RESIDENTS, versions=versions(4, 4), at=AT + timedelta(days=1)
    )
    assert [n.consumer for n in later] == [GRANTED]  # refused: its grant is gone


def test_a_failing_mail_server_does_not_fail_the_notice(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    broken = db.model_copy(update={"smtp_port": free_port()})
    hooked(broken, catalog, receiver, USER, "/hook")
    notices = subs.notify_publication(
        broken, catalog, resource=RESIDENTS, versions=versions(), at=AT
    )
    outcomes = {n.channel: n for n in notices}
    assert outcomes["email"].outcome == "failed"
    assert "could not mail" in str(outcomes["email"].detail)
    assert outcomes["webhook"].outcome == "delivered"
    with session(db) as s:
        (notice,) = s.scalars(select(Notification)).all()
        assert not notice.sent and "could not mail" in str(notice.error)
    mail = next(e for e in journal_entries(db) if json.loads(e.detail)["channel"] == "email")
    assert mail.outcome == "error" and "could not mail" in json.loads(mail.detail)["error"]


def test_versions_the_resource_does_not_publish_are_the_callers_error(
    db: Settings, catalog: Catalog
) -> None:
    subscribe(db, catalog, USER)
    wrong = [PublishedVersion("unconditional", "population.people", 3, 10, AT)]
    with pytest.raises(SharingError, match=r"population\.people is not the unconditional table"):
        subs.notify_publication(db, catalog, resource=RESIDENTS, versions=wrong, at=AT)
    addresses = [
        PublishedVersion("conditional", "geospatial.registered_addresses_conditional", 1, 10, AT)
    ]
    with pytest.raises(SharingError, match="publishes no conditional table"):
        subs.notify_publication(
            db, catalog, resource="geospatial.registered_addresses", versions=addresses, at=AT
        )
    assert subs.notify_publication(db, catalog, resource=RESIDENTS, versions=[], at=AT) == []
    with session(db) as s:
        assert s.scalar(select(func.count()).select_from(Notification)) == 0


def test_signatures_verify_and_replays_are_refused() -> None:
    body = b'{"event":"subscription.version"}'
    now = time.time()
    stamp = str(int(now))
    signature = subs.sign("secret", stamp, body)
    expected = hmac.new(b"secret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    subs.verify_signature("secret", body=body, timestamp=stamp, signature=signature, now=now)
    for secret, payload, when, problem in [
        ("other", body, now, "does not match"),
        ("secret", body + b" ", now, "does not match"),
        ("secret", body, now + 301, "a replay"),
    ]:
        with pytest.raises(subs.SignatureError, match=problem):
            subs.verify_signature(
                secret, body=payload, timestamp=stamp, signature=signature, now=when
            )
    with pytest.raises(subs.SignatureError, match="not unix seconds"):
        subs.verify_signature("secret", body=body, timestamp="soon", signature=signature)


# -- HTTP API -------------------------------------------------------------------------------
def test_api_subscribes_lists_and_cancels_as_the_token(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    with session(db) as s:
        tokens = {
            code: access.issue_token(s, code, at=AT - timedelta(days=1)) for code in (USER, GRANTED)
        }
    with TestClient(subscriptions_app(db, _conditional_only(catalog))) as client:

        def call(method: str, path: str, who: str, **kwargs: Any) -> Any:
            headers = {"Authorization": f"Bearer {tokens[who]}"}
            return client.request(method, "/govlake/v1" + path, headers=headers, **kwargs)

        refused = call("POST", "/subscriptions", USER, json={"resource": RESIDENTS})
        assert refused.status_code == 403
        assert refused.json()["errorCode"] == "PERMISSION_DENIED"
        assert "holds no active grant" in refused.json()["message"]
        bad = call("POST", "/subscriptions", GRANTED, json={"resource": RESIDENTS, "x": 1})
        assert bad.status_code == 400 and "extra" in bad.json()["message"].lower()
        assert client.get("/govlake/v1/subscriptions").status_code == 401

        made = call(
            "POST",
            "/subscriptions",
            GRANTED,
            json={"resource": RESIDENTS, "webhook_url": receiver.url("/api")},
        )
        assert made.status_code == 201, made.text
        created = made.json()
        assert created["consumer"] == GRANTED and created["active"]
        assert created["email"] == f"data@{GRANTED}.gov.example"
        receiver.secrets["/api"] = created["webhook_secret"]
        listed = call("GET", "/subscriptions", GRANTED).json()
        assert [x["id"] for x in listed] == [created["id"]]
        assert "webhook_secret" not in listed[0]  # shown once
        assert call("GET", f"/subscriptions/{created['id']}", USER).status_code == 404
        assert call("DELETE", f"/subscriptions/{created['id']}", USER).status_code == 404

        subs.notify_publication(
            db, _conditional_only(catalog), resource=RESIDENTS, versions=versions()[1:], at=AT
        )
        (hit,) = receiver.at("/api")
        assert hit.verified  # with the secret the POST returned
        sent = call("GET", f"/subscriptions/{created['id']}/deliveries", GRANTED).json()
        assert [(d["status"], d["attempts"]) for d in sent] == [("delivered", 1)]
        assert sent[0]["delivery_id"] == hit.headers["x-govlake-delivery"]

        gone = call("DELETE", f"/subscriptions/{created['id']}", GRANTED)
        assert gone.status_code == 200 and not gone.json()["active"]
        assert call("GET", "/subscriptions", GRANTED).json() == []
        every = call("GET", "/subscriptions?include_cancelled=true", GRANTED).json()
        assert every[0]["cancelled_by"] == GRANTED
    assert [e.actor for e in journal_entries(db, "subscription.create")] == [GRANTED]


# -- command line ---------------------------------------------------------------------------
@pytest.fixture
def cli(db: Settings, cli_runner: Callable[..., CliRunner]) -> CliRunner:
    """A runner whose `get_settings()` reads the test's platform database."""
    return cli_runner(
        db,
        GOVLAKE_SECRETS_KEY_FILE=str(db.secrets_key_file),
        # The platform does not resolve this name: allowed by name.
        GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS="127.0.0.1,hooks.market.gov.example",
    )


def test_cli_adds_lists_cancels_and_retries(cli: CliRunner, db: Settings) -> None:
    added = cli.invoke(
        subscription_app,
        [
            "add",
            USER,
            RESIDENTS,
            "--webhook",
            "https://hooks.market.gov.example/govlake",
            "--by",
            "李娜",
        ],
    )
    assert added.exit_code == 0, added.output
    assert "subscription 1: market_regulation is notified" in added.output
    assert f"it may read now: {UNCONDITIONAL}" in added.output
    secret = added.output.strip().splitlines()[-1]
    with session(db) as s:
        stored = s.get(Subscription, 1)
        assert stored is not None and stored.webhook_secret is not None
        assert sealing.unseal(db, stored.webhook_secret) == secret != stored.webhook_secret
        assert stored.created_by == "李娜"

    refused = cli.invoke(subscription_app, ["add", USER, RESIDENTS, "--class", "conditional"])
    assert refused.exit_code == 2
    assert "may not subscribe to the conditional table" in refused.output
    assert cli.invoke(subscription_app, ["add", USER, RESIDENTS, "--class", "x"]).exit_code == 2

    listed = cli.invoke(subscription_app, ["list", "--consumer", USER])
    assert listed.exit_code == 0, listed.output
    assert "hooks.market.gov.example" in listed.output and "since" in listed.output
    assert secret not in listed.output

    retried = cli.invoke(subscription_app, ["retry"])
    assert retried.exit_code == 0, retried.output
    assert "no webhook delivery is due" in retried.output
    assert cli.invoke(subscription_app, ["deliveries"]).exit_code == 0

    cancelled = cli.invoke(subscription_app, ["cancel", "1", "--by", "李娜"])
    assert cancelled.exit_code == 0 and "cancelled subscription 1" in cancelled.output
    again = cli.invoke(subscription_app, ["cancel", "1"])
    assert again.exit_code == 2 and "already cancelled" in again.output
    every = cli.invoke(subscription_app, ["list", "--all"])
    assert "cancelled" in every.output and "李娜" in every.output


# -- end to end -----------------------------------------------------------------------------
def _lakehouse(tmp_path: Path, smtp_port: int) -> Settings:
    """A lakehouse and platform database under `tmp_path`, mailing to `smtp_port`."""
    return lake_settings(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        webhook_backoff_seconds=0.05,
        webhook_allowed_receivers=["127.0.0.1"],
    )


@pytest.mark.slow
def test_a_real_publication_names_a_version_that_reads_back(
    tmp_path: Path, catalog: Catalog, smtp: tuple[Inbox, int], receiver: Receiver
) -> None:
    from govlake_tools.generate import generate

    from govlake.core.runs import Interval
    from govlake.lake.engine import get_spark
    from govlake.lake.tables import ops_tables
    from govlake_app import pipeline as ingest

    inbox, port = smtp
    settings = _lakehouse(tmp_path, port)
    day = dt.date(2026, 11, 2)
    generate(catalog, settings.landing_location, rows=60, seed=3, as_of=day, resources=[RESIDENTS])
    end = datetime.combine(day + timedelta(days=1), dt.time(2), dt.UTC)
    spark = get_spark(settings, catalog, fresh=True)
    counts = ingest.run(
        spark, resource=catalog.get(RESIDENTS), interval=Interval.ending(end), settings=settings
    )
    assert counts.published

    publications = ops_tables(settings.warehouse_location)[1].location
    recorded = [
        row
        for row in DeltaTable(publications.uri).to_pyarrow_table().to_pylist()
        if row["resource"] == RESIDENTS
    ]
    published = [
        PublishedVersion(
            r["sharing_class"], r["table_name"], r["version"], r["rows"], r["published_at"]
        )
        for r in recorded
    ]
    assert {p.sharing_class for p in published} == {"unconditional", "conditional"}

    at = end.replace(tzinfo=None) + timedelta(minutes=10)
    with session(settings) as s:
        access.register_consumer(s, catalog, USER, email=None, at=at)
    sub_id = hooked(settings, catalog, receiver, USER, "/e2e", at=at)
    notices = subs.notify_publication(
        settings, catalog, resource=RESIDENTS, versions=published, at=at
    )
    assert {(n.channel, n.outcome) for n in notices} == {
        ("none", "refused"),
        ("email", "sent"),
        ("webhook", "delivered"),
    }
    (hit,) = receiver.at("/e2e")
    assert hit.verified and hit.payload["subscription_id"] == sub_id
    (table,) = hit.payload["tables"]
    assert table["full_name"] == UNCONDITIONAL
    location = next(
        t.location
        for t in access.shared_tables(catalog, settings)
        if t.full_name == table["full_name"]
    )
    snapshot = DeltaTable(location.uri, version=table["version"])
    assert snapshot.version() == table["version"]
    assert read_delta(snapshot).num_rows == table["rows"] == counts.rows_published
    (mail,) = inbox.texts(catalog.department(USER).steward.email)
    assert f"Version:    {table['version']}" in mail and f"Rows:       {table['rows']}" in mail


@pytest.mark.slow
def test_announcing_a_publication_journals_and_notifies_each_version_once(
    tmp_path: Path, catalog: Catalog, smtp: tuple[Inbox, int], receiver: Receiver
) -> None:
    """The step after publish: a publication not announced yet (the run stopped after the
    publish stage) is journaled and notified by the announcement of its interval; announcing
    it again journals and notifies nothing."""
    from govlake_tools.generate import generate

    from govlake.core.runs import Interval, StageCounts
    from govlake.lake.engine import get_spark
    from govlake_app import pipeline as ingest

    inbox, port = smtp
    settings = _lakehouse(tmp_path, port)
    day = dt.date(2026, 11, 2)
    generate(catalog, settings.landing_location, rows=60, seed=3, as_of=day, resources=[RESIDENTS])
    end = datetime.combine(day + timedelta(days=1), dt.time(2), dt.UTC)
    interval, residents = Interval.ending(end), catalog.get(RESIDENTS)
    spark = get_spark(settings, catalog, fresh=True)
    counts = StageCounts(RESIDENTS)
    for stage in ingest.STAGES:
        if stage is not ingest.ANNOUNCE:
            ingest.run_stage(stage, spark, resource=residents, interval=interval,
                             settings=settings, counts=counts)  # fmt: skip
    assert counts.published and journal_entries(settings, "pipeline.publish") == []

    at = end.replace(tzinfo=None)
    with session(settings) as s:
        access.register_consumer(s, catalog, USER, email=None, at=at)
    hooked(settings, catalog, receiver, USER, "/once", at=at)
    first = ingest.announce(resource=residents, interval=interval, settings=settings)
    assert [p.sharing_class for p in first.journaled] == ["unconditional", "conditional"]
    assert [(p.version, p.rows) for p in first.journaled] == [
        (counts.published_versions[c], counts.rows_published)
        for c in ("unconditional", "conditional")
    ]
    assert {(n.channel, n.outcome) for n in first.notices} == {
        ("none", "refused"),
        ("email", "sent"),
        ("webhook", "delivered"),
    }

    again = ingest.announce(resource=residents, interval=interval, settings=settings)
    assert again.journaled == () and again.notices == ()
    journaled = journal_entries(settings, "pipeline.publish")
    assert [(e.table_name, e.version, e.at) for e in journaled] == [
        (p.table_name, p.version, at) for p in first.journaled
    ]
    assert len(receiver.at("/once")) == 1
    assert len(inbox.texts(catalog.department(USER).steward.email)) == 1
