"""The platform state: a relational database through SQLAlchemy 2 (`GOVLAKE_DATABASE_URL`:
a SQLite file by default, PostgreSQL in production). The lakehouse holds the data; this
holds who may read it, what they asked for, and the audit journal.

Times are naive UTC throughout (PostgreSQL: `timestamp without time zone`, sessions in
UTC); dates (due dates) are calendar dates in China.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.schema import CreateColumn

from govlake.core.settings import Settings

#: The key of the PostgreSQL advisory lock held while the schema is created ("govlake").
SCHEMA_LOCK_KEY = 0x676F766C616B65
#: What a using department may state as the use of conditional data (中科院 annex 1).
USAGE_SCOPES = (
    "administrative_basis", "data_verification", "business_collaboration", "work_reference",
    "other",
)  # fmt: skip


class Base(DeclarativeBase):
    pass


class Consumer(Base):
    """A using department registered to read shared data (a Delta Sharing recipient)."""

    __tablename__ = "consumers"
    code: Mapped[str] = mapped_column(String(64), primary_key=True)  # department code
    name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str] = mapped_column(String(200))
    registered_at: Mapped[datetime] = mapped_column(DateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Token(Base):
    """A bearer token of a consumer, stored only as its SHA-256 hash: one an operator issued
    (`client_id` None), or an access token the OAuth token endpoint issued to a client of the
    consumer, which lives minutes."""

    __tablename__ = "consumer_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(ForeignKey("consumers.code"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Added after the first release: `_upgrade` adds it to an older database.
    client_id: Mapped[str | None] = mapped_column(
        ForeignKey("oauth_clients.client_id"), nullable=True, index=True
    )


class OAuthClient(Base):
    """An OAuth client of a consumer (profile version 2, client credentials): its id is
    public, its secret is shown once and stored only as an Argon2 hash. The token endpoint
    exchanges the two for access tokens (`Token` rows with this `client_id`)."""

    __tablename__ = "oauth_clients"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumer: Mapped[str] = mapped_column(ForeignKey("consumers.code"), index=True)
    secret_hash: Mapped[str] = mapped_column(Text)  # Argon2id, PHC string format
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    issued_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Grant(Base):
    """What an approved access request gives a consumer: one conditional table of a
    resource, for a purpose, until it expires or is revoked. Unconditional tables need no
    grant."""

    __tablename__ = "grants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(ForeignKey("consumers.code"), index=True)
    resource: Mapped[str] = mapped_column(String(128))  # qualified name
    sharing_class: Mapped[str] = mapped_column(String(32), default="conditional")
    purpose: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(DateTime)
    granted_by: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("access_requests.id"), nullable=True)


class AccessRequest(Base):
    """共享申请: a using department applies for conditional data (fields of the application
    form, 中科院 annex 1); the provider answers within 10 working days."""

    __tablename__ = "access_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource: Mapped[str] = mapped_column(String(128), index=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)  # who answers
    items: Mapped[str] = mapped_column(Text)  # JSON list of item names
    consumer: Mapped[str] = mapped_column(ForeignKey("consumers.code"), index=True)
    applicant_name: Mapped[str] = mapped_column(String(100))
    applicant_phone: Mapped[str] = mapped_column(String(40))
    applicant_email: Mapped[str] = mapped_column(String(200))
    using_department: Mapped[str] = mapped_column(String(200))
    using_contact: Mapped[str] = mapped_column(String(200))
    service_scenario: Mapped[str] = mapped_column(Text)
    usage_scope: Mapped[str] = mapped_column(String(32))  # one of USAGE_SCOPES
    usage_scope_other: Mapped[str | None] = mapped_column(Text, nullable=True)
    business_system: Mapped[str] = mapped_column(String(200))
    justification: Mapped[str] = mapped_column(Text)
    filed_at: Mapped[datetime] = mapped_column(DateTime)
    due_on: Mapped[date] = mapped_column(Date)
    due_basis: Mapped[str] = mapped_column(String(200))  # calendar used for the due date
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|approved|refused
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # of the grant
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class VerificationRequest(Base):
    """快速校核: a consumer doubts a value; the provider confirms or corrects it, and a
    correction is linked to the published version that carries it."""

    __tablename__ = "verification_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(ForeignKey("consumers.code"), index=True)
    resource: Mapped[str] = mapped_column(String(128), index=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)  # the item's authority
    key: Mapped[str] = mapped_column(String(200))  # the record's key value
    item: Mapped[str] = mapped_column(String(64))
    doubted_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    evidence: Mapped[str] = mapped_column(Text)
    filed_at: Mapped[datetime] = mapped_column(DateTime)
    due_on: Mapped[date] = mapped_column(Date)
    due_basis: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(
        String(16), default="open"
    )  # open|confirmed|corrected|fixed
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    corrected_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    fixed_table: Mapped[str | None] = mapped_column(String(128), nullable=True)
    fixed_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fixed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Suspension(Base):
    """宝鸡 art. 29: a department that missed a rectification deadline loses its access to
    others' shared data until the suspension is lifted."""

    __tablename__ = "suspensions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    department: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    suspended_at: Mapped[datetime] = mapped_column(DateTime)
    suspended_by: Mapped[str] = mapped_column(String(100))
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class Notification(Base):
    """A message the platform sent (or could not send): escalations, decisions."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    sent: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Subscription(Base):
    """订阅 (the catalogue system's subscription service): a consumer is told of each new
    published version of a resource it may read, by mail and optionally by a signed webhook.

    `sharing_class` None means every published table of the resource the consumer may read
    when a version comes out (a grant obtained later adds the conditional table).
    """

    __tablename__ = "subscriptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(ForeignKey("consumers.code"), index=True)
    resource: Mapped[str] = mapped_column(String(128), index=True)  # qualified name
    sharing_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    email: Mapped[str] = mapped_column(String(200))
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The webhook's HMAC key, sealed (`fernet:<token>`, govlake.sharing.sealing): the
    # platform signs with it, which a hash of it could not do. Shown to the consumer once when
    # the subscription is made, never listed. Unbounded: a database made when it was String(64)
    # in plain text is widened by `_upgrade` (its secrets are sealed by `sealing.seal_plain`).
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(100))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancelled_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class WebhookDelivery(Base):
    """One webhook notice of one publication to one subscription, with every attempt to
    deliver it: sent again on the same body until the receiver accepts it, refuses it, or
    the retries run out."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)  # X-Govlake-Delivery
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    consumer: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, the same on every attempt
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # pending|delivered|retrying|failed|dropped (see govlake.sharing.subscriptions)
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    rounds: Mapped[int] = mapped_column(Integer, default=0)  # finished rounds of attempts
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_retry_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    attempt_log: Mapped[str] = mapped_column(Text, default="[]")  # JSON: one object per attempt


class AuditEntry(Base):
    """One entry of the hash-chained audit journal: each carries the hash of the one before,
    so an edited, inserted or deleted entry breaks the chain."""

    __tablename__ = "audit_journal"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(100))  # consumer code, provider, "platform"
    action: Mapped[str] = mapped_column(String(64))  # e.g. share.query, grant.revoke
    consumer: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resource: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The table a sharing call named, taken from its path: unbounded, so that PostgreSQL
    # journals a refusal of an absurdly long name instead of failing on it.
    table_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    files: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), default="ok")  # ok|refused|not_found|error
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def overlong(model: type[Base], values: Mapping[str, str | None]) -> list[str]:
    """The fields of `values` longer than their `String(n)` column of `model`, named.

    PostgreSQL refuses such a value with a database error where SQLite stores it whole: the
    platform checks user-supplied text first, so both refuse it with the same message.
    """
    problems = []
    for name, value in values.items():
        length = getattr(model.__table__.c[name].type, "length", None)
        if value is not None and length is not None and len(value) > length:
            problems.append(f"{name} has {len(value)} characters, at most {length} are allowed")
    return problems


