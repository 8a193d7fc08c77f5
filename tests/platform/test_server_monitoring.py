"""The sharing server's monitoring (监控管理): Prometheus metrics on `/metrics` that move with
the calls answered, readable from the configured addresses only; a liveness probe; a
readiness probe that fails, naming the check, when the platform database or the warehouse
is gone. Answered probes and scrapes leave no journal entry, refusals and failures do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from fastapi import FastAPI
from fastapi.testclient import TestClient
from govlake_tools.s3server import SeaweedS3
from prometheus_client.parser import text_string_to_metric_families
from support import consumers_with_tokens, entries_after, last_seq

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.sharing.access import shared_tables
from govlake.sharing.server.app import create_app

AT = datetime(2026, 9, 30, 2, 0)
USER = "market_regulation"
TABLE = "/delta-sharing/shares/population/schemas/population/tables/residents_unconditional"
LOOPBACK = ("127.0.0.1", 40000)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics page, by name and labels (the parser refuses a bad page)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples}  # fmt: skip


def _scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


def _requests(route: str, status: str, consumer: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"route": route, "status": status, "consumer": consumer}
    return ("govlake_sharing_requests_total", tuple(sorted(labels.items())))


def _app(settings: Settings, catalog: Catalog, **fields: Any) -> FastAPI:
    return create_app(settings.model_copy(update=fields), catalog, clock=lambda: AT)


def test_metrics_count_calls_latency_and_downloads(settings: Settings, catalog: Catalog) -> None:
    tokens = consumers_with_tokens(settings, catalog, [USER], at=AT - timedelta(days=1))
    table = next(t for t in shared_tables(catalog, settings) if t.full_name.endswith(
        "residents_unconditional"))  # fmt: skip
    write_deltalake(table.location.uri, pa.table({"citizen_id": ["1", "2"]}))
    client = TestClient(_app(settings, catalog), client=LOOPBACK)
    user = {"Authorization": f"Bearer {tokens[USER]}"}
    before = _scrape(client)
    for _ in range(2):
        assert client.get("/delta-sharing/shares", headers=user).status_code == 200
    assert client.get("/delta-sharing/shares").status_code == 401
    answer = client.post(f"{TABLE}/query", headers=user, json={})
    url = next(json.loads(line)["file"]["url"] for line in answer.text.splitlines()
               if "file" in json.loads(line))  # fmt: skip
    assert client.get(url).status_code == 200
    assert client.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403
    seq = last_seq(settings)
    after = _scrape(client)
    assert entries_after(settings, seq) == []  # an answered scrape is not journaled

    def moved(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert moved(_requests("list_shares", "200", USER)) == 2
    assert moved(_requests("list_shares", "401", "anonymous")) == 1
    assert moved(_requests("query_table", "200", USER)) == 1
    latency = ("govlake_sharing_request_seconds_count", (("route", "list_shares"),))
    assert moved(latency) == 3
    downloads = "govlake_sharing_file_downloads_total"
    assert moved((downloads, (("outcome", "ok"),))) == 1
    assert moved((downloads, (("outcome", "refused"),))) == 1


def test_metrics_are_refused_outside_the_allowed_addresses(
    settings: Settings, catalog: Catalog
) -> None:
    app = _app(settings, catalog, sharing_metrics_allow=["10.0.0.0/8", "::1"])
    seq = last_seq(settings)
    refused = TestClient(app, client=LOOPBACK).get("/metrics")
    assert refused.status_code == 403, refused.text
    assert refused.json()["errorCode"] == "PERMISSION_DENIED"
    assert "govlake_sharing" not in refused.text
    [entry] = entries_after(settings, seq)
    assert (entry.outcome, entry.actor, json.loads(entry.detail)["status"]) == (
        "refused", "anonymous", 403)  # fmt: skip
    for allowed in ("10.1.2.3", "::ffff:10.1.2.3", "::1"):
        assert TestClient(app, client=(allowed, 40000)).get("/metrics").status_code == 200


def test_the_allow_list_must_name_addresses() -> None:
    with pytest.raises(ValueError, match="metrics"):
        Settings(sharing_metrics_allow="127.0.0.1, localhost")


@pytest.mark.platform_state
def test_readiness_fails_without_the_database_or_the_warehouse(
    settings: Settings, catalog: Catalog
) -> None:
    Path(settings.warehouse).mkdir(parents=True, exist_ok=True)
    app = _app(settings, catalog)
    client = TestClient(app)
    seq = last_seq(settings)
    assert client.get("/livez").json() == {"status": "live"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "warehouse": "ok"}
    assert entries_after(settings, seq) == []  # answered probes are not journaled
    # The warehouse is gone: not ready, and the failure is journaled.
    app.state.settings = settings.model_copy(update={"warehouse": settings.warehouse + "-gone"})
    missing = client.get("/readyz")
    assert missing.status_code == 503
    assert missing.json()["checks"] == {"database": "ok", "warehouse": "failed"}
    [entry] = entries_after(settings, seq)
    assert (entry.outcome, json.loads(entry.detail)["status"]) == ("error", 503)
    # The database is unreachable (a closed port; a folder that does not exist).
    unreachable = ("postgresql+psycopg://govlake:x@127.0.0.1:9/none"
                   if settings.database_url.startswith("postgresql")
                   else f"sqlite:///{settings.warehouse}-gone/none/govlake.db")  # fmt: skip
    app.state.settings = settings.model_copy(update={"database_url": unreachable})
    down = client.get("/readyz")
    assert down.status_code == 503
    assert down.json()["checks"] == {"database": "failed", "warehouse": "ok"}
    assert client.get("/livez").status_code == 200


_WORKER = textwrap.dedent("""
    import sys
    from fastapi.testclient import TestClient
    from govlake.core.settings import Settings
    from govlake.sharing.server.app import create_app

    app = create_app(Settings(warehouse=sys.argv[1], database_url=sys.argv[2]))
    client = TestClient(app, client=("127.0.0.1", 40000))
    for _ in range(int(sys.argv[3])):
        client.get("/delta-sharing/shares")
    if sys.argv[4] == "scrape":
        print(client.get("/metrics").text)
""")


def test_metrics_add_up_the_worker_processes(settings: Settings, tmp_path: Path) -> None:
    """With `PROMETHEUS_MULTIPROC_DIR` set (several workers), `/metrics` answers what every
    worker process counted, not only its own."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}

    def worker(calls: int, then: str) -> str:
        done = subprocess.run([sys.executable, "-c", _WORKER, settings.warehouse,
                               settings.database_url, str(calls), then],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker(3, "exit")
    samples = _samples(worker(2, "scrape"))
    assert samples[_requests("list_shares", "401", "anonymous")] == 5


def test_readiness_reads_a_warehouse_on_s3(
    s3: SeaweedS3, settings: Settings, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 the warehouse root is ready when it can be listed (an empty prefix is a new
    warehouse: object stores have no folders); a bucket that is not there is not."""
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    s3.create_bucket("ready")
    app = _app(settings, catalog, warehouse="s3://ready/lakehouse")
    client = TestClient(app)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    app.state.settings = app.state.settings.model_copy(update={"warehouse": "s3://gone/lake"})
    missing = client.get("/readyz")
    assert missing.status_code == 503
    assert missing.json()["checks"] == {"database": "ok", "warehouse": "failed"}
