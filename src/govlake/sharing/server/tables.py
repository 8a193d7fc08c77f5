"""Names, versions and pages of the sharing protocol: the shares, schemas and tables a
consumer sees, the table a name resolves to, the version a query or a changes query asks
for (by number or by timestamp) or the versions a query from a starting version covers, the
files a query's predicate hint leaves (`hinted`, by their statistics) or its limit hint
needs (`enough`), and the page tokens of the listings.

Failures are domain errors (`NameNotFound`, `InvalidParameter`, `access.AccessError`);
`govlake.sharing.server.errors` decides how each is answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from govlake.core.errors import GovlakeError
from govlake.core.location import Location
from govlake.core.runs import naive_utc
from govlake.lake import predicates
from govlake.lake.deltalog import ChangesUnavailable, DataFile, DeltaLog
from govlake.platform.database import Consumer
from govlake.sharing.access import AccessError, Decision, SharedTable, decide, decided_until
from govlake.sharing.server.cache import TimedCache, started

#: The most items a listing answers in one page.
MAX_PAGE = 1000


class NameNotFound(GovlakeError, LookupError):
    """A name the server shares nothing under, or nothing the caller may see."""


class ShareNotFound(NameNotFound):
    def __init__(self, share: str):
        super().__init__(f"share {share!r} does not exist")


class SchemaNotFound(NameNotFound):
    def __init__(self, share: str, schema: str):
        super().__init__(f"schema {share}.{schema} does not exist")


class TableNotFound(NameNotFound):
    def __init__(self, full_name: str):
        super().__init__(f"table {full_name!r} does not exist")


class InvalidParameter(GovlakeError, ValueError):
    """A query parameter the protocol does not accept, or parameters that do not fit
    together."""


# -- names ----------------------------------------------------------------------------------
class SharedTables:
    """The published tables by their protocol name (`share.schema.table`), and what of them
    a consumer may see.

    Access decisions, whether a table is published yet, and each table's latest version are
    kept for `cache_seconds` (`cache`: at most a second, within the app-clock window they
    hold for); a version's state is immutable and kept by `DeltaLog` itself."""

    def __init__(self, by_name: dict[str, SharedTable], cache_seconds: float = 0.0):
        self.by_name = by_name
        self._decisions: TimedCache[tuple[str, str], Decision] = TimedCache(
            "decision", cache_seconds)  # fmt: skip
        self._published: TimedCache[str, bool] = TimedCache("published", cache_seconds)
        self._latest: TimedCache[str, int] = TimedCache("snapshot", cache_seconds)
        self._logs = {name: _KeptLog(t.location, self._latest) for name, t in by_name.items()}

    @classmethod
    def of(cls, tables: Iterable[SharedTable], cache_seconds: float = 0.0) -> SharedTables:
        return cls({t.full_name: t for t in tables}, cache_seconds)

    def _is_published(self, table: SharedTable) -> bool:
        """Whether `table` has a first version: kept once it has (a table is not unpublished),
        looked up on every call until then."""
        if self._published.get(table.full_name):
            return True
        found = table.location.is_delta_table()
        return self._published.put(table.full_name, True) if found else False

    def decision(self, s: Session, who: Consumer, table: SharedTable, at: datetime) -> Decision:
        """`decide`, from the cache when it may answer for `at`: the database is read (in
        `s`, lazily) only on a miss."""
        key = (who.code, table.full_name)
        found = self._decisions.get(key, at)
        if found is None:
            lookup = started()
            found = decide(s, who, table, at=at)
            if self._decisions.seconds > 0:
                until = decided_until(s, who, table, at=at)
                self._decisions.keep(key, found, lookup, at=at, until=until)
        return found

    def visible(self, s: Session, who: Consumer, at: datetime) -> list[SharedTable]:
        """The tables `who` may read at `at`, of those published already."""
        return [
            t for t in self.by_name.values()
            if self._is_published(t) and self.decision(s, who, t, at).allowed
        ]  # fmt: skip

    def shares(self, s: Session, who: Consumer, at: datetime) -> list[str]:
        return sorted({t.share for t in self.visible(s, who, at)})

    def in_share(self, s: Session, who: Consumer, at: datetime, share: str) -> list[SharedTable]:
        """The visible tables of `share`; `ShareNotFound` when there is none."""
        mine = [t for t in self.visible(s, who, at) if t.share == share]
        if not mine:
            raise ShareNotFound(share)
        return mine

    def in_schema(self, s: Session, who: Consumer, at: datetime, share: str,
                  schema: str) -> list[SharedTable]:  # fmt: skip
        """The visible tables of `share.schema` by name; `SchemaNotFound` when there is none."""
        mine = [t for t in self.visible(s, who, at) if t.share == share and t.schema == schema]
        if not mine:
            raise SchemaNotFound(share, schema)
        return sorted(mine, key=lambda t: t.name)

    def log(self, table: SharedTable) -> DeltaLog:
        """The Delta log of `table`, to read its versions, files and metadata; its latest
        version is kept for the cache's time."""
        return self._logs.get(table.full_name) or DeltaLog(table.location)

    def readable(self, s: Session, who: Consumer, at: datetime,
                 full_name: str) -> tuple[SharedTable, str | None]:  # fmt: skip
        """The published table `full_name` and the purpose `who` reads it under;
        `TableNotFound`, or `AccessError` with the reason it may not."""
        table = self.by_name.get(full_name)
        if table is None or not self._is_published(table):
            raise TableNotFound(full_name)
        decision = self.decision(s, who, table, at)
        if not decision.allowed:
            raise AccessError(decision.reason)
        return table, decision.purpose


