"""Helpers that test modules of several folders share: a throw-away lakehouse's settings,
generated extracts ingested by the pipeline, consumers with tokens and their profile files,
a settable clock, a mail inbox and a webhook receiver that act as real counterparts, the
routers of the sharing server under its error handlers, a valid access request form, and the
subscription set-up of the platform tests. Fixtures built on them are in `conftest.py`; this
module is importable because `tests` is on pytest's `pythonpath`."""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from govlake_tools.generate import generate
from pyspark.sql import SparkSession
from sqlalchemy import func, select

from govlake.core.catalog import Catalog
from govlake.core.runs import Interval
from govlake.core.settings import Settings
from govlake.platform.database import AuditEntry, WebhookDelivery, session
from govlake.sharing import access
from govlake.sharing import subscriptions as subs
from govlake.sharing.access import AccessError, SharingError
from govlake.sharing.server.errors import answer_for
from govlake.sharing.server.subscriptions_api import router as subscriptions_router
from govlake.sharing.subscriptions import PublishedVersion
from govlake_app import pipeline as ingest

REPO = Path(__file__).resolve().parents[1]


# -- a throw-away lakehouse -----------------------------------------------------------------
def lake_settings(root: Path, *, database_url: str | None = None, **fields: Any) -> Settings:
    """A lakehouse and landing zone under `root`, on the embedded engine, with the
    repository's catalogue and a SQLite platform database under `root` unless another is
    given; `fields` set or override other settings."""
    defaults: dict[str, Any] = {
        "warehouse": str(root / "lakehouse"),
        "landing": str(root / "landing"),
        "catalog_dir": REPO / "schemas",
        "spark_remote": None,
    }
    return Settings(
        database_url=database_url or f"sqlite:///{root / 'govlake.db'}", **{**defaults, **fields}
    )


def deliver(
    spark: SparkSession,
    settings: Settings,
    catalog: Catalog,
    *,
    day: date,
    names: list[str],
    rows: int,
    end: datetime,
) -> None:
    """Every source of `names` delivers a generated extract as of `day` (seeded by its day
    of the month), and the pipeline ingests each resource over the interval ending at `end`."""
    generate(catalog, settings.landing_location, rows=rows, seed=day.day, as_of=day,
             resources=names)  # fmt: skip
    for name in names:
        ingest.run(spark, resource=catalog.get(name), interval=Interval.ending(end),
                   settings=settings)  # fmt: skip


def consumers_with_tokens(
    settings: Settings, catalog: Catalog, codes: Iterable[str], *, at: datetime, **token: Any
) -> dict[str, str]:
    """Register each department as a consumer (no mail address) and issue it a token."""
    tokens = {}
    with session(settings) as s:
        for code in codes:
            access.register_consumer(s, catalog, code, email=None, at=at)
            tokens[code] = access.issue_token(s, code, at=at, **token)
    return tokens


def write_profiles(folder: Path, endpoint: str, tokens: dict[str, str]) -> dict[str, str]:
    """A Delta Sharing profile file per consumer in `folder`; their paths by consumer."""
    profiles = {}
    for code, token in tokens.items():
        profile = folder / f"{code}.share"
        profile.write_text(json.dumps({"shareCredentialsVersion": 1, "endpoint": endpoint,
                                       "bearerToken": token}))  # fmt: skip
        profiles[code] = str(profile)
    return profiles


class Clock:
    """A server clock the test sets: calling it answers `at`."""

    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


