"""The page and refresh tokens of the sharing server's queries (`querytokens`): read back only
when this server issued them, for the same table and query, before they expire."""

from __future__ import annotations

import base64
import json

import pytest

from govlake.sharing.server.querytokens import (
    PAGE,
    REFRESH,
    QueryToken,
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
