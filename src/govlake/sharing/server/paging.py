"""The pages of a table query's or a changes query's answer (`maxFiles`, `pageToken`) and the
end-stream action that closes one (`end_stream_action`: PROTOCOL.md's `endStreamAction`, the
reference server's `EndStreamAction`), with the tokens it hands out (the reference server's
`QueryTablePageToken` and `RefreshToken`):

- the next page's token (`PAGE`), which pins what the first page read: the table, the version
  of a snapshot (or the range of versions of a changes query, its end resolved to a number),
  a digest of the query's other parameters, and where the next page starts. Later pages of
  the same query read the same version even when a new one is committed meanwhile;
- the refresh token (`REFRESH`) of a query of the latest version, which pins that version, so
  that a client refreshing its file URLs later is given the same files.

A token is base64url JSON under an HMAC-SHA256 with the server's signing key. A page token
expires with the file URLs of the answer that issued it (a client fetches all pages before the
first page's URLs expire); a refresh token after `REFRESH_LIFETIME`, since a client refreshes
its URLs when they are about to expire. One the server did not issue, one issued for
another table or another query, or an expired one, is refused (`InvalidParameter`), never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from typing import Any, TypeVar

from govlake.sharing.server import signed
from govlake.sharing.server.tables import InvalidParameter

PAGE, REFRESH = "page", "refresh"
#: How long a refresh token is good for, at least.
REFRESH_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class QueryToken:
    """What a token pins."""

    kind: str  # PAGE | REFRESH
    table: str  # share.schema.table
    query: str  # digest of the query's parameters other than paging (`query_digest`)
    expires: int  # ms since the epoch
    version: int | None = None  # the snapshot read
    start: int | None = None  # the versions of a changes query (or query from a version)
    end: int | None = None
    offset: int = 0  # the first item of the next page
    pinned: bool = False  # the query named its version (the answer says it)


def query_digest(parameters: Mapping[str, Any]) -> str:
    """A digest of a query's parameters, to tell a later page of the same query from another."""
    canonical = json.dumps(parameters, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


#: The purpose query tokens are signed for (`signed`): never taken for a file URL's grant.
_PURPOSE = "query-token"


def issue(key: bytes, token: QueryToken) -> str:
    """`token` as text: base64url JSON, a dot, its MAC."""
    body, mac = signed.sign(key, asdict(token), purpose=_PURPOSE)
    return f"{body}.{mac}"


def open_token(key: bytes, text: str, *, kind: str, table: str, query: str,
               now: int) -> QueryToken:  # fmt: skip
    """The token `text`, if this server issued it, of `kind`, for `table` and the query with
    digest `query`, and not expired at `now` (ms); else `InvalidParameter`."""
    name = "pageToken" if kind == PAGE else "refreshToken"
    body, _, mac = text.rpartition(".")
    try:
        found = _token(signed.opened(key, body, mac, purpose=_PURPOSE))
    except (ValueError, TypeError) as exc:  # not issued here, or not a query token
        raise InvalidParameter(f"{name} is not one this server issued") from exc
    if found.kind != kind or found.table != table:
        raise InvalidParameter(f"{name} was issued for another table or call")
    if found.query != query:
        raise InvalidParameter(f"{name} was issued for a query with other parameters: "
                               "repeat the first page's parameters")  # fmt: skip
    if found.expires <= now:
        raise InvalidParameter(f"{name} has expired: query the table again")
    return found


def _token(raw: Any) -> QueryToken:
    """The token `raw` (parsed JSON) is, field by field; `ValueError` unless exactly one."""
    names = {f.name for f in fields(QueryToken)}
    if not isinstance(raw, dict) or set(raw) != names:
        raise ValueError("not a query token")
    kinds = {"kind": str, "table": str, "query": str, "expires": int, "offset": int,
             "pinned": bool}  # fmt: skip
    for name, kind in kinds.items():
        if type(raw[name]) is not kind:
            raise ValueError(f"{name} is a {kind.__name__}")
    for name in ("version", "start", "end"):
        if raw[name] is not None and type(raw[name]) is not int:
            raise ValueError(f"{name} is a number")
    return QueryToken(**raw)


T = TypeVar("T")


def page_of(items: Sequence[T], offset: int, size: int | None) -> tuple[Sequence[T], int | None]:
    """The items of the page starting at `offset`, of at most `size` (None: all the rest), and
    the offset of the next page (None: this is the last)."""
    if offset > len(items):
        raise InvalidParameter("pageToken points past the end of the answer")
    end = len(items) if size is None else min(len(items), offset + size)
    return items[offset:end], (end if end < len(items) else None)


@dataclass(frozen=True)
class Tokens:
    """Issues and opens the page and refresh tokens of one call, for its table and the digest
    of its parameters: a page token expires with the file URLs handed out with it, a refresh
    token after `REFRESH_LIFETIME`."""

    key: bytes
    table: str
    query: str
    now: int
    expires: int
    refresh_expires: int

    @classmethod
    def of(cls, key: bytes, ttl: timedelta, table: str, query: Mapping[str, Any],
           now: int) -> Tokens:  # fmt: skip
        """The tokens of a call at `now` (ms) whose file URLs live `ttl`."""
        refresh = max(ttl, REFRESH_LIFETIME)
        return cls(key, table, query_digest(query), now, now + millis_of(ttl),
                   now + millis_of(refresh))  # fmt: skip

    def open(self, kind: str, text: str) -> QueryToken:
        return open_token(self.key, text, kind=kind, table=self.table, query=self.query,
                          now=self.now)  # fmt: skip

    def issue(self, kind: str, **pins: Any) -> str:
        expires = self.refresh_expires if kind == REFRESH else self.expires
        return issue(self.key, QueryToken(kind, self.table, self.query, expires, **pins))


def millis_of(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


@dataclass(frozen=True)
class Paging:
    """The page a call answers: `size` items at most (the client's `maxFiles`; None: all) from
    `resumed`'s offset; `end_stream`: the answer ends with the end-stream action, as the
    client asked (`asked`) or as paging needs (the next page's token travels in it)."""

    size: int | None
    resumed: QueryToken | None
    asked: bool

    @property
    def offset(self) -> int:
        return 0 if self.resumed is None else self.resumed.offset

    @property
    def end_stream(self) -> bool:
        return self.asked or self.size is not None or self.resumed is not None

    def detail(self, following: int | None) -> dict[str, Any]:
        """What the journal keeps of the page (nothing for an answer in one piece)."""
        if self.size is None and self.resumed is None:
            return {}
        return {"maxFiles": self.size, "offset": self.offset, "nextPage": following is not None}


def end_stream_action(lines: Sequence[Mapping[str, Any]], next_page: str | None,
                      refresh: str | None) -> dict[str, Any]:  # fmt: skip
    """The end-stream action closing an answer of `lines`: the next page's token, the refresh
    token, and the earliest expiry of the URLs handed out (each only when there is one)."""
    found: dict[str, Any] = {}
    if refresh is not None:
        found["refreshToken"] = refresh
    if next_page is not None:
        found["nextPageToken"] = next_page
    expiries = [entry["expirationTimestamp"] for line in lines for entry in line.values()
                if isinstance(entry, Mapping) and "expirationTimestamp" in entry]  # fmt: skip
    if expiries:
        found["minUrlExpirationTimestamp"] = min(expiries)
    return {"endStreamAction": found}
