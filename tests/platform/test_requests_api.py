"""The REST endpoints for access and verification requests, through FastAPI's TestClient with
real bearer tokens: who may file, see and decide, and the protocol's error bodies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import FORM, consumers_with_tokens, router_app

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.platform.database import session
from govlake.sharing import access
from govlake.sharing.access import decide, shared_tables
from govlake.sharing.server.requests_api import router

#: Every test that uses `settings` runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.platform_state

AT = datetime(2026, 9, 30, 2, 0)
USER, PROVIDER, OTHER = "market_regulation", "public_security", "taxation"


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str], clock: list[datetime]):
        self.client, self.tokens, self.clock = client, tokens, clock

    def call(self, method: str, path: str, who: str | None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.request(method, "/govlake/v1" + path, headers=headers, **kwargs)


@pytest.fixture
def api(settings: Settings, catalog: Catalog) -> Iterator[Api]:
    codes = (USER, PROVIDER, OTHER, "civil_affairs")
    tokens = consumers_with_tokens(settings, catalog, codes, at=AT - timedelta(days=1))
    clock = [AT]
    with TestClient(router_app(router, settings, catalog, lambda: clock[0])) as client:
        yield Api(client, tokens, clock)


def test_without_a_token_nothing_is_served(api: Api) -> None:
    for method, path in [
        ("GET", "/access-requests"),
        ("POST", "/access-requests"),
        ("GET", "/verification-requests"),
    ]:
        response = api.call(method, path, None, json=FORM if method == "POST" else None)
        assert response.status_code == 401, path
        assert response.json()["errorCode"] == "UNAUTHENTICATED"
    bad = api.client.get("/govlake/v1/access-requests", headers={"Authorization": "Bearer x"})
    assert bad.status_code == 401


def test_file_see_and_approve(api: Api, settings: Settings, catalog: Catalog) -> None:
    filed = api.call("POST", "/access-requests", USER, json=FORM)
    assert filed.status_code == 201, filed.text
    body = filed.json()
    request_id = body["id"]
    assert (body["consumer"], body["provider"], body["status"]) == (USER, PROVIDER, "pending")
    assert body["due_on"] == "2026-10-20" and body["overdue"] is False
    assert body["items"] == ["residence_address"] and body["grant_id"] is None

    # The consumer and the provider see it; a third department does not.
    for who in (USER, PROVIDER):
        listed = api.call("GET", "/access-requests", who).json()
        assert [r["id"] for r in listed] == [request_id]
        assert api.call("GET", f"/access-requests/{request_id}", who).status_code == 200
    assert api.call("GET", "/access-requests", OTHER).json() == []
    hidden = api.call("GET", f"/access-requests/{request_id}", OTHER)
    assert hidden.status_code == 404 and hidden.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"

    # The filer cannot approve its own request.
    denied = api.call("POST", f"/access-requests/{request_id}/approve", USER, json={})
    assert denied.status_code == 403
    assert denied.json()["errorCode"] == "PERMISSION_DENIED"
    assert "only the provider public_security" in denied.json()["message"]

    # Late on the due date (23:00 in China) it is on time; past midnight it is overdue.
    api.clock[0] = datetime(2026, 10, 20, 15, 0)
    assert api.call("GET", f"/access-requests/{request_id}", USER).json()["overdue"] is False
    api.clock[0] = datetime(2026, 10, 20, 16, 30)
    assert api.call("GET", f"/access-requests/{request_id}", USER).json()["overdue"] is True

    approved = api.call(
        "POST",
        f"/access-requests/{request_id}/approve",
        PROVIDER,
        json={"by": "王建国", "expires_at": "2027-09-30T00:00:00"},
    )
    assert approved.status_code == 200, approved.text
    decision = approved.json()
    assert decision["status"] == "approved" and decision["decided_by"] == "王建国"
    assert decision["grant_id"] is not None and decision["overdue"] is False
    table = next(
        t
        for t in shared_tables(catalog, settings)
        if t.resource.qualified_name == "population.residents" and t.sharing_class == "conditional"
    )
    with session(settings) as s:
        allowed = decide(s, access.consumer(s, USER), table, at=api.clock[0])
        assert allowed.allowed and allowed.grant_id == decision["grant_id"]

    again = api.call("POST", f"/access-requests/{request_id}/approve", PROVIDER, json={})
    assert again.status_code == 400 and "already approved" in again.json()["message"]


def test_a_bad_body_is_an_invalid_parameter(api: Api) -> None:
    missing = {k: v for k, v in FORM.items() if k != "justification"}
    for body, problem in [
        (missing, "justification"),
        ({**FORM, "usage_scope": "everything"}, "usage scope 'everything' is not one of"),
        ({**FORM, "items": ["name"]}, "needs no request"),
        ({**FORM, "applicant_name": " "}, "needs applicant_name"),
        ({**FORM, "colour": "red"}, "colour"),
    ]:
        response = api.call("POST", "/access-requests", USER, json=body)
        assert response.status_code == 400, (problem, response.text)
        assert response.json()["errorCode"] == "INVALID_PARAMETER_VALUE"
        assert problem in response.json()["message"]
    assert api.call("GET", "/access-requests", USER).json() == []


def test_refusal_through_the_api_needs_reasons(api: Api) -> None:
    request_id = api.call("POST", "/access-requests", USER, json=FORM).json()["id"]
    path = f"/access-requests/{request_id}/refuse"
    blank = api.call("POST", path, PROVIDER, json={"reason": "  "})
    assert blank.status_code == 400 and "reasons" in blank.json()["message"]
    refused = api.call("POST", path, PROVIDER, json={"reason": "住址属个人隐私"})
    assert refused.status_code == 200
    assert (refused.json()["status"], refused.json()["reason"]) == ("refused", "住址属个人隐私")
    seen = api.call("GET", f"/access-requests/{request_id}", USER).json()
    assert seen["status"] == "refused" and seen["reason"] == "住址属个人隐私"


def test_verification_request_goes_to_the_items_authority(api: Api) -> None:
    filed = api.call(
        "POST",
        "/verification-requests",
        USER,
        json={
            "resource": "population.residents",
            "key": "11010519491231002X",
            "item": "marital_status",
            "doubted_value": "10",
            "evidence": "结婚证",
        },
    )
    assert filed.status_code == 201, filed.text
    body = filed.json()
    assert body["provider"] == "civil_affairs" and body["status"] == "open"
    assert body["key"] == {"citizen_id": "11010519491231002X"}
    assert body["due_on"] == "2026-10-13"
    request_id = body["id"]

    assert [r["id"] for r in api.call("GET", "/verification-requests", "civil_affairs").json()] == [
        request_id
    ]
    assert api.call("GET", "/verification-requests", PROVIDER).json() == []
    path = f"/verification-requests/{request_id}/answer"
    answer = {"outcome": "corrected", "answer": "婚姻登记记录为已婚", "corrected_value": "20"}
    # The resource's provider is not the authority of marital status.
    denied = api.call("POST", path, PROVIDER, json=answer)
    assert denied.status_code == 404  # it is not addressed to public security at all
    denied = api.call("POST", path, USER, json=answer)
    assert denied.status_code == 403 and denied.json()["errorCode"] == "PERMISSION_DENIED"
    answered = api.call("POST", path, "civil_affairs", json=answer)
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "corrected"
    assert answered.json()["corrected_value"] == "20"
    seen = api.call("GET", f"/verification-requests/{request_id}", USER).json()
    assert seen["status"] == "corrected" and seen["answered_by"] == "civil_affairs"
