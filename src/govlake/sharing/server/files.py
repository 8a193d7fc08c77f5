"""The data files of a query's answer: their URLs, and the files the sharing server serves
itself (tables on local storage) with the Range header, keeping the signatures out of the
access log.

- `file_entry` (parquet response format) and `delta_file_entry` (delta response format, with
  the file's deletion vector) issue a data file's URL, and a deletion vector file's: signed
  here for a local table, SigV4-presigned for a table on S3 (the store serves it).
- A local file URL carries a `FileGrant` (table, file, consumer, expiry) as base64url JSON in
  its path and the grant's HMAC-SHA256 in its query (`SIGNATURE`). Anything that is not
  exactly such a grant under a valid MAC is refused (`InvalidFileUrl`), never a server error.
  The grant only says what was issued: the server checks the consumer's access again at each
  download (`granted_file`).
- `byte_range` reads the Range header (RFC 9110 §14) for one file: one byte range is served
  as partial content; an empty header, another unit (which the RFC says to ignore) or
  several ranges get the whole file (as S3 answers several ranges); a malformed byte range
  is `MalformedRange`; a range that starts past the end is `UnsatisfiableRange` (answered
  with `Content-Range: bytes */<size>`).
- `SignedUrlFilter` takes the MAC out of every file URL in uvicorn's access log lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from govlake.core.errors import GovlakeError
from govlake.lake.deltalog import DataFile, millis
from govlake.platform.database import Consumer
from govlake.sharing.access import AccessError, SharedTable, decide
from govlake.sharing.server import signed

#: The path the server serves files under (`govlake.sharing.server.routes`).
FILES_PATH = "/delta-sharing/files/"
#: The query parameter of a local file URL's MAC. The delta response format's reader
#: (delta-kernel-rs, under the official client) fetches a file over HTTP only when its URL
#: looks presigned, which it tells by one of a few query keys: the URL is presigned in that
#: sense (a signature with an expiry), with the key of S3's query-string signatures.
SIGNATURE = "X-Amz-Signature"


# -- signed URLs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FileGrant:
    """What a signed local file URL allows: one file of one table, to one consumer, until."""

    table: str
    path: str
    consumer: str
    expires: int  # ms since the epoch

    def expired(self, at: datetime) -> bool:
        return self.expires <= millis(at)

    @classmethod
    def of(cls, found: Any) -> FileGrant:
        """The grant `found` (parsed JSON) is, or `ValueError` unless it is exactly one."""
        fields = {"table": str, "path": str, "consumer": str, "expires": int}
        if not isinstance(found, dict) or set(found) != set(fields):
            raise ValueError(f"a file grant has the fields {sorted(fields)}")
        for name, kind in fields.items():
            if type(found[name]) is not kind:
                raise ValueError(f"a file grant's {name} is a {kind.__name__}")
        return cls(**found)


class InvalidFileUrl(AccessError):
    """A file URL whose signature or content is not one the server issued."""

    def __init__(self) -> None:
        super().__init__("the file URL is not valid: query the table for its file URLs")


class ExpiredFileUrl(AccessError):
    def __init__(self) -> None:
        super().__init__("the file URL has expired: query the table again for fresh URLs")


class UrlSigner:
    def __init__(self, key: bytes, ttl: timedelta):
        self.key, self.ttl = key, ttl

    def sign(self, grant: FileGrant) -> str:
        body, mac = self.sign_parts(grant)
        return f"{body}.{mac}"

    def sign_parts(self, grant: FileGrant) -> tuple[str, str]:
        """The grant as base64url JSON, and its MAC."""
        return signed.sign(self.key, asdict(grant))

    def open(self, token: str) -> FileGrant:
        """The grant of a token this signer issued, expired or not (the caller checks the
        expiry once it knows whom to journal); `InvalidFileUrl` for anything else (the
        token comes from the URL path: any text at all)."""
        body, _, mac = token.rpartition(".")
        try:
            return FileGrant.of(signed.opened(self.key, body, mac))
        except ValueError as exc:  # not issued here, or not a grant
            raise InvalidFileUrl() from exc


class DataFileNotFound(GovlakeError, LookupError):
    """A file a signed URL names that is not a data file of its table (any more)."""


class UnservableDeletionVector(GovlakeError):
    """A deletion vector stored at an absolute path, which the server does not sign."""


# -- the URLs of a query's files ------------------------------------------------------------
def signed_url(request: Request, table: SharedTable, path: str, consumer: str) -> tuple[str, int]:
    """The URL of the file at `path` in `table` for `consumer`, and when it expires: signed
    here (served by `download_file`) for a local table, presigned for S3; valid for the
    signer's time to live from now."""
    state = request.app.state
    signer: UrlSigner = state.signer
    expires = millis(state.clock() + signer.ttl)
    if table.location.is_local:
        body, mac = signer.sign_parts(FileGrant(table.full_name, path, consumer, expires))
        return f"{_files_url(request)}{body}?{SIGNATURE}={mac}", expires
    return presign(table, path, signer.ttl, state.settings.sharing_s3_endpoint), expires