class _KeptLog(DeltaLog):
    """A table's Delta log whose latest version is kept in `latest` for a while: a new
    version is seen within the cache's time instead of the log being listed on every call."""

    def __init__(self, location: Location, latest: TimedCache[str, int]):
        super().__init__(location)
        self._kept = latest

    def latest(self) -> int:
        found = self._kept.get(self.location.uri)
        if found is None:
            lookup = started()  # a version committed during the lookup is seen a second on
            found = self._kept.keep(self.location.uri, super().latest(), lookup)
        return found


#: A table's id, by location: it changes only when a table is made anew.
_table_ids: TimedCache[str, str] = TimedCache("table_id", 1.0)


def share_id(share: str) -> str:
    return hashlib.sha256(f"share:{share}".encode()).hexdigest()[:32]


def table_item(t: SharedTable) -> dict[str, Any]:
    """A table as the listings show it."""
    table_id = _table_ids.get(t.location.uri)
    if table_id is None:
        table_id = _table_ids.put(t.location.uri, str(DeltaLog(t.location).table().metadata().id))
    return {"name": t.name, "schema": t.schema, "share": t.share,
            "shareId": share_id(t.share), "id": table_id}  # fmt: skip


# -- pages ----------------------------------------------------------------------------------
def page(items: list[dict[str, Any]], max_results: int | None,
         token: str | None) -> dict[str, Any]:  # fmt: skip
    """The page of `items` that `token` (an offset this server handed out) starts, of at
    most `max_results` (and `MAX_PAGE`) items, with the token of the next page if any."""
    start = 0
    if token:
        try:
            start = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        # binascii.Error is a ValueError; deeply nested JSON raises RecursionError
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise InvalidParameter(f"pageToken {token!r} is not valid") from exc
        # Only offsets this server hands out: a whole number, not negative.
        if type(start) is not int or start < 0:
            raise InvalidParameter(f"pageToken {token!r} is not valid")
    size = min(max_results or MAX_PAGE, MAX_PAGE)
    result: dict[str, Any] = {"items": items[start : start + size]}
    if start + size < len(items):
        offset = json.dumps({"offset": start + size}).encode()
        result["nextPageToken"] = base64.urlsafe_b64encode(offset).decode()
    return result


# -- versions -------------------------------------------------------------------------------
class QueryBody(BaseModel):
    """The body of a table query (PROTOCOL.md, "Request Body"; the paging and refresh fields
    as the reference server's `QueryTableRequest` has them)."""

    model_config = ConfigDict(extra="ignore")
    predicateHints: list[str] | None = None
    jsonPredicateHints: str | None = None
    limitHint: int | None = Field(default=None, ge=0)
    version: int | None = Field(default=None, ge=0)
    timestamp: str | None = None
    startingVersion: int | None = Field(default=None, ge=0)
    endingVersion: int | None = Field(default=None, ge=0)
    maxFiles: int | None = Field(default=None, ge=1)
    pageToken: str | None = None
    includeRefreshToken: bool | None = None
    refreshToken: str | None = None

    def query(self) -> dict[str, Any]:
        """The parameters that make the query what it is: all but the paging and refresh ones
        (later pages repeat them; a refresh asks for the same files again)."""
        return self.model_dump(exclude={"maxFiles", "pageToken", "includeRefreshToken",
                                        "refreshToken"})  # fmt: skip


def parse_time(value: str, name: str) -> datetime:
    """The ISO 8601 timestamp of parameter `name`, as naive UTC."""
    try:
        # In UTC, a time on the first or last day of the calendar may leave it (OverflowError).
        return naive_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (ValueError, OverflowError) as exc:
        raise InvalidParameter(f"{name} must be an ISO 8601 timestamp, got {value!r}") from exc


def starting_version(delta: DeltaLog, starting: str | None) -> int:
    """The table's version (`startingTimestamp` given: the first committed at or after it)."""
    if starting:
        return delta.version_at(parse_time(starting, "startingTimestamp"), starting=True)
    return delta.version()


