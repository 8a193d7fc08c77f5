"""Deletion-vector descriptors read from a table's log: the files they name exist and are
those delta-rs applies, a checkpoint gives the same as the commits, a commit that gives a file
a new vector keeps the file, bad descriptors are refused."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from govlake.core.location import Location
from govlake.lake.deltalog import (
    LOG_DIR,
    CommitFile,
    DataFile,
    DeletionVector,
    DeletionVectorError,
    DeltaLog,
    VersionError,
)


def _dv_table(spark: SparkSession, folder: Path) -> Location:
    """Created (version 0), rows deleted (1) and updated (2) by the engine: vectors."""
    name = f"dv_{uuid.uuid4().hex}"
    spark.sql(f"CREATE TABLE {name} USING delta LOCATION '{folder}' TBLPROPERTIES "
              "('delta.enableDeletionVectors' = 'true') AS SELECT id FROM range(500)")  # fmt: skip
    spark.sql(f"DELETE FROM {name} WHERE id % 5 = 0")
    spark.sql(f"UPDATE {name} SET id = -id WHERE id % 9 = 0")
    return Location.parse(folder)


def _vector(storage_type: str, where: str) -> DeletionVector:
    found = DeletionVector.of({"storageType": storage_type, "pathOrInlineDv": where,
                               "sizeInBytes": 34, "cardinality": 3})  # fmt: skip
    assert found is not None
    return found


def test_z85_decodes_the_reference_vector(tmp_path: Path) -> None:
    # The example of ZeroMQ's RFC 32 (Z85): "HelloWorld" is 86 4F D2 6F B5 59 F7 5B.
    table = Location.parse(tmp_path / "t")
    assert _vector("u", "HelloWorldHelloWorld").path_in(table) == (
        "deletion_vector_864fd26f-b559-f75b-864f-d26fb559f75b.bin"
    )
    with pytest.raises(DeletionVectorError, match="not z85"):
        _vector("u", "Hell~HelloWorldHello").path_in(table)


def test_the_descriptors_name_the_files_delta_rs_applies(
    shared_spark: SparkSession, tmp_path: Path
) -> None:
    table = _dv_table(shared_spark, tmp_path / "t")
    log = DeltaLog(table)
    live = log.live_actions(2)
    with_vectors = {p: DeletionVector.of(a.get("deletionVector")) for p, a in live.items()}
    with_vectors = {p: v for p, v in with_vectors.items() if v}
    assert with_vectors
    for vector in with_vectors.values():
        assert vector is not None
        path = vector.path_in(table)
        assert path is not None and (tmp_path / "t" / path).is_file()
    applied = pa.table(DeltaTable(table.uri).deletion_vectors()).to_pylist()
    deleted = {r["filepath"].rsplit("/", 1)[-1]: r["selection_vector"].count(False)
               for r in applied}  # fmt: skip
    assert deleted == {p: v.cardinality for p, v in with_vectors.items() if v}
    assert log.vector_files(live.values()) == {v.path_in(table) for v in with_vectors.values() if v}
    # 500 rows written, 100 deleted, the updated ones moved: the files hold 400 for readers.
    assert sum(f.rows or 0 for f in log.files(2)) == 400


def test_a_checkpoint_gives_what_the_commits_give(
    shared_spark: SparkSession, tmp_path: Path
) -> None:
    table = _dv_table(shared_spark, tmp_path / "t")
    from_commits = DeltaLog(table).live_actions(2)
    DeltaTable(table.uri).create_checkpoint()
    # A copy: a folder the reader has not replayed before.
    copied = shutil.copytree(tmp_path / "t", tmp_path / "copy")
    for version in range(3):  # only the checkpoint is left
        (copied / LOG_DIR / f"{version:020d}.json").unlink()
    log = DeltaLog(Location.parse(copied))
    from_checkpoint = log.live_actions(2)
    assert from_checkpoint.keys() == from_commits.keys()
    for path, action in from_commits.items():
        assert from_checkpoint[path].get("deletionVector") == action.get("deletionVector")
    with pytest.raises(VersionError, match="no longer rebuilds version 1"):
        log.live_actions(1)


class _Files:
    def __init__(self) -> None:
        self.paths: dict[str, DeletionVector | None] = {}

    def add(self, file: DataFile) -> None:
        self.paths[file.path] = file.deletion_vector

    def remove(self, path: str) -> None:
        self.paths.pop(path, None)


def test_a_new_vector_keeps_the_file_whatever_the_order_of_its_actions() -> None:
    old = {"storageType": "u", "pathOrInlineDv": "HelloWorldHelloWorld", "sizeInBytes": 34,
           "cardinality": 1}  # fmt: skip
    new = old | {"cardinality": 2}
    lines = [{"add": {"path": "a.parquet", "size": 10, "deletionVector": new}},
             {"remove": {"path": "a.parquet", "size": 10, "deletionVector": old}}]  # fmt: skip
    commit = CommitFile.parse(3, "\n".join(json.dumps(line) for line in lines))
    state = _Files()
    state.add(DataFile.of({"path": "a.parquet", "size": 10, "deletionVector": old}))
    commit.apply(state)
    assert state.paths["a.parquet"] == DeletionVector.of(new)


def test_storage_types(tmp_path: Path) -> None:
    table = Location.parse(tmp_path / "t")
    assert DeletionVector.of(None) is None
    inline = _vector("i", "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D7")
    assert inline.path_in(table) is None  # in the log itself: no file
    assert _vector("p", f"file://{tmp_path}/t/x/dv.bin").path_in(table) == "x/dv.bin"
    for outside in ("file:///elsewhere/dv.bin", f"file://{tmp_path}/t/../t2/dv.bin"):
        with pytest.raises(DeletionVectorError, match="outside the table"):
            _vector("p", outside).path_in(table)
    with pytest.raises(DeletionVectorError, match="storage type 'x'"):
        _vector("x", "").path_in(table)


def test_a_table_made_again_under_the_same_folder_is_read_afresh(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    from govlake.lake.deltalog import DeltaLog

    folder = tmp_path / "t"
    for n in range(3):
        write_deltalake(str(folder), pa.table({"id": [n]}), mode="append")
    log = DeltaLog(Location(str(folder)))
    first = set(log.live_actions(2))
    assert len(first) == 3
    # Removed and made again (a restore into an empty folder): the same version numbers,
    # other files. The replay remembered for the old table must not be reused.
    shutil.rmtree(folder)
    for n in range(4):
        write_deltalake(str(folder), pa.table({"id": [10 + n]}), mode="append")
    again = set(DeltaLog(Location(str(folder))).live_actions(3))
    assert len(again) == 4 and not again & first
