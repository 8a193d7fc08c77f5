"""Every REST route of the sharing server, fuzzed from its own OpenAPI description with
schemathesis: valid and invalid parameters and bodies, with a consumer's or a provider's
valid bearer token, a token nobody was issued, or none, on a platform with a published
table, an access request, a subscription and a signed file URL to hit. Whatever the input,
no call is answered 5xx, no answer carries a stack trace or an exception's class path, and
every call leaves exactly one audit journal entry.

The cost is bounded: hypothesis derandomized (the same cases every run), a few examples per
operation and generation mode, no shrinking beyond what a failure needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import hypothesis
import pyarrow as pa
import pytest
import schemathesis
from deltalake import write_deltalake
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from support import FORM, consumers_with_tokens, entries_after, last_seq

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.platform.database import session
from govlake.sharing import subscriptions as subscriptions_domain
from govlake.sharing.access import shared_tables
from govlake.sharing.server.app import create_app

#: Every test that uses `settings` runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.platform_state

AT = datetime(2026, 9, 30, 2, 0)
USER, PROVIDER = "market_regulation", "public_security"
UNCONDITIONAL = "population.population.residents_unconditional"
#: Examples per operation and generation mode (`GOVLAKE_FUZZ_EXAMPLES=100` for a deeper run).
EXAMPLES = int(os.environ.get("GOVLAKE_FUZZ_EXAMPLES", "6"))
#: Entries a call's domain function records besides the call's own: an approval creates a
#: grant, journaled as its own event.
CONSEQUENCES = frozenset({"grant.create"})
#: What a stack trace or an exception's class path looks like in an answer.
LEAKS = re.compile(r"Traceback|File \"|\b(?:[a-z_][a-z0-9_]*\.){2,}[A-Z]\w*(?:Error|Exception)\b")


@dataclass
class Platform:
    app: FastAPI
    settings: Settings
    #: Credentials a case is sent with: a consumer's, a provider's, an unknown one, none.
    credentials: list[str | None]
    #: Path parameter values that name what exists, so that cases reach past the lookups.
    known: dict[str, list[Any]]

    def last_seq(self) -> int:
        return last_seq(self.settings)

    def actions_after(self, seq: int) -> list[str]:
        return [entry.action for entry in entries_after(self.settings, seq)]


@pytest.fixture
def platform(settings: Settings, catalog: Catalog) -> Iterator[Platform]:
    # The limits have tests of their own: here every case must reach the routes.
    settings = settings.model_copy(
        update={"sharing_rate_per_second": 0, "sharing_anonymous_rate_per_second": 0}
    )
    tokens = consumers_with_tokens(settings, catalog, [USER, PROVIDER], at=AT - timedelta(days=1))
    with session(settings) as s:
        made, _ = subscriptions_domain.subscribe(
            s, catalog, settings, consumer=USER, resource="population.residents",
            sharing_class="unconditional", at=AT - timedelta(days=1),
        )  # fmt: skip
        subscription = made.id
    table = next(t for t in shared_tables(catalog, settings) if t.full_name == UNCONDITIONAL)
    write_deltalake(table.location.uri, pa.table({"citizen_id": ["1", "2"]}))
    app = create_app(settings, catalog, clock=lambda: AT)
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {tokens[USER]}"}
        filed = client.post("/govlake/v1/access-requests", headers=auth, json=FORM)
        assert filed.status_code == 201, filed.text
        base = "/delta-sharing/shares/population/schemas/population/tables/residents_unconditional"
        answer = client.post(f"{base}/query", headers=auth, json={})
        assert answer.status_code == 200, answer.text
    lines = [json.loads(line) for line in answer.text.splitlines()]
    file_url = urlsplit(next(line["file"]["url"] for line in lines if "file" in line))
    known: dict[str, list[Any]] = {
        "share": ["population"], "schema": ["population"], "name": ["residents_unconditional"],
        "request_id": [filed.json()["id"]], "subscription_id": [subscription],
        "token": [file_url.path.rsplit("/", 1)[1]],
        "X-Amz-Signature": parse_qs(file_url.query).get("X-Amz-Signature", []),
    }  # fmt: skip
    yield Platform(app, settings, [tokens[USER], tokens[PROVIDER], "not-a-token", None], known)


def _known(case: Any, platform: Platform, draw: st.DrawFn) -> Any:
    """Half the cases name what exists (path parameters, the file URL's signature)."""
    if draw(st.booleans()):
        for where in (case.path_parameters, case.query):
            if where is None:
                continue
            for name in list(where):
                if platform.known.get(name):
                    where[name] = draw(st.sampled_from(platform.known[name]))
    return case


#: Header values a client may send (printable ASCII, no surrounding blanks: what an HTTP
#: client lets through).
_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)
#: Headers the description does not declare but the routes read, valid or made up.
_HEADERS = st.fixed_dictionaries({}, optional={
    "delta-sharing-capabilities": st.one_of(
        st.sampled_from(["responseformat=delta", "responseformat=parquet,delta;readerfeatures="
                         "deletionvectors,columnmapping", "responseformat=;;=,"]), _VALUES),
    "Range": st.one_of(st.sampled_from(["bytes=0-3", "bytes=-5", "bytes=9999999-", "bytes=3-1",
                                        "bytes=0-1,4-5", "items=0-1"]), _VALUES),
    "If-Range": _VALUES,
})  # fmt: skip