# -- a mail server's inbox ------------------------------------------------------------------
class Inbox:
    """An aiosmtpd handler that keeps every envelope it receives."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def texts(self, to: str) -> list[str]:
        found = []
        for envelope in self.envelopes:
            if to in envelope.rcpt_tos:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                assert isinstance(message, email.message.EmailMessage)
                body = message.get_body(preferencelist=("plain",))
                assert body is not None
                found.append(f"Subject: {message['Subject']}\n{body.get_content()}")
        return found

    @property
    def messages(self) -> list[str]:
        """Subject and content of every single-part message, in the order received."""
        found = []
        for envelope in self.envelopes:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, email.message.EmailMessage)
            found.append(f"{message['Subject']}\n{message.get_content()}")
        return found


# -- a webhook receiver ---------------------------------------------------------------------
@dataclass
class Hit:
    """One request the receiver got, and whether its signature verified."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver as a consumer would write one: it verifies the HMAC of
    `<timestamp>.<body>` with its secret and refuses stale timestamps (401). Per path it can
    answer 503 to the first requests, sleep past the sender's timeout, or answer a fixed
    status."""

    port: int
    secrets: dict[str, str] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)
    slow_first: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    def verify(self, path: str, headers: dict[str, str], body: bytes) -> bool:
        secret = self.secrets.get(path)
        timestamp = headers.get("x-govlake-timestamp", "")
        if secret is None or not timestamp.isdigit():
            return False
        if abs(time.time() - int(timestamp)) > 300:
            return False
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(
            "sha256=" + expected.hexdigest(), headers.get("x-govlake-signature", "")
        )

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, float]:
        """The status to answer and how long to wait first."""
        verified = self.verify(path, headers, body)
        with self.lock:
            seen = len(self.at(path))
            if not verified:
                code, wait = 401, 0.0
            elif seen < self.slow_first.get(path, 0):
                code, wait = 200, 1.5
            elif seen < self.fail_first.get(path, 0):
                code, wait = 503, 0.0
            else:
                code, wait = self.status.get(path, 200), 0.0
            self.hits.append(Hit(path, headers, body, verified, code))
        return code, wait


# -- the sharing server's REST routers ------------------------------------------------------
def router_app(
    router: APIRouter, settings: Settings, catalog: Catalog, clock: Callable[[], datetime]
) -> FastAPI:
    """The router under the two handlers the sharing server registers."""
    app = FastAPI()
    app.state.settings, app.state.catalog = settings, catalog
    app.state.clock = clock
    app.include_router(router)

    @app.exception_handler(AccessError)
    async def _refused(request: Request, exc: AccessError) -> JSONResponse:
        return answer_for(exc).response()

    @app.exception_handler(SharingError)
    async def _invalid(request: Request, exc: SharingError) -> JSONResponse:
        return JSONResponse(
            {"errorCode": "INVALID_PARAMETER_VALUE", "message": str(exc)}, status_code=400
        )

    return app


@dataclass
class SharingServer:
    """A running sharing server as one consumer calls it: its settings, endpoint and clock,
    and the consumer's bearer token."""

    settings: Settings
    endpoint: str
    clock: Clock
    token: str

    def call(self, path: str, headers: dict[str, str] | None = None,
             body: dict[str, Any] | None = None) -> httpx.Response:  # fmt: skip
        """A protocol call below the endpoint: a POST of `body` when given, else a GET."""
        url = f"{self.endpoint}{path}"
        auth = {"Authorization": f"Bearer {self.token}"} | (headers or {})
        if body is not None:
            return httpx.post(url, json=body, headers=auth)
        return httpx.get(url, headers=auth)


def ndjson_lines(reply: Any) -> list[dict[str, Any]]:
    """The lines of a sharing server's 200 answer in newline-delimited JSON (an httpx reply)."""
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines()]


#: A valid access request form, as the REST API takes it.
FORM: dict[str, Any] = {
    "resource": "population.residents",
    "items": ["residence_address"],
    "applicant_name": "张伟",
    "applicant_phone": "010-12345678",
    "applicant_email": "zhang.wei@market-regulation.gov.example",
    "using_department": "市场监督管理局",
    "using_contact": "李娜 010-87654321",
    "service_scenario": "企业开办：核验法定代表人住址",
    "usage_scope": "administrative_basis",
    "business_system": "企业登记系统",
    "justification": "核验法定代表人登记住址",
}


# -- subscriptions --------------------------------------------------------------------------
AT = datetime(2026, 11, 4, 2, 0)  # naive UTC
RESIDENTS = "population.residents"
USER, PROVIDER, GRANTED = "market_regulation", "public_security", "taxation"


def versions(
    unconditional: int = 3, conditional: int = 3, rows: int = 600
) -> list[PublishedVersion]:
    """What the pipeline records for one publication of the residents."""
    published = datetime(2026, 11, 4, 2, 0)
    return [
        PublishedVersion(
            "unconditional", "population.residents_unconditional", unconditional, rows, published
        ),
        PublishedVersion(
            "conditional", "population.residents_conditional", conditional, rows, published
        ),
    ]


def subscriptions_app(settings: Settings, catalog: Catalog) -> FastAPI:
    """The subscriptions router as the sharing server serves it, its clock at `AT`."""
    return router_app(subscriptions_router, settings, catalog, lambda: AT)


def subscribe(
    settings: Settings, catalog: Catalog, consumer: str, **options: Any
) -> tuple[int, str | None]:
    with session(settings) as s:
        made, secret = subs.subscribe(
            s,
            catalog,
            settings,
            consumer=consumer,
            resource=options.pop("resource", RESIDENTS),
            at=options.pop("at", AT),
            **options,
        )
        return made.id, secret


def hooked(
    settings: Settings,
    catalog: Catalog,
    receiver: Receiver,
    consumer: str,
    path: str,
    **options: Any,
) -> int:
    """Subscribe with a webhook to `path` of the receiver, which learns the secret."""
    sub_id, secret = subscribe(
        settings, catalog, consumer, webhook_url=receiver.url(path), **options
    )
    assert secret is not None
    receiver.secrets[path] = secret
    return sub_id


def journal_entries(settings: Settings, action: str = "subscription.notify") -> list[AuditEntry]:
    with session(settings) as s:
        return list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def delivery_of(settings: Settings, sub_id: int) -> WebhookDelivery:
    with session(settings) as s:
        return s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.subscription_id == sub_id)
        ).one()


# -- the audit journal, call by call --------------------------------------------------------
def last_seq(settings: Settings) -> int:
    """The sequence number of the journal's last entry (0 for an empty journal)."""
    with session(settings) as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))) or 0)


def entries_after(settings: Settings, seq: int) -> list[AuditEntry]:
    """The journal's entries after `seq`, in order."""
    with session(settings) as s:
        found = s.scalars(
            select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq)
        ).all()
        s.expunge_all()
        return list(found)
