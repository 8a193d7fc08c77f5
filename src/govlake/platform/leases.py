"""One pipeline stage per resource at a time, across processes and machines.

Two runs of one resource (a scheduled run and a manual `govlake ingest`, or two workers)
would otherwise both take the same landed file, or both merge into the same silver table.
Each stage therefore holds the resource's lease, a row of `pipeline_leases` in the platform
database that every worker shares: inserting it is atomic on SQLite and PostgreSQL alike. A
second run waits for the lease, then finds the work already done or does the rest.

A lease ends when its stage ends. One left behind by a crash is taken over once it expires,
or at once when its holder was a process of this host that no longer exists.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, String, delete
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column

from govlake.core.errors import GovlakeError
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings
from govlake.platform.database import Base, engine, session

log = logging.getLogger(__name__)


class PipelineLease(Base):
    """The stage of a resource's pipeline running now, one row per resource at most."""

    __tablename__ = "pipeline_leases"
    resource: Mapped[str] = mapped_column(String(128), primary_key=True)  # qualified name
    holder: Mapped[str] = mapped_column(String(200))  # host:pid:nonce
    stage: Mapped[str] = mapped_column(String(32))
    acquired_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class LeaseBusy(GovlakeError, RuntimeError):
    """The resource's lease stayed with another run for longer than this run would wait."""


@dataclass(frozen=True)
class Lease:
    resource: str
    holder: str
    stage: str


def _now() -> datetime:
    return naive_utc(datetime.now(UTC))


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _gone(holder: str) -> bool:
    """True when `holder` was a process of this host that has ended."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def _drop(s: Session, resource: str, holder: str) -> bool:
    """Delete `holder`'s lease of `resource`; False when it no longer holds it."""
    done = s.execute(
        delete(PipelineLease).where(
            PipelineLease.resource == resource, PipelineLease.holder == holder
        )
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


_ready: set[str] = set()


def _ensure_table(settings: Settings) -> None:
    # The platform database may predate this table: create it once per database.
    if settings.database_url not in _ready:
        PipelineLease.__table__.create(engine(settings.database_url), checkfirst=True)  # type: ignore[attr-defined]
        _ready.add(settings.database_url)


def _try_take(
    settings: Settings, resource: str, holder: str, stage: str, ttl: timedelta
) -> PipelineLease | None:
    """Take the lease if it is free, expired or abandoned; else return who holds it."""
    now = _now()
    try:
        with session(settings) as s:
            current = s.get(PipelineLease, resource)
            if current is not None:
                if current.expires_at > now and not _gone(current.holder):
                    return current
                log.warning("taking over the lease of %s from %s (%s since %s)", resource,
                            current.holder, current.stage, current.acquired_at)  # fmt: skip
                # Only that holder's row: another run may have replaced it meanwhile.
                if not _drop(s, resource, current.holder):
                    return current
            s.add(PipelineLease(resource=resource, holder=holder, stage=stage, acquired_at=now,
                                expires_at=now + ttl))  # fmt: skip
    except (IntegrityError, OperationalError) as exc:
        # Another run inserted first (or held the database's write lock past its timeout).
        log.debug("lease of %s not taken: %s", resource, exc)
        with session(settings) as s:
            return s.get(PipelineLease, resource) or PipelineLease(
                resource=resource, holder="?", stage="?", acquired_at=now, expires_at=now
            )
    return None


@contextmanager
def hold(settings: Settings, resource: str, *, stage: str, poll: float = 0.5) -> Iterator[Lease]:
    """Hold `resource`'s lease for the block, waiting up to `settings.lease_wait_minutes`."""
    _ensure_table(settings)
    holder = _holder()
    ttl = timedelta(minutes=settings.lease_minutes)
    started = time.monotonic()
    deadline = started + settings.lease_wait_minutes * 60
    announced = False
    while (busy := _try_take(settings, resource, holder, stage, ttl)) is not None:
        if time.monotonic() >= deadline:
            raise LeaseBusy(
                f"{resource}: the {busy.stage} stage of another run ({busy.holder}, since "
                f"{busy.acquired_at:%Y-%m-%d %H:%M:%S} UTC) still holds the resource after "
                f"{settings.lease_wait_minutes} min; it expires at "
                f"{busy.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            )
        if not announced:
            log.info("%s: waiting for %s (%s stage) to finish", resource, busy.holder, busy.stage)
            announced = True
        time.sleep(poll)
    lease = Lease(resource, holder, stage)
    try:
        yield lease
    finally:
        with session(settings) as s:
            if not _drop(s, resource, holder):
                log.warning("%s: the lease of %s had already been taken over", resource, holder)
