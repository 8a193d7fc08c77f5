"""The sharing server under load with several workers (issue 17, item 1): `govlake share serve
--workers 2` as a real process, on SQLite and PostgreSQL. A revocation, a suspension, an
expired token and a new grant take effect within one second on every worker although each
worker caches tokens and decisions; every answer has its journal entry, committed before the
answer left (also when the server is killed under load), and the hash chain stays whole with
two processes appending; a file URL one worker issued downloads from the other.

Which worker answers is known from the server side of the connection (`psutil`): a
keep-alive connection stays with the worker that accepted it. The subprocess runs on the
real clock, so the token that expires is issued to expire a few seconds ahead."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from fastapi.testclient import TestClient
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import ValidationError
from sqlalchemy import Engine, event, func, select, text

from govlake.core.catalog import Catalog
from govlake.core.net import free_port
from govlake.core.settings import Settings
from govlake.platform import audit
from govlake.platform.database import AuditEntry, session
from govlake.sharing import access
from govlake.sharing.access import shared_tables
from govlake.sharing.server.app import create_app
from govlake_app.cli.serve import running

pytestmark = [pytest.mark.platform_state, pytest.mark.slow]

USER, PROVIDER, SUSPENDED = "market_regulation", "public_security", "taxation"
BASE = "/delta-sharing/shares/population/schemas/population/tables"
OPEN = f"{BASE}/residents_unconditional"
CONDITIONAL = f"{BASE}/residents_conditional"
#: Past the caches' one second, with a margin for a busy machine's scheduling.
SETTLE = 1.0 + 0.25


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Served:
    """A `govlake share serve --workers 2` process and a keep-alive connection to each of its
    two workers."""

    process: subprocess.Popen[bytes]
    port: int
    workers: dict[int, http.client.HTTPConnection]

    def call(self, pid: int, method: str, path: str, token: str | None = None,
             body: Any = None) -> tuple[int, bytes]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload, headers["Content-Type"] = json.dumps(body), "application/json"
        connection = self.workers[pid]
        connection.request(method, path, body=payload, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()

    def statuses(self, method: str, path: str, token: str, times: int = 5) -> set[int]:
        """The statuses `times` calls got from each worker."""
        return {self.call(pid, method, path, token)[0] for pid in self.workers
                for _ in range(times)}  # fmt: skip

    def cache_hits(self, pid: int, cache: str) -> float:
        """The hits worker `pid` counted in cache `cache` (its Prometheus metrics file)."""
        files = [f"{self.metrics_folder()}/counter_{pid}.db"]
        for metric in MultiProcessCollector.merge(files):
            for sample in metric.samples:
                if sample.labels == {"cache": cache, "result": "hit"}:
                    return sample.value
        return 0.0

    def metrics_folder(self) -> str:
        """The folder where the workers write their metrics (the server made it)."""
        return str(psutil.Process(next(iter(self.workers))).environ()["PROMETHEUS_MULTIPROC_DIR"])

    def stop(self) -> None:
        """Stop the server as Ctrl-C does (it removes its metrics folder), or kill it."""
        for connection in self.workers.values():
            connection.close()
        try:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(20)
        except ProcessLookupError:  # killed already
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(20)


def _holder(server: psutil.Process, port: int) -> int | None:
    """The worker process holding the server side of the connection from local `port`
    (None until a worker has accepted it)."""
    for worker in server.children():
        if any(c.raddr and c.raddr.port == port for c in worker.net_connections("tcp")):
            return worker.pid
    return None


def _worker_of(server: psutil.Process, connection: http.client.HTTPConnection) -> int | None:
    """The worker process holding the server side of `connection`."""
    assert connection.sock is not None
    return _holder(server, connection.sock.getsockname()[1])


@pytest.fixture
def published(settings: Settings, catalog: Catalog) -> None:
    """The residents' unconditional and conditional tables, two small files each."""
    for table in shared_tables(catalog, settings):
        if table.full_name.startswith("population.population.residents_"):
            for part in range(2):
                write_deltalake(table.location.uri, pa.table({"citizen_id": [f"{part}"] * 3}),
                                mode="append")  # fmt: skip


