"""Backups of the lakehouse's Delta tables and restore from them (石景山 art. 31: backups
periodic by importance).

`backup` copies each table whose resource is due by its catalogued importance (core daily,
important weekly, general monthly; `ops.*` tables, the platform's records, count as core) to
`<backup>/<database>/<table>/`, the same layout as the warehouse, so a backup folder is itself
a Delta table readable at every version it holds. `restore` brings a table back to a
backed-up version: a deleted table comes back exactly as it was (same version number, same
rows, and its older backed-up versions readable again); a table that still exists gets the
old version as a new commit (delta-rs `restore`), so no newer version is lost.

What a backup of version V is, and why it is consistent:

- The table is pinned at its current version V first (delta-rs); commits that land while the
  backup runs are later than V and left for the next backup. Data files never change once
  written and commit files never change once committed, so copying "the log up to V and the
  data files V needs" while writers go on is a consistent copy of V.
- Versions kept restorable: every version from the oldest one whose state can still be
  rebuilt and whose data files all still exist (in the table or already in the backup) up to
  V, as one unbroken run ending at V. Vacuum removes the files of versions older than the
  retention (`GOVLAKE_RETENTION_DAYS`, at least 30 days) from the table, never from the
  backup: a version, once backed up, stays restorable from the backup. Backups are
  append-only; nothing here prunes them.
- Incremental: data files are copied only when the backup does not hold them yet (same
  name and size, checksum recorded); log files likewise. A run that is not due copies
  nothing; a due run on an unchanged table copies nothing and records the check.
- Every copied file (data and deletion-vector files) is checked for its size; its SHA-256 is
  recorded in the manifest and checked again when it is restored. The copy of V is read back
  through delta-rs before the manifest names it.
- `manifest.json` (per table, written last, in one put) lists the versions the backup holds,
  each with its commit time, operation, row count, file count, bytes and a digest of its
  file list, and every file with its size and SHA-256. A backup interrupted before the
  manifest is written claims nothing it lacks; the next run reuses what it finds intact.

Not backed up here: the platform database (access requests, grants, tokens, the live audit
journal; back it up with the database's own tools; the journal's archive `ops.audit_journal`
is a Delta table and is backed up), the landing zone (archived extracts), Great Expectations
Data Docs and tables that are no longer in the catalogue. Change data files (`_change_data/`)
are not copied (no table here enables change data feed).

Deletion vectors (the silver, published and open tables are written with them): a version
needs its deletion-vector files as much as its data files. They are copied, checksummed and
brought back like data files (storage type `u`: `<prefix>/deletion_vector_<uuid>.bin`; `p`:
a path inside the table; `i`: inline, in the log itself); a version's rows are its files'
rows less those its vectors delete, and its file digest carries the rows each file's vector
deletes, so the check against delta-rs (which reads the vectors themselves) covers them.

Each backed-up table and each restore is an entry in the audit journal
(`platform.backup`, `platform.restore`).

The log is read through `govlake.lake.deltalog`, the reader the sharing server uses too: its
files, its commit files and a replay of them over the backup's `_State` of a version.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable

from govlake.core.catalog import BACKUP_DAYS, Catalog, Importance
from govlake.core.errors import GovlakeError
from govlake.core.figures import Summed
from govlake.core.location import Location
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings
from govlake.lake.deltalog import (
    LOG_DIR,
    CommitFile,
    DataFile,
    DeletionVectorError,
    DeltaLog,
    LogFiles,
    VersionError,
)
from govlake.lake.reads import query_delta
from govlake.lake.tables import TableSet, ops_tables, quality_tables
from govlake.platform import audit

BACKUP_ACTION = "platform.backup"
RESTORE_ACTION = "platform.restore"
PLATFORM = "platform"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: The platform's own records are backed up like the most important resources.
OPS_IMPORTANCE: Importance = "core"
#: The audit archive only ever grows (宝鸡 art. 21): it may be recreated from a backup when
#: it is gone, never rolled back while it exists.
AUDIT_ARCHIVE = "ops.audit_journal"
COPY_THREADS = 8
_CHUNK = 8 * 1024 * 1024

#: Called while files are copied: (table, files done, files to copy).
ProgressCallback = Callable[[str, int, int], None]


class BackupError(GovlakeError, RuntimeError):
    """A backup or restore that cannot be done as asked; the message names the table."""


class NotBackedUp(BackupError):
    """The version (or the table) asked for is not in the backup."""


class UnknownTable(BackupError):
    """No table of the catalogue nor of the platform has that name."""


class RestoreRefused(BackupError):
    """The restore would lose or overwrite something: a different table in the way, a log
    that went back in time, an audit archive rolled back."""


# -- what gets backed up ----------------------------------------------------------------------
@dataclass(frozen=True)
class BackupTarget:
    """A Delta table of the warehouse and how often it is backed up."""

    name: str  # database.table
    location: Location
    importance: Importance
    resource: str | None = None  # the catalogue resource; None for ops.* tables

    @property
    def database(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def table(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def backup_days(self) -> int:
        return BACKUP_DAYS[self.importance]

    def backup_location(self, root: Location) -> Location:
        return root.child(self.database, self.table)


def _filesystem(location: Location) -> tuple[pafs.FileSystem, str]:
    if location.is_local:
        return pafs.LocalFileSystem(), location.uri
    fs, path = pafs.FileSystem.from_uri(location.uri)
    return fs, path.rstrip("/")


def _ops_targets(settings: Settings) -> list[BackupTarget]:
    warehouse = settings.warehouse_location
    known = [*ops_tables(warehouse), *quality_tables(warehouse)]
    found = {t.qualified_name: t.location for t in known}
    found[AUDIT_ARCHIVE] = audit.archive_location(settings)
    # Platform tables added later are backed up without being listed here.
    fs, root = _filesystem(warehouse.child("ops"))
    selector = pafs.FileSelector(root, recursive=False, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.Directory:
            name = info.path.rstrip("/").rsplit("/", 1)[-1]
            location = warehouse.child("ops", name)
            if f"ops.{name}" not in found and location.is_delta_table():
                found[f"ops.{name}"] = location
    return [BackupTarget(n, loc, OPS_IMPORTANCE) for n, loc in sorted(found.items())]


def targets(
    settings: Settings, catalog: Catalog, resource: str | None = None
) -> list[BackupTarget]:
    """The tables a backup covers: every table of every catalogued resource and the `ops.*`
    tables; `resource` narrows it to one resource's tables, or `"ops"` to the platform's.
    An unknown resource raises `CatalogError`."""
    warehouse = settings.warehouse_location
    selected = [] if resource == "ops" else catalog.select(resource)
    found = [
        BackupTarget(t.qualified_name, t.location, r.importance, r.qualified_name)
        for r in selected
        for t in TableSet(r, warehouse).all()
    ]
    if resource in (None, "ops"):
        found += _ops_targets(settings)
    return found


def find_target(settings: Settings, catalog: Catalog, table_name: str) -> BackupTarget:
    for target in targets(settings, catalog):
        if target.name == table_name:
            return target
    raise UnknownTable(
        f"unknown table {table_name!r}: not a table of a catalogued resource nor an ops.* "
        "table (names look like population.residents_unconditional; see `govlake "
        "backup-status`)"
    )


# -- files on either filesystem ---------------------------------------------------------------
class _Store:
    """A table folder (live or backup) on its filesystem, addressed by relative paths."""

    def __init__(self, location: Location):
        self.location = location
        self.fs, self.root = _filesystem(location)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def listing(self) -> dict[str, int]:
        """Every file below the folder with its size (directory markers left out)."""
        return self.location.listing()

    def read(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as handle:
            return bytes(handle.read())

    def write(self, relative: str, data: bytes) -> None:
        target = self.path(relative)
        if self.location.is_local:
            # Atomic on a local disk (an S3 put is atomic already): an interrupted write never
            # leaves a short file under the final name.
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            staging = f"{target}.tmp-{uuid.uuid4().hex}"
            with self.fs.open_output_stream(staging) as handle:
                handle.write(data)
            self.fs.move(staging, target)
        else:
            with self.fs.open_output_stream(target) as handle:
                handle.write(data)

    def delete(self, relative: str) -> None:
        self.fs.delete_file(self.path(relative))


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


def _copy(source: _Store, target: _Store, relative: str, expected_size: int) -> FileRecord:
    """Copy one file, hashing it on the way; the copy must have the expected size."""
    digest = hashlib.sha256()
    destination = target.path(relative)
    local = target.location.is_local
    if local:
        target.fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
    staging = f"{destination}.tmp-{uuid.uuid4().hex}" if local else destination
    size = 0
    try:
        with (
            source.fs.open_input_stream(source.path(relative)) as reader,
            target.fs.open_output_stream(staging) as writer,
        ):
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
        if local:
            target.fs.move(staging, destination)
    except BaseException:
        if local and target.fs.get_file_info(staging).type == pafs.FileType.File:
            target.fs.delete_file(staging)
        raise
    written = int(target.fs.get_file_info(destination).size or 0)
    if size != expected_size or written != expected_size:
        raise BackupError(
            f"{source.location.uri}/{relative}: expected {expected_size} bytes, read {size}, "
            f"wrote {written} to {target.location.uri}"
        )
    return FileRecord(size, digest.hexdigest())


def _copy_many(
    source: _Store,
    target: _Store,
    files: dict[str, int],
    *,
    table: str,
    progress: ProgressCallback | None,
) -> dict[str, FileRecord]:
    """Copy `files` (relative path -> size) in parallel; every copy is checked."""
    copied: dict[str, FileRecord] = {}
    if progress:
        progress(table, 0, len(files))
    if not files:
        return copied
    with ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:
        futures = {pool.submit(_copy, source, target, p, s): p for p, s in sorted(files.items())}
        try:
            for future in as_completed(futures):
                copied[futures[future]] = future.result()
                if progress:
                    progress(table, len(copied), len(files))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the table failed: copy no more of it
            raise
    return copied


# -- the log ----------------------------------------------------------------------------------
def latest_version(location: Location) -> int | None:
    """The table's latest committed version from a listing of its log (no log replay);
    None when no table is there."""
    return DeltaLog(location).log_files().latest


def has_table(location: Location) -> bool:
    """Whether a Delta table is there: its log holds a commit or a checkpoint (an empty or
    leftover `_delta_log/` folder is no table)."""
    return latest_version(location) is not None


@dataclass
class _Entry:
    size: int
    records: int | None
    deleted: int = 0  # rows its deletion vector deletes
    vector: str | None = None  # its deletion vector's file (storage path), if it has one


def _file_hash(path: str, size: int, deleted: int = 0) -> int:
    key = f"{path}\t{size}" if not deleted else f"{path}\t{size}\t{deleted}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")


def digest_of(files: Iterable[tuple[str, int, int]]) -> str:
    """An order-independent digest of a version's file list: the sum, modulo 2^256, of the
    SHA-256 of each (path, size) — with the rows its deletion vector deletes, when it has
    one. A sum can be kept up to date as the log is replayed."""
    return f"{sum(_file_hash(p, s, d) for p, s, d in files) % (1 << 256):064x}"


@dataclass
class VersionRecord:
    """One backed-up version of a table."""

    version: int
    committed_at: str | None  # ISO 8601 UTC of the commit
    operation: str | None
    rows: int | None
    files: int
    bytes: int
    digest: str
    backed_up_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "committed_at": self.committed_at, "operation": self.operation, "rows": self.rows,
            "files": self.files, "bytes": self.bytes, "digest": self.digest,
            "backed_up_at": self.backed_up_at,
        }  # fmt: skip

    @classmethod
    def from_json(cls, version: int, data: dict[str, Any]) -> VersionRecord:
        return cls(version=version, **data)


def _everything_available(_path: str, _size: int | None) -> bool:
    return True


def _no_footer(_path: str) -> int:
    return 0


class _State:
    """A table version's data files and deletion-vector files, kept up to date while the log
    is replayed: which files, their sizes and rows, which are unavailable, the digest and the
    rows (less those deletion vectors delete)."""

    def __init__(
        self,
        table: str,
        location: Location,
        available: Callable[[str, int | None], bool] = _everything_available,
        footer_rows: Callable[[str], int] = _no_footer,
    ):
        self.table = table
        self.location = location
        self.files: dict[str, _Entry] = {}  # path as in the log (URL-encoded)
        self._missing: dict[str, int] = {}  # file -> entries that need it
        self.hash = 0
        self.rows = 0
        self._available = available
        self._footer_rows = footer_rows

    @property
    def missing(self) -> bool:
        return bool(self._missing)

    def _need(self, path: str, size: int | None, step: int) -> None:
        if step > 0 and self._available(path, size):
            return
        if path in self._missing or step > 0:
            self._missing[path] = self._missing.get(path, 0) + step
            if self._missing[path] <= 0:
                del self._missing[path]

    def add(self, file: DataFile) -> None:
        """Apply an add action (its deletion vector included)."""
        path, size, records, vector = file.path, file.size, file.records, file.deletion_vector
        if path in self.files:
            self.remove(path)
        try:
            entry = _Entry(size, records, file.deleted,
                           vector.path_in(self.location) if vector else None)  # fmt: skip
        except DeletionVectorError as exc:
            raise BackupError(f"{self.table}: {exc}") from exc
        if records is None and self._available(path, size):
            entry.records = self._footer_rows(path)
        self.files[path] = entry
        self.hash = (self.hash + _file_hash(path, size, entry.deleted)) % (1 << 256)
        if entry.records is not None:
            self.rows += entry.records - entry.deleted
        self._need(path, size, 1)
        if entry.vector:
            self._need(entry.vector, None, 1)

    def remove(self, path: str) -> None:
        entry = self.files.pop(path, None)
        if entry is None:
            return
        self.hash = (self.hash - _file_hash(path, entry.size, entry.deleted)) % (1 << 256)
        if entry.records is not None:
            self.rows -= entry.records - entry.deleted
        self._need(path, entry.size, -1)
        if entry.vector:
            self._need(entry.vector, None, -1)

    def needed(self) -> dict[str, _Entry | None]:
        """Every file the version needs (storage paths): its data files with their entries,
        its deletion-vector files (None)."""
        found: dict[str, _Entry | None] = {unquote(p): e for p, e in self.files.items()}
        found.update({e.vector: None for e in self.files.values() if e.vector})
        return found

    @property
    def counted(self) -> bool:
        return all(e.records is not None for e in self.files.values())

    def record(self, version: int, commit: CommitFile | None, at: datetime) -> VersionRecord:
        moment = commit.timestamp if commit else None
        return VersionRecord(
            version=version,
            committed_at=None if moment is None else _naive_iso(moment),
            operation=commit.operation if commit else None,
            rows=self.rows if self.counted else None,
            files=len(self.files),
            bytes=sum(e.size for e in self.files.values()),
            digest=f"{self.hash:064x}",
            backed_up_at=at.isoformat(),
        )

    def load(self, location: Location, version: int) -> _State:
        """Fill the state with the files of `version`, from the log at `location` (its last
        checkpoint up to the version and the commits after)."""
        try:
            actions = DeltaLog(location).live_actions(version)
        except VersionError as exc:
            raise BackupError(f"{self.table}: {exc}") from exc
        for body in actions.values():
            self.add(DataFile.of(body, version=version))
        return self


def _naive_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None).isoformat()


def _deleted_by_file(table: DeltaTable) -> dict[str, int]:
    """Rows deleted per data file (storage path relative to the table), as delta-rs reads the
    deletion vectors: the independent check of the vectors a replay or a copy names."""
    root = unquote(table.table_uri).rstrip("/") + "/"
    found: dict[str, int] = {}
    vectors = pa.table(table.deletion_vectors())
    for uri, keep in zip(vectors.column("filepath").to_pylist(),
                         vectors.column("selection_vector"), strict=True):  # fmt: skip
        kept = pc.sum(keep.values).as_py() or 0
        path = unquote(str(uri))
        found[path[len(root) :] if path.startswith(root) else path] = len(keep.values) - kept
    return found


def _digest_of_table(location: Location, table: DeltaTable) -> str:
    deleted = _deleted_by_file(table)
    return digest_of((f.path, f.size, deleted.get(unquote(f.path), 0))
                     for f in DeltaLog(location).files(table=table))  # fmt: skip


def _snapshot(location: Location, version: int | None = None) -> tuple[int, str, int]:
    """Version, file-list digest and rows of a version (the latest by default) as delta-rs
    reads them: the independent check of a replayed state and of a copy."""
    table = DeltaLog(location).table(version)
    rows = int(query_delta(table, "SELECT count(*) AS n FROM t").column("n")[0].as_py())
    return int(table.version()), _digest_of_table(location, table), rows


# -- the manifest -----------------------------------------------------------------------------
@dataclass
class Manifest:
    """What the backup of one table holds (`manifest.json`)."""

    table: str
    source: str
    table_id: str
    importance: str
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)  # data files, storage paths
    log: dict[str, FileRecord] = field(default_factory=dict)  # names below _delta_log/
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_backup_at(self) -> datetime | None:
        return datetime.fromisoformat(self.runs[-1]["at"]) if self.runs else None

    @property
    def latest_version(self) -> int | None:
        return max(self.versions) if self.versions else None

    def to_json(self) -> str:
        data = {
            "format": MANIFEST_FORMAT,
            "table": self.table,
            "source": self.source,
            "table_id": self.table_id,
            "importance": self.importance,
            "versions": {str(v): r.to_json() for v, r in sorted(self.versions.items())},
            "files": {p: [r.size, r.sha256] for p, r in sorted(self.files.items())},
            "log": {p: [r.size, r.sha256] for p, r in sorted(self.log.items())},
            "runs": self.runs,
        }
        return json.dumps(data, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != MANIFEST_FORMAT:
            raise BackupError(f"unknown backup manifest format {data.get('format')!r}")
        return cls(
            table=data["table"],
            source=data["source"],
            table_id=data["table_id"],
            importance=data["importance"],
            versions={
                int(v): VersionRecord.from_json(int(v), r) for v, r in data["versions"].items()
            },
            files={p: FileRecord(int(s), h) for p, (s, h) in data["files"].items()},
            log={p: FileRecord(int(s), h) for p, (s, h) in data["log"].items()},
            runs=list(data["runs"]),
        )


def read_manifest(target: BackupTarget, root: Location) -> Manifest | None:
    store = _Store(target.backup_location(root))
    try:
        return Manifest.from_json(store.read(MANIFEST).decode("utf-8"))
    except FileNotFoundError:
        return None


def version_ranges(versions: Iterable[int]) -> str:
    """`[0, 1, 2, 5]` -> "0–2, 5"."""
    runs: list[list[int]] = []
    for v in sorted(versions):
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs) or "none"


# -- backup -----------------------------------------------------------------------------------
BackupOutcome = Literal["backed_up", "unchanged", "not_due", "no_table", "failed"]


@dataclass
class TableBackup:
    """What a backup run did with one table."""

    table: str
    importance: str
    outcome: BackupOutcome
    version: int | None = None  # the version backed up (pinned)
    versions_added: list[int] = field(default_factory=list)
    files_copied: int = 0
    bytes_copied: int = 0
    rows: int | None = None
    next_due: datetime | None = None
    error: str | None = None


@dataclass
class BackupReport:
    at: datetime
    location: str
    tables: list[TableBackup]

    @property
    def failed(self) -> list[TableBackup]:
        return [t for t in self.tables if t.outcome == "failed"]

    files_copied = Summed("tables")
    bytes_copied = Summed("tables")


def due_at(target: BackupTarget, manifest: Manifest | None) -> datetime | None:
    """When the table is next due (None: never backed up, due now)."""
    last = manifest.last_backup_at if manifest else None
    return None if last is None else last + timedelta(days=target.backup_days)


@dataclass
class _Sources:
    """Where a backup run finds the data files it replays: the live table's files, listed
    after pinning (every file of versions up to the pinned one still there), and the files
    the backup already holds intact."""

    live: _Store
    dest: _Store
    listing: dict[str, int]
    in_backup: dict[str, FileRecord]

    def available(self, path: str, size: int | None) -> bool:
        """A data file of that size, or a deletion-vector file (size None), is in the table
        or already in the backup."""
        stored = unquote(path)
        if size is None:
            return stored in self.listing or stored in self.in_backup
        return self.listing.get(stored) == size or stored in self.in_backup

    def size(self, stored: str, entry: _Entry | None) -> int:
        if entry is not None:
            return entry.size
        found = self.listing.get(stored)
        return found if found is not None else self.in_backup[stored].size

    def footer_rows(self, path: str) -> int:
        stored = unquote(path)
        store = self.live if self.listing.get(stored) is not None else self.dest
        with store.fs.open_input_file(store.path(stored)) as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)

    def state(self, table: str) -> _State:
        return _State(table, self.live.location, self.available, self.footer_rows)


def _pin(
    target: BackupTarget, dest: _Store, manifest: Manifest | None
) -> tuple[DeltaTable, Manifest]:
    """The table at its current version V, which everything after is about; the manifest to
    add to (a new one at the first backup)."""
    pinned = DeltaLog(target.location).table()
    version, table_id = int(pinned.version()), str(pinned.metadata().id)
    if manifest is not None and manifest.table_id != table_id:
        raise BackupError(
            f"{target.name}: the table at {target.location.uri} (id {table_id}) is not the "
            f"table backed up at {dest.location.uri} (id {manifest.table_id}): it was "
            "recreated; move the old backup aside before backing up the new table"
        )
    manifest = manifest or Manifest(target.name, target.location.uri, table_id, target.importance)
    if manifest.latest_version is not None and manifest.latest_version > version:
        raise BackupError(
            f"{target.name}: the table is at version {version} but its backup already holds "
            f"version {manifest.latest_version}: its log went back in time; nothing copied"
        )
    return pinned, manifest


def _replay_live(
    target: BackupTarget,
    sources: _Sources,
    manifest: Manifest,
    log: LogFiles,
    *,
    version: int,
    at: datetime,
) -> tuple[dict[int, VersionRecord], dict[str, int]]:
    """Replay the log from the last backed-up version (or the oldest rebuildable one), noting
    each version whose files are all available; the versions claimed are the unbroken run of
    such versions that ends at V. Returns their records and the data files they need."""
    start: _State | None = None
    first = min(log.commits | log.checkpoints) if log.has_versions else 0
    if manifest.latest_version is not None:
        start = sources.state(target.name).load(sources.dest.location, manifest.latest_version)
        first = manifest.latest_version + 1

    def restart(v: int, commit: CommitFile | None) -> _State | None:
        if v in log.checkpoints:
            return sources.state(target.name).load(target.location, v)
        if v == 0 and commit is not None:
            state = sources.state(target.name)
            commit.apply(state)
            return state
        return None  # the log between here and the next checkpoint is gone

    records: dict[int, VersionRecord] = {}
    needed: dict[str, int] = {}
    replay = DeltaLog(target.location).replay(range(first, version + 1), log, start, restart)
    for v, state, commit in replay:
        if state is None or state.missing:
            records.clear()
            needed.clear()
            continue
        records[v] = state.record(v, commit, at)
        for path, entry in state.needed().items():
            needed[path] = sources.size(path, entry)
    return records, needed


def _check_replayed(
    target: BackupTarget, pinned: DeltaTable, records: dict[int, VersionRecord], manifest: Manifest
) -> None:
    """V can be backed up (or already is), and the replay gives the files delta-rs reads."""
    version = int(pinned.version())
    if version not in records and version not in manifest.versions:
        raise BackupError(
            f"{target.name}: version {version} cannot be backed up: its data files are not "
            f"all in {target.location.uri}"
        )
    if version in records and records[version].digest != _digest_of_table(target.location, pinned):
        raise BackupError(
            f"{target.name}: replaying the log does not give the files delta-rs reads at "
            f"version {version}; nothing copied"
        )


def _copy_log(
    target: BackupTarget, sources: _Sources, log: LogFiles, manifest: Manifest, held: dict[str, int]
) -> dict[str, FileRecord]:
    """Copy the log files the backup lacks; one that differs from its backed-up copy means
    the table was rewritten."""
    copy_log = {
        f"{LOG_DIR}/{name}": size
        for name, size in log.files.items()
        if held.get(f"{LOG_DIR}/{name}") != size or name not in manifest.log
    }
    for name in copy_log:
        old = manifest.log.get(name[len(LOG_DIR) + 1 :])
        if old is not None and held.get(name) is not None and old.size != copy_log[name]:
            raise BackupError(
                f"{target.name}: {name} differs from the one backed up: the table was "
                "rewritten; nothing claimed"
            )
    return _copy_many(sources.live, sources.dest, copy_log, table=target.name, progress=None)


def _read_back(
    target: BackupTarget, dest: _Store, version: int, records: dict[int, VersionRecord]
) -> None:
    """Read the copy of V back through delta-rs before the manifest names it."""
    if not records:
        return
    expected = records[version]
    _, _, rows, same = _read_as(dest.location, version, expected, version)
    if not same:
        raise BackupError(
            f"{target.name}: the backup of version {version} does not read back as the "
            f"table did (rows {rows} vs {expected.rows}); nothing claimed"
        )
    records[version].rows = rows


def _claim(
    target: BackupTarget,
    dest: _Store,
    manifest: Manifest,
    records: dict[int, VersionRecord],
    copied: dict[str, FileRecord],
    copied_log: dict[str, FileRecord],
    *,
    version: int,
    at: datetime,
) -> TableBackup:
    """Write the manifest naming what was copied and checked; what the run did."""
    manifest.versions.update(records)
    manifest.files.update(copied)
    manifest.log.update({p[len(LOG_DIR) + 1 :]: r for p, r in copied_log.items()})
    added = sorted(records)
    bytes_copied = sum(r.size for r in copied.values()) + sum(r.size for r in copied_log.values())
    manifest.runs.append({
        "at": at.isoformat(), "version": version, "versions_added": version_ranges(added),
        "files_copied": len(copied), "log_files_copied": len(copied_log),
        "bytes_copied": bytes_copied,
    })  # fmt: skip
    dest.write(MANIFEST, manifest.to_json().encode("utf-8"))
    rows_v = manifest.versions[version].rows if version in manifest.versions else None
    return TableBackup(
        target.name, target.importance, "backed_up" if added else "unchanged",
        version=version, versions_added=added, files_copied=len(copied),
        bytes_copied=bytes_copied, rows=rows_v,
        next_due=at + timedelta(days=target.backup_days),
    )  # fmt: skip


def _backup_table(
    target: BackupTarget,
    root: Location,
    manifest: Manifest | None,
    *,
    at: datetime,
    progress: ProgressCallback | None,
) -> TableBackup:
    live, dest = _Store(target.location), _Store(target.backup_location(root))
    # Pin the version first: everything below is about version V and earlier.
    pinned, manifest = _pin(target, dest, manifest)
    version = int(pinned.version())
    listing = live.listing()  # after pinning: every file of versions <= V still there
    log = LogFiles.of(listing, upto=version)
    held = dest.listing()
    in_backup = {p: r for p, r in manifest.files.items() if held.get(p) == r.size}
    sources = _Sources(live, dest, listing, in_backup)
    records, needed = _replay_live(target, sources, manifest, log, version=version, at=at)
    _check_replayed(target, pinned, records, manifest)
    copy_data = {p: s for p, s in needed.items() if p not in in_backup}
    copied = _copy_many(live, dest, copy_data, table=target.name, progress=progress)
    copied_log = _copy_log(target, sources, log, manifest, held)
    _read_back(target, dest, version, records)
    return _claim(target, dest, manifest, records, copied, copied_log, version=version, at=at)


def backup(
    settings: Settings,
    catalog: Catalog,
    *,
    at: datetime,
    resource: str | None = None,
    force: bool = False,
    actor: str = PLATFORM,
    progress: ProgressCallback | None = None,
) -> BackupReport:
    """Back up every table that is due by its importance at `at` (all of them with `force`)
    to `settings.backup_location`; `resource` narrows it to one catalogued resource's tables
    (or `"ops"`). A table that fails is reported and journaled; the others go on."""
    at = naive_utc(at)
    root = settings.backup_location
    done: list[TableBackup] = []
    for target in targets(settings, catalog, resource):
        try:
            manifest = read_manifest(target, root)
            due = due_at(target, manifest)
            if not force and due is not None and at < due:
                assert manifest is not None
                done.append(TableBackup(target.name, target.importance, "not_due",
                                        version=manifest.latest_version, next_due=due))  # fmt: skip
                continue
            if not has_table(target.location):
                done.append(TableBackup(target.name, target.importance, "no_table"))
                continue
            result = _backup_table(target, root, manifest, at=at, progress=progress)
        except Exception as exc:  # one table's failure must not stop the others' backups
            result = TableBackup(target.name, target.importance, "failed", error=str(exc))
        done.append(result)
        audit.append(
            settings, at=at, actor=actor, action=BACKUP_ACTION, resource=target.resource,
            table_name=target.name, version=result.version, rows=result.rows,
            files=result.files_copied, outcome="error" if result.error else "ok",
            detail={"to": target.backup_location(root).uri, "importance": target.importance,
                    "versions_added": version_ranges(result.versions_added),
                    "bytes_copied": result.bytes_copied,
                    **({"error": result.error} if result.error else {})},
        )  # fmt: skip
    return BackupReport(at, root.uri, done)


# -- status -----------------------------------------------------------------------------------
@dataclass
class BackupStatus:
    table: str
    importance: str
    backup_days: int
    table_version: int | None  # the live table's version (None: no such table)
    last_backup_at: datetime | None
    backed_up_version: int | None
    versions: str  # the backed-up versions, as ranges
    next_due: datetime | None  # None: never backed up
    due: bool
    location: str


def backup_status(settings: Settings, catalog: Catalog, at: datetime) -> list[BackupStatus]:
    """Per table: its version, its last backup and when the next one is due at `at`."""
    at = naive_utc(at)
    root = settings.backup_location
    found = []
    for target in targets(settings, catalog):
        manifest = read_manifest(target, root)
        live = latest_version(target.location)
        due = due_at(target, manifest)
        found.append(BackupStatus(
            table=target.name, importance=target.importance, backup_days=target.backup_days,
            table_version=live, last_backup_at=manifest.last_backup_at if manifest else None,
            backed_up_version=manifest.latest_version if manifest else None,
            versions=version_ranges(manifest.versions) if manifest else "none",
            next_due=due, due=live is not None and (due is None or at >= due),
            location=target.backup_location(root).uri,
        ))  # fmt: skip
    return found


# -- restore ----------------------------------------------------------------------------------
RestoreMode = Literal["recreated", "new_commit", "current"]


@dataclass
class RestoreReport:
    table: str
    version: int  # the backed-up version restored
    mode: RestoreMode  # recreated: the table was gone; new_commit: V became a new version
    table_version: int  # the table's version afterwards
    rows: int
    files_copied: int
    log_files_copied: int
    source: str


def _wanted(state: _State, manifest: Manifest) -> dict[str, int]:
    """The files (storage path -> size) a version needs, deletion-vector files sized as the
    backup recorded them (-1: not in the backup, which the copy refuses)."""
    missing = FileRecord(-1, "")
    return {p: e.size if e else manifest.files.get(p, missing).size
            for p, e in state.needed().items()}  # fmt: skip


def _backed_up_files(
    target: BackupTarget, dest: _Store, log: LogFiles, manifest: Manifest, upto: int
) -> dict[str, int]:
    """The data and deletion-vector files (storage path -> size) of the backed-up versions
    up to `upto`, replayed from the backup's log."""

    def restart(v: int, _commit: CommitFile | None) -> _State | None:
        if v not in manifest.versions:
            return None
        return _State(manifest.table, target.location).load(dest.location, v)

    wanted: dict[str, int] = {}
    versions = range(min(manifest.versions), upto + 1)
    for v, state, _ in DeltaLog(dest.location).replay(versions, log, None, restart):
        if state is not None and v in manifest.versions:
            wanted.update(_wanted(state, manifest))
    return wanted