#: `request.state` key of the call's URL of the file route, up to the token.
_FILES_URL = "files_url"


def _files_url(request: Request) -> str:
    """The URL of the file route as this call reached the server, up to the token: worked out
    once per call (starlette's `url_for` costs more than the rest of a file's entry), the
    token appended as is (base64url needs no quoting)."""
    found: str | None = getattr(request.state, _FILES_URL, None)
    if found is None:
        found = str(request.url_for("download_file", token="-")).removesuffix("-")
        setattr(request.state, _FILES_URL, found)
    return found


def file_id(table: SharedTable, path: str) -> str:
    """The same id for the same file of a table, whoever asks and whenever."""
    return hashlib.sha256(f"{table.full_name}/{path}".encode()).hexdigest()


def file_entry(request: Request, table: SharedTable, f: DataFile, consumer: str) -> dict[str, Any]:
    """The parquet response format's entry for one data file of `table`, with its URL for
    `consumer` (`signed_url`)."""
    url, expires = signed_url(request, table, f.path, consumer)
    entry: dict[str, Any] = {
        "url": url,
        "id": file_id(table, f.path),
        "partitionValues": {},
        "size": f.size,
        "expirationTimestamp": expires,
    }
    if f.records is not None:
        entry["stats"] = json.dumps({"numRecords": f.records})
    return entry


def delta_file_entry(
    request: Request, table: SharedTable, f: DataFile, consumer: str
) -> dict[str, Any]:
    """The delta response format's entry for one data file of `table` (its add or remove
    action, `f.change`): the action as the log holds it, its path replaced by the file's URL
    for `consumer`, and a deletion vector kept in a file beside the data replaced by one at
    that file's URL (storage type `p`, an absolute path), as the reference server does."""
    url, expires = signed_url(request, table, f.path, consumer)
    action = dict(f.action or {"path": f.path, "partitionValues": {}, "size": f.size,
                               "dataChange": True})  # fmt: skip
    action["path"] = url
    entry: dict[str, Any] = {"id": file_id(table, f.path), "size": f.size}
    vector = f.deletion_vector
    if vector and vector.storage_type != "i":  # inline vectors travel in the action as they are
        if vector.relative_path is None:
            raise UnservableDeletionVector(
                f"{table.full_name}: the deletion vector of {f.path} is stored at an absolute "
                "path, which the server does not share"
            )
        vector_url, vector_expires = signed_url(request, table, vector.relative_path, consumer)
        action["deletionVector"] = vector.descriptor() | {
            "storageType": "p",
            "pathOrInlineDv": vector_url,
        }
        entry["deletionVectorFileId"] = file_id(table, vector.relative_path)
        expires = min(expires, vector_expires)
    return entry | {"expirationTimestamp": expires, "deltaSingleAction": {f.change: action}}


@lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, access_key: str | None) -> Any:
    """One boto3 client per endpoint and key: building one costs more than presigning a
    thousand URLs. Credentials come from the `AWS_*` variables, as for the engine.
    SigV4 (boto3 presigns SigV2 unless told, and the client then fails); path-style keys."""
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def presign(table: SharedTable, path: str, ttl: timedelta, endpoint: str | None) -> str:
    """A SigV4 presigned GET of one file of an S3 table, valid for `ttl`, on `endpoint` (the
    store as consumers reach it) or else the platform's own `AWS_ENDPOINT_URL`."""
    bucket, _, prefix = table.location.uri.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{path}" if prefix else path
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    client = _s3_client(endpoint, os.environ.get("AWS_ACCESS_KEY_ID"))
    return str(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                             ExpiresIn=int(ttl.total_seconds())))  # fmt: skip


# -- serving a local file -------------------------------------------------------------------
def granted_file(s: Session, grant: FileGrant, table: SharedTable | None,
                 at: datetime) -> tuple[str, str | None]:  # fmt: skip
    """The file `grant` names in `table` (None: no longer shared) and the purpose its
    consumer reads it under, if that consumer may still read the table at `at`: else
    `ExpiredFileUrl`, `DataFileNotFound` or `AccessError`."""
    if grant.expired(at):
        raise ExpiredFileUrl()
    if table is None or ".." in grant.path.split("/"):
        raise DataFileNotFound("no such file")
    who = s.get(Consumer, grant.consumer)
    if who is None or not who.active:
        raise AccessError(f"consumer {grant.consumer} is not active")
    decision = decide(s, who, table, at=at)
    if not decision.allowed:
        raise AccessError(decision.reason)
    target = table.location.child(grant.path).uri
    if not os.path.isfile(target):
        raise DataFileNotFound("the file is no longer in the table (vacuumed)")
    return target, decision.purpose


