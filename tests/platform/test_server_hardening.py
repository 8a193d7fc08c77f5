"""The sharing server against bad input from outside (issue 14): aware timestamps, ids beyond
the database's range, oversized and malformed requests, forged page tokens and doubled
credentials. Every call leaves exactly one journal entry, attributed to the consumer whenever
its token names one, and no bad input is answered 500."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support import FORM

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.platform import audit
from govlake.platform.database import AuditEntry, session
from govlake.sharing import access
from govlake.sharing import subscriptions as subscriptions_domain
from govlake.sharing.access import shared_tables
from govlake.sharing.server import requests_api as requests_api_module
from govlake.sharing.server.app import create_app
from govlake_app.cli.serve import running

#: Every test that uses `settings` runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.platform_state

AT = datetime(2026, 9, 30, 2, 0)
USER, PROVIDER = "market_regulation", "public_security"
UNCONDITIONAL = "population.population.residents_unconditional"


def _last_seq(settings: Settings) -> int:
    with session(settings) as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))) or 0)


def _entries_after(settings: Settings, seq: int) -> list[AuditEntry]:
    with session(settings) as s:
        found = s.scalars(select(AuditEntry).where(AuditEntry.seq > seq)
                          .order_by(AuditEntry.seq)).all()  # fmt: skip
        s.expunge_all()
        return list(found)


@dataclass
class Server:
    client: TestClient
    settings: Settings
    catalog: Catalog
    tokens: dict[str, str]
    subscription: int

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, follow_redirects=False,
                                   **kwargs)  # fmt: skip

    def last_seq(self) -> int:
        return _last_seq(self.settings)

    def entries_after(self, seq: int) -> list[AuditEntry]:
        return _entries_after(self.settings, seq)

    def one_entry(self, method: str, path: str, token: str | None = None,
                  **kwargs: Any) -> tuple[Any, AuditEntry]:  # fmt: skip
        """Make one call and return its answer and the one journal entry it left."""
        before = self.last_seq()
        response = self.call(method, path, token, **kwargs)
        entries = self.entries_after(before)
        assert len(entries) == 1, (path, response.status_code, [e.action for e in entries])
        return response, entries[0]


@pytest.fixture
def server(settings: Settings, catalog: Catalog) -> Iterator[Server]:
    tokens = {}
    with session(settings) as s:
        for code in (USER, PROVIDER):
            access.register_consumer(s, catalog, code, email=None, at=AT - timedelta(days=10))
            tokens[code] = access.issue_token(s, code, at=AT - timedelta(days=10), days=30)
        # One token that expired yesterday, one replaced (revoked) an hour ago.
        tokens["expired"] = access.issue_token(s, USER, at=AT - timedelta(days=2), days=1)
        tokens["revoked"] = tokens[USER]
        tokens[USER] = access.rotate_token(s, USER, at=AT - timedelta(hours=1), days=30)
        made, _ = subscriptions_domain.subscribe(
            s, catalog, settings, consumer=USER, resource="population.residents",
            sharing_class="unconditional", at=AT - timedelta(days=1),
        )  # fmt: skip
        subscription = made.id
    app = create_app(settings, catalog, clock=lambda: AT)
    with TestClient(app) as client:
        yield Server(client, settings, catalog, tokens, subscription)


def _json_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"errorCode", "message"}, body
    if code is not None:
        assert body["errorCode"] == code, body
    return body


# -- item 5 ---------------------------------------------------------------------------------
def test_an_aware_expiry_is_taken_in_utc(server: Server) -> None:
    """An approval's `expires_at` with `Z` or an offset is stored as naive UTC, not a 500."""
    for given, stored in [("2030-01-01T00:00:00Z", "2030-01-01T00:00:00"),
                          ("2030-01-01T08:00:00+08:00", "2030-01-01T00:00:00")]:  # fmt: skip
        filed = server.call("POST", "/govlake/v1/access-requests", server.tokens[USER], json=FORM)
        assert filed.status_code == 201, filed.text
        request_id = filed.json()["id"]
        approved = server.call("POST", f"/govlake/v1/access-requests/{request_id}/approve",
                               server.tokens[PROVIDER], json={"expires_at": given})  # fmt: skip
        assert approved.status_code == 200, approved.text
        assert approved.json()["expires_at"] == stored