def _serve(settings: Settings, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("GOVLAKE_") and key != "PROMETHEUS_MULTIPROC_DIR"}  # fmt: skip
    env |= {"GOVLAKE_DATABASE_URL": settings.database_url,
            "GOVLAKE_WAREHOUSE": settings.warehouse, "GOVLAKE_LANDING": settings.landing,
            "GOVLAKE_CATALOG_DIR": str(settings.catalog_dir),
            # The load runs one department far above its rate limit: measured without it.
            "GOVLAKE_SHARING_RATE_PER_SECOND": "0"}  # fmt: skip
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from govlake_app.cli import app; app()", "share", "serve",
         "--port", str(port), "--workers", "2"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    served = Served(process, port, {})
    try:
        deadline = time.monotonic() + 60
        parent = psutil.Process(process.pid)
        while len(served.workers) < 2:  # new connections until one reaches each worker
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("GET", "/delta-sharing/shares")
                connection.getresponse().read()
            except OSError:
                time.sleep(0.2)
                continue
            pid = _worker_of(parent, connection)
            if pid is None or pid in served.workers:
                connection.close()
            else:
                served.workers[pid] = connection
        yield served
    finally:
        served.stop()
        log.close()


@pytest.fixture
def served(settings: Settings, published: None, tmp_path: Path) -> Iterator[Served]:
    yield from _serve(settings, tmp_path)


def _tokens(settings: Settings, catalog: Catalog, *, expiring_in: float) -> dict[str, str]:
    at = _now()
    with session(settings) as s:
        for code in (USER, PROVIDER, SUSPENDED):
            access.register_consumer(s, catalog, code, email=None, at=at - timedelta(days=1))
        return {
            "user": access.issue_token(s, USER, at=at - timedelta(days=1), days=30),
            "revoked": access.issue_token(s, PROVIDER, at=at - timedelta(days=1), days=30),
            "suspended": access.issue_token(s, SUSPENDED, at=at - timedelta(days=1), days=30),
            # a day's token issued a day ago less a few seconds: it expires a few seconds on
            "expiring": access.issue_token(
                s, USER, at=at - timedelta(days=1) + timedelta(seconds=expiring_in), days=1),
        }  # fmt: skip


def test_two_workers_under_changes_and_load(
    served: Served, settings: Settings, catalog: Catalog
) -> None:
    """One server per backend (starting one costs seconds): access changes, a file URL
    across workers, then load, then a kill under load."""
    expiring_in = 4.0
    tokens = _tokens(settings, catalog, expiring_in=expiring_in)
    _changes_take_effect_within_a_second_on_every_worker(served, settings, catalog, tokens,
                                                         expiring_in)  # fmt: skip
    _a_file_url_downloads_from_the_other_worker(served, tokens["user"])
    _each_worker_answers_a_malformed_request_as_json_and_journals_it(served, settings)
    _every_answer_under_load_has_its_entry_even_when_killed(served, settings, tokens["user"])


