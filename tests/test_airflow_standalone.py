"""`govlake airflow` (`make airflow`): Airflow standalone serves the UI and API on loopback
with every DAG of the project listed, prints how to log in, and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from govlake.catalog import Catalog
from govlake.settings import Settings
from govlake.standalone import dag_ids, token

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PLATFORM_DAGS = {"platform_timeliness", "platform_quality_reports", "platform_maintenance",
                 "platform_scorecard"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    home, port, out = tmp_path / "airflow", _free_port(), tmp_path / "out.txt"
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
    finally:
        cli.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = cli.wait(120)
    assert code == 0, out.read_text()[-3000:]
    assert "stopping Airflow" in out.read_text()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5)
    assert _processes_with_home(home) == []