def test_timestamps_beyond_the_calendar_in_utc_are_bad_requests(server: Server) -> None:
    """A time on the calendar's last day with a negative offset is past year 9999 in UTC:
    a 400, not an OverflowError."""
    edge = "9999-12-31T23:59:59-14:00"
    filed = server.call("POST", "/govlake/v1/access-requests", server.tokens[USER], json=FORM)
    approved = server.call("POST", f"/govlake/v1/access-requests/{filed.json()['id']}/approve",
                           server.tokens[PROVIDER], json={"expires_at": edge})  # fmt: skip
    _json_error(approved, 400, "INVALID_PARAMETER_VALUE")
    # The Delta Sharing routes, on a published table (a tiny one will do).
    table = next(t for t in shared_tables(server.catalog, server.settings)
                 if t.full_name == UNCONDITIONAL)  # fmt: skip
    write_deltalake(table.location.uri, pa.table({"citizen_id": ["1"]}))
    base = "/delta-sharing/shares/population/schemas/population/tables/residents_unconditional"
    for method, path, kwargs in [
        ("GET", f"{base}/version", {"params": {"startingTimestamp": edge}}),
        ("GET", f"{base}/changes", {"params": {"startingTimestamp": edge}}),
        ("POST", f"{base}/query", {"json": {"timestamp": edge}}),
    ]:
        response, entry = server.one_entry(method, path, server.tokens[USER], **kwargs)
        _json_error(response, 400, "INVALID_PARAMETER_VALUE")
        assert (entry.consumer, entry.outcome) == (USER, "error")


# -- item 6 ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/govlake/v1/access-requests/1180591620717411303424"),
        ("GET", "/govlake/v1/access-requests/1099511627776"),
        ("GET", "/govlake/v1/verification-requests/9223372036854775808"),
        ("POST", "/govlake/v1/access-requests/18446744073709551616/refuse"),
        ("GET", "/govlake/v1/subscriptions/18446744073709551616"),
        ("DELETE", "/govlake/v1/subscriptions/18446744073709551616"),
        ("GET", "/govlake/v1/subscriptions/-18446744073709551616/deliveries"),
    ],
)
def test_ids_beyond_the_database_range_are_not_found(server: Server, method: str,
                                                     path: str) -> None:  # fmt: skip
    body = {"reason": "x"} if path.endswith("refuse") else None
    response, entry = server.one_entry(method, path, server.tokens[USER], json=body)
    _json_error(response, 404, "RESOURCE_DOES_NOT_EXIST")
    assert (entry.outcome, entry.consumer, entry.actor) == ("not_found", USER, USER)