@dataclass(frozen=True)
class Snapshot:
    """The version a query reads; `pinned` when the query named it (by number or time)."""

    version: int
    pinned: bool


def queried_version(delta: DeltaLog, body: QueryBody) -> Snapshot:
    """The version a query of a snapshot asks for: its `version`, the one current at its
    `timestamp`, or the latest."""
    if body.version is not None and body.timestamp is not None:
        raise InvalidParameter("give version or timestamp, not both")
    if body.timestamp is not None:
        moment = parse_time(body.timestamp, "timestamp")
        return Snapshot(delta.version_at(moment, starting=False), pinned=True)
    if body.version is not None:
        return Snapshot(body.version, pinned=True)
    return Snapshot(delta.version(), pinned=False)


def check_query(body: QueryBody) -> None:
    """Refuse the parameters of a query that do not fit together: a snapshot (`version`,
    `timestamp`) or the changes since `startingVersion`, not both; an `endingVersion` before
    the `startingVersion`; a refresh token asked for a named version."""
    if body.startingVersion is not None:
        if body.version is not None or body.timestamp is not None:
            raise InvalidParameter("give startingVersion or version or timestamp, one of them")
        if body.endingVersion is not None and body.endingVersion < body.startingVersion:
            raise InvalidParameter("endingVersion is before startingVersion")
    latest = body.version is None and body.timestamp is None and body.startingVersion is None
    if body.includeRefreshToken and not latest:
        raise InvalidParameter("includeRefreshToken is for a query of the latest version only")
    if body.refreshToken is not None and not latest:
        raise InvalidParameter("refreshToken is for a query of the latest version only")


def query_range(delta: DeltaLog, body: QueryBody) -> Changes:
    """The versions a query from `startingVersion` covers: up to its `endingVersion` (a hint
    the protocol lets a server go beyond, so one past the latest reads to the latest) or the
    latest, resolved to a number so that later pages read the same range."""
    assert body.startingVersion is not None
    latest = delta.version()
    end = latest if body.endingVersion is None else min(body.endingVersion, latest)
    if body.startingVersion > latest:
        raise InvalidParameter(
            f"startingVersion {body.startingVersion} is after the latest version {latest}"
        )
    return Changes(body.startingVersion, end)


def hinted(files: list[DataFile], hint: str | None) -> tuple[list[DataFile], str | None]:
    """The files that may hold a row `hint` (a JSON predicate) selects, by their statistics,
    and what became of the hint. A hint that is not a predicate tree is ignored, all files
    kept (PROTOCOL.md: on any error in processing the predicates the server skips filtering;
    the client filters the rows itself anyway)."""
    if hint is None:
        return files, None
    try:
        predicate = predicates.parse(hint)
    except predicates.InvalidPredicate as exc:
        return files, f"ignored: {exc}"
    kept = [f for f in files if predicates.might_match(predicate, f.stats)]
    return kept, f"skipped {len(files) - len(kept)} of {len(files)} files"


def enough(files: list[DataFile], limit: int) -> list[DataFile]:
    """The first files that hold `limit` live rows (deletion vectors applied), when every
    file's row count is known; else all of them."""
    if any(f.rows is None for f in files):
        return files
    chosen, total = [], 0
    for f in files:
        if total >= limit:
            break
        chosen.append(f)
        total += f.rows or 0
    return chosen


@dataclass(frozen=True)
class Changes:
    """What a changes query asks for: from version `start` to `end` (None: the latest)."""

    start: int
    end: int | None


def changes_range(
    delta: DeltaLog,
    *,
    starting_version: int | None,
    ending_version: int | None,
    starting_timestamp: str | None,
    ending_timestamp: str | None,
) -> Changes:
    """The versions a changes query covers, given by number or by timestamp."""
    if (starting_version is None) == (starting_timestamp is None):
        raise InvalidParameter("give exactly one of startingVersion and startingTimestamp")
    start = starting_version
    if starting_timestamp is not None:
        start = delta.version_at(parse_time(starting_timestamp, "startingTimestamp"),
                                 starting=True)  # fmt: skip
    end = ending_version
    if ending_timestamp is not None:
        end = delta.version_at(parse_time(ending_timestamp, "endingTimestamp"), starting=False)
    assert start is not None
    return Changes(start, end)


def changed_files(delta: DeltaLog, table: SharedTable, wanted: Changes) -> list[DataFile]:
    """The files added and removed over `wanted`; `InvalidParameter` when the table's log no
    longer holds them."""
    try:
        return delta.changes(wanted.start, wanted.end)
    except ChangesUnavailable as exc:
        raise InvalidParameter(
            f"changes of {table.full_name} from version {wanted.start}: {exc}"
        ) from exc
