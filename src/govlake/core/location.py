"""Storage locations as URIs (local directory or `s3://`), with the few file operations jobs need.

Jobs hand `Location.uri` to the engine and to delta-rs and use the methods below for the
landing zone, so the same code runs on a local directory and on object storage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import pyarrow.fs as pafs


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

    def listing(self) -> dict[str, int]:
        """Every file below this directory (path relative to it) with its size; nothing if
        it does not exist. Directory markers are left out."""
        fs, path = self._fs()
        root = path.rstrip("/")
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        return {
            info.path[len(root) + 1 :]: int(info.size or 0)
            for info in fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        }

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
