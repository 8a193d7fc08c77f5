"""Storage locations as URIs (local directory or `s3://`), with the few file operations jobs need.

Jobs hand `Location.uri` to the engine and to delta-rs and use the methods below for the
landing zone, so the same code runs on a local directory and on object storage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import pyarrow as pa
import pyarrow.fs as pafs

if TYPE_CHECKING:
    from deltalake import DeltaTable


@dataclass(frozen=True)
class Location:
    """A directory or file addressed by URI; local paths are kept absolute."""

    uri: str

    @classmethod
    def parse(cls, value: str | os.PathLike[str]) -> Location:
        text = os.fspath(value)
        if "://" in text and not text.startswith("file://"):
            return cls(text.rstrip("/"))
        if text.startswith("file://"):
            text = text[len("file://") :]
        return cls(str(Path(text).expanduser().resolve()))

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.uri.rstrip("/").rsplit("/", 1)[0])

    def child(self, *parts: str) -> Location:
        return Location("/".join([self.uri.rstrip("/"), *(p.strip("/") for p in parts)]))

    def __str__(self) -> str:
        return self.uri

    # -- file operations -------------------------------------------------------------------
    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if self.is_local:
            return pafs.LocalFileSystem(), self.uri
        fs, path = pafs.FileSystem.from_uri(self.uri)
        return fs, path

    def exists(self) -> bool:
        fs, path = self._fs()
        return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)

    def is_delta_table(self) -> bool:
        return self.child("_delta_log").exists()

    def files(self) -> Iterator[Location]:
        """Every file below this directory, in name order (nothing if it does not exist)."""
        fs, path = self._fs()
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        infos = sorted(
            (i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File),
            key=lambda i: i.path,
        )
        root = path.rstrip("/")
        for info in infos:
            yield self.child(info.path[len(root) + 1 :])

    def size(self) -> int:
        fs, path = self._fs()
        return int(fs.get_file_info(path).size or 0)

    def open_read(self) -> IO[bytes]:
        fs, path = self._fs()
        return cast(IO[bytes], fs.open_input_stream(path))

    def open_write(self) -> IO[bytes]:
        fs, path = self._fs()
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        return cast(IO[bytes], fs.open_output_stream(path))

    def read_text(self, encoding: str = "utf-8") -> str:
        with self.open_read() as handle:
            return handle.read().decode(encoding)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        with self.open_write() as handle:
            handle.write(text.encode(encoding))

    def move_to(self, target: Location) -> None:
        fs, path = self._fs()
        _, target_path = target._fs()
        fs.create_dir(target_path.rsplit("/", 1)[0], recursive=True)
        fs.move(path, target_path)

    def delete(self) -> None:
        fs, path = self._fs()
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)

    def storage_options(self) -> dict[str, str]:
        """Options for delta-rs: S3 credentials and endpoint come from the `AWS_*` variables."""
        if self.is_local:
            return {}
        options = {
            key.lower(): value
            for key in (
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_ALLOW_HTTP",
            )
            if (value := os.environ.get(key))
        }
        return options


def query_delta(table: DeltaTable, sql: str, *, name: str = "t") -> pa.Table:
    """Run `sql` over a delta-rs table registered as `name`, with delta-rs's own engine
    (DataFusion; deletion vectors included).

    Use this rather than `DeltaTable.to_pyarrow_dataset()` / `to_pyarrow_table()`: a pyarrow
    dataset scan over delta-rs leaves Arrow thread-pool threads behind, and a process that
    scanned so can abort when it exits ("terminate called without an active exception",
    exit 134) after its work is done, which fails a CLI command or an Airflow task.
    """
    from deltalake import QueryBuilder

    reader = QueryBuilder().register(name, table).execute(sql)
    return pa.RecordBatchReader.from_stream(reader).read_all()


def delta_schema(table: DeltaTable) -> pa.Schema:
    """The table's columns with the pyarrow types its Delta schema maps to (the types
    `to_pyarrow_dataset()` reads them as)."""
    return pa.schema(table.schema().to_arrow())


def scan_delta(table: DeltaTable, columns: Sequence[str] | None = None) -> pa.RecordBatchReader:
    """The rows of a delta-rs table batch by batch, read like `query_delta`, with `columns`
    (all by default) in that order and typed as in `delta_schema`: DataFusion reads strings
    as `string_view`, which code that relies on the table's own types must not see."""
    schema = delta_schema(table)
    names = list(schema.names if columns is None else columns)
    from deltalake import QueryBuilder

    selected = ", ".join('"' + name.replace('"', '""') + '"' for name in names)
    reader = QueryBuilder().register("t", table).execute(f"SELECT {selected} FROM t")
    wanted = pa.schema([schema.field(name) for name in names])
    return pa.RecordBatchReader.from_stream(reader).cast(wanted)


def read_delta(table: DeltaTable, columns: Sequence[str] | None = None) -> pa.Table:
    """`scan_delta` read whole: the replacement for `DeltaTable.to_pyarrow_table()`."""
    return scan_delta(table, columns).read_all()