def _read_as(
    location: Location, version: int | None, record: VersionRecord, expected_version: int
) -> tuple[int, str, int, bool]:
    """Version, file-list digest and rows of a copy (a version, the latest by default) as
    delta-rs reads it, and whether they are those of `record` at `expected_version`."""
    found, digest, rows = _snapshot(location, version)
    same = (
        found == expected_version
        and digest == record.digest
        and (record.rows is None or rows == record.rows)
    )
    return found, digest, rows, same


def _verify_restored(
    target: BackupTarget, record: VersionRecord, version: int | None, expected_version: int
) -> tuple[int, int]:
    found, digest, rows, same = _read_as(target.location, version, record, expected_version)
    if not same:
        raise BackupError(
            f"{target.name}: restored version {found} does not match backed-up version "
            f"{record.version} (rows {rows} vs {record.rows}, files digest "
            f"{'equal' if digest == record.digest else 'differs'})"
        )
    return found, rows


class _Refused(Exception):
    """Carries a refusal out of `_restore`, so that it is journaled as refused."""

    def __init__(self, error: BackupError):
        self.error = error


def restore(
    settings: Settings,
    catalog: Catalog,
    table_name: str,
    *,
    version: int | None = None,
    at: datetime,
    actor: str = PLATFORM,
    progress: ProgressCallback | None = None,
) -> RestoreReport:
    """Bring `table_name` (e.g. `population.residents_unconditional`) back to a backed-up
    version (the latest backed up by default).

    A table that is gone is recreated from the backup: its log up to V, V's files and those of
    its other backed-up versions up to V, so it reads exactly as version V did, with the same
    version number and history. A table that exists gets V as a new commit (data files vacuum
    removed are copied back first), so its newer versions stay readable. Refused
    (`NotBackedUp`, `RestoreRefused`) when V is not in the backup or the table there is not
    the one backed up. Every attempt on a known table is journaled (`platform.restore`).
    """
    at = naive_utc(at)
    target = find_target(settings, catalog, table_name)
    dest = target.backup_location(settings.backup_location)
    outcome, report = "error", None
    detail: dict[str, Any] = {}
    try:
        report = _restore(target, settings.backup_location, version, progress)
    except _Refused as refused:
        outcome, detail = "refused", {"reason": str(refused.error)}
        raise refused.error from None
    except Exception as exc:
        detail = {"error": str(exc)}
        raise
    else:
        outcome = "ok"
        detail = {"mode": report.mode, "table_version": report.table_version,
                  "log_files_copied": report.log_files_copied}  # fmt: skip
        return report
    finally:
        audit.append(
            settings, at=at, actor=actor, action=RESTORE_ACTION, resource=target.resource,
            table_name=table_name, version=report.version if report else version,
            rows=report.rows if report else None, files=report.files_copied if report else None,
            outcome=outcome, detail={"from": dest.uri, **detail},
        )  # fmt: skip