# -- item 8 ---------------------------------------------------------------------------------
def test_an_uncaught_error_is_a_journaled_json_500(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /srv/govlake.db")

    monkeypatch.setattr(requests_api_module.domain, "access_requests", broken)
    response, entry = server.one_entry("GET", "/govlake/v1/access-requests", server.tokens[USER])
    body = _json_error(response, 500, "INTERNAL_ERROR")
    assert "secret" not in body["message"] and "Traceback" not in response.text
    assert (entry.outcome, entry.consumer, entry.action) == ("error", USER, "request.view")
    assert json.loads(entry.detail)["status"] == 500


def test_redirects_and_unknown_paths_are_journaled(server: Server) -> None:
    token = server.tokens[USER]
    redirected, entry = server.one_entry("GET", "/delta-sharing/shares/", token)
    assert redirected.status_code == 307
    assert (entry.consumer, entry.outcome, json.loads(entry.detail)["status"]) == (USER, "ok", 307)
    unknown, entry = server.one_entry("GET", "/nowhere", token)
    _json_error(unknown, 404, "RESOURCE_DOES_NOT_EXIST")
    assert (entry.action, entry.outcome, entry.consumer) == ("share.unknown", "not_found", USER)
    # A NUL byte, percent-encoded, in a name or a query value (PostgreSQL cannot store one).
    for path, status, outcome in [
        ("/delta-sharing/shares/a%00b/schemas/a/tables/t/version", 404, "not_found"),
        ("/govlake/v1/access-requests?status=pen%00ding", 400, "error"),
    ]:
        odd, entry = server.one_entry("GET", path, token)
        _json_error(odd, status)
        assert (entry.consumer, entry.outcome) == (USER, outcome)


def test_refused_tokens_are_attributed_to_their_owner(server: Server, tmp_path: Path) -> None:
    """An expired or revoked token is refused (401) but the entry names its department, so the
    refusal is in that department's audit export; an unknown token stays anonymous."""
    for name in ("expired", "revoked"):
        response, entry = server.one_entry("GET", "/delta-sharing/shares", server.tokens[name])
        _json_error(response, 401, "UNAUTHENTICATED")
        assert (entry.actor, entry.consumer, entry.outcome) == (USER, USER, "refused"), name
    response, entry = server.one_entry("GET", "/govlake/v1/subscriptions", "not-a-token")
    _json_error(response, 401, "UNAUTHENTICATED")
    assert (entry.actor, entry.consumer) == ("anonymous", None)
    # A body that does not parse, with a valid token: the department's own 400.
    response, entry = server.one_entry(
        "POST", "/govlake/v1/access-requests", server.tokens[USER], content=b"{not json",
        headers={"content-type": "application/json"},
    )  # fmt: skip
    _json_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert (entry.consumer, entry.outcome, entry.action) == (USER, "error", "request.file")

    with session(server.settings) as s:
        exported = audit.trail(s, server.catalog, USER)
        path = tmp_path / "trail.jsonl"
        audit.export(exported, path, fmt="jsonl")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    refused = [(e["action"], e["outcome"]) for e in lines].count(("share.list_shares", "refused"))
    assert refused == 2


def test_successful_listings_are_journaled(server: Server) -> None:
    token = server.tokens[USER]
    for path, count in [
        ("/govlake/v1/access-requests", 0),
        ("/govlake/v1/verification-requests", 0),
        ("/govlake/v1/subscriptions", 1),
        (f"/govlake/v1/subscriptions/{server.subscription}", None),
        (f"/govlake/v1/subscriptions/{server.subscription}/deliveries", 0),
    ]:
        response, entry = server.one_entry("GET", path, token)
        assert response.status_code == 200, response.text
        assert (entry.action, entry.outcome, entry.consumer) == ("request.view", "ok", USER)
        detail = json.loads(entry.detail)
        assert detail["path"] == path
        if count is not None:
            assert detail["items"] == count, path


def test_writes_leave_one_call_entry(server: Server) -> None:
    """A call that changes something is journaled by its own action, not twice."""
    response, entry = server.one_entry("POST", "/govlake/v1/access-requests",
                                       server.tokens[USER], json=FORM)  # fmt: skip
    assert response.status_code == 201
    assert (entry.action, entry.consumer) == ("request.file", USER)
    response, entry = server.one_entry(
        "DELETE", f"/govlake/v1/subscriptions/{server.subscription}", server.tokens[USER]
    )
    assert response.status_code == 200
    assert (entry.action, entry.consumer) == ("subscription.cancel", USER)


# -- item 8, against a real server: uvicorn's own refusals ----------------------------------
def _raw(endpoint: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = endpoint.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            # The server closed with part of a refused request unread, which resets the
            # connection; what it answered first is what counts.
            if b"\r\n\r\n" not in answer:
                raise
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_malformed_requests_are_journaled_json_refusals(settings: Settings) -> None:
    with running(settings) as endpoint:
        seq = _last_seq(settings)
        # Just over the header limit, so that the server has read the whole request when it
        # refuses it (a larger one is refused as well, but closing on unread bytes resets the
        # connection, and the reset can overtake the answer on its way to the client).
        over = settings.sharing_max_header_bytes + 1024
        cases = [
            (b"GET /delta-sharing/sha\x00res HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /" + b"a" * over + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
            (b"GET /delta-sharing/shares HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * over
             + b"\r\n\r\n", 431),
            # Headers that never end: refused once the limit is passed, not awaited forever.
            (b"GET /delta-sharing/shares HTTP/1.1\r\nHost: x\r\nX-Big: " + b"c" * over, 431),
        ]  # fmt: skip
        for request, status in cases:
            got, headers, body = _raw(endpoint, request)
            assert got == status, body
            assert headers["content-type"].startswith("application/json"), headers
            assert set(json.loads(body)) == {"errorCode", "message"}
        # uvicorn's refusals are journaled off its event loop, just after the answer.
        deadline = time.monotonic() + 10
        while len(entries := _entries_after(settings, seq)) < len(cases):
            assert time.monotonic() < deadline, [e.detail for e in entries]
            time.sleep(0.05)
    assert [(e.action, e.outcome) for e in entries] == [("share.unknown", "error")] * 4
    assert sorted(json.loads(e.detail)["status"] for e in entries) == [400, 431, 431, 431]


# -- item 9 ---------------------------------------------------------------------------------
QUERY = "/delta-sharing/shares/population/schemas/population/tables/residents_unconditional/query"


def test_the_token_is_checked_before_the_body(server: Server) -> None:
    """Without a token a malformed body is never parsed: 401, not 400."""
    for path in (QUERY, "/govlake/v1/access-requests"):
        response, entry = server.one_entry(
            "POST", path, None, content=b"{not json", headers={"content-type": "application/json"}
        )
        _json_error(response, 401, "UNAUTHENTICATED")
        assert entry.outcome == "refused"


def test_an_oversized_body_is_refused_with_413(server: Server) -> None:
    big = json.dumps({"predicateHints": ["x" * 10_000_000]}).encode()
    response, entry = server.one_entry("POST", QUERY, server.tokens[USER], content=big,
                                       headers={"content-type": "application/json"})  # fmt: skip
    _json_error(response, 413)
    assert (entry.consumer, entry.outcome) == (USER, "error")
    assert json.loads(entry.detail)["status"] == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it arrives
        yield b'{"predicateHints": ["'
        for _ in range(11):
            yield b"x" * 1_000_000
        yield b'"]}'

    response, entry = server.one_entry("POST", "/govlake/v1/access-requests", server.tokens[USER],
                                       content=chunks(),
                                       headers={"content-type": "application/json"})  # fmt: skip
    _json_error(response, 413)
    assert entry.consumer == USER
    # Without a token the size does not matter: 401.
    response, _ = server.one_entry("POST", QUERY, None, content=big,
                                   headers={"content-type": "application/json"})  # fmt: skip
    _json_error(response, 401, "UNAUTHENTICATED")


# -- item 10 --------------------------------------------------------------------------------
def _page_token(offset: Any) -> str:
    text = "[" * 5000 + "]" * 5000 if offset == "deep" else json.dumps({"offset": offset})
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize("offset", [-1, -1000, 1.5, "3", True, None, "deep"])
def test_a_forged_page_token_is_a_bad_request(server: Server, offset: Any) -> None:
    """Only a whole, non-negative offset pages; anything else is a 400, never items or a 500."""
    response, entry = server.one_entry("GET", "/delta-sharing/shares", server.tokens[USER],
                                       params={"pageToken": _page_token(offset)})  # fmt: skip
    _json_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert entry.consumer == USER


def test_two_authorization_headers_are_a_bad_request(server: Server) -> None:
    for second in (server.tokens[USER], server.tokens[PROVIDER], "garbage"):
        before = server.last_seq()
        headers = [("Authorization", f"Bearer {server.tokens[USER]}"),
                   ("Authorization", f"Bearer {second}")]  # fmt: skip
        response = server.client.get("/delta-sharing/shares", headers=headers)
        _json_error(response, 400, "INVALID_PARAMETER_VALUE")
        entries = server.entries_after(before)
        assert len(entries) == 1 and entries[0].outcome == "error"
