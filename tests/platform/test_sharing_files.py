"""Signed file URLs of the sharing server, tried from outside on a running server: odd and
forged tokens, Range headers, grants revoked and departments suspended after the URLs were
issued, and the access log. Every answer is JSON and every refusal is in the journal."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import delta_sharing
import httpx
import pyarrow as pa
import pytest
from delta_sharing.protocol import DeltaSharingProfile, Table
from delta_sharing.rest_client import DataSharingRestClient
from deltalake import write_deltalake
from sqlalchemy import select
from support import Clock, lake_settings

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.tables import TableSet
from govlake.platform.database import AuditEntry, session
from govlake.sharing import access
from govlake.sharing.server.app import create_app
from govlake.sharing.server.files import SIGNATURE
from govlake_app.cli.serve import running

START = datetime.datetime(2026, 11, 4, 9)  # the server's clock
KEY = b"a signing key known to the test"
RESIDENTS = "population.residents"
UNCONDITIONAL = "population.population.residents_unconditional"
CONDITIONAL = "population.population.residents_conditional"


class Captured(logging.Handler):
    """Every access-log line the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Server:
    settings: Settings
    catalog: Catalog
    endpoint: str
    clock: Clock
    profiles: dict[str, Path]
    access_log: Captured

    def files(self, consumer: str, table: str = UNCONDITIONAL) -> list[Any]:
        """The file entries of `table` as the official client's REST layer receives them."""
        share, schema, name = table.split(".")
        client = DataSharingRestClient(
            DeltaSharingProfile.read_from_file(str(self.profiles[consumer]))
        )
        return list(client.list_files_in_table(Table(name, share, schema)).add_files)

    def url(self, consumer: str, table: str = UNCONDITIONAL) -> str:
        return str(self.files(consumer, table)[0].url)

    def token(self, consumer: str) -> str:
        return self.url(consumer).rsplit("/", 1)[1]

    def journal(self, action: str = "share.file") -> list[AuditEntry]:
        with session(self.settings) as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                  .order_by(AuditEntry.seq)))  # fmt: skip

    def last(self, action: str = "share.file") -> tuple[AuditEntry, dict[str, Any]]:
        entry = self.journal(action)[-1]
        return entry, json.loads(entry.detail or "{}")


def _publish(settings: Settings, catalog: Catalog) -> None:
    """Both published tables of the residents, two versions each (two data files), written
    with delta-rs where the server looks for them."""
    tables = TableSet(catalog.get(RESIDENTS), settings.warehouse_location)
    for cls in ("unconditional", "conditional"):
        uri = tables.published(cls).location.uri
        for part in range(2):
            ids = [f"6101{part}{n:05d}" for n in range(300)]
            rows = pa.table({"citizen_id": ids, "name": [f"居民{i}" for i in ids],
                             "birth_year": [1950 + n % 60 for n in range(300)]})  # fmt: skip
            write_deltalake(uri, rows, mode="append")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("files")
    settings = lake_settings(root)
    catalog = Catalog.load(settings.catalog_dir)
    _publish(settings, catalog)
    clock = Clock(START)
    profiles = {}
    app = create_app(settings, catalog, clock=clock, signing_key=KEY)
    captured = Captured()
    with running(settings, app=app, log_level="info") as endpoint:
        logging.getLogger("uvicorn.access").addHandler(captured)
        with session(settings) as s:
            for code in ("civil_affairs", "taxation", "market_regulation", "public_security"):
                access.register_consumer(s, catalog, code, email=None, at=START)
                token = access.issue_token(s, code, at=START, days=30)
                profiles[code] = root / f"{code}.share"
                profiles[code].write_text(json.dumps({"shareCredentialsVersion": 1,
                                                      "endpoint": endpoint,
                                                      "bearerToken": token}))  # fmt: skip
        try:
            yield Server(settings, catalog, endpoint, clock, profiles, captured)
        finally:
            logging.getLogger("uvicorn.access").removeHandler(captured)


@pytest.fixture(autouse=True)
def _at_start(server: Server) -> Iterator[None]:
    server.clock.at = START
    yield
    server.clock.at = START


