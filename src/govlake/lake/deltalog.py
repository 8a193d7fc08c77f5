"""What the sharing server needs from a Delta table, read with delta-rs and from the log:
versions and their commit times, the schema and metadata of a version, the data files of a
version with their row counts, and the files added and removed between two versions.

A version never changes once committed, so its metadata and file list are kept (the most
recently used `SNAPSHOTS`); finding the latest version reads only the log's new commits.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from govlake.core.errors import GovlakeError
from govlake.core.location import Location


class VersionError(GovlakeError, ValueError):
    """A version or timestamp the table's history does not have."""


class ChangesUnavailable(VersionError):
    """The table's history no longer holds what a changes query needs."""


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the table root
    size: int
    records: int | None
    version: int | None = None  # for changes: the commit that added or removed it
    timestamp: int | None = None  # for changes: that commit's time, ms since the epoch
    change: str = "add"  # add | remove


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


#: Versions whose metadata and file lists are kept, over all tables.
SNAPSHOTS = 256
Snapshot = tuple[dict[str, Any], list["DataFile"]]
_snapshots: OrderedDict[tuple[str, int], Snapshot] = OrderedDict()
_latest: dict[str, DeltaTable] = {}
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
        version = self.latest() if version is None else version
        key = (self.location.uri, version)
        with _cache:
            if key in _snapshots:
                _snapshots.move_to_end(key)
                return _snapshots[key]
        table = self.table(version)
        files = self.files(version, table=table)
        found = (self._metadata(table, files), files)
        with _cache:
            _snapshots[key] = found
            while len(_snapshots) > SNAPSHOTS:
                _snapshots.popitem(last=False)
        return found

    def metadata(self, version: int | None = None) -> dict[str, Any]:
        """The protocol's `metaData` object of a version."""
        return self.snapshot(version)[0]

    def latest_metadata(self) -> tuple[int, dict[str, Any]]:
        """The latest version and its `metaData` object."""
        version = self.latest()
        return version, self.snapshot(version)[0]

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
        """The data files of a version."""
        table = table or self.table(version)
        actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        records = actions.get("num_records") or [None] * len(actions["path"])
        return [
            DataFile(str(path), int(size), None if n is None else int(n))
            for path, size, n in zip(actions["path"], actions["size_bytes"], records, strict=True)
        ]

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
            log = self.location.child("_delta_log", f"{version:020d}.json")
            if not log.exists():
                raise ChangesUnavailable(
                    f"the commit of version {version} is no longer in the table's log"
                )
            for line in log.read_text().splitlines():
                action = json.loads(line) if line.strip() else {}
                for kind in ("add", "remove"):
                    body = action.get(kind)
                    if not body or not body.get("dataChange", True):
                        continue
                    path = str(body["path"])
                    if kind == "remove" and not self.location.child(path).exists():
                        raise ChangesUnavailable(
                            f"a file removed at version {version} was vacuumed: the change "
                            "cannot be served any more"
                        )
                    stats = json.loads(body["stats"]) if body.get("stats") else {}
                    size = body.get("size")
                    found.append(DataFile(
                        path, int(size) if size is not None else self.location.child(path).size(),
                        stats.get("numRecords"), version, timestamps.get(version), kind,
                    ))  # fmt: skip
        return found


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
