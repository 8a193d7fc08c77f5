"""`govlake airflow` (`make airflow`): Airflow standalone serves the UI and API on loopback
with every DAG of the project listed, prints how to log in, runs an unpaused DAG through its
scheduler and workers, and Ctrl-C stops all of it."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from govlake_tools.generate import generate
from govlake_tools.standalone import api, dag_ids, token

from govlake.core.catalog import Catalog
from govlake.core.net import free_port
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PLATFORM_DAGS = {"platform_timeliness", "platform_quality_reports", "platform_maintenance",
                 "platform_scorecard"}  # fmt: skip


def _processes_with_home(home: Path) -> list[int]:
    """Processes whose environment names this AIRFLOW_HOME."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_make_airflow_serves_every_dag_and_stops_cleanly(
    catalog: Catalog, settings: Settings, tmp_path: Path
) -> None:
    home, port, out = tmp_path / "airflow", free_port(), tmp_path / "out.txt"
    env = {**os.environ, "GOVLAKE_WAREHOUSE": settings.warehouse,
           "GOVLAKE_LANDING": settings.landing, "GOVLAKE_DATABASE_URL": settings.database_url,
           "GOVLAKE_REPORTS_DIR": str(tmp_path / "reports")}  # fmt: skip
    govlake = Path(sys.executable).parent / "govlake"
    with out.open("wb") as sink:
        cli = subprocess.Popen(
            [govlake, "airflow", "--port", str(port), "--home", str(home),
             "--dags", str(REPO / "dags")],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 420
        while "Ctrl-C stops Airflow." not in out.read_text() and time.monotonic() < deadline:
            assert cli.poll() is None, out.read_text()
            time.sleep(1)
        printed = out.read_text()
        assert "Ctrl-C stops Airflow." in printed, printed
        url = f"http://127.0.0.1:{port}"
        assert f"Airflow UI: {url}" in printed
        login = re.search(r"login: admin / password (\S+)", printed)
        assert login, printed

        # The printed login works, and the API lists every DAG of the project.
        listed = dag_ids(url, token(url, login.group(1)))
        ingestion = {f"ingest_{r.theme}_{r.name}" for r in catalog}
        assert ingestion | PLATFORM_DAGS <= listed
        assert not any(d.startswith("example_") for d in listed)
        with pytest.raises(urllib.error.HTTPError) as refused:
            token(url, "not-the-password")
        assert refused.value.code == 401
        # The tasks will read the lakehouse the user configured.
        assert settings.warehouse in printed

        # A user lands yesterday's extracts and unpauses a DAG: the scheduler runs the day
        # that ended through its workers, and the version is published.
        yesterday = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
        generate(catalog, settings.landing_location, rows=300, as_of=yesterday,
                 resources=["population.residents"])  # fmt: skip
        bearer = token(url, login.group(1))
        dag = "/api/v2/dags/ingest_population_residents"
        api(url, dag, bearer=bearer, method="PATCH", body={"is_paused": False})
        runs: list[dict[str, str]] = []
        while time.monotonic() < deadline + 300 and not any(
            r["state"] in ("success", "failed") for r in runs
        ):
            time.sleep(2)
            runs = api(url, f"{dag}/dagRuns", bearer=bearer)["dag_runs"]
        (run,) = runs
        assert run["run_type"] == "scheduled"
        assert run["data_interval_start"].startswith(yesterday.isoformat())
        states = api(url, f"{dag}/dagRuns/{run['dag_run_id']}/taskInstances", bearer=bearer)
        assert run["state"] == "success", states
        stages = ["bronze", "validate", "silver", "publish", "announce"]
        tasks = ["wait_for_extract", *stages, "report"]
        assert {t["task_id"]: t["state"] for t in states["task_instances"]} == dict.fromkeys(
            tasks, "success"
        )
    finally:
        cli.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = cli.wait(120)
    assert code == 0, out.read_text()[-3000:]
    assert "stopping Airflow" in out.read_text()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5)
    assert _processes_with_home(home) == []
    spark = get_spark(settings, catalog, fresh=True)
    published = spark.sql(
        "SELECT sharing_class, rows FROM ops.publications WHERE resource = 'population.residents'"
    ).collect()
    assert {p.sharing_class for p in published} == set(
        catalog.get("population.residents").sharing_classes
    )
    assert all(p.rows > 0 for p in published)
