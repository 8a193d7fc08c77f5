"""Fixtures of the platform tests: a webhook receiver on loopback, and the platform the
subscription tests share (consumers, a grant, mail to a real SMTP server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import AT, GRANTED, PROVIDER, RESIDENTS, USER, Inbox, Receiver

from govlake.core.catalog import Catalog
from govlake.core.net import free_port
from govlake.core.settings import Settings
from govlake.platform.database import session
from govlake.sharing import access


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP webhook receiver on a free loopback port."""
    state = Receiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, wait = state.answer(self.path, headers, body)
            time.sleep(wait)
            try:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else f"no ({code})".encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender timed out and left

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def db(settings: Settings, catalog: Catalog, smtp: tuple[Inbox, int], tmp_path: Path) -> Settings:
    """The subscription tests' platform: consumers registered (GRANTED holds a grant of the
    residents' conditional table), mail to the real SMTP server, webhook pauses short; the
    receivers on loopback allowed, and the webhook secrets sealed with a key file of the
    test's own (also on PostgreSQL). A module may define its own `db`."""
    _, port = smtp
    with session(settings) as s:
        for code in (USER, PROVIDER, GRANTED, "civil_affairs"):
            access.register_consumer(
                s, catalog, code, email=f"data@{code}.gov.example", at=AT - timedelta(days=30)
            )
        access.grant(
            s,
            catalog,
            GRANTED,
            RESIDENTS,
            purpose="administrative_basis",
            by=PROVIDER,
            at=AT - timedelta(days=1),
        )
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "webhook_attempts": 3,
            "webhook_backoff_seconds": 0.05,
            "webhook_timeout_seconds": 0.5,
            "sharing_endpoint": "https://share.platform.gov.example/delta-sharing",
            "webhook_allowed_receivers": ["127.0.0.1"],
            "secrets_key_file": tmp_path / "secrets.key",
        }
    )
