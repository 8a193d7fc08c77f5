"""Deletion-vector descriptors read from a table's log: the files they name exist and are
those delta-rs applies, a checkpoint gives the same as the commits, bad descriptors are
refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from govlake.core.location import Location
from govlake.lake import dvfiles
from govlake.lake.deltalog import LOG_DIR


def _dv_table(spark: SparkSession, folder: Path) -> Location:
    """Created (version 0), rows deleted (1) and updated (2) by the engine: vectors."""
    name = f"dv_{uuid.uuid4().hex}"
    spark.sql(f"CREATE TABLE {name} USING delta LOCATION '{folder}' TBLPROPERTIES "
              "('delta.enableDeletionVectors' = 'true') AS SELECT id FROM range(500)")  # fmt: skip
    spark.sql(f"DELETE FROM {name} WHERE id % 5 = 0")
    spark.sql(f"UPDATE {name} SET id = -id WHERE id % 9 = 0")
    return Location.parse(folder)


def test_z85_decodes_the_reference_vector() -> None:
    # The example of ZeroMQ's RFC 32 (Z85).
    assert dvfiles.z85_decode("HelloWorld") == bytes.fromhex("864FD26FB559F75B")
    with pytest.raises(dvfiles.DeletionVectorError, match="not z85"):
        dvfiles.z85_decode("Hell~")


def test_the_descriptors_name_the_files_delta_rs_applies(
    shared_spark: SparkSession, tmp_path: Path
) -> None:
    table = _dv_table(shared_spark, tmp_path / "t")
    live = dvfiles.live_actions(table, 2)
    with_vectors = {p: a["deletionVector"] for p, a in live.items() if a.get("deletionVector")}
    assert with_vectors
    for descriptor in with_vectors.values():
        path = dvfiles.dv_file(descriptor, table)
        assert path is not None and (tmp_path / "t" / path).is_file()
    applied = pa.table(DeltaTable(table.uri).deletion_vectors()).to_pylist()
    deleted = {r["filepath"].rsplit("/", 1)[-1]: r["selection_vector"].count(False)
               for r in applied}  # fmt: skip
    assert deleted == {p: dvfiles.deleted_rows(d) for p, d in with_vectors.items()}
    assert dvfiles.referenced(live.values(), table) == {
        dvfiles.dv_file(d, table) for d in with_vectors.values()
    }


def test_a_checkpoint_gives_what_the_commits_give(
    shared_spark: SparkSession, tmp_path: Path
) -> None:
    table = _dv_table(shared_spark, tmp_path / "t")
    from_commits = dvfiles.live_actions(table, 2)
    DeltaTable(table.uri).create_checkpoint()
    for version in range(3):  # only the checkpoint is left
        (tmp_path / "t" / LOG_DIR / f"{version:020d}.json").unlink()
    from_checkpoint = dvfiles.live_actions(table, 2)
    assert from_checkpoint.keys() == from_commits.keys()
    for path, action in from_commits.items():
        assert from_checkpoint[path].get("deletionVector") == action.get("deletionVector")
    with pytest.raises(dvfiles.DeletionVectorError, match="no longer rebuilds version 1"):
        dvfiles.live_actions(table, 1)


def test_storage_types(tmp_path: Path) -> None:
    table = Location.parse(tmp_path / "t")
    assert dvfiles.dv_file(None, table) is None
    inline = {"storageType": "i", "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D7"}
    assert dvfiles.dv_file(inline, table) is None  # in the log itself: no file
    uuid_only = {"storageType": "u", "pathOrInlineDv": "HelloWorldHelloWorld"}
    unprefixed = dvfiles.dv_file(uuid_only, table)
    assert unprefixed == "deletion_vector_864fd26f-b559-f75b-864f-d26fb559f75b.bin"
    inside = {"storageType": "p", "pathOrInlineDv": f"file://{tmp_path}/t/x/dv.bin"}
    assert dvfiles.dv_file(inside, table) == "x/dv.bin"
    with pytest.raises(dvfiles.DeletionVectorError, match="outside the table"):
        dvfiles.dv_file({"storageType": "p", "pathOrInlineDv": "file:///elsewhere/dv.bin"}, table)
    with pytest.raises(dvfiles.DeletionVectorError, match="storage type 'x'"):
        dvfiles.dv_file({"storageType": "x", "pathOrInlineDv": ""}, table)
