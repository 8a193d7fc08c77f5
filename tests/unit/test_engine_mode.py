"""The embedded engine runs in the Sail mode the settings name: in `local-cluster` mode a
driver and workers exchange tasks over RPC (Sail logs them, and each worker listens on a
port of its own), in `local` mode none of that exists. The mode comes from
`GOVLAKE_SAIL_MODE`, else Sail's own `SAIL_MODE`.

`make test` runs the pipeline tests a second time with `GOVLAKE_SAIL_MODE=local-cluster`;
`test_this_run_s_engine_runs_in_the_configured_mode` proves which mode each pass ran on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from support import lake_settings

from govlake.core.settings import Settings
from govlake.lake.engine import get_spark, remote_url

REPO = Path(__file__).resolve().parents[2]

# What Sail logs (RUST_LOG=info) when a session of a local-cluster server starts its driver
# and workers, each worker an RPC server of its own.
CLUSTER_LINES = ("driver server is ready on port", "starting worker 1", "worker 1 server is ready")

# A child process that starts the embedded engine from its settings (GOVLAKE_* and SAIL_MODE
# variables as the test gives them) with Sail's log on, and runs a query with a shuffle.
CHILD = """
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark

settings = Settings(spark_remote=None, engine_log="info")
spark = get_spark(settings)
rows = spark.range(1000, numPartitions=4).repartition(4).count()
print("mode", settings.sail_mode, "rows", rows, flush=True)
"""


def _listening_ports() -> set[int]:
    """TCP ports this process listens on (Linux: its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _query(spark: SparkSession) -> list[tuple[int, int, int]]:
    """A shuffle, a join and a window: work that crosses partitions (and workers)."""
    numbers = spark.range(2000, numPartitions=4).withColumn("g", F.col("id") % 7)
    sizes = numbers.groupBy("g").agg(F.count("*").alias("n"))
    ranked = numbers.join(sizes, "g").withColumn(
        "r", F.row_number().over(Window.partitionBy("g").orderBy(F.col("id").desc()))
    )
    rows = ranked.where("r = 1").select("g", "n", "id").orderBy("g").collect()
    return [(row.g, row.n, row.id) for row in rows]


@pytest.fixture
def no_mode_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("GOVLAKE_SAIL_MODE", "SAIL_MODE", "SPARK_REMOTE", "GOVLAKE_SPARK_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_mode_comes_from_govlake_sail_mode_else_sail_s_own_variable(
    no_mode_variables: pytest.MonkeyPatch,
) -> None:
    env = no_mode_variables
    assert Settings().sail_mode == "local"
    env.setenv("SAIL_MODE", "local-cluster")
    assert Settings().sail_mode == "local-cluster"
    env.setenv("GOVLAKE_SAIL_MODE", "local")
    assert Settings().sail_mode == "local"
    env.setenv("GOVLAKE_SAIL_MODE", "cluster")
    with pytest.raises(ValidationError, match="'local', 'local-cluster' or 'kubernetes-cluster'"):
        Settings()


def test_kubernetes_cluster_mode_needs_a_deployed_server(
    no_mode_variables: pytest.MonkeyPatch,
) -> None:
    no_mode_variables.setenv("GOVLAKE_SAIL_MODE", "kubernetes-cluster")
    with pytest.raises(ValidationError, match=r"infra/kubernetes/.*SPARK_REMOTE"):
        Settings()
    no_mode_variables.setenv("SPARK_REMOTE", "sc://sail-spark-connect.govlake:15002")
    assert Settings().spark_remote == "sc://sail-spark-connect.govlake:15002"


@pytest.mark.parametrize(
    ("variables", "cluster"),
    [
        ({}, False),
        ({"GOVLAKE_SAIL_MODE": "local-cluster"}, True),
        ({"SAIL_MODE": "local-cluster"}, True),
        # The setting wins over Sail's variable, in both directions.
        ({"GOVLAKE_SAIL_MODE": "local-cluster", "SAIL_MODE": "local"}, True),
        ({"GOVLAKE_SAIL_MODE": "local", "SAIL_MODE": "local-cluster"}, False),
    ],
)
def test_sail_logs_its_driver_and_workers_only_in_local_cluster_mode(
    variables: dict[str, str], cluster: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GOVLAKE_SAIL_MODE", "SAIL_MODE")}
    env.pop("SPARK_REMOTE", None)
    pythonpath = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**env, **variables, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    expected = "local-cluster" if cluster else "local"
    assert f"mode {expected} rows 1000" in done.stdout
    for line in CLUSTER_LINES:
        assert (line in done.stderr) is cluster, (line, done.stderr[-3000:])


def test_this_run_s_engine_runs_in_the_configured_mode(tmp_path: Path) -> None:
    """A fresh session of the engine this test run's settings start: in local-cluster mode
    its driver starts workers, each listening on a port of this process; in local mode a
    session opens no port."""
    settings = lake_settings(tmp_path)
    remote_url(settings)  # the engine is up: its Spark Connect port is not the session's
    before = _listening_ports()
    spark = get_spark(settings, fresh=True)
    assert _query(spark)[0] == (0, 286, 1995)
    opened = _listening_ports() - before
    if settings.sail_mode == "local-cluster":
        assert len(opened) >= 1, "no worker of the session listens"
    else:
        assert settings.sail_mode == "local"
        assert opened == set(), f"a local-mode session listens on {opened}"


def test_both_modes_run_side_by_side_in_one_process_with_the_same_answers(
    tmp_path: Path,
) -> None:
    local = get_spark(lake_settings(tmp_path, sail_mode="local"), fresh=True)
    cluster = get_spark(lake_settings(tmp_path, sail_mode="local-cluster"), fresh=True)
    assert _query(local) == _query(cluster)
    assert len(_query(cluster)) == 7