def _backed_up(target: BackupTarget, root: Location, version: int | None) -> tuple[Manifest, int]:
    """The backup's manifest and the version to restore (its latest by default)."""
    dest_location = target.backup_location(root)
    manifest = read_manifest(target, root)
    if manifest is None or not manifest.versions:
        raise _Refused(NotBackedUp(
            f"{target.name}: no backup at {dest_location.uri} (run `govlake backup`)"))  # fmt: skip
    version = manifest.latest_version if version is None else version
    assert version is not None
    if version not in manifest.versions:
        raise _Refused(NotBackedUp(
            f"{target.name}: version {version} is not in the backup at {dest_location.uri}; "
            f"backed-up versions: {version_ranges(manifest.versions)}"))  # fmt: skip
    return manifest, version


@dataclass
class _Restore:
    """Bringing one table back to one backed-up version."""

    target: BackupTarget
    manifest: Manifest
    version: int
    dest: _Store  # the backup
    live: _Store  # the table
    progress: ProgressCallback | None

    @property
    def record(self) -> VersionRecord:
        return self.manifest.versions[self.version]

    def backup_log(self) -> LogFiles:
        """The backup's log up to the version, refused when damaged."""
        held = self.dest.listing()
        log = LogFiles.of(held, upto=self.version)
        missing = sorted(f"{LOG_DIR}/{n}" for n, r in self.manifest.log.items()
                         if n in log.files and held.get(f"{LOG_DIR}/{n}") != r.size)  # fmt: skip
        if missing or not log.readable(self.version):
            raise BackupError(
                f"{self.target.name}: the backup at {self.dest.location.uri} is damaged: "
                f"{', '.join(missing[:5]) or f'the log of version {self.version} is incomplete'}"
            )
        return log

    def report(
        self, mode: RestoreMode, found: tuple[int, int], copied: int, copied_log: int
    ) -> RestoreReport:
        table_version, rows = found
        return RestoreReport(self.target.name, self.version, mode, table_version, rows,
                             copied, copied_log, self.dest.location.uri)  # fmt: skip

    def recreate(self, backup_log: LogFiles, present: dict[str, int]) -> RestoreReport:
        """The table is gone: bring back the data files of every backed-up version up to V,
        then the log."""
        wanted = _backed_up_files(self.target, self.dest, backup_log, self.manifest,
                                  self.version)  # fmt: skip
        copied = _restore_files(self.dest, self.live, self.manifest, wanted, self.target.name,
                                self.progress)  # fmt: skip
        if f"{LOG_DIR}/_last_checkpoint" in present:  # left over, it may name a later version
            self.live.delete(f"{LOG_DIR}/_last_checkpoint")
        log_files = {f"{LOG_DIR}/{n}": s for n, s in backup_log.files.items()}
        copied_log = _copy_many(self.dest, self.live, log_files, table=self.target.name,
                                progress=None)  # fmt: skip
        found = _verify_restored(self.target, self.record, None, self.version)
        return self.report("recreated", found, len(copied), len(copied_log))

    def refuse_replacing(self, current: DeltaTable) -> None:
        """Refused: a different table in the way, a log that went back in time, an audit
        archive rolled back."""
        name, version = self.target.name, self.version
        latest, table_id = int(current.version()), str(current.metadata().id)
        if table_id != self.manifest.table_id:
            raise _Refused(RestoreRefused(
                f"{name}: the table at {self.target.location.uri} (id {table_id}) is not the "
                f"one backed up at {self.dest.location.uri} (id {self.manifest.table_id}); "
                "move it aside to restore the backed-up table"))  # fmt: skip
        if version > latest:
            raise _Refused(RestoreRefused(
                f"{name}: the table is at version {latest}, older than backed-up version "
                f"{version}; delete the table to restore it as it was backed up"))  # fmt: skip
        if name == AUDIT_ARCHIVE and version < latest:
            raise _Refused(RestoreRefused(
                f"{name}: the audit archive only grows (宝鸡 art. 21): rolling it back from "
                f"version {latest} to {version} would hide entries; it is restored only when "
                "it is gone"))  # fmt: skip

    def onto_existing(self, backup_log: LogFiles, present: dict[str, int]) -> RestoreReport:
        """The table exists: V becomes a new commit, after the data files vacuum removed are
        copied back."""
        current = DeltaLog(self.target.location).table()
        self.refuse_replacing(current)
        latest = int(current.version())
        at_version = _State(self.manifest.table, self.target.location)
        wanted = _wanted(at_version.load(self.dest.location, self.version), self.manifest)
        wanted = {p: s for p, s in wanted.items() if present.get(p) != s}
        copied = _restore_files(self.dest, self.live, self.manifest, wanted, self.target.name,
                                self.progress)  # fmt: skip
        # A log that no longer rebuilds V (its commits cleaned up) gets the backed-up log files
        # back; existing log files are never overwritten.
        log_files = {}
        if not LogFiles.of(present).readable(self.version):
            log_files = {f"{LOG_DIR}/{n}": s for n, s in backup_log.files.items()
                         if f"{LOG_DIR}/{n}" not in present}  # fmt: skip
        copied_log = _copy_many(self.dest, self.live, log_files, table=self.target.name,
                                progress=None)  # fmt: skip
        if self.version == latest:
            found = _verify_restored(self.target, self.record, latest, latest)
            return self.report("current", found, len(copied), len(copied_log))
        table = DeltaLog(self.target.location).table()
        table.restore(self.version)
        new_version = int(table.version())
        found = _verify_restored(self.target, self.record, new_version, new_version)
        return self.report("new_commit", found, len(copied), len(copied_log))