def file_reply(target: str, headers: Mapping[str, str]) -> FilePart:
    """The local file `target`, whole or the one byte range the request `headers` ask for
    (Range), whole again when the file changed since the client's first part (If-Range)."""
    stat = os.stat(target)
    reply = FilePart(target, None, stat_result=stat, media_type="application/octet-stream")
    part = byte_range(headers.get("range"), stat.st_size)
    if_range = headers.get("if-range")
    validators = (reply.headers["etag"], reply.headers["last-modified"])
    if part is not None and if_range is not None and if_range not in validators:
        part = None  # the file changed since the client's first part: all of it (RFC 9110)
    reply.part = part
    return reply


# -- Range ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ByteRange:
    """Bytes `start` to `end` (inclusive) of a file of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


class MalformedRange(GovlakeError, ValueError):
    """A Range header in bytes that is not a valid byte range."""


class UnsatisfiableRange(GovlakeError):
    """A byte range that starts past the end of the file; `content_range` is the header the
    answer carries (`bytes */<size>`)."""

    def __init__(self, header: str, size: int):
        super().__init__(f"Range {header!r}: the file has {size} bytes, the range is outside")
        self.content_range = f"bytes */{size}"


_SPEC = re.compile(r"([0-9]+)\s*-\s*([0-9]*)|-\s*([0-9]+)", re.ASCII)


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range the Range `header` asks of a file of `size` bytes, or None to
    send the whole file (no header, an empty one, a unit other than bytes, several ranges).

    Raises `MalformedRange` and `UnsatisfiableRange`."""
    if header is None or not header.strip():
        return None
    unit, equals, ranges = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None  # RFC 9110 §14.2: a range unit the server does not understand is ignored
    specs = [_SPEC.fullmatch(spec.strip()) for spec in ranges.split(",")]
    if not equals or not all(specs):
        raise MalformedRange(f"Range {header!r} is not a byte range such as 'bytes=0-1023'")
    parsed = []
    for spec in specs:
        assert spec is not None
        first, last, suffix = spec.groups()
        if first is not None and last and int(last) < int(first):
            raise MalformedRange(f"Range {header!r}: the last byte is before the first")
        parsed.append((first, last, suffix))
    if len(parsed) > 1:
        return None  # several ranges: the whole file, as from S3
    first, last, suffix = parsed[0]
    if suffix is not None:
        if int(suffix) == 0 or size == 0:
            raise UnsatisfiableRange(header, size)
        return ByteRange(max(size - int(suffix), 0), size - 1, size)
    if int(first) >= size:
        raise UnsatisfiableRange(header, size)
    return ByteRange(int(first), min(int(last), size - 1) if last else size - 1, size)


#: Bytes of a served file per read and per body message (see `FilePart`).
CHUNK_BYTES = 1024 * 1024


class FilePart(FileResponse):
    """The whole file, or the byte range `part` of it, whatever the request's own Range
    and If-Range headers say: the route has decided, and journaled what it sends.

    Sent in chunks of `CHUNK_BYTES`: each chunk is a read in a worker thread and a message
    through the middleware and the HTTP protocol, so that starlette's 64 KiB chunks cost
    the server more CPU per data file (many MiB, read whole by the clients) than the call
    itself, CPU that a consumer's client on the same machine then lacks."""

    chunk_size = CHUNK_BYTES

    def __init__(self, path: str, part: ByteRange | None, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.part = part

    @property
    def status(self) -> int:
        """The status the answer goes out with: partial content for a part."""
        return int(HTTPStatus.PARTIAL_CONTENT) if self.part else self.status_code

    @property
    def length(self) -> int:
        """The bytes the answer carries (to a GET)."""
        assert self.stat_result is not None
        return self.part.length if self.part else self.stat_result.st_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if self.part is not None:
            headers.append((b"range", f"bytes={self.part.start}-{self.part.end}".encode()))
        await super().__call__({**scope, "headers": headers}, receive, send)


# -- the access log -------------------------------------------------------------------------
_SIGNED = re.compile(re.escape(FILES_PATH) + r"([^/?#\s\"]*)")
_BODY = re.compile(r"[A-Za-z0-9_=-]*")
_QUERY_MAC = re.compile(re.escape(SIGNATURE) + r"=[^&#\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every signed file URL's MAC replaced: the grant's body stays readable
    (table, file, consumer, expiry), the URL no longer works."""

    def _without_mac(found: re.Match[str]) -> str:
        body, dot, _ = unquote(found[1]).partition(".")
        if not _BODY.fullmatch(body):
            return FILES_PATH + "<redacted>"
        return FILES_PATH + (f"{body}.<redacted>" if dot else body)

    return _QUERY_MAC.sub(f"{SIGNATURE}=<redacted>", _SIGNED.sub(_without_mac, text))


class SignedUrlFilter(logging.Filter):
    """Redacts signed file URLs in the records of the logger it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def keep_signatures_out_of_access_log(name: str = "uvicorn.access") -> None:
    """Attach `SignedUrlFilter` to the access logger (once): uvicorn logs each request's
    raw path there, and a file URL's path is the credential."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, SignedUrlFilter) for f in logger.filters):
        logger.addFilter(SignedUrlFilter())