def _error(reply: httpx.Response, status: int, code: str) -> str:
    """The protocol's JSON error body, checked; its message."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json"), reply.text
    body = reply.json()
    assert body["errorCode"] == code
    return str(body["message"])


def _signed(body: bytes | str) -> str:
    """A token for `body`, signed with the server's key as the server signs its own."""
    text = body if isinstance(body, str) else base64.urlsafe_b64encode(body).decode()
    return f"{text}.{hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()}"


def _mac(url: str) -> str:
    """The MAC a signed file URL carries in its query."""
    (mac,) = parse_qs(urlsplit(url).query)[SIGNATURE]
    assert re.fullmatch(r"[0-9a-f]{64}", mac)
    return mac


# -- odd and forged tokens (items 3 and 4) ---------------------------------------------------
@pytest.mark.parametrize("suffix", [".%C3%A9", "%C3%A9", ".%FF", "é"])  # NUL: test_server_hardening
def test_a_token_with_non_ascii_or_odd_bytes_is_refused_not_a_server_error(
    server: Server, suffix: str
) -> None:
    token = server.token("civil_affairs")
    reply = httpx.get(f"{server.endpoint}/files/{token}{suffix}")
    assert "not valid" in _error(reply, 403, "PERMISSION_DENIED")
    entry, detail = server.last()
    assert (entry.outcome, detail["status"]) == ("refused", 403)


GRANT = {"table": UNCONDITIONAL, "path": "x.parquet", "consumer": "civil_affairs",
         "expires": 4102444800000}  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_signed(json.dumps({"table": UNCONDITIONAL}).encode()), id="fields-missing"),
        pytest.param(_signed(json.dumps(GRANT | {"extra": 1}).encode()), id="field-too-many"),
        pytest.param(_signed(json.dumps(GRANT | {"expires": "soon"}).encode()), id="str-expiry"),
        pytest.param(_signed(json.dumps(GRANT | {"expires": True}).encode()), id="bool-expiry"),
        pytest.param(_signed(json.dumps(GRANT | {"path": ["a"]}).encode()), id="list-path"),
        pytest.param(_signed(json.dumps([GRANT]).encode()), id="not-an-object"),
        pytest.param(_signed(b"not json at all"), id="not-json"),
        pytest.param(_signed(b"\xff\xfe not utf-8"), id="not-utf8"),
        pytest.param(_signed("@@not-base64@@"), id="not-base64"),
        pytest.param(_signed("YWJj="), id="bad-padding"),
        pytest.param(_signed(""), id="empty"),
    ],
)
def test_a_signed_but_malformed_grant_is_refused_not_a_server_error(
    server: Server, body: str
) -> None:
    reply = httpx.get(f"{server.endpoint}/files/{body}")
    assert "not valid" in _error(reply, 403, "PERMISSION_DENIED")
    assert server.last()[0].outcome == "refused"


def test_an_expired_url_is_refused_in_the_name_of_its_consumer(server: Server) -> None:
    url = server.url("civil_affairs")
    server.clock.at = START + datetime.timedelta(hours=1)
    assert "expired" in _error(httpx.get(url), 403, "PERMISSION_DENIED")
    entry, _ = server.last()
    assert (entry.outcome, entry.consumer, entry.table_name) == ("refused", "civil_affairs",
                                                                 UNCONDITIONAL)  # fmt: skip