def _changes_take_effect_within_a_second_on_every_worker(
    served: Served, settings: Settings, catalog: Catalog, tokens: dict[str, str],
    expiring_in: float,
) -> None:  # fmt: skip
    expires = time.monotonic() + expiring_in
    # Before: each worker answers every token, from its caches after the first call.
    for token in ("user", "revoked", "suspended", "expiring"):
        assert served.statuses("GET", f"{OPEN}/metadata", tokens[token]) == {200}, token
    assert served.statuses("GET", f"{CONDITIONAL}/metadata", tokens["user"]) == {403}
    for pid in served.workers:
        assert served.cache_hits(pid, "token") >= 4 * 4
        assert served.cache_hits(pid, "decision") >= 4 * 4

    # The changes, made by another process (this one) while the workers hold them cached.
    at = _now()
    with session(settings) as s:
        access.rotate_token(s, PROVIDER, at=at)  # revokes the provider's token now
        access.suspend(s, catalog, SUSPENDED, reason="missed rectification", by="bureau",
                       at=at)  # fmt: skip
        access.grant(s, catalog, USER, "population.residents", purpose="verification",
                     by=PROVIDER, at=at)  # fmt: skip
    time.sleep(SETTLE)
    assert served.statuses("GET", f"{OPEN}/metadata", tokens["revoked"]) == {401}
    assert served.statuses("GET", f"{OPEN}/metadata", tokens["suspended"]) == {403}
    assert served.statuses("GET", f"{CONDITIONAL}/metadata", tokens["user"]) == {200}
    # The token that expires: answered until its expiry, refused from then on.
    assert served.statuses("GET", f"{OPEN}/metadata", tokens["expiring"]) == {200}
    time.sleep(max(0.0, expires - time.monotonic()) + 0.25)
    assert served.statuses("GET", f"{OPEN}/metadata", tokens["expiring"]) == {401}
    assert served.statuses("GET", f"{OPEN}/metadata", tokens["user"]) == {200}


def _a_file_url_downloads_from_the_other_worker(served: Served, token: str) -> None:
    """One signing key: a file URL one worker issued downloads from the other."""
    first, second = served.workers
    status, body = served.call(first, "POST", f"{OPEN}/query", token, {})
    assert status == 200
    urls = [json.loads(line)["file"]["url"] for line in body.decode().splitlines()
            if "file" in json.loads(line)]  # fmt: skip
    assert len(urls) == 2
    for url in urls:
        parts = urlsplit(url)
        status, data = served.call(second, "GET", f"{parts.path}?{parts.query}")
        assert status == 200 and data[:4] == b"PAR1"


def _each_worker_answers_a_malformed_request_as_json_and_journals_it(
    served: Served, settings: Settings
) -> None:
    """uvicorn's own refusals (the server's h11 protocol) are answered as JSON and journaled
    by every worker, not only by a single-process server."""
    before, parent, answered = _last_seq(settings), psutil.Process(served.process.pid), set()
    deadline = time.monotonic() + 30
    while answered != set(served.workers):
        assert time.monotonic() < deadline, answered
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw:
            pid = None
            for _ in range(50):  # until a worker has accepted the connection
                pid = _holder(parent, raw.getsockname()[1])
                if pid is not None:
                    break
                time.sleep(0.02)
            raw.sendall(b"NOT HTTP\r\n\r\n")
            head = raw.recv(4096)
        assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, head
        answered.add(pid)
    with session(settings) as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.seq > before)).all()
        assert entries and {(e.action, e.outcome) for e in entries} == {("share.unknown", "error")}


def _hammer(served: Served, token: str, clients: int, stop: threading.Event,
            received: list[int]) -> list[threading.Thread]:  # fmt: skip
    """`clients` threads, each on its own keep-alive connection, calling the metadata
    endpoint until `stop`; each answer's status is appended to `received`."""

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            while not stop.is_set():
                connection.request("GET", f"{OPEN}/metadata", headers=headers)
                answer = connection.getresponse()
                answer.read()
                received.append(answer.status)
        except (OSError, http.client.HTTPException):  # the server was killed
            pass
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def _entries_since(settings: Settings, seq: int, outcome: str | None = None) -> int:
    with session(settings) as s:
        query = select(func.count()).select_from(AuditEntry).where(
            AuditEntry.seq > seq, AuditEntry.action.like("share.%"))  # fmt: skip
        if outcome is not None:
            query = query.where(AuditEntry.outcome == outcome)
        return int(s.scalar(query) or 0)


def _last_seq(settings: Settings) -> int:
    with session(settings) as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))) or 0)


