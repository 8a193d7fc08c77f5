"""The hash-chained audit journal (宝鸡 art. 21): every operation on shared data is appended
with who, for which purpose, on what and how much was served; each entry carries the hash of
the one before, so an edited, inserted or deleted entry is found by `verify`.

The journal lives in the platform database (`audit_journal`) and is copied to the Delta
table `ops/audit_journal` by `archive`. The archive is what exposes a deleted tail (the chain
alone cannot: the newest entry has no successor to break), and the platform never removes
anything from it. Entries may leave the database only through `purge`, once archived and
older than 3 years; the purge is itself an entry naming the range and the hash of the last
purged entry, where `verify` picks the chain up again.

Actions (`AuditEntry.action`):

- the sharing API, one entry per call, with the rows or files served:
  `share.list_shares`, `share.get_share`, `share.list_schemas`, `share.list_tables`,
  `share.version`, `share.metadata`, `share.query`, `share.changes`, `share.file` (a file
  download), `share.unknown` (a path the protocol does not have);
- grants: `grant.create`, `grant.revoke`;
- access requests: `request.file`, `request.approve`, `request.refuse`, `request.escalate`;
- verification requests: `verification.file`, `verification.answer`, `verification.fixed`;
- consumers and tokens: `consumer.register`, `token.issue`, `token.rotate`;
- OAuth clients (profile version 2): `oauth.client_issue`, `oauth.client_revoke`, and
  `oauth.token` for each call to the token endpoint (an access token issued, or refused);
- suspensions (宝鸡 art. 29): `suspension.start`, `suspension.lift`;
- the pipeline: `pipeline.publish` (a new version of a published table);
- the journal itself: `audit.archive`, `audit.purge`.

Outcomes: `ok`, `refused`, `not_found`, `error`.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from sqlalchemy import Connection, Engine, delete, func, insert, make_url, or_, select, text
from sqlalchemy.orm import Session

from govlake.core.catalog import Catalog
from govlake.core.errors import GovlakeError
from govlake.core.location import Location
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings
from govlake.lake.reads import query_delta
from govlake.platform.database import AuditEntry, overlong, own_engine, session

ACTIONS = frozenset(
    {
        "share.list_shares", "share.get_share", "share.list_schemas", "share.list_tables",
        "share.version", "share.metadata", "share.query", "share.changes", "share.file",
        "share.unknown", "request.view",
        "grant.create", "grant.revoke",
        "request.file", "request.approve", "request.refuse", "request.escalate",
        "verification.file", "verification.answer", "verification.fixed",
        "consumer.register", "token.issue", "token.rotate",
        "oauth.client_issue", "oauth.client_revoke", "oauth.token",
        "suspension.start", "suspension.lift",
        "pipeline.publish",
        "audit.archive", "audit.purge",
        "catalog.registration", "catalog.change", "catalog.review", "catalog.duty_change",
        "subscription.create", "subscription.cancel", "subscription.notify",
        "subscription.rotate_key",
        "open.catalog", "open.download", "open.notice",
        "platform.backup", "platform.restore",
    }
)  # fmt: skip
OUTCOMES = ("ok", "refused", "not_found", "error")

#: The previous hash of the first entry.
GENESIS_HASH = "0" * 64
#: 宝鸡 art. 21: logs are kept at least 3 years.
RETENTION_YEARS = 3

#: The fields of an entry in journal order; `hash` covers all but itself.
FIELDS = (
    "seq", "at", "actor", "action", "consumer", "purpose", "resource", "table_name",
    "version", "rows", "files", "outcome", "detail", "prev_hash", "hash",
)  # fmt: skip

ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("consumer", pa.string()),
        pa.field("purpose", pa.string()),
        pa.field("resource", pa.string()),
        pa.field("table_name", pa.string()),
        pa.field("version", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("files", pa.int64()),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("prev_hash", pa.string(), nullable=False),
        pa.field("hash", pa.string(), nullable=False),
        pa.field("archived_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

ExportFormat = Literal["csv", "jsonl"]


class AuditError(GovlakeError, ValueError):
    """The journal refuses an operation: an unknown action, an early purge, an unarchived range."""


@dataclass(frozen=True)
class Verification:
    """What `verify` found: `ok` when the chain is intact and matches the archive."""

    checked: int
    problems: list[str] = field(default_factory=list)
    archived: int = 0  # archived entries compared with the database

    @property
    def ok(self) -> bool:
        return not self.problems


# -- hashing --------------------------------------------------------------------------------
def canonical_detail(detail: Mapping[str, Any] | None) -> str:
    """The stored form of `detail`: JSON with sorted keys and no optional whitespace."""
    return json.dumps(
        dict(detail or {}), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )


def entry_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 over every field but `hash` (seq and prev_hash included), as canonical JSON.

    `detail` is hashed as stored, so any change to its text counts as an edit.
    """
    at = naive_utc(values["at"])
    payload = {name: values[name] for name in FIELDS if name != "hash"}
    payload["at"] = at.isoformat(timespec="microseconds")
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _values(entry: AuditEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in FIELDS}


