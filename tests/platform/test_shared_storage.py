"""The jobs with the engine in another process that cannot see this machine's files, as a
Sail or Spark cluster runs: the warehouse on S3 (a real SeaweedFS server), the landing zone
on local disk, and a Sail Spark Connect server in `local-cluster` mode started in a mount
namespace where the landing folder is an empty tmpfs. Every file the engine reads must then
be on the shared storage (the warehouse), and the pipeline still publishes."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deltalake import DeltaTable
from govlake_tools.generate import generate
from govlake_tools.s3server import SeaweedS3
from support import lake_settings

from govlake.core.catalog import Catalog
from govlake.core.net import free_port
from govlake.core.runs import Interval
from govlake.lake.engine import get_spark
from govlake.lake.reads import query_delta
from govlake.lake.tables import TableSet
from govlake_app import pipeline as ingest
from jobs import bronze

pytestmark = pytest.mark.slow

BUCKET = "govlake-shared"
RESOURCE = "population.residents"
DAY = datetime.date(2026, 11, 19)

# The engine's own mount namespace: the landing folder ($1) hidden under an empty tmpfs.
HIDE_AND_SERVE = 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"'


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the engine stopped: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail("the engine did not listen within 60 s")


@pytest.fixture
def remote_engine(
    s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """A `sail spark server` in local-cluster mode that cannot see `tmp_path/landing`; its
    Spark Connect URL and that landing folder."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--mount", "true"]).returncode != 0:
        # The machines CI runs on let root make a mount namespace; elsewhere say why.
        if os.environ.get("CI"):
            pytest.fail("unshare --mount is needed to hide the landing zone from the engine")
        pytest.skip("unshare --mount is not permitted here (needs root)")
    landing = tmp_path / "landing"
    landing.mkdir()
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    port, log = free_port(), tmp_path / "engine.log"
    sail = Path(sys.executable).parent / "sail"
    env = {**os.environ, "SAIL_MODE": "local-cluster", "RUST_LOG": "warn"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [unshare, "--mount", "--propagation", "private", "sh", "-c", HIDE_AND_SERVE, "sh",
             str(landing), str(sail), "spark", "server", "--ip", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(port, process, log)
        yield f"sc://127.0.0.1:{port}", landing
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_pipeline_publishes_with_an_engine_that_sees_only_the_warehouse(
    s3: SeaweedS3, remote_engine: tuple[str, Path], catalog: Catalog, tmp_path: Path
) -> None:
    url, landing = remote_engine
    s3.create_bucket(BUCKET)
    settings = lake_settings(
        tmp_path, warehouse=f"s3://{BUCKET}/lakehouse", landing=str(landing), spark_remote=url
    )
    made = generate(catalog, settings.landing_location, rows=300, seed=5, as_of=DAY,
                    resources=[RESOURCE])  # fmt: skip
    spark = get_spark(settings, catalog, fresh=True)
    # The engine really cannot see the landing zone (Sail reads a missing path as empty).
    assert spark.read.text(made[0].location.uri).count() == 0
    end = datetime.datetime.combine(DAY, datetime.time(23), datetime.UTC)
    counts = ingest.run(spark, resource=catalog.get(RESOURCE), interval=Interval.ending(end),
                        settings=settings)  # fmt: skip
    assert len(counts.extracts) == len(made) and not counts.rejected
    assert counts.rows_read == sum(e.rows for e in made) and counts.published
    tables = TableSet(catalog.get(RESOURCE), settings.warehouse_location)
    silver = tables.silver.location
    read = query_delta(
        DeltaTable(silver.uri, storage_options=silver.storage_options()),
        "SELECT count(*) AS n, count(DISTINCT citizen_id) AS k FROM t",
    ).to_pylist()[0]
    assert read["n"] == read["k"] > 0
    # The staging files were in the bucket, and went once bronze held their records.
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="lakehouse/_staging/")
    assert [o["Key"] for o in listed.get("Contents", []) if not o["Key"].endswith("/")] == []
    assert not (landing / "_staging").exists()


def test_records_staged_where_the_engine_cannot_read_are_not_lost(
    s3: SeaweedS3,
    remote_engine: tuple[str, Path],
    catalog: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Staged in the landing zone (as before staging moved to the warehouse), the engine
    would read no record and the file would be archived as ingested: bronze refuses."""
    url, landing = remote_engine
    s3.create_bucket(BUCKET + "-2")
    settings = lake_settings(
        tmp_path, warehouse=f"s3://{BUCKET}-2/lakehouse", landing=str(landing), spark_remote=url
    )
    made = generate(catalog, settings.landing_location, rows=50, seed=6, as_of=DAY,
                    resources=[RESOURCE])  # fmt: skip
    monkeypatch.setattr(
        bronze, "staging_location",
        lambda _, file, sha: settings.landing_location.child("_staging", f"{sha[:12]}.parquet"),
    )  # fmt: skip
    spark = get_spark(settings, catalog, fresh=True)
    end = datetime.datetime.combine(DAY, datetime.time(23), datetime.UTC)
    with pytest.raises(bronze.StagingUnreadable, match=r"read 0 of the \d+ records"):
        bronze.run(spark, resource=catalog.get(RESOURCE), interval=Interval.ending(end),
                   settings=settings)  # fmt: skip
    # The delivered file is still waiting, and bronze holds nothing of it.
    assert made[0].location.exists()
    bronze_table = TableSet(catalog.get(RESOURCE), settings.warehouse_location).bronze.location
    assert not bronze_table.is_delta_table() or query_delta(
        DeltaTable(bronze_table.uri, storage_options=bronze_table.storage_options()),
        "SELECT count(*) AS n FROM t",
    ).to_pylist() == [{"n": 0}]
