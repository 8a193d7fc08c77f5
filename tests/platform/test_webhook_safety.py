"""Subscription webhooks cannot be turned against the platform's own network, and their secrets
are not in the platform database in plain text.

Receivers: loopback, private, link-local, reserved and other non-public addresses (and
non-http schemes) are refused when subscribing, through the REST API and the CLI, unless the
deployment allows the receiver; a name that resolves to a public address when subscribing
and to loopback at delivery (DNS rebinding, played by a patched `socket.getaddrinfo`) gets
no request; the consumer sees only whether a delivery went through and the class of the
answer. Secrets: the stored column holds a Fernet token, the receiver still verifies each
signature, rotation re-seals under a new key after which the old key can go, and a database
of an earlier version (plain text, a 64-character column) is upgraded and sealed."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from support import (
    AT,
    GRANTED,
    RESIDENTS,
    USER,
    Receiver,
    delivery_of,
    hooked,
    journal_entries,
    subscribe,
    subscriptions_app,
    versions,
)
from typer.testing import CliRunner

from govlake.core.catalog import Catalog
from govlake.core.net import free_port
from govlake.core.settings import Settings
from govlake.platform.database import Base, Consumer, Subscription, session
from govlake.sharing import access, sealing
from govlake.sharing import subscriptions as subs
from govlake.sharing.access import SharingError
from govlake_app.cli.subscriptions import subscription_app

#: A public address (example.com's) that no test ever connects to.
PUBLIC = "93.184.215.14"
REBOUND = "hooks.consumer.example"


@pytest.fixture
def closed(db: Settings) -> Settings:
    """The platform as deployed by default: no internal receiver allowed."""
    return db.model_copy(update={"webhook_allowed_receivers": []})


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[list[str]]]]:
    """A resolver the test controls for the names it lists: each lookup of a name takes its
    next answer (the last one stays); any other name or address resolves as usual."""
    answers: dict[str, list[list[str]]] = {}
    real = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[name]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, int(port or 0)))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    yield answers


def _tokens(settings: Settings, *codes: str) -> dict[str, str]:
    with session(settings) as s:
        return {code: access.issue_token(s, code, at=AT - timedelta(days=1)) for code in codes}


def _stored_secrets(settings: Settings) -> list[str]:
    """The webhook_secret column as the database holds it (not through the models)."""
    raw = create_engine(settings.database_url)
    try:
        with raw.connect() as connection:
            rows = connection.execute(
                text("SELECT webhook_secret FROM subscriptions WHERE webhook_secret IS NOT NULL")
            )
            return [str(row[0]) for row in rows]
    finally:
        raw.dispose()


# -- where webhooks may go ------------------------------------------------------------------
INTERNAL = [
    ("http://127.0.0.1:6379/", "loopback"),
    ("http://[::1]:8765/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://0.0.0.0:8765/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://100.64.0.1/", "not globally routable"),  # shared address space
]


def test_internal_receivers_are_refused_when_subscribing(
    closed: Settings, catalog: Catalog, tmp_path: Path, cli_runner: Callable[..., CliRunner]
) -> None:
    port = free_port()
    by_name = [
        f"http://localhost:{port}/govlake/v1/subscriptions",
        "http://2130706433/",  # 127.0.0.1 written as one number
        "http://nothing.invalid/hook",  # resolves nowhere: the same answer
    ]
    token = _tokens(closed, USER)[USER]
    with TestClient(subscriptions_app(closed, catalog)) as client:
        for url, reason in INTERNAL:
            answer = client.post(
                "/govlake/v1/subscriptions",
                headers={"Authorization": f"Bearer {token}"},
                json={"resource": RESIDENTS, "webhook_url": url},
            )
            assert answer.status_code == 400, (url, answer.text)
            assert answer.json()["errorCode"] == "INVALID_PARAMETER_VALUE"
            message = answer.json()["message"]
            assert f"names a {reason} address" in message, message
            assert "GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS" in message
        for url in by_name:
            answer = client.post(
                "/govlake/v1/subscriptions",
                headers={"Authorization": f"Bearer {token}"},
                json={"resource": RESIDENTS, "webhook_url": url},
            )
            assert answer.status_code == 400, (url, answer.text)
            message = answer.json()["message"]
            assert "does not resolve to public addresses only" in message, message
            assert "127.0.0.1" not in message  # what an internal name resolves to stays inside
        for url in ("gopher://127.0.0.1:6379/_INFO", "file:///etc/passwd"):
            answer = client.post(
                "/govlake/v1/subscriptions",
                headers={"Authorization": f"Bearer {token}"},
                json={"resource": RESIDENTS, "webhook_url": url},
            )
            assert answer.status_code == 400 and "http:// or https://" in answer.json()["message"]

    # The operator's CLI refuses them too, with the reason.
    runner = cli_runner(
        closed,
        GOVLAKE_SECRETS_KEY_FILE=str(tmp_path / "cli.key"),
        GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS="",
    )
    for url in ("http://127.0.0.1:6379/", f"http://localhost:{port}/"):
        added = runner.invoke(subscription_app, ["add", USER, RESIDENTS, "--webhook", url])
        assert added.exit_code == 2, added.output
        assert "public addresses only" in added.output
    with session(closed) as s:
        assert subs.list_subscriptions(s, include_cancelled=True) == []


def test_a_server_with_a_malformed_receiver_list_does_not_start(tmp_path: Path) -> None:
    """The operator's typo is reported when the server starts, naming the setting and the
    entry, rather than as an error to each consumer who subscribes."""
    from govlake.sharing.server.app import create_app

    broken = Settings(database_url=f"sqlite:///{tmp_path / 'govlake.db'}",
                      webhook_allowed_receivers=["10.0.0.0/33"])  # fmt: skip
    with pytest.raises(ValueError, match=r"GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS: '10.0.0.0/33'"):
        create_app(broken)


def test_a_deployment_allows_its_internal_receivers(
    closed: Settings, catalog: Catalog, dns: dict[str, list[list[str]]]
) -> None:
    dns["hooks.bureau.internal"] = [["10.20.0.7"]]
    dns["hooks.public.example"] = [[PUBLIC]]
    dns["mixed.example"] = [[PUBLIC, "127.0.0.1"]]
    allowed = closed.model_copy(
        update={
            "webhook_allowed_receivers": [
                "hooks.bureau.internal",
                "127.0.0.1:9000",
                "172.16.0.0/12",
            ]
        }
    )
    accepted = [
        "https://hooks.bureau.internal/govlake",  # by name, whatever it resolves to
        "http://127.0.0.1:9000/hook",  # this port only
        "http://172.20.1.1/hook",  # in the network
        f"http://{PUBLIC}/hook",  # public: needs nothing
        "https://hooks.public.example/govlake",  # resolves to a public address only
    ]
    for number, url in enumerate(accepted):
        subscribe(allowed, catalog, USER, webhook_url=url, email=f"n{number}@market.gov.example")
    for url in (
        "http://127.0.0.1:9001/hook",
        "http://10.20.0.7/hook",
        "http://mixed.example/",  # one of its addresses is loopback
    ):
        with session(allowed) as s, pytest.raises(SharingError, match="public addresses only"):
            subs.subscribe(s, catalog, allowed, consumer=USER, resource=RESIDENTS,
                           webhook_url=url, at=AT)  # fmt: skip
    # A malformed entry is the operator's error, named.
    broken = closed.model_copy(update={"webhook_allowed_receivers": ["10.0.0.0/33"]})
    with session(broken) as s, pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a host"):
        subs.subscribe(s, catalog, broken, consumer=GRANTED, resource=RESIDENTS,
                       webhook_url="http://10.0.0.1/", at=AT)  # fmt: skip


def test_a_name_rebound_to_loopback_after_subscribing_gets_no_request(
    closed: Settings,
    catalog: Catalog,
    receiver: Receiver,
    dns: dict[str, list[list[str]]],
) -> None:
    # Public when the subscription is made, the platform's own loopback (where the receiver
    # listens, standing in for an internal service) when the notice goes out.
    dns[REBOUND] = [[PUBLIC], ["127.0.0.1"]]
    url = f"http://{REBOUND}:{receiver.port}/internal"
    sub_id, secret = subscribe(closed, catalog, USER, webhook_url=url)
    assert secret is not None
    receiver.secrets["/internal"] = secret
    notices = subs.notify_publication(
        closed, catalog, resource=RESIDENTS, versions=versions(), at=AT
    )
    assert receiver.hits == []  # nothing reached the loopback service
    (hook,) = [n for n in notices if n.channel == "webhook"]
    assert hook.outcome == "failed"  # final: not retried against an internal address
    delivery = delivery_of(closed, sub_id)
    assert (delivery.status, delivery.attempts, delivery.next_retry_at) == ("failed", 1, None)
    assert "127.0.0.1 (loopback)" in str(delivery.last_error)  # the operators' detail
    (entry,) = [e for e in journal_entries(closed) if json.loads(e.detail)["channel"] == "webhook"]
    assert "not public" in json.loads(entry.detail)["error"]

    # A name that answers a public and an internal address at once is refused as well, and
    # one that is public again is delivered to (the same pinned path).
    dns[REBOUND] = [[PUBLIC, "127.0.0.1"]]
    subs.notify_publication(closed, catalog, resource=RESIDENTS, versions=versions(4, 4), at=AT)
    assert receiver.hits == []
    allowed = closed.model_copy(
        update={"webhook_allowed_receivers": [f"127.0.0.1:{receiver.port}"]}
    )
    dns[REBOUND] = [["127.0.0.1"]]
    subs.notify_publication(allowed, catalog, resource=RESIDENTS, versions=versions(5, 5), at=AT)
    (hit,) = receiver.hits
    assert hit.verified and hit.headers["host"] == f"{REBOUND}:{receiver.port}"


def test_the_consumer_sees_whether_it_went_through_and_the_class_only(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    refusing = hooked(db, catalog, receiver, USER, "/refuses")
    receiver.status["/refuses"] = 401
    dead, _ = subscribe(db, catalog, USER, webhook_url=f"http://127.0.0.1:{free_port()}/")
    delivered = hooked(db, catalog, receiver, USER, "/ok")
    subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    token = _tokens(db, USER)[USER]
    with TestClient(subscriptions_app(db, catalog)) as client:
        shown = {}
        for sub_id in (refusing, dead, delivered):
            (view,) = client.get(
                f"/govlake/v1/subscriptions/{sub_id}/deliveries",
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            shown[sub_id] = view
    assert [(v["status"], v["last_result"]) for v in shown.values()] == [
        ("failed", "4xx"),
        ("retrying", "unreachable"),
        ("delivered", "2xx"),
    ]
    for view in shown.values():
        assert set(view) == {
            "delivery_id", "subscription_id", "resource", "url", "created_at", "status",
            "attempts", "last_result", "next_retry_at", "delivered_at",
        }  # fmt: skip
        assert 401 not in view.values()
        for leak in ("no (", "Errno", "ConnectError", "Connection refused"):
            assert leak not in json.dumps(view), (leak, view)
    # The operators keep the detail: the row and the journal.
    assert delivery_of(db, refusing).last_status_code == 401
    assert "ConnectError" in str(delivery_of(db, dead).last_error)
    errors = [json.loads(e.detail).get("error") for e in journal_entries(db)]
    assert "HTTP 401: no (401)" in errors


# -- the secrets at rest --------------------------------------------------------------------
@pytest.mark.platform_state
def test_the_database_holds_no_secret_and_signatures_still_verify(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    sub_id = hooked(db, catalog, receiver, USER, "/sealed")
    secret = receiver.secrets["/sealed"]
    (stored,) = _stored_secrets(db)
    assert secret not in stored and stored.startswith("fernet:")
    assert db.secrets_key_file is not None
    (key,) = db.secrets_key_file.read_text().split()
    assert Fernet(key.encode()).decrypt(stored.removeprefix("fernet:").encode()).decode() == secret
    assert stat.S_IMODE(db.secrets_key_file.stat().st_mode) == 0o600
    subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    (hit,) = receiver.at("/sealed")
    assert hit.verified
    # Nor is the secret anywhere else in the database: not in the journal, not in deliveries.
    assert all(secret not in e.detail for e in journal_entries(db, "subscription.create"))
    assert secret not in delivery_of(db, sub_id).payload


def test_a_fresh_checkout_makes_its_key_and_a_server_database_needs_one(
    settings: Settings, catalog: Catalog
) -> None:
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    with session(settings) as s:
        access.register_consumer(s, catalog, USER, email=None, at=AT)
    subscribe(settings, catalog, USER, webhook_url=f"http://{PUBLIC}/hook")
    made = database.with_name("govlake-secrets.key")
    assert made.is_file() and stat.S_IMODE(made.stat().st_mode) == 0o600
    (stored,) = _stored_secrets(settings)
    assert stored.startswith("fernet:")
    server = Settings(database_url="postgresql+psycopg://govlake@db.example/govlake")
    with pytest.raises(sealing.SealingError, match="set GOVLAKE_SECRETS_KEY"):
        sealing.seal(server, "secret")


def test_rotation_reseals_under_the_new_key_and_the_old_key_can_go(
    db: Settings, catalog: Catalog, receiver: Receiver
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = db.model_copy(update={"secrets_key": SecretStr(old)})
    hooked(first, catalog, receiver, USER, "/rotated")
    (before,) = _stored_secrets(db)

    # The new key first, the old one still there: rotate.
    both = db.model_copy(update={"secrets_key": SecretStr(f"{new},{old}")})
    done = sealing.rotate(both, by="operator", at=AT)
    assert (done.resealed, done.plain, done.keys) == (1, 0, 2)
    (after,) = _stored_secrets(db)
    assert after != before
    token = after.removeprefix("fernet:").encode()
    assert Fernet(new.encode()).decrypt(token).decode() == receiver.secrets["/rotated"]
    with pytest.raises(InvalidToken):
        Fernet(old.encode()).decrypt(token)

    # The old key gone: the platform still signs, and the receiver still verifies.
    only_new = db.model_copy(update={"secrets_key": SecretStr(new)})
    subs.notify_publication(only_new, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    (hit,) = receiver.at("/rotated")
    assert hit.verified

    # Had the old key gone before the rotation, nothing is sent unsigned: the delivery waits
    # (retryable) for the operator to put the key back.
    hooked(first, catalog, receiver, GRANTED, "/unrotated", sharing_class="conditional")
    notices = subs.notify_publication(
        only_new, catalog, resource=RESIDENTS, versions=versions(4, 4), at=AT
    )
    waiting = next(n for n in notices if n.channel == "webhook" and n.consumer == GRANTED)
    assert waiting.outcome == "retrying" and "none of the configured keys" in str(waiting.detail)
    assert receiver.at("/unrotated") == []
    (retried,) = subs.retry_deliveries(both, at=AT + timedelta(minutes=5), catalog=catalog)
    assert retried.outcome == "delivered" and receiver.at("/unrotated")[0].verified


def test_the_rotate_key_command_adds_a_key_reseals_and_retires_the_old(
    db: Settings, catalog: Catalog, receiver: Receiver, cli_runner: Callable[..., CliRunner]
) -> None:
    hooked(db, catalog, receiver, USER, "/cli")
    assert db.secrets_key_file is not None
    (old,) = db.secrets_key_file.read_text().split()
    runner = cli_runner(db, GOVLAKE_SECRETS_KEY_FILE=str(db.secrets_key_file))
    rotated = runner.invoke(subscription_app, ["rotate-key", "--new-key", "--retire"])
    assert rotated.exit_code == 0, rotated.output
    assert "1 webhook secret(s) sealed again under the newest of 2 key(s)" in rotated.output
    assert "1 older key(s) removed from the key file" in rotated.output
    (new,) = db.secrets_key_file.read_text().split()
    assert new != old and stat.S_IMODE(db.secrets_key_file.stat().st_mode) == 0o600
    (stored,) = _stored_secrets(db)
    Fernet(new.encode()).decrypt(stored.removeprefix("fernet:").encode())
    subs.notify_publication(db, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    assert receiver.at("/cli")[0].verified
    (journaled,) = journal_entries(db, "subscription.rotate_key")
    assert json.loads(journaled.detail) == {"resealed": 1, "plain": 0, "keys": 2, "retire": True}


@pytest.mark.platform_state
def test_plain_secrets_of_an_earlier_version_are_sealed(
    settings: Settings, catalog: Catalog, receiver: Receiver, tmp_path: Path
) -> None:
    """A database made by the version that stored secrets in plain text, in a 64-character
    column: the platform widens the column, seals the secret, and goes on signing with it."""
    plain = "Jx3k9Q0mZ8yV2bN4cR7tW1eL5hU6pA0sD3fG8jK2mN4"  # token_urlsafe(32)-shaped
    raw = create_engine(settings.database_url)
    try:
        Base.metadata.create_all(raw)
        with raw.begin() as connection:
            if raw.dialect.name == "postgresql":
                connection.execute(text(
                    "ALTER TABLE subscriptions ALTER COLUMN webhook_secret TYPE varchar(64)"
                ))  # fmt: skip
            connection.execute(
                Consumer.__table__.insert().values(
                    code=USER, name=USER, contact_email="data@m.gov.example",
                    registered_at=AT, active=True,
                )
            )  # fmt: skip
            connection.execute(
                Subscription.__table__.insert().values(
                    id=1, consumer=USER, resource=RESIDENTS, email="data@m.gov.example",
                    webhook_url=receiver.url("/legacy"), webhook_secret=plain,
                    created_at=AT, created_by=USER,
                )
            )  # fmt: skip
    finally:
        raw.dispose()
    receiver.secrets["/legacy"] = plain
    upgraded = settings.model_copy(
        update={
            "webhook_allowed_receivers": ["127.0.0.1"],
            "secrets_key_file": tmp_path / "secrets.key",
            "webhook_backoff_seconds": 0.05,
            "smtp_port": free_port(),  # no mail server: the mail fails, recorded
        }
    )
    subs.notify_publication(upgraded, catalog, resource=RESIDENTS, versions=versions(), at=AT)
    (stored,) = _stored_secrets(upgraded)
    assert plain not in stored and stored.startswith("fernet:")
    assert sealing.unseal(upgraded, stored) == plain
    (hit,) = receiver.at("/legacy")
    assert hit.verified  # the consumer's secret did not change