def _restore(
    target: BackupTarget, root: Location, version: int | None, progress: ProgressCallback | None
) -> RestoreReport:
    manifest, version = _backed_up(target, root, version)
    dest, live = _Store(target.backup_location(root)), _Store(target.location)
    job = _Restore(target, manifest, version, dest, live, progress)
    backup_log = job.backup_log()
    present = live.listing()
    if not LogFiles.of(present).has_versions:
        return job.recreate(backup_log, present)
    return job.onto_existing(backup_log, present)


def _restore_files(
    dest: _Store,
    live: _Store,
    manifest: Manifest,
    wanted: dict[str, int],
    table: str,
    progress: ProgressCallback | None,
) -> dict[str, FileRecord]:
    """Copy data files back from the backup; each must match its recorded checksum."""
    unknown = sorted(p for p in wanted if p not in manifest.files)
    if unknown:
        raise BackupError(f"{table}: the backup lacks {len(unknown)} data file(s): {unknown[:3]}")
    copied = _copy_many(dest, live, wanted, table=table, progress=progress)
    damaged = sorted(p for p, r in copied.items() if r != manifest.files[p])
    if damaged:
        raise BackupError(
            f"{table}: {len(damaged)} backed-up file(s) do not match their checksum: {damaged[:3]}"
        )
    return copied
