"""The page and refresh tokens of the sharing server's queries (`paging`): read back only
when this server issued them, for the same table and query, before they expire."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from govlake.sharing.server.paging import (
    PAGE,
    REFRESH,
    QueryToken,
    Tokens,
    end_stream_action,
    issue,
    open_token,
    page_of,
    query_digest,
)
from govlake.sharing.server.tables import InvalidParameter

KEY = b"k" * 32
TABLE = "population.population.residents_unconditional"
QUERY = query_digest({"version": None, "limitHint": 10})
TOKEN = QueryToken(PAGE, TABLE, QUERY, expires=2_000, version=4, offset=2)


def _open(text: str, **changes: object) -> QueryToken:
    wanted = {"kind": PAGE, "table": TABLE, "query": QUERY, "now": 1_000} | changes
    return open_token(KEY, text, **wanted)  # type: ignore[arg-type]


def test_a_token_reads_back_as_issued() -> None:
    assert _open(issue(KEY, TOKEN)) == TOKEN


@pytest.mark.parametrize(("case", "changes", "message"), [
    ("another table", {"table": "credit.credit.records_unconditional"}, "another table"),
    ("another kind", {"kind": REFRESH}, "another table or call"),
    ("another query", {"query": query_digest({"limitHint": 11})}, "other parameters"),
    ("expired", {"now": 2_000}, "expired"),
])  # fmt: skip
def test_a_token_for_another_call_is_refused(case: str, changes: dict, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        _open(issue(KEY, TOKEN), **changes)


def test_a_token_this_server_did_not_issue_is_refused() -> None:
    text = issue(KEY, TOKEN)
    body, _, mac = text.rpartition(".")
    moved = json.loads(base64.urlsafe_b64decode(body)) | {"offset": 0}
    forged = base64.urlsafe_b64encode(json.dumps(moved).encode()).decode()
    other_key = issue(b"x" * 32, TOKEN)
    for bad in (f"{forged}.{mac}", other_key, "", ".", "abc", "é.é", text + "0"):
        with pytest.raises(InvalidParameter, match="not one this server issued"):
            _open(bad)


def test_pages_cut_the_items_in_order() -> None:
    items = list(range(5))
    assert page_of(items, 0, 2) == ([0, 1], 2)
    assert page_of(items, 4, 2) == ([4], None)
    assert page_of(items, 0, None) == (items, None)
    with pytest.raises(InvalidParameter):
        page_of(items, 6, 2)


def test_the_end_stream_action_names_only_what_there_is() -> None:
    lines = [{"file": {"expirationTimestamp": 7}}, {"add": {"expirationTimestamp": 5}},
             {"metaData": {"version": 2}}]  # fmt: skip
    wanted = {"refreshToken": "again", "nextPageToken": "next", "minUrlExpirationTimestamp": 5}
    assert end_stream_action(lines, "next", "again") == {"endStreamAction": wanted}
    assert end_stream_action([], None, None) == {"endStreamAction": {}}


def test_tokens_of_a_call_expire_with_its_urls_and_refresh_tokens_later() -> None:
    tokens = Tokens.of(KEY, timedelta(minutes=15), TABLE, {"limitHint": 10}, now=0)
    page = tokens.open(PAGE, tokens.issue(PAGE, version=1))
    refresh = tokens.open(REFRESH, tokens.issue(REFRESH, version=1))
    assert page.expires == 15 * 60_000 and refresh.expires == 60 * 60_000
    later = Tokens.of(KEY, timedelta(minutes=15), TABLE, {"limitHint": 10}, now=20 * 60_000)
    with pytest.raises(InvalidParameter, match="expired"):
        later.open(PAGE, tokens.issue(PAGE, version=1))
    assert later.open(REFRESH, tokens.issue(REFRESH, version=1)).version == 1
