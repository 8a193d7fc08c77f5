"""The one reader of Delta tables' logs, for the sharing server and the backups, with
delta-rs and from the log itself: versions and their commit times, the schema and metadata
of a version, the data files of a version with their row counts and deletion vectors, the files
added and removed between two versions, the files of the `_delta_log/` folder (which versions a
listing can rebuild) and a replay of the log's commits over a state the caller keeps.

delta-rs lists a version's files but not their deletion vectors: those come from the log's own
actions (its last checkpoint and the commits since), replayed here.

The backups and the maintenance read the same: the add actions live at a version, the
deletion-vector files they use (`DeletionVector.path_in`) and a replay of the commits.

A version never changes once committed, so its metadata and file list are kept (the most
recently used `SNAPSHOTS`); finding the latest version reads only the log's new commits.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from govlake.core.errors import GovlakeError
from govlake.core.location import Location


class VersionError(GovlakeError, ValueError):
    """A version or timestamp the table's history does not have."""


class ChangesUnavailable(VersionError):
    """The table's history no longer holds what a changes query needs."""


class DeletionVectorError(GovlakeError, ValueError):
    """A deletion vector descriptor that names no file of its table."""


#: The alphabet of Delta's base85 (Z85) encoding of a deletion vector file's UUID.
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(_Z85)}
_UUID_CHARS = 20  # a UUID's 16 bytes in Z85


@dataclass(frozen=True)
class DeletionVector:
    """The deletion vector descriptor of an add or remove action (Delta protocol, "Deletion
    Vectors"): the rows of its data file that are deleted. Stored in a file beside the data
    (`u`: a random prefix and the file's UUID; `p`: an absolute path) or inline (`i`)."""

    storage_type: str
    path_or_inline_dv: str
    offset: int | None
    size_in_bytes: int
    cardinality: int  # rows deleted

    @classmethod
    def of(cls, body: object) -> DeletionVector | None:
        """The descriptor an action's `deletionVector` holds (None: the action has none)."""
        if not isinstance(body, Mapping) or not body.get("storageType"):
            return None
        offset = body.get("offset")
        return cls(str(body["storageType"]), str(body.get("pathOrInlineDv", "")),
                   None if offset is None else int(offset), int(body.get("sizeInBytes", 0)),
                   int(body.get("cardinality", 0)))  # fmt: skip

    def descriptor(self) -> dict[str, Any]:
        """The descriptor as the log writes it."""
        found: dict[str, Any] = {"storageType": self.storage_type,
                                 "pathOrInlineDv": self.path_or_inline_dv,
                                 "sizeInBytes": self.size_in_bytes,
                                 "cardinality": self.cardinality}  # fmt: skip
        if self.offset is not None:
            found["offset"] = self.offset
        return found

    @property
    def relative_path(self) -> str | None:
        """The path of the file holding the vector, relative to the table root, for storage
        type `u` (`<prefix>/deletion_vector_<uuid>.bin`); None for any other."""
        if self.storage_type != "u" or len(self.path_or_inline_dv) < _UUID_CHARS:
            return None
        prefix = self.path_or_inline_dv[:-_UUID_CHARS]
        encoded = _z85_decode(self.path_or_inline_dv[-_UUID_CHARS:])
        name = f"deletion_vector_{uuid.UUID(bytes=encoded)}.bin"
        return f"{prefix}/{name}" if prefix else name

    def path_in(self, table: Location) -> str | None:
        """The path of the file holding the vector, relative to the root of `table`: storage
        type `u` (`relative_path`) or `p` (an absolute path, refused outside the table); None
        for an inline vector (`i`)."""
        kind, where = self.storage_type, self.path_or_inline_dv
        if kind == "i":
            return None
        if kind == "u":
            if (path := self.relative_path) is None:
                raise DeletionVectorError(f"deletion vector {where!r} names no file")
            return path
        if kind == "p":
            root = posixpath.normpath(_path_of(table.uri)) + "/"
            path = posixpath.normpath(_path_of(where))
            if not path.startswith(root):
                raise DeletionVectorError(
                    f"deletion vector {where} lies outside the table {table.uri}"
                )
            return path[len(root) :]
        raise DeletionVectorError(f"unknown deletion vector storage type {kind!r}")


def _z85_decode(text: str) -> bytes:
    """ZeroMQ's Base-85 (Z85: the encoding of a deletion vector file's UUID)."""
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