# -- Range (item 7) -------------------------------------------------------------------------
def _file(server: Server) -> tuple[str, bytes]:
    """A signed URL of civil affairs and the bytes of its file."""
    first = server.files("civil_affairs")[0]
    whole = httpx.get(first.url)
    assert whole.status_code == 200 and len(whole.content) == first.size > 100
    return str(first.url), whole.content


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=0-3", 0, 3),
        ("bytes=4-", 4, None),
        ("bytes=-4", -4, None),
        ("bytes=10-10", 10, 10),
        ("bytes=0-999999999", 0, None),  # clipped to the file
        ("BYTES = 2 - 7", 2, 7),
    ],
)
def test_a_single_range_answers_206_with_its_content_range(
    server: Server, header: str, start: int, end: int | None
) -> None:
    url, content = _file(server)
    size = len(content)
    first = start % size
    last = size - 1 if end is None else end
    reply = httpx.get(url, headers={"Range": header})
    assert reply.status_code == 206
    assert reply.content == content[first : last + 1]
    assert reply.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert reply.headers["content-length"] == str(last - first + 1)
    entry, detail = server.last()
    assert (entry.outcome, entry.consumer, entry.files) == ("ok", "civil_affairs", 1)
    assert detail["status"] == 206 and detail["range"] == f"bytes {first}-{last}/{size}"
    assert detail["requested"] == header


def test_the_official_client_reads_through_ranges(server: Server) -> None:
    before = len(server.journal())
    read = delta_sharing.load_as_pandas(f"{server.profiles['civil_affairs']}#{UNCONDITIONAL}")
    assert len(read) == 600 and set(read.columns) == {"citizen_id", "name", "birth_year"}
    served = server.journal()[before:]
    assert served and {e.outcome for e in served} == {"ok"}
    assert {json.loads(e.detail or "{}")["status"] for e in served} <= {200, 206}


@pytest.mark.parametrize(
    "header",
    ["bytes=10-5", "bytes=abc", "bytes=1-x", "bytes=-", "bytes=", "bytes=0-1,x", "bytes=--3",
     "bytes=+1-2", "bytes=0x1-2"],
)  # fmt: skip
def test_a_malformed_byte_range_is_a_json_400_in_the_journal(server: Server, header: str) -> None:
    url, _ = _file(server)
    reply = httpx.get(url, headers={"Range": header})
    message = _error(reply, 400, "INVALID_PARAMETER_VALUE")
    assert header in message
    entry, detail = server.last()
    assert (entry.outcome, entry.consumer, entry.table_name) == ("error", "civil_affairs",
                                                                 UNCONDITIONAL)  # fmt: skip
    assert detail["status"] == 400 and header in detail["message"]


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{size2}", "bytes=-0"])
def test_an_unsatisfiable_range_is_a_json_416_with_the_size(server: Server, header: str) -> None:
    url, content = _file(server)
    size = len(content)
    header = header.format(size=size, size2=size + 10)
    reply = httpx.get(url, headers={"Range": header})
    _error(reply, 416, "INVALID_PARAMETER_VALUE")
    assert reply.headers["content-range"] == f"bytes */{size}"
    entry, detail = server.last()
    assert (entry.outcome, entry.consumer) == ("error", "civil_affairs")
    assert detail["status"] == 416 and header in detail["message"]


@pytest.mark.parametrize("header", ["", "items=0-1", "bytes=0-1,4-5"])
def test_a_range_header_that_asks_for_no_single_byte_range_gets_the_whole_file(
    server: Server, header: str
) -> None:
    """An empty header and another unit are ignored (RFC 9110 §14.2: a server MUST ignore a
    range unit it does not understand); several ranges get the whole file, as from S3."""
    url, content = _file(server)
    reply = httpx.get(url, headers={"Range": header})
    assert reply.status_code == 200 and reply.content == content
    assert "content-range" not in reply.headers
    entry, detail = server.last()
    assert entry.outcome == "ok" and detail["status"] == 200
    assert detail["range"] is None and detail["requested"] == header