def _credential(platform: Platform) -> st.SearchStrategy[dict[str, str]]:
    """An `Authorization` header: a known credential's, a made-up one, or none."""
    known = st.sampled_from(platform.credentials).map(
        lambda token: {"Authorization": f"Bearer {token}"} if token else {}
    )
    made_up = _VALUES.map(lambda value: {"Authorization": value})
    return st.one_of(known, made_up)


def _check(platform: Platform, case: Any, headers: dict[str, str]) -> None:
    before = platform.last_seq()
    response = case.call(headers=headers, allow_redirects=False)
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, (case.as_curl_command(), response.text)
    text = response.content.decode("utf-8", "replace")  # a file's bytes are not text
    assert not LEAKS.search(text), (case.as_curl_command(), text)
    written = [a for a in platform.actions_after(before) if a not in CONSEQUENCES]
    assert len(written) == 1, (case.as_curl_command(), response.status_code, written)


def _fuzz(platform: Platform, cases: st.SearchStrategy[Any]) -> None:
    @hypothesis.given(data=st.data())
    @hypothesis.settings(
        max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )  # fmt: skip
    def fuzzed(data: st.DataObject) -> None:
        case = _known(data.draw(cases), platform, data.draw)
        headers = {**data.draw(_HEADERS), **data.draw(_credential(platform))}
        _check(platform, case, headers)

    fuzzed()


def test_every_route_survives_fuzzing(platform: Platform) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", platform.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 29  # the protocol, requests, subscriptions and open data
    for operation in operations:
        _fuzz(platform, operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        # An operation without parameter or body has nothing to get wrong.
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            _fuzz(platform, operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))


def test_every_route_bounds_its_body_and_headers(platform: Platform) -> None:
    """The size limits hold on every operation of the description (they sit in the gate
    every call passes, not in the routes): a body over `sharing_max_body_bytes` is refused
    with 413 before it is parsed, headers over `sharing_max_header_bytes` with 431; each
    refusal journaled once."""
    settings = platform.settings
    client = TestClient(platform.app)
    big_body = b"[" + b"0," * (settings.sharing_max_body_bytes // 2) + b"0]"
    big_header = {"X-Filler": "x" * settings.sharing_max_header_bytes}
    token = {"Authorization": f"Bearer {platform.credentials[0]}"}
    # Each body in the media type its operation declares (JSON, or the token endpoint's form).
    operations = [(method.upper(), re.sub(r"\{[^}]+\}", "1", path),
                   next(iter(spec["requestBody"]["content"])) if "requestBody" in spec else None)
                  for path, item in platform.app.openapi()["paths"].items()
                  for method, spec in item.items()]  # fmt: skip
    assert sum(media is not None for *_, media in operations) >= 7
    for method, path, media in operations:
        # A route that takes no body never reads one.
        cases = [({**token, **big_header}, None, 431)]
        cases += [(token, big_body, 413)] if media else []
        for headers, content, status in cases:
            before = platform.last_seq()
            headers = {**headers, "Content-Type": media or "application/json"}
            response = client.request(method, path, headers=headers, content=content)
            assert response.status_code == status, (method, path, response.text)
            assert len(platform.actions_after(before)) == 1, (method, path)