_engines = threading.Lock()


def engine(url: str) -> Engine:
    """One engine per database URL; the schema is created on first use (once, also when
    several threads start together)."""
    with _engines:
        return _engine(url)


def dispose_engines() -> None:
    """Close every pooled connection of this process's engines (before a process exit that
    skips the interpreter's own clean-up, see `govlake_app.cli.console.finish`)."""
    with _engines:
        _engine.cache_clear()
        while _made:
            _made.pop().dispose()


#: The engines `_engine` made, so that `dispose_engines` can close their connections.
_made: list[Engine] = []


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    """One engine per database URL; the schema is created on first use.

    SQLite gets its pragmas. A server database (PostgreSQL) gets a ping before a pooled
    connection is reused (the server may have closed it) and sessions in UTC, so that the
    naive timestamps mean UTC on the server too.
    """
    made = _configured(create_engine(url, pool_pre_ping=not url.startswith("sqlite")))
    if made.dialect.name == "sqlite":
        try:
            Base.metadata.create_all(made)
        except OperationalError as exc:
            # Another process created the tables between the check and the CREATE.
            if "already exists" not in str(exc):
                raise
            Base.metadata.create_all(made)
        with made.begin() as connection:
            _upgrade(connection)
        return made

    with made.begin() as connection:
        if made.dialect.name == "postgresql":
            # Server workers and jobs may start together on an empty database: one creates
            # the tables, the others wait here and then find them (DDL is transactional).
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        Base.metadata.create_all(connection)
        _upgrade(connection)
    return made