def test_head_answers_the_size_and_sends_nothing(server: Server) -> None:
    """fsspec, under the official client, asks HEAD for a file's size first."""
    url, content = _file(server)
    reply = httpx.head(url)
    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["content-length"] == str(len(content))
    assert reply.headers["accept-ranges"] == "bytes"
    entry, detail = server.last()
    assert (entry.outcome, entry.consumer, entry.files) == ("ok", "civil_affairs", 0)
    assert (detail["method"], detail["status"], detail["bytes"]) == ("HEAD", 200, 0)
    part = httpx.head(url, headers={"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 0-3/{len(content)}"


def test_if_range_with_another_validator_gets_the_whole_file(server: Server) -> None:
    url, content = _file(server)
    etag = httpx.head(url).headers["etag"]
    same = httpx.get(url, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert same.status_code == 206 and same.content == content[:4]
    other = httpx.get(url, headers={"Range": "bytes=0-3", "If-Range": '"another-version"'})
    assert other.status_code == 200 and other.content == content
    _, detail = server.last()
    assert (detail["status"], detail["range"], detail["requested"]) == (200, None, "bytes=0-3")


# -- grants and suspensions checked again at download (item 12) ------------------------------
def test_a_grant_revoked_after_the_query_stops_its_file_urls(server: Server) -> None:
    with session(server.settings) as s:
        grant = access.grant(s, server.catalog, "taxation", RESIDENTS, purpose="data_verification",
                             by="public_security", at=START)  # fmt: skip
        grant_id = grant.id
    urls = [f.url for f in server.files("taxation", CONDITIONAL)]
    assert httpx.get(urls[0]).status_code == 200
    entry, _ = server.last()
    assert (entry.consumer, entry.purpose, entry.outcome) == ("taxation", "data_verification", "ok")

    server.clock.at = START + datetime.timedelta(minutes=1)
    with session(server.settings) as s:
        access.revoke(s, grant_id, reason="purpose fulfilled", at=server.clock.at)
    for url in urls:
        message = _error(httpx.get(url), 403, "PERMISSION_DENIED")
        assert "holds no active grant" in message
        entry, detail = server.last()
        assert (entry.outcome, entry.consumer, entry.table_name) == ("refused", "taxation",
                                                                     CONDITIONAL)  # fmt: skip
        assert detail["status"] == 403


def test_a_suspension_after_the_query_stops_file_urls_until_lifted(server: Server) -> None:
    url = server.url("market_regulation")
    assert httpx.get(url, headers={"Range": "bytes=0-3"}).status_code == 206
    server.clock.at = START + datetime.timedelta(minutes=2)
    with session(server.settings) as s:
        access.suspend(s, server.catalog, "market_regulation", by="big_data_bureau",
                       at=server.clock.at, reason="catalogue not updated in time")  # fmt: skip
    try:
        message = _error(httpx.get(url), 403, "PERMISSION_DENIED")
        assert "is suspended since" in message
        entry, _ = server.last()
        assert (entry.outcome, entry.consumer) == ("refused", "market_regulation")
    finally:
        with session(server.settings) as s:
            access.lift(s, "market_regulation", by="big_data_bureau", at=server.clock.at)
    assert httpx.get(url).status_code == 200  # the URL itself is still valid


# -- the access log (item 11) ---------------------------------------------------------------
def test_the_access_log_keeps_no_file_url_signature(server: Server) -> None:
    before = len(server.access_log.lines)
    files = server.files("civil_affairs")
    macs = [_mac(f.url) for f in files]
    for f in files:
        assert httpx.get(f.url).status_code == 200
    assert httpx.get(f"{files[0].url}.%C3%A9").status_code == 403
    read = delta_sharing.load_as_pandas(f"{server.profiles['civil_affairs']}#{UNCONDITIONAL}")
    assert len(read) == 600
    logged = "\n".join(server.access_log.lines[before:])
    downloads = re.findall(r"/delta-sharing/files/\S+", logged)
    assert len(downloads) >= len(files) + 2
    assert not any(mac in logged for mac in macs)
    assert not re.search(r"[0-9a-f]{64}", logged)


def test_the_journal_keeps_no_file_url_signature(server: Server) -> None:
    """The journal is kept three years and exported to departments: it names the file and the
    grant of a download, never the signature that would let someone else use the URL."""
    files = server.files("civil_affairs")
    macs = [_mac(f.url) for f in files]
    for f in files:
        assert httpx.get(f.url).status_code == 200
    assert httpx.get(f"{files[0].url}.%C3%A9").status_code == 403
    entries = server.journal("share.file")
    assert entries
    recorded = "\n".join(e.detail or "" for e in entries)
    assert "/delta-sharing/files/" in recorded
    assert not any(mac in recorded for mac in macs)
