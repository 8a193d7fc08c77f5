"""A local Airflow for trying the DAGs: `airflow standalone` on loopback with the project's DAGs
folder and an embedded SQLite metadata database (`make airflow`, `govlake airflow`).

Standalone runs the API server, scheduler, DAG processor and triggerer as child processes.
It is started in its own process group and stopped with SIGINT to the standalone process
alone, which then stops its children (a few seconds). SIGINT to the whole group at once left
the scheduler waiting on its LocalExecutor workers; anything left after the timeout is killed.
The admin password is the one standalone generates on first start, kept in
`<home>/simple_auth_manager_passwords.json.generated`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from govlake.core.errors import GovlakeError
from govlake.core.settings import Settings, get_settings
from govlake_app.cli.console import console, fail, load_catalog

USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


class StandaloneError(GovlakeError, RuntimeError):
    """Airflow standalone could not be started."""


@dataclass(frozen=True)
class Standalone:
    process: subprocess.Popen[bytes]
    url: str
    home: Path
    log: Path

    @property
    def password(self) -> str:
        return str(json.loads((self.home / PASSWORDS_FILE).read_text())[USER])

    def stop(self, timeout: float = 60) -> int:
        """SIGINT to standalone; SIGKILL whatever is left of its group after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)  # the scheduler and workers finish shutting down
        if _group_alive(self.process.pid):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def environment(*, home: Path, port: int, dags: Path, settings: Settings) -> dict[str, str]:
    """The environment of the standalone processes: loopback only, the project's DAGs, no
    examples, a bounded worker pool, and the lakehouse settings the tasks read."""
    url = f"http://127.0.0.1:{port}"
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",  # the default starts 32 workers
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,  # tasks call the execution API here, not on 8080
        "AIRFLOW__API__WORKERS": "1",
        # Absolute, so tasks find the same lakehouse whatever their working directory.
        "GOVLAKE_WAREHOUSE": _absolute(settings.warehouse),
        "GOVLAKE_LANDING": _absolute(settings.landing),
        "GOVLAKE_REPORTS_DIR": str(settings.reports_dir.resolve()),
        "GOVLAKE_CATALOG_DIR": str(settings.catalog_dir.resolve()),
        "GOVLAKE_DATABASE_URL": settings.database_url,
    }


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).resolve())


def start(
    *, home: Path, port: int, dags: Path, settings: Settings, timeout: float = 300
) -> Standalone:
    """Start `airflow standalone` and return once its API answers and the admin password
    exists. Output goes to `<home>/standalone.log`."""
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or shutil.which(
        "airflow"
    )
    if airflow is None:
        raise StandaloneError("the airflow command is missing: install govlake[airflow]")
    if not dags.is_dir():
        raise StandaloneError(f"no DAGs folder at {dags}")
    home.mkdir(parents=True, exist_ok=True)
    log = home / "standalone.log"
    env = environment(home=home, port=port, dags=dags, settings=settings)
    env["PATH"] = f"{Path(airflow).parent}{os.pathsep}{env.get('PATH', '')}"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [airflow, "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    running = Standalone(process, env["AIRFLOW__API__BASE_URL"], home, log)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StandaloneError(
                    f"airflow standalone exited ({process.returncode}); see {log}"
                )
            if (home / PASSWORDS_FILE).exists() and _healthy(running.url):
                return running
            time.sleep(1)
        raise StandaloneError(
            f"airflow standalone did not answer within {timeout:.0f} s; see {log}"
        )
    except BaseException:  # including Ctrl-C while waiting: leave nothing running
        running.stop()
        raise


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def api(
    url: str, path: str, *, bearer: str | None = None, method: str = "GET", body: Any = None
) -> Any:
    """One call to the Airflow REST API; the decoded JSON reply."""
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def token(url: str, password: str, user: str = USER) -> str:
    """A JWT for the public API, from the simple auth manager."""
    reply = api(url, "/auth/token", method="POST", body={"username": user, "password": password})
    return str(reply["access_token"])


def dag_ids(url: str, bearer: str) -> set[str]:
    """Every DAG the API server lists."""
    return {d["dag_id"] for d in api(url, "/api/v2/dags?limit=1000", bearer=bearer)["dags"]}


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(*, port: int, home: Path, dags: Path) -> None:
    """`govlake airflow`: start standalone, say where its UI is, how to log in and which DAGs
    it lists, and keep it running until Ctrl-C or SIGTERM (exit 1 if it stops on its own)."""
    # Ctrl-C and SIGTERM both stop Airflow. Started from a script or in the background, this
    # process may inherit SIGINT as ignored, and an exec'd child keeps an ignored signal: set
    # a handler here, so that the standalone processes get SIGINT's default again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    settings = get_settings()
    expected = {f"ingest_{r.theme}_{r.name}" for r in load_catalog(settings)}
    console.print(f"starting Airflow standalone (log: {home / 'standalone.log'}) …")
    try:
        running = start(home=home.resolve(), port=port, dags=dags, settings=settings)
    except StandaloneError as exc:
        raise fail(str(exc), 1) from exc
    try:
        _announce(running, settings, expected)
        running.process.wait()
        console.print(f"[red]Airflow stopped on its own ({running.process.returncode}); "
                      f"see {running.log}[/red]")  # fmt: skip
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping Airflow …")
    finally:
        running.stop()


def _announce(running: Standalone, settings: Settings, expected: set[str]) -> None:
    """The UI's address and login, the DAGs it lists once the `expected` ones are (or 3
    minutes passed), and where the DAGs' tasks read and write."""
    console.print(f"Airflow UI: [bold]{running.url}[/bold]")
    console.print(f"login: [bold]{USER}[/bold] / password [bold]{running.password}[/bold] "
                  f"(kept in {running.home / PASSWORDS_FILE})")  # fmt: skip
    bearer = token(running.url, running.password)
    listed: set[str] = set()
    deadline = time.monotonic() + 180
    while not expected <= listed and time.monotonic() < deadline:
        time.sleep(2)
        listed = dag_ids(running.url, bearer)
    console.print(
        f"{len(listed)} DAGs listed ({len(expected & listed)} of {len(expected)} "
        f"ingestion DAGs): {', '.join(sorted(listed))}"
    )
    console.print("New DAGs start paused: unpause one or trigger it in the UI.")
    console.print(
        f"lakehouse: {settings.warehouse_location.uri}; landing zone: "
        f"{settings.landing_location.uri} (`govlake generate` lands extracts)"
    )
    console.print("Ctrl-C stops Airflow.")