def _every_answer_under_load_has_its_entry_even_when_killed(
    served: Served, settings: Settings, token: str
) -> None:
    # Eight clients for two seconds, then stopped cleanly: one entry per answer, a whole chain.
    before = _last_seq(settings)
    stop, received = threading.Event(), []
    threads = _hammer(served, token, 8, stop, received)
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert received and set(received) == {200}
    assert _entries_since(settings, before) == len(received)
    # Killed under load: every 200 a client received has its entry (committed before it was
    # sent); the chain is whole.
    before = _last_seq(settings)
    stop, received = threading.Event(), []
    threads = _hammer(served, token, 8, stop, received)
    time.sleep(1)
    folder = served.metrics_folder()
    os.killpg(served.process.pid, signal.SIGKILL)
    served.process.wait(30)
    shutil.rmtree(folder)  # a killed server leaves it behind
    stop.set()
    for thread in threads:
        thread.join(30)
    answered = received.count(200)
    assert answered > 0
    assert _entries_since(settings, before, "ok") >= answered
    with session(settings) as s:
        verified = audit.verify(s, settings)
    assert verified.ok, verified.problems


def test_an_answer_whose_entry_cannot_be_committed_is_not_a_success(
    settings: Settings, catalog: Catalog, published: None
) -> None:
    """The journal is down (its table gone): the call that would have been answered 200 is
    answered as an internal error, and nothing of the table is served."""
    token = _tokens(settings, catalog, expiring_in=3600)["user"]
    app = create_app(settings, catalog)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get(f"{OPEN}/metadata", headers=headers).status_code == 200
        with session(settings) as s:
            s.execute(text("ALTER TABLE audit_journal RENAME TO audit_journal_away"))
        try:
            answer = client.get(f"{OPEN}/metadata", headers=headers)
        finally:
            with session(settings) as s:
                s.execute(text("ALTER TABLE audit_journal_away RENAME TO audit_journal"))
    assert answer.status_code == 500, answer.text
    assert "metaData" not in answer.text


@pytest.mark.parametrize("seconds", [1.0, 0.0])
def test_a_call_answered_from_the_caches_opens_only_the_journal_transaction(
    settings: Settings, catalog: Catalog, published: None, seconds: float
) -> None:
    """Once a worker has looked a token and a decision up, the same call again opens one
    transaction only: the journal writer's, committing the call's entry. With the caches
    off (`sharing_cache_seconds = 0`) every call looks them up again."""
    settings = settings.model_copy(update={"sharing_cache_seconds": seconds})
    token = _tokens(settings, catalog, expiring_in=3600)["user"]
    opened: list[str] = []

    def note(connection: Any) -> None:
        opened.append(threading.current_thread().name)

    with TestClient(create_app(settings, catalog)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        event.listen(Engine, "begin", note)  # every engine: the writer has its own
        try:
            assert client.get(f"{OPEN}/metadata", headers=headers).status_code == 200
            first = sorted(opened)
            opened.clear()
            assert client.get(f"{OPEN}/metadata", headers=headers).status_code == 200
        finally:
            event.remove(Engine, "begin", note)
    assert len(first) > 1  # token, decision and journal
    assert sorted(opened) == (["journal-writer"] if seconds else first)


def test_the_caches_may_keep_nothing_longer_than_a_second(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="sharing_cache_seconds"):
        Settings(warehouse=str(tmp_path), sharing_cache_seconds=1.5)


def test_more_concurrent_calls_than_pooled_connections_are_all_answered(
    settings: Settings, catalog: Catalog, published: None
) -> None:
    """Calls that hold a pooled connection while their entries wait for the journal writer
    (the caches off: each call reads its access in its own session) outnumber the pool; the
    writer, on a connection of its own, still commits them, and each is answered."""
    settings = settings.model_copy(update={"sharing_cache_seconds": 0.0})
    token = _tokens(settings, catalog, expiring_in=3600)["user"]
    before = _last_seq(settings)
    statuses: list[int] = []
    with running(settings, app=create_app(settings, catalog)) as endpoint:
        url = endpoint.removesuffix("/delta-sharing") + f"{OPEN}/metadata"

        def client() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
                statuses.extend(http.get(url).status_code for _ in range(4))

        threads = [threading.Thread(target=client) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert statuses == [200] * 32 * 4
    assert _entries_since(settings, before) == 32 * 4
