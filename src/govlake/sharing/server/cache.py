"""What a sharing server worker keeps between calls, so that a call answered from it opens no
database transaction to authenticate its caller or decide its access: a token's consumer, an
access decision, a table's latest version and whether it is published yet.

The rule the caches keep (issue 17): a revocation, a suspension, an expired token or a new
grant takes effect within one second on every worker. So an entry is used only

- for at most `sharing_cache_seconds` (≤ 1) of real time after it was looked up: a change
  made by another process is seen within that;
- while the app clock lies in the window the entry was computed for: not before the moment
  it was looked up, not at or after the moment its rows say the answer changes (a token's
  expiry, a grant's expiry or a suspension set to start; see `access.decided_until`), so a
  time-bound change is exact, not late by the cache;
- until this process commits a change to tokens, consumers, grants or suspensions, or
  journals a publication: such a commit (seen by SQLAlchemy's session events) drops every
  entry at once.

`sharing_cache_seconds = 0` turns the caches off. Lookups are counted in
`metrics.CACHE_LOOKUPS` by cache and result.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

from govlake.platform.database import AuditEntry, Consumer, Grant, Suspension, Token
from govlake.sharing.published import ACTION as PUBLISH
from govlake.sharing.server import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: The rows an access answer depends on: a committed change to one drops every entry.
_WATCHED = (Consumer, Grant, Suspension, Token)
#: `Session.info` key: the session flushed a change to a watched row.
_CHANGED = "govlake.access_changed"
#: Most entries a cache keeps; the oldest go first.
SIZE = 10_000


class _Generation:
    """The count of this process's commits that changed a watched row."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


_generation = _Generation()


def _changes_access(row: object) -> bool:
    if isinstance(row, AuditEntry):  # a new version published by this process
        return row.action == PUBLISH  # its commit drops the latest versions kept too
    return isinstance(row, _WATCHED)


@event.listens_for(Session, "after_flush")
def _note_change(s: Session, _context: Any) -> None:
    if any(_changes_access(row) for row in (*s.new, *s.dirty, *s.deleted)):
        s.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _drop_on_commit(s: Session) -> None:
    if s.info.pop(_CHANGED, False):
        _generation.bump()


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(s: Session) -> None:
    s.info.pop(_CHANGED, None)


@dataclass(frozen=True)
class _Kept(Generic[V]):
    value: V
    made: float  # time.monotonic() of the lookup
    generation: int
    since: datetime | None  # the app clock at the lookup
    until: datetime | None  # the app clock from which the answer may differ


class TimedCache(Generic[K, V]):
    """Values by key, each used for at most `seconds` of real time, within the app-clock
    window it was computed for, and until this process commits an access change."""

    def __init__(self, name: str, seconds: float, *, size: int = SIZE):
        self.seconds = seconds
        self._size = size
        self._kept: OrderedDict[K, _Kept[V]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = metrics.CACHE_LOOKUPS.labels(cache=name, result="hit")
        self._misses = metrics.CACHE_LOOKUPS.labels(cache=name, result="miss")

    def get(self, key: K, at: datetime | None = None) -> V | None:
        """The value kept for `key` if it may still be used at app time `at` (None: any)."""
        kept = self._kept.get(key)
        if (
            kept is not None
            and time.monotonic() - kept.made < self.seconds
            and kept.generation == _generation.value
            and (at is None or kept.since is None or kept.since <= at)
            and (at is None or kept.until is None or at < kept.until)
        ):
            self._hits.inc()
            return kept.value
        self._misses.inc()
        return None

    def put(self, key: K, value: V, *, at: datetime | None = None,
            until: datetime | None = None) -> V:  # fmt: skip
        """Keep `value`, looked up just now at app time `at`, valid until app time `until`;
        returns it."""
        return self.keep(key, value, started(), at=at, until=until)

    def keep(self, key: K, value: V, lookup: Started, *, at: datetime | None = None,
             until: datetime | None = None) -> V:  # fmt: skip
        """`put` a value whose lookup began at `lookup` (`started()`): its second counts from
        then, and a change committed meanwhile is not hidden behind it."""
        if self.seconds <= 0:
            return value
        with self._lock:
            self._kept[key] = _Kept(value, lookup.monotonic, lookup.generation, at, until)
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return value


class Started(NamedTuple):
    """When a lookup began: the real time and the count of access changes this process had
    committed by then."""

    monotonic: float
    generation: int


def started() -> Started:
    """Call before a lookup whose result is to be kept (`TimedCache.keep`)."""
    return Started(time.monotonic(), _generation.value)