def _configured(made: Engine) -> Engine:
    """`made` with the connection settings of its database (SQLite's pragmas, PostgreSQL's
    UTC), kept for `dispose_engines`."""
    _made.append(made)
    if made.dialect.name == "sqlite":

        @event.listens_for(made, "connect")
        def _pragmas(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cursor.close()

    if made.dialect.name == "postgresql":

        @event.listens_for(made, "connect")
        def _utc(connection: Any, record: Any) -> None:
            # Outside a transaction, or the pool's rollback would undo the SET.
            autocommit, connection.autocommit = connection.autocommit, True
            with connection.cursor() as cursor:
                cursor.execute("SET TIME ZONE 'UTC'")
            connection.autocommit = autocommit

    return made


def own_engine(url: str) -> Engine:
    """An engine of its own on the database at `url` (its schema made by `engine`), keeping
    one connection: for a thread that others wait for while they hold connections of the
    shared pool (the journal's group-commit writer), which must never wait for that pool."""
    engine(url)
    with _engines:
        return _configured(create_engine(url, pool_size=1, max_overflow=0,
                                         pool_pre_ping=not url.startswith("sqlite")))  # fmt: skip


#: Columns added to existing tables after their first release, as (table, column): made by
#: `create_all` in a new database, added by `_upgrade` to an older one.
ADDED_COLUMNS = (("consumer_tokens", "client_id"),)


def _upgrade(connection: Connection) -> None:
    """Bring a database made by an earlier version up to the models (`create_all` makes
    missing tables only): the columns added since (`ADDED_COLUMNS`), and on PostgreSQL the
    columns widened since (SQLite does not enforce a `String(n)` length)."""
    for table, column in ADDED_COLUMNS:
        _add_column(connection, Base.metadata.tables[table].c[column])
    if connection.dialect.name != "postgresql":
        return
    # webhook_secret was String(64) while secrets were stored in plain text; a sealed one is
    # longer.
    length = connection.scalar(
        text(
            "SELECT character_maximum_length FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = 'subscriptions' AND "
            "column_name = 'webhook_secret'"
        )
    )
    if length is not None:
        connection.execute(text("ALTER TABLE subscriptions ALTER COLUMN webhook_secret TYPE text"))


def _add_column(connection: Connection, column: Column[Any]) -> None:
    """Add the nullable `column` (with its foreign key and index) to its table, if missing."""
    table = column.table
    if column.name in {c["name"] for c in inspect(connection).get_columns(table.name)}:
        return
    spec = CreateColumn(column).compile(dialect=connection.dialect)
    references = "".join(
        f" REFERENCES {key.column.table.name} ({key.column.name})" for key in column.foreign_keys
    )
    try:
        connection.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {spec}{references}"))
        for index in table.indexes:
            if column.name in index.columns:
                index.create(connection, checkfirst=True)
    except OperationalError as exc:
        # SQLite: another process upgraded between the look and the ALTER (PostgreSQL
        # upgrades under the schema lock). Its index follows in that process.
        if "duplicate column" not in str(exc):
            raise


@contextmanager
def session(settings: Settings) -> Iterator[Session]:
    """A transaction: committed when the block ends, rolled back on an error."""
    with sessions(settings.database_url).begin() as s:
        yield s


def sessions(url: str) -> sessionmaker[Session]:
    """The session factory of the database at `url`, one per engine: a `sessionmaker` is a
    new `Session` subclass, and each new class sets up SQLAlchemy's event dispatch again."""
    with _engines:
        found = _sessions.get(url)
        made = _engine(url)
        if found is None or found.kw["bind"] is not made:  # engines disposed since
            found = _sessions[url] = sessionmaker(made, expire_on_commit=False)
        return found


_sessions: dict[str, sessionmaker[Session]] = {}
