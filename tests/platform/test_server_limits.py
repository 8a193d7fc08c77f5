"""The sharing server's rate limits: a department beyond its rate, and an address that calls
without a valid credential beyond its own, are refused with 429 and `Retry-After`, each
refusal journaled; nobody else is slowed by them, and the caller is served again once the
wait is over (the buckets run on a clock the test sets)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from support import consumers_with_tokens, entries_after, last_seq

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.sharing.server.app import create_app
from govlake.sharing.server.limits import Limits

AT = datetime(2026, 9, 30, 2, 0)
USER, OTHER = "market_regulation", "public_security"
SHARES = "/delta-sharing/shares"


class Seconds:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _server(settings: Settings, catalog: Catalog, **limits: Any) -> tuple[FastAPI, Seconds]:
    settings = settings.model_copy(update=limits)
    app = create_app(settings, catalog, clock=lambda: AT)
    clock = Seconds()
    app.state.limits = Limits(settings, clock)
    return app, clock


def _refused(response: Any, seconds: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(seconds)
    assert response.json()["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_a_department_beyond_its_rate_waits_and_others_do_not(
    settings: Settings, catalog: Catalog
) -> None:
    tokens = consumers_with_tokens(settings, catalog, [USER, OTHER], at=AT - timedelta(days=1))
    app, clock = _server(settings, catalog, sharing_rate_per_second=0.5, sharing_rate_burst=3)
    client = TestClient(app)
    user = {"Authorization": f"Bearer {tokens[USER]}"}
    for _ in range(3):
        assert client.get(SHARES, headers=user).status_code == 200
    before = last_seq(settings)
    refused = client.get(SHARES, headers=user)
    _refused(refused, 2)  # one call back at 0.5 a second
    [entry] = entries_after(settings, before)
    assert (entry.consumer, entry.action, entry.outcome) == (USER, "share.list_shares", "refused")
    assert json.loads(entry.detail)["status"] == 429
    # Another department, from the same address, is served.
    other = {"Authorization": f"Bearer {tokens[OTHER]}"}
    assert client.get(SHARES, headers=other).status_code == 200
    # Not yet: one second in, half a call has come back.
    clock.now += 1
    _refused(client.get(SHARES, headers=user), 1)
    clock.now += 1
    assert client.get(SHARES, headers=user).status_code == 200
    _refused(client.get(SHARES, headers=user), 2)


def test_calls_without_a_valid_credential_are_limited_by_address(
    settings: Settings, catalog: Catalog
) -> None:
    tokens = consumers_with_tokens(settings, catalog, [USER], at=AT - timedelta(days=1))
    app, clock = _server(settings, catalog, sharing_anonymous_rate_per_second=0.25,
                         sharing_anonymous_burst=2)  # fmt: skip
    flood = TestClient(app, client=("192.0.2.7", 40000))
    assert flood.get(SHARES).status_code == 401
    assert flood.get(SHARES, headers={"Authorization": "Bearer forged"}).status_code == 401
    before = last_seq(settings)
    for path in (SHARES, "/open/catalog.jsonld", "/nowhere"):
        _refused(flood.get(path), 4)
    entries = entries_after(settings, before)
    assert [(e.outcome, json.loads(e.detail)["status"]) for e in entries] == [("refused", 429)] * 3
    # A department's calls neither drain their address's bucket nor wait on another's.
    user = {"Authorization": f"Bearer {tokens[USER]}"}
    department = TestClient(app, client=("198.51.100.9", 40000))
    for _ in range(5):
        assert department.get(SHARES, headers=user).status_code == 200
    assert department.get("/open/catalog.jsonld").status_code == 200
    # The probes answer whatever the address did.
    assert flood.get("/livez").status_code == 200
    clock.now += 4
    assert flood.get(SHARES).status_code == 401
    _refused(flood.get(SHARES), 4)


def test_a_rate_of_zero_disables_the_limit(settings: Settings, catalog: Catalog) -> None:
    app, _ = _server(settings, catalog, sharing_rate_per_second=0,
                     sharing_anonymous_rate_per_second=0, sharing_anonymous_burst=1)  # fmt: skip
    client = TestClient(app)
    assert {client.get(SHARES).status_code for _ in range(5)} == {401}