# -- appending ------------------------------------------------------------------------------
def _lock(s: Session | Connection) -> None:
    """Hold the journal's write lock until the caller's transaction ends, so that two writers
    never read the same last entry and take the same seq."""
    bind = s.get_bind() if isinstance(s, Session) else s
    if bind.dialect.name == "postgresql":
        # Conflicts with itself and with plain inserts, not with readers.
        s.execute(text("LOCK TABLE audit_journal IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # pysqlite runs SELECTs outside a transaction until the first write: a write that
        # changes nothing opens the transaction and takes SQLite's write lock now (waiting
        # up to the busy timeout), before the last entry is read.
        s.execute(text("UPDATE audit_journal SET seq = seq WHERE seq < 0"))


def _last(s: Session | Connection) -> tuple[int, str]:
    row = s.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (row.seq, row.hash)


def record(s: Session, **fields: Any) -> AuditEntry:
    """Append the next entry to the journal in the caller's transaction (the fields are
    `entry`'s).

    The journal stays locked until that transaction ends: record late in a transaction,
    just before it commits. An unknown action or outcome is refused rather than journaled
    under a name no trail looks for.
    """
    made = entry(**fields)
    _chain(s, [made])
    return made


def entry(
    *,
    at: datetime,
    actor: str,
    action: str,
    consumer: str | None = None,
    purpose: str | None = None,
    resource: str | None = None,
    table_name: str | None = None,
    version: int | None = None,
    rows: int | None = None,
    files: int | None = None,
    outcome: str = "ok",
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """A journal entry not yet chained (no seq, no hashes); `AuditError` for an unknown
    action or outcome or a field too long for its column, before anything is written."""
    if action not in ACTIONS:
        raise AuditError(f"unknown audit action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    if outcome not in OUTCOMES:
        raise AuditError(f"unknown audit outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
    fields = {"actor": actor, "consumer": consumer, "purpose": purpose, "resource": resource}
    if too_long := overlong(AuditEntry, fields):
        raise AuditError(f"audit entry refused: {'; '.join(too_long)}")
    return AuditEntry(
        at=naive_utc(at),
        actor=actor,
        action=action,
        consumer=consumer,
        purpose=purpose,
        resource=resource,
        table_name=table_name,
        version=version,
        rows=rows,
        files=files,
        outcome=outcome,
        detail=canonical_detail(detail),
    )


def _chain(s: Session, entries: list[AuditEntry]) -> None:
    """Lock the journal, then add `entries` after its last entry, in order, each linked to
    the one before."""
    _link(s, entries)
    s.add_all(entries)
    s.flush()


def _link(s: Session | Connection, entries: list[AuditEntry]) -> None:
    """Lock the journal and give `entries` the seqs and hashes that follow its last entry."""
    _lock(s)
    last_seq, last_hash = _last(s)
    for made in entries:
        last_seq += 1
        made.seq, made.prev_hash = last_seq, last_hash
        made.hash = last_hash = entry_hash(_values(made))


class Subject(Protocol):
    """A platform row an entry is about: it names a consumer and a resource (a grant, an
    access or verification request, a subscription, a webhook delivery)."""

    @property
    def consumer(self) -> str: ...

    @property
    def resource(self) -> str: ...


def record_about(
    s: Session, row: Subject, *, at: datetime, actor: str, action: str, **fields: Any
) -> AuditEntry:
    """`record` an entry about `row`: the entry's consumer and resource are the row's."""
    return record(
        s, at=at, actor=actor, action=action, consumer=row.consumer, resource=row.resource, **fields
    )


# -- the Delta archive ----------------------------------------------------------------------
#: Appends from the threads of one process queue on this lock, so the database's write lock
#: is contended only between processes. (On SQLite a waiting writer sleeps in growing steps
#: of up to 100 ms: with every request of the sharing server appending, that sleep, not the
#: work, set the server's p99 latency.)
_appending = threading.Lock()


def append(settings: Settings, **fields: Any) -> AuditEntry:
    """`record` one entry in a transaction of its own, committed before this returns."""
    with _appending, session(settings) as s:
        return record(s, **fields)


@dataclass(frozen=True)
class Committed:
    """A journal entry once committed, with the number of entries its transaction committed
    (the group commit's batch) and the seconds its caller waited for that commit."""

    entry: AuditEntry
    batch: int
    waited: float


@dataclass
class _Pending:
    entry: AuditEntry
    done: threading.Event = field(default_factory=threading.Event)
    batch: int = 0
    error: Exception | None = None


class JournalWriter:
    """Group commit of one process's journal entries: callers hand their entries over
    (`append`) and wait; one writer thread commits every entry waiting at the time in one
    transaction (journal lock, last hash, the entries chained, commit), then releases their
    callers. Under load, many calls' entries share a commit instead of queueing for the
    database's write lock one by one; each caller still returns only once its entry is
    committed, and gets the error if its batch failed. Processes append side by side: the
    journal's lock (`_lock`) orders their transactions, so the chain stays one chain."""

    #: Most entries committed in one transaction.
    MAX_BATCH = 256
    #: Seconds the writer thread waits for entries before it ends.
    IDLE_SECONDS = 10.0

    def __init__(self, settings: Settings):
        self._settings = settings
        self._waiting: list[_Pending] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._own: Engine | None = None

    def append(self, **fields: Any) -> Committed:
        """Journal one entry (the fields of `entry`) and return once it is committed;
        `AuditError` before anything is queued for a malformed entry, the database's error
        when the transaction holding the entry failed."""
        pending = _Pending(entry(**fields))
        began = time.perf_counter()
        with self._ready:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="journal-writer",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            self._waiting.append(pending)
            self._ready.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return Committed(pending.entry, pending.batch, time.perf_counter() - began)

    def _engine(self) -> Engine:
        """The writer's own connection: the callers it releases may hold connections of the
        shared pool while they wait, and a writer waiting for that pool would wait for them."""
        if self._own is None:
            self._own = own_engine(self._settings.database_url)
        return self._own

    def _run(self) -> None:
        while True:
            with self._ready:
                if not self._waiting:
                    self._ready.wait(self.IDLE_SECONDS)
                if not self._waiting:  # idle: the next `append` starts a writer again
                    self._thread = None
                    if self._own is not None:  # and connects again
                        self._own.dispose()
                        self._own = None
                    return
                batch = self._waiting[: self.MAX_BATCH]
                del self._waiting[: self.MAX_BATCH]
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        error: Exception | None = None
        entries = [p.entry for p in batch]
        try:
            # SQLAlchemy Core, not the ORM: the entries are inserted, never read back or
            # changed, and the ORM's unit of work would cost as much as the rest of a call.
            url = self._settings.database_url
            with (
                _appending,
                _between_processes(url),
                self._engine().begin() as connection,
            ):
                _link(connection, entries)
                connection.execute(insert(AuditEntry), [_values(e) for e in entries])
        except Exception as exc:  # handed to every caller of the batch
            error = exc
        for pending in batch:
            pending.batch, pending.error = len(batch), error
            pending.done.set()


@contextmanager
def _between_processes(url: str) -> Iterator[None]:
    """On a SQLite file, the journal writers of several processes (the server's workers) take
    turns on a lock file beside it: the kernel hands a released lock to the next waiter at
    once, where SQLite's own wait for its write lock sleeps in steps of up to 100 ms. On a
    server database the journal's table lock (`_lock`) queues them already."""
    database = make_url(url).database
    if not url.startswith("sqlite") or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.journal-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


_writers: dict[str, JournalWriter] = {}
_writers_lock = threading.Lock()


def writer(settings: Settings) -> JournalWriter:
    """This process's group-commit writer of the journal of `settings`' database."""
    with _writers_lock:
        found = _writers.get(settings.database_url)
        if found is None:
            found = _writers[settings.database_url] = JournalWriter(settings)
        return found


def archive_location(settings: Settings) -> Location:
    return settings.warehouse_location.child("ops", "audit_journal")


def _archive_rows(location: Location, columns: list[str] | None = None) -> list[dict[str, Any]]:
    if not location.is_delta_table():
        return []
    table = DeltaTable(location.uri, storage_options=location.storage_options())
    wanted = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    rows = query_delta(table, f"SELECT {wanted} FROM t").to_pylist()
    for row in rows:
        if "at" in row:
            row["at"] = naive_utc(row["at"])
    return rows


def _archived_max_seq(location: Location) -> int:
    if not location.is_delta_table():
        return 0
    table = DeltaTable(location.uri, storage_options=location.storage_options())
    return int(query_delta(table, "SELECT max(seq) AS seq FROM t").column("seq")[0].as_py() or 0)


def archive(s: Session, settings: Settings, *, at: datetime) -> int:
    """Append the entries not yet archived to the Delta table `ops/audit_journal` and return
    how many were written; with nothing new, write nothing and return 0.

    An `audit.archive` entry naming the range is recorded first and archived with it, so a
    second call finds nothing new. Should the database commit fail after the Delta write,
    `verify` reports the archived entry as missing: a false alarm rather than a missed one.
    """
    location = archive_location(settings)
    if not s.scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.seq > _archived_max_seq(location))
    ):
        return 0
    _lock(s)
    # Read again under the lock: another archiver may have finished meanwhile.
    archived_max = _archived_max_seq(location)
    last_seq, _ = _last(s)
    if last_seq <= archived_max:
        return 0
    record(
        s,
        at=at,
        actor="platform",
        action="audit.archive",
        detail={"first_seq": archived_max + 1, "last_seq": last_seq + 1, "to": location.uri},
    )
    entries = s.scalars(
        select(AuditEntry).where(AuditEntry.seq > archived_max).order_by(AuditEntry.seq)
    ).all()
    archived_at = naive_utc(at)
    data = {name: [getattr(e, name) for e in entries] for name in FIELDS}
    data["archived_at"] = [archived_at] * len(entries)
    write_deltalake(
        location.uri,
        pa.table(data, schema=ARCHIVE_SCHEMA),
        mode="append",
        storage_options=location.storage_options(),
    )
    return len(entries)


# -- purging --------------------------------------------------------------------------------
def years_before(moment: datetime, years: int) -> datetime:
    """The same calendar moment `years` years earlier (29 February becomes the 28th)."""
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:
        return moment.replace(year=moment.year - years, day=28)


def _seq_range(seqs: list[int]) -> str:
    return f"{seqs[0]}" if len(seqs) == 1 else f"{seqs[0]}–{seqs[-1]}"


def purge(s: Session, settings: Settings, *, before: datetime, at: datetime, actor: str) -> int:
    """Remove from the database the oldest entries dated before `before` and return how
    many went; the Delta archive keeps them.

    Refused (`AuditError`) when `before` is less than 3 years before `at`, or when an entry
    to remove is not archived or differs from its archived copy. Only a prefix of the chain
    goes (up to the first entry dated `before` or later), so the chain stays contiguous; an
    `audit.purge` entry names the range and the hash of the last entry removed.
    """
    before, at = naive_utc(before), naive_utc(at)
    limit = years_before(at, RETENTION_YEARS)
    if before > limit:
        raise AuditError(
            f"audit entries younger than {RETENTION_YEARS} years cannot be removed: "
            f"{before:%Y-%m-%d %H:%M:%S} is after {limit:%Y-%m-%d %H:%M:%S} "
            f"({RETENTION_YEARS} years before {at:%Y-%m-%d %H:%M:%S})"
        )
    _lock(s)
    first_seq = s.scalar(select(func.min(AuditEntry.seq)))
    first_young = s.scalar(select(func.min(AuditEntry.seq)).where(AuditEntry.at >= before))
    if first_young is None:
        last_seq = s.scalar(select(func.max(AuditEntry.seq)))
    else:
        last_seq = first_young - 1
    if first_seq is None or last_seq is None or last_seq < first_seq:
        return 0
    stored = {
        row.seq: row.hash
        for row in s.execute(
            select(AuditEntry.seq, AuditEntry.hash).where(AuditEntry.seq <= last_seq)
        )
    }
    if len(stored) != last_seq - first_seq + 1:
        raise AuditError(
            f"entries {first_seq}–{last_seq} have gaps: run `govlake audit verify`; "
            "nothing was removed"
        )
    archived = {
        row["seq"]: row["hash"]
        for row in _archive_rows(archive_location(settings), ["seq", "hash"])
        if first_seq <= row["seq"] <= last_seq
    }
    unarchived = sorted(set(stored) - set(archived))
    if unarchived:
        raise AuditError(
            f"entries {_seq_range(unarchived)} are not archived yet: run "
            "`govlake audit archive` first; nothing was removed"
        )
    differing = sorted(seq for seq, digest in stored.items() if archived[seq] != digest)
    if differing:
        raise AuditError(
            f"entries {', '.join(map(str, differing[:10]))} differ from their archived copies: "
            "run `govlake audit verify`; nothing was removed"
        )
    record(
        s,
        at=at,
        actor=actor,
        action="audit.purge",
        detail={
            "first_seq": first_seq,
            "last_seq": last_seq,
            "last_hash": stored[last_seq],
            "before": before.isoformat(),
            "count": len(stored),
        },
    )
    s.execute(delete(AuditEntry).where(AuditEntry.seq <= last_seq))
    return len(stored)


# -- verifying ------------------------------------------------------------------------------
def _ranges(seqs: Iterable[int]) -> Iterator[list[int]]:
    run: list[int] = []
    for seq in sorted(seqs):
        if run and seq != run[-1] + 1:
            yield run
            run = []
        run.append(seq)
    if run:
        yield run


def _purge_detail(values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        detail = json.loads(values["detail"])
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}


def verify(s: Session, settings: Settings) -> Verification:
    """Recompute every hash, follow the prev_hash links and compare with the Delta archive.

    Named problems: a hash that does not match its entry (edited), a missing seq (deleted),
    a broken link (inserted or deleted before it), an archived entry missing from the
    database (deleted, e.g. the newest) or differing from it (edited and re-hashed), an
    archived entry that no longer matches its own hash, and a purge the rules forbid.
    """
    entries = [_values(e) for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()]
    by_seq = {v["seq"]: v for v in entries}
    archived = {row["seq"]: row for row in _archive_rows(archive_location(settings))}
    problems: list[str] = []

    purges = {_purge_detail(v).get("last_seq"): v for v in entries if v["action"] == "audit.purge"}
    expected_prev: str | None = None
    if entries:
        first = entries[0]["seq"]
        if first == 1:
            expected_prev = GENESIS_HASH
        elif first - 1 in purges:
            expected_prev = _purge_detail(purges[first - 1]).get("last_hash")
        else:
            purged = max((n for n in purges if isinstance(n, int) and n < first), default=0)
            problems.append(
                f"seq {_seq_range(list(range(purged + 1, first)))}: missing with no recorded "
                "purge (oldest entries deleted)"
            )
    previous: dict[str, Any] | None = None
    for values in entries:
        seq = values["seq"]
        if entry_hash(values) != values["hash"]:
            problems.append(f"seq {seq}: content does not match its hash (entry edited)")
        if previous is not None and seq != previous["seq"] + 1:
            gap = list(range(previous["seq"] + 1, seq))
            problems.append(f"seq {_seq_range(gap)}: missing from the chain (entries deleted)")
        elif expected_prev is not None and values["prev_hash"] != expected_prev:
            before = "the last purged entry" if previous is None else f"seq {seq - 1}"
            problems.append(
                f"seq {seq}: does not link to {before} (an entry before it was inserted, "
                "deleted or replaced)"
            )
        expected_prev = values["hash"]
        previous = values

    for values in purges.values():
        problems.extend(_purge_problems(values, archived))

    last_seq = entries[-1]["seq"] if entries else 0
    for seq, row in sorted(archived.items()):
        if entry_hash(row) != row["hash"]:
            problems.append(f"archive seq {seq}: content does not match its hash (archive altered)")
        stored = by_seq.get(seq)
        if stored is not None and stored["hash"] != row["hash"]:
            problems.append(f"seq {seq}: differs from its archived copy (entry edited)")
    # Seqs missing inside the chain are reported as gaps above; past its end only the
    # archive can tell.
    for run in _ranges(seq for seq in archived if seq > last_seq):
        problems.append(
            f"seq {_seq_range(run)}: archived but missing from the database "
            "(newest entries deleted)"
        )
    return Verification(checked=len(entries), problems=problems, archived=len(archived))


def _purge_problems(
    values: Mapping[str, Any], archived: Mapping[int, Mapping[str, Any]]
) -> list[str]:
    """A purge is legitimate if it removed only archived entries older than 3 years."""
    seq, detail = values["seq"], _purge_detail(values)
    try:
        first, last = int(detail["first_seq"]), int(detail["last_seq"])
        before = datetime.fromisoformat(detail["before"])
    except (KeyError, TypeError, ValueError):
        return [f"seq {seq}: purge entry without a readable range and date"]
    problems = []
    if before > years_before(values["at"], RETENTION_YEARS):
        problems.append(
            f"seq {seq}: purged entries younger than {RETENTION_YEARS} years "
            f"(before {before:%Y-%m-%d})"
        )
    missing = [n for n in range(first, last + 1) if n not in archived]
    if missing:
        problems.append(f"seq {seq}: purged seq {_seq_range(missing)} that were never archived")
    elif archived[last]["hash"] != detail.get("last_hash"):
        problems.append(f"seq {seq}: the last purged hash does not match archived seq {last}")
    young = [n for n in range(first, last + 1) if n in archived and archived[n]["at"] >= before]
    if young:
        problems.append(f"seq {seq}: purged seq {_seq_range(young)} dated after its cutoff")
    return problems


# -- a department's trail -------------------------------------------------------------------
def trail(
    s: Session,
    catalog: Catalog,
    department: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntry]:
    """The entries that concern `department` (宝鸡 art. 21), oldest first: those where it is
    the consumer or the actor, and those about resources it supplies, so that a provider
    sees who read its data, when and for which purpose. `since` is inclusive, `until`
    exclusive."""
    supplied = sorted(r.qualified_name for r in catalog if department in r.providers)
    query = select(AuditEntry).where(
        or_(
            AuditEntry.consumer == department,
            AuditEntry.actor == department,
            AuditEntry.resource.in_(supplied),
        )
    )
    if since is not None:
        query = query.where(AuditEntry.at >= naive_utc(since))
    if until is not None:
        query = query.where(AuditEntry.at < naive_utc(until))
    return list(s.scalars(query.order_by(AuditEntry.seq)).all())


def export(entries: Iterable[AuditEntry], path: Path, *, fmt: ExportFormat = "csv") -> int:
    """Write `entries` with every field (hashes included) as CSV or JSON lines; return how
    many were written. Times are ISO 8601 UTC."""
    if fmt not in ("csv", "jsonl"):
        raise AuditError(f"unknown export format {fmt!r}; use csv or jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        for entry in entries:
            values = _values(entry)
            values["at"] = entry.at.isoformat(timespec="microseconds") + "Z"
            if writer is not None:
                writer.writerow(values)
            else:
                values["detail"] = json.loads(entry.detail)
                handle.write(json.dumps(values, ensure_ascii=False) + "\n")
            count += 1
    return count
