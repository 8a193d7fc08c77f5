"""Deletion-vector files of a Delta table, for the backups and the maintenance that copy,
check and vacuum them: where a deletion vector descriptor's file is (the Delta protocol's
"Deletion Vector Descriptor"), how many rows it deletes, and the add actions (deletion
vectors included) live at a version, read from the log itself.

delta-rs 1.6 reads deletion vectors but does not expose their descriptors (its add-action
table has no `deletionVector` column), and its vacuum neither deletes the deletion-vector
files no version needs any more (lite) nor keeps those the current version needs (full).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from govlake.core.errors import GovlakeError
from govlake.core.location import Location
from govlake.lake.deltalog import LOG_DIR, CommitFile, DeltaLog, LogFiles, _stats_records

_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(_Z85)}
#: Length of a z85-encoded uuid (16 bytes).
_UUID_CHARS = 20
_V2_CHECKPOINT = re.compile(r"^\d{20}\.checkpoint\.[0-9a-fA-F-]{36}\.(json|parquet)$")

Action = dict[str, Any]


class DeletionVectorError(GovlakeError, ValueError):
    """A deletion vector descriptor or a log this module cannot read."""


def z85_decode(text: str) -> bytes:
    """ZeroMQ's Base-85 (the encoding of a deletion vector's uuid)."""
    if len(text) % 5:
        raise DeletionVectorError(f"not z85: {text!r} (length {len(text)})")
    out = bytearray()
    for start in range(0, len(text), 5):
        value = 0
        for char in text[start : start + 5]:
            if char not in _Z85_VALUE:
                raise DeletionVectorError(f"not z85: {text!r}")
            value = value * 85 + _Z85_VALUE[char]
        out += value.to_bytes(4, "big")
    return bytes(out)


def dv_file(descriptor: Action | None, table: Location) -> str | None:
    """The file of a deletion vector, relative to the table folder: `u` (a uuid, with an
    optional folder prefix) and `p` (an absolute path inside the table); None for an inline
    (`i`) vector or no vector. A `p` path outside the table is refused."""
    if not descriptor:
        return None
    kind, where = descriptor.get("storageType"), str(descriptor.get("pathOrInlineDv", ""))
    if kind == "i":
        return None
    if kind == "u":
        prefix, encoded = where[:-_UUID_CHARS], where[-_UUID_CHARS:]
        name = f"deletion_vector_{uuid.UUID(bytes=z85_decode(encoded))}.bin"
        return f"{prefix}/{name}" if prefix else name
    if kind == "p":
        root = _path_of(table.uri).rstrip("/") + "/"
        path = _path_of(where)
        if not path.startswith(root):
            raise DeletionVectorError(f"deletion vector {where} lies outside the table {table.uri}")
        return path[len(root) :]
    raise DeletionVectorError(f"unknown deletion vector storage type {kind!r}")


def _path_of(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path if parsed.scheme else uri)
    return f"{parsed.netloc}{unquote(parsed.path)}"


def deleted_rows(descriptor: Action | None) -> int:
    """The rows a deletion vector deletes (its cardinality)."""
    return int(descriptor.get("cardinality", 0)) if descriptor else 0


def records(action: Action) -> int | None:
    """The rows of an add action's file as its statistics give them (deleted rows included;
    None: no statistics)."""
    return _stats_records(action)


def apply(files: dict[str, Action], commit: CommitFile) -> None:
    """Apply a commit's actions to `files` (path -> add action). A commit that gives a file a
    new deletion vector removes (path, old vector) and adds (path, new vector), in either
    order: removes go first."""
    for kind, body in commit.actions:
        if kind == "remove":
            files.pop(str(body["path"]), None)
    for kind, body in commit.actions:
        if kind == "add":
            files[str(body["path"])] = body


def _checkpoint_parts(log: LogFiles, version: int) -> list[str]:
    names = sorted(
        n for n in log.files if n.startswith(f"{version:020d}.checkpoint.") and "/" not in n
    )
    if any(_V2_CHECKPOINT.match(n) for n in names):
        raise DeletionVectorError(f"version {version} has a v2 checkpoint, not read here")
    return names


def _checkpoint_adds(location: Location, log: LogFiles, version: int) -> dict[str, Action]:
    files: dict[str, Action] = {}
    for name in _checkpoint_parts(log, version):
        with location.child(LOG_DIR, name).open_read() as handle:
            data = pa.BufferReader(handle.read())  # parquet wants a seekable file
        adds = pq.read_table(data, columns=["add"]).column("add").to_pylist()
        for add in adds:
            if add is not None:
                files[str(add["path"])] = add
    return files


def live_actions(
    location: Location, version: int, log: LogFiles | None = None
) -> dict[str, Action]:
    """The add actions (path -> action, deletion vector included) live at `version`, from
    the table's last checkpoint at or before it and the commits after."""
    log = log or DeltaLog(location).log_files()
    if not log.readable(version):
        raise DeletionVectorError(f"{location.uri}: the log no longer rebuilds version {version}")
    starts = [c for c in log.checkpoints if c <= version]
    start = max(starts) if starts else -1
    files = _checkpoint_adds(location, log, start) if start >= 0 else {}
    reader = DeltaLog(location)
    for v in range(start + 1, version + 1):
        apply(files, reader.commit_file(v))
    return files


def referenced(actions: Iterable[Action], table: Location) -> set[str]:
    """The deletion-vector files (relative paths) the actions use."""
    found = {dv_file(a.get("deletionVector"), table) for a in actions}
    return {f for f in found if f is not None}