def _path_of(uri: str) -> str:
    """A local path or URI as a path (an object store's with its bucket first)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path if parsed.scheme else uri)
    return f"{parsed.netloc}{unquote(parsed.path)}"


@dataclass(frozen=True)
class FileStats:
    """The per-file statistics of an add action (Delta protocol, "Per-file Statistics"): the
    rows written, and per column (nested columns as nested objects) the least and greatest
    value and the count of nulls; a partition column's value stands for all its rows. Any of
    them may be missing: a writer need not collect them, nor for every column."""

    num_records: int | None = None
    min_values: Mapping[str, Any] = field(default_factory=dict)
    max_values: Mapping[str, Any] = field(default_factory=dict)
    null_count: Mapping[str, Any] = field(default_factory=dict)
    partition_values: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, action: Mapping[str, Any], *, records: int | None = None) -> FileStats:
        """The statistics of `action` (its `stats` JSON and `partitionValues`); whatever is
        not well-formed counts as missing, never as an error. `records`: the row count when
        known otherwise (delta-rs reads it from a checkpoint's parsed statistics)."""
        parsed: Any = {}
        text = action.get("stats")
        if isinstance(text, str) and text:
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        count = parsed.get("numRecords")
        return cls(
            count if type(count) is int else records,
            _mapping(parsed.get("minValues")),
            _mapping(parsed.get("maxValues")),
            _mapping(parsed.get("nullCount")),
            _partition_values(action.get("partitionValues")),
        )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _partition_values(value: Any) -> dict[str, str | None]:
    """An action's partition values: an object in a commit, key-value pairs in a checkpoint
    read with pyarrow (a map column)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return dict(value)
    return {}


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the table root
    size: int
    records: int | None  # rows written in the file, deleted ones included
    version: int | None = None  # for changes: the commit that added or removed it
    timestamp: int | None = None  # for changes: that commit's time, ms since the epoch
    change: str = "add"  # add | remove
    #: The rows of the file a deletion vector deletes (None: none are); truthy when there is one.
    deletion_vector: DeletionVector | None = None
    #: The add or remove action as the log holds it, when it was read from the log.
    action: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        body: Mapping[str, Any],
        change: str = "add",
        version: int | None = None,
        timestamp: int | None = None,
        *,
        size: int | None = None,
    ) -> DataFile:
        """The file of an add or remove action (`size`: when the action gives none)."""
        size = int(body["size"]) if size is None else size
        vector = DeletionVector.of(body.get("deletionVector"))
        return cls(str(body["path"]), size, _stats_records(body), version, timestamp, change,
                   deletion_vector=vector, action=body)  # fmt: skip

    @property
    def stats(self) -> FileStats:
        """The statistics the log's action gives the file (empty when it gives none)."""
        return FileStats.of(self.action or {}, records=self.records)

    @property
    def deleted(self) -> int:
        """The rows of the file its deletion vector deletes (0: it has none)."""
        return self.deletion_vector.cardinality if self.deletion_vector else 0

    @property
    def rows(self) -> int | None:
        """The rows the file holds for readers: those written less those deleted."""
        return None if self.records is None else self.records - self.deleted


@dataclass(frozen=True)
class Commit:
    version: int
    timestamp: int  # ms since the epoch
    operation: str


def millis(moment: datetime) -> int:
    """A naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


LOG_DIR = "_delta_log"

#: Versions whose metadata and file lists are kept, over all tables.
SNAPSHOTS = 256
Snapshot = tuple[dict[str, Any], list["DataFile"]]


@dataclass(frozen=True)
class VersionState:
    """One version of a table: the protocol's `metaData` object (the sharing protocol's
    parquet form), its data files, and the Delta `protocol` and `metaData` actions."""

    metadata: dict[str, Any]
    files: list[DataFile]
    protocol: dict[str, Any]
    delta_metadata: dict[str, Any]


_snapshots: OrderedDict[tuple[str, int], VersionState] = OrderedDict()
_latest: dict[str, DeltaTable] = {}
#: Per table, the last version whose live add actions were replayed from the log, and them.
#: Per table: the version last replayed, the digest of its commit file (a table removed and
#: made again in this process has other commits under the same names), and the live adds.
_replayed: dict[str, tuple[int, str, dict[str, dict[str, Any]]]] = {}
_cache = threading.Lock()


class DeltaLog:
    def __init__(self, location: Location):
        self.location = location
        self._options = location.storage_options()

    def latest(self) -> int:
        """The latest version: a table loaded before is brought up to date with the commits
        since, instead of being read again from its last checkpoint."""
        uri = self.location.uri
        with _cache:
            table = _latest.get(uri)
            try:
                if table is None:
                    table = _latest[uri] = DeltaTable(uri, storage_options=self._options)
                else:
                    table.update_incremental()
                return int(table.version())
            except Exception:
                _latest.pop(uri, None)  # replaced or removed: read it afresh next time
                raise

    def table(self, version: int | None = None) -> DeltaTable:
        table = DeltaTable(self.location.uri, storage_options=self._options)
        if version is not None:
            if version < 0 or version > table.version():
                raise VersionError(
                    f"version {version} does not exist: the table is at version {table.version()}"
                )
            try:
                table.load_as_version(version)
            except Exception as exc:  # the log of that version was cleaned up
                raise VersionError(f"version {version} is no longer readable: {exc}") from exc
        return table

    def version(self) -> int:
        return self.latest()

    def commits(self) -> list[Commit]:
        """Every commit still in the history, oldest first."""
        found = [
            Commit(int(h["version"]), int(h["timestamp"]), str(h.get("operation", "")))
            for h in self.table().history()
        ]
        return sorted(found, key=lambda c: c.version)

    def version_at(self, moment: datetime, *, starting: bool) -> int:
        """`starting`: the first version committed at or after `moment` (the `/version`
        endpoint's `startingTimestamp`); else the last version committed at or before it (a
        query's `timestamp`)."""
        at = millis(moment)
        commits = self.commits()
        if starting:
            later = [c.version for c in commits if c.timestamp >= at]
            if not later:
                raise VersionError(
                    f"no version was committed at or after {moment.isoformat()}: the latest "
                    f"commit is {_iso(commits[-1].timestamp)}"
                )
            return min(later)
        earlier = [c.version for c in commits if c.timestamp <= at]
        if not earlier:
            raise VersionError(
                f"the table did not exist yet at {moment.isoformat()}: its first commit is "
                f"{_iso(commits[0].timestamp)}"
            )
        return max(earlier)

    def timestamp_of(self, version: int) -> int:
        for commit in self.commits():
            if commit.version == version:
                return commit.timestamp
        raise VersionError(f"version {version} is not in the table's history")

    def snapshot(self, version: int | None = None) -> Snapshot:
        """The protocol's `metaData` object of a version (the latest by default) and its data
        files, from one read of the log."""
        state = self.state(version)
        return state.metadata, state.files

    def state(self, version: int | None = None) -> VersionState:
        """A version (the latest by default): metadata, files, Delta protocol and metaData."""
        version = self.latest() if version is None else version
        key = (self.location.uri, version)
        with _cache:
            if key in _snapshots:
                _snapshots.move_to_end(key)
                return _snapshots[key]
        table = self.table(version)
        files = self.files(version, table=table)
        meta = self._metadata(table, files)
        protocol = table.protocol()
        found = VersionState(meta, files, _protocol_action(protocol), {
            name: meta[name] for name in ("id", "name", "description", "format", "schemaString",
                                          "partitionColumns", "configuration", "createdTime")
        })  # fmt: skip
        with _cache:
            _snapshots[key] = found
            while len(_snapshots) > SNAPSHOTS:
                _snapshots.popitem(last=False)
        return found

    def metadata(self, version: int | None = None) -> dict[str, Any]:
        """The protocol's `metaData` object of a version."""
        return self.snapshot(version)[0]

    def _metadata(self, table: DeltaTable, files: list[DataFile]) -> dict[str, Any]:
        meta = table.metadata()
        return {
            "id": meta.id,
            "name": meta.name,
            "description": meta.description,
            "format": {"provider": "parquet", "options": {}},
            "schemaString": table.schema().to_json(),
            "partitionColumns": list(meta.partition_columns),
            "configuration": dict(meta.configuration),
            "createdTime": meta.created_time,
            "size": sum(f.size for f in files),
            "numFiles": len(files),
        }

    def files(
        self, version: int | None = None, *, table: DeltaTable | None = None
    ) -> list[DataFile]:
        """The data files of a version, with their deletion vectors and add actions."""
        table = table or self.table(version)
        actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        records = actions.get("num_records") or [None] * len(actions["path"])
        logged = self.live_actions(int(table.version()))
        found = []
        for path, size, n in zip(actions["path"], actions["size_bytes"], records, strict=True):
            body = logged.get(str(path)) or logged.get(quote(str(path), safe=_PATH_SAFE))
            found.append(DataFile(
                str(path), int(size), None if n is None else int(n),
                deletion_vector=DeletionVector.of(body.get("deletionVector")) if body else None,
                action=body,
            ))  # fmt: skip
        return found

    def live_actions(self, version: int, log: LogFiles | None = None) -> dict[str, dict[str, Any]]:
        """The add actions of the files live at `version`, by path as the log writes it: the
        last checkpoint at or before it and the commits since, or the commits since a version
        replayed before. `log`: the log's files, when the caller has listed them."""
        log = log or self.log_files()
        if not log.readable(version):
            raise VersionError(f"{self.location.uri}: the log no longer rebuilds version {version}")
        uri = self.location.uri
        with _cache:
            known = _replayed.get(uri)
        if (
            known is not None
            and known[0] <= version
            and known[0] in log.commits
            and self._commit_digest(known[0]) == known[1]
            and all(v in log.commits for v in range(known[0] + 1, version + 1))
        ):
            start, adds = known[0] + 1, dict(known[2])
        else:
            checkpoint = max((c for c in log.checkpoints if c <= version), default=None)
            start = 0 if checkpoint is None else checkpoint + 1
            adds = {} if checkpoint is None else self._checkpoint_adds(checkpoint, log)
        for v in range(start, version + 1):
            for kind, body in self.commit_file(v).applied:
                if kind == "add":
                    adds[str(body["path"])] = body
                else:
                    adds.pop(str(body["path"]), None)
        with _cache:
            # Kept with its commit's digest (a version only a checkpoint holds is not kept).
            if version in log.commits and (uri not in _replayed or _replayed[uri][0] <= version):
                _replayed[uri] = (version, self._commit_digest(version), adds)
        return dict(adds)

    def _commit_digest(self, version: int) -> str:
        with self.location.child(LOG_DIR, commit_name(version)).open_read() as handle:
            return hashlib.sha256(handle.read()).hexdigest()

    def vector_files(self, actions: Iterable[Mapping[str, Any]]) -> set[str]:
        """The deletion-vector files (paths relative to the table) that add actions use."""
        vectors = (DeletionVector.of(a.get("deletionVector")) for a in actions)
        return {path for v in vectors if v and (path := v.path_in(self.location))}

    def _checkpoint_adds(self, version: int, log: LogFiles) -> dict[str, dict[str, Any]]:
        """The add actions of the checkpoint of `version` (classic, multi-part or v2 with its
        sidecars)."""
        prefix = f"{version:020d}.checkpoint."
        parts = sorted(n for n in log.files if n.startswith(prefix))
        adds: dict[str, dict[str, Any]] = {}
        sidecars: list[str] = []
        for name in parts:
            for action in self._log_actions(name):
                if body := action.get("add"):
                    adds[str(body["path"])] = body
                if sidecar := action.get("sidecar"):
                    sidecars.append(f"{_SIDECAR}{sidecar['path']}")
        for name in sidecars:
            for action in self._log_actions(name):
                if body := action.get("add"):
                    adds[str(body["path"])] = body
        return adds

    def _log_actions(self, name: str) -> Iterator[dict[str, Any]]:
        """The actions of one file of `_delta_log/` (JSON lines or Parquet)."""
        target = self.location.child(LOG_DIR, *name.split("/"))
        if name.endswith(".json"):
            for line in target.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)
            return
        with target.open_read() as handle:
            parquet = pq.ParquetFile(pa.BufferReader(handle.read()))
            wanted = [c for c in ("add", "sidecar") if c in parquet.schema_arrow.names]
            for row in parquet.read(columns=wanted).to_pylist():
                yield {k: v for k, v in row.items() if v is not None}

    def changes(self, start: int, end: int | None = None) -> list[DataFile]:
        """Files added and removed by the commits `start`..`end` (inclusive), from the commit
        files of the log. A version whose commit file was cleaned up, or a removed file that
        vacuum already deleted, makes the range unavailable."""
        latest = self.version()
        end = latest if end is None else end
        if start < 0 or start > end or end > latest:
            raise VersionError(
                f"versions {start}..{end} are not a range of this table (latest {latest})"
            )
        timestamps = {c.version: c.timestamp for c in self.commits()}
        found: list[DataFile] = []
        for version in range(start, end + 1):
            if not self.location.child(LOG_DIR, commit_name(version)).exists():
                raise ChangesUnavailable(
                    f"the commit of version {version} is no longer in the table's log"
                )
            for kind, body in self.commit_file(version).actions:
                if body.get("dataChange", True):
                    found.append(self._changed(kind, body, version, timestamps.get(version)))
        return found

    def metadata_changes(
        self, start: int, end: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """The metaData actions the commits after `start` up to `end` (the latest by default)
        wrote, with their versions: a change of schema or properties."""
        end = self.version() if end is None else end
        found = []
        for version in range(start + 1, end + 1):
            if (metadata := self.commit_file(version).metadata) is not None:
                found.append((version, metadata))
        return found

    def _changed(
        self, kind: str, body: dict[str, Any], version: int, timestamp: int | None
    ) -> DataFile:
        path = str(body["path"])
        if kind == "remove" and not self.location.child(path).exists():
            raise ChangesUnavailable(
                f"a file removed at version {version} was vacuumed: the change cannot be "
                "served any more"
            )
        vector = DeletionVector.of(body.get("deletionVector"))
        gone = (
            vector is not None
            and vector.relative_path is not None
            and (not self.location.child(vector.relative_path).exists())
        )
        if kind == "remove" and gone:
            raise ChangesUnavailable(
                f"the deletion vector of a file removed at version {version} was vacuumed: "
                "the change cannot be served any more"
            )
        size = None if body.get("size") is not None else self.location.child(path).size()
        return DataFile.of(body, kind, version, timestamp, size=size)

    # -- the log itself, for the backups ------------------------------------------------------
    def log_files(self) -> LogFiles:
        """The files of the table's `_delta_log/` folder."""
        found = self.location.child(LOG_DIR).listing()
        return LogFiles.of({f"{LOG_DIR}/{name}": size for name, size in found.items()})

    def commit_file(self, version: int) -> CommitFile:
        """The add and remove actions and the commit information of one commit file."""
        text = self.location.child(LOG_DIR, commit_name(version)).read_text()
        return CommitFile.parse(version, text)

    def replay(
        self,
        versions: range,
        log: LogFiles,
        state: S | None,
        restart: Callable[[int, CommitFile | None], S | None],
    ) -> Iterator[tuple[int, S | None, CommitFile | None]]:
        """Walk `versions` in order, keeping `state` (a version's data files) up to date: a
        version whose commit file `log` holds is applied to the state; any other version, or
        one without a state to apply to, starts from `restart(version, its commit or None)`
        (None: that version cannot be rebuilt). Yields each version, its state and commit."""
        for version in versions:
            commit = self.commit_file(version) if version in log.commits else None
            if state is not None and commit is not None:
                commit.apply(state)
            else:
                state = restart(version, commit)
            yield version, state, commit


# -- the files of the log ---------------------------------------------------------------------
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.parquet$")
_CHECKPOINT_PART = re.compile(r"^(\d{20})\.checkpoint\.(\d{10})\.(\d{10})\.parquet$")
_CHECKPOINT_V2 = re.compile(r"^(\d{20})\.checkpoint\.[0-9a-fA-F-]{36}\.(json|parquet)$")
_CRC = re.compile(r"^(\d{20})\.crc$")
_COMPACTED = re.compile(r"^(\d{20})\.(\d{20})\.compacted\.json$")
_SIDECAR = "_sidecars/"
#: Characters a path keeps unescaped as the log writes it (an RFC 2396 URI path).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def commit_name(version: int) -> str:
    return f"{version:020d}.json"


def _log_version(name: str) -> int | None:
    """The version a file of `_delta_log/` belongs to (None: not a file of a version)."""
    for pattern in (_COMMIT, _CHECKPOINT, _CHECKPOINT_PART, _CHECKPOINT_V2, _CRC):
        if match := pattern.match(name):
            return int(match.group(1))
    if match := _COMPACTED.match(name):
        return int(match.group(2))
    return None


@dataclass
class LogFiles:
    """The `_delta_log/` files of a table folder up to a version."""

    files: dict[str, int]  # name below _delta_log/ -> size
    commits: set[int]
    checkpoints: set[int]

    @classmethod
    def of(cls, listing: dict[str, int], *, upto: int | None = None) -> LogFiles:
        """From a listing of the table folder (path relative to it -> size)."""
        files: dict[str, int] = {}
        commits: set[int] = set()
        parts: dict[tuple[int, int], set[int]] = {}
        checkpoints: set[int] = set()
        for path, size in listing.items():
            if not path.startswith(LOG_DIR + "/"):
                continue
            name = path[len(LOG_DIR) + 1 :]
            if name.startswith(_SIDECAR):  # files of v2 checkpoints, named by uuid
                files[name] = size
                continue
            version = _log_version(name)
            if version is None or (upto is not None and version > upto):
                continue  # _last_checkpoint, temporary files, later versions
            files[name] = size
            if _COMMIT.match(name):
                commits.add(version)
            elif _CHECKPOINT.match(name) or _CHECKPOINT_V2.match(name):
                checkpoints.add(version)
            elif match := _CHECKPOINT_PART.match(name):
                parts.setdefault((version, int(match.group(3))), set()).add(int(match.group(2)))
        for (version, total), seen in parts.items():
            if len(seen) == total:  # a multi-part checkpoint counts once all parts are there
                checkpoints.add(version)
        return cls(files, commits, checkpoints)

    def readable(self, version: int) -> bool:
        """Whether the state of `version` can be rebuilt from these files."""
        starts = [c for c in self.checkpoints if c <= version]
        start = max(starts) if starts else -1
        return all(v in self.commits for v in range(start + 1, version + 1))

    @property
    def has_versions(self) -> bool:
        return bool(self.commits or self.checkpoints)

    @property
    def latest(self) -> int | None:
        """The latest version a commit or checkpoint is there for (None: no table)."""
        return max(self.commits | self.checkpoints) if self.has_versions else None


# -- one commit file ---------------------------------------------------------------------------
class FileState(Protocol):
    """A version's data files, kept up to date while the log is replayed."""

    def add(self, file: DataFile) -> None: ...

    def remove(self, path: str) -> None: ...


S = TypeVar("S", bound=FileState)


@dataclass(frozen=True)
class CommitFile:
    """One commit file: its add and remove actions in order, and its commit information."""

    version: int
    actions: list[tuple[str, dict[str, Any]]]  # ("add" | "remove", the action's body)
    timestamp: int | None  # the commitInfo's (in-commit) timestamp, ms since the epoch
    operation: str | None
    metadata: dict[str, Any] | None = None  # the commit's metaData action, if it has one

    @classmethod
    def parse(cls, version: int, text: str) -> CommitFile:
        actions: list[tuple[str, dict[str, Any]]] = []
        timestamp, operation, metadata = None, None, None
        for line in text.splitlines():
            action = json.loads(line) if line.strip() else {}
            for kind in ("add", "remove"):
                if body := action.get(kind):
                    actions.append((kind, body))
            if commit := action.get("commitInfo"):
                moment = commit.get("inCommitTimestamp") or commit.get("timestamp")
                timestamp = None if moment is None else int(moment)
                operation = commit.get("operation")
            metadata = action.get("metaData") or metadata
        return cls(version, actions, timestamp, operation, metadata)

    @property
    def changes_rows(self) -> bool:
        """Whether the commit changes the table's rows: a compaction's files carry
        `dataChange: false`, and a vacuum or a change of properties has no file at all."""
        return any(body.get("dataChange", True) for _, body in self.actions)

    @property
    def applied(self) -> list[tuple[str, dict[str, Any]]]:
        """The actions in the order they apply: the removes, then the adds (a commit that gives
        a file a new deletion vector removes it with the old one and adds it with the new one,
        in either order)."""
        return sorted(self.actions, key=lambda action: action[0] != "remove")

    def apply(self, state: FileState) -> None:
        """Apply the removes, then the adds, to `state`."""
        for kind, body in self.applied:
            if kind == "remove":
                state.remove(str(body["path"]))
            else:
                state.add(DataFile.of(body, version=self.version))


def _stats_records(body: Mapping[str, Any]) -> int | None:
    """The row count in an add or remove action's statistics, when they give one."""
    stats = body.get("stats")
    if not stats or not isinstance(stats, str):
        return None
    try:
        value = json.loads(stats).get("numRecords")
    except ValueError:
        return None
    return int(value) if value is not None else None


def _protocol_action(protocol: Any) -> dict[str, Any]:
    """delta-rs's protocol versions as the log's `protocol` action."""
    found: dict[str, Any] = {"minReaderVersion": int(protocol.min_reader_version),
                             "minWriterVersion": int(protocol.min_writer_version)}  # fmt: skip
    if protocol.reader_features is not None:
        found["readerFeatures"] = list(protocol.reader_features)
    if protocol.writer_features is not None:
        found["writerFeatures"] = list(protocol.writer_features)
    return found


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
