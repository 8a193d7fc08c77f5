"""OAuth client credentials (Delta Sharing profile format version 2) on a running sharing
server: the official client reads a published table with a version-2 profile written by
`govlake share profile --oauth` and keeps reading across the expiry of its access tokens;
the token endpoint refuses bad calls as RFC 6749 §5.2 says, each journaled once; a revoked
client gets no token and its live tokens stop working; secrets are stored hashed; a database
made before the OAuth clients is upgraded."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import delta_sharing
import httpx
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, inspect, select
from support import Clock, consumers_with_tokens
from typer.testing import CliRunner

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.tables import TableSet
from govlake.platform import audit
from govlake.platform.database import (
    AuditEntry,
    Base,
    OAuthClient,
    Token,
    dispose_engines,
    engine,
    session,
)
from govlake.sharing import access, oauth
from govlake.sharing.server.app import create_app
from govlake_app.cli import app as cli_app
from govlake_app.cli.console import now
from govlake_app.cli.serve import running

#: Every test that uses `settings` runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.platform_state

START = datetime(2026, 11, 4, 9)  # the server's clock
USER = "market_regulation"
UNCONDITIONAL = "population.population.residents_unconditional"
IDS = [f"6101{n:06d}" for n in range(40)]


@dataclass
class Server:
    settings: Settings
    endpoint: str
    clock: Clock
    bearer: str  # the consumer's operator-issued token (profile version 1)

    @property
    def token_endpoint(self) -> str:
        return self.endpoint + "/oauth/token"

    def token(self, auth: tuple[str, str] | None, form: dict[str, str] | None = None,
              **kwargs: Any) -> httpx.Response:  # fmt: skip
        """A raw call to the token endpoint (the form by default: the client credentials
        grant)."""
        data = {"grant_type": "client_credentials"} if form is None else form
        return httpx.post(self.token_endpoint, auth=auth, data=data, **kwargs)

    def shares(self, token: str) -> httpx.Response:
        return httpx.get(f"{self.endpoint}/shares", headers={"Authorization": f"Bearer {token}"})

    def entries(self, action: str, after: int = 0) -> list[AuditEntry]:
        with session(self.settings) as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action,
                                                           AuditEntry.seq > after)
                                  .order_by(AuditEntry.seq)))  # fmt: skip

    def last_seq(self) -> int:
        with session(self.settings) as s:
            return int(s.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))) or 0)


def _detail(entry: AuditEntry) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(entry.detail)
    return found


@pytest.fixture
def platform(settings: Settings, catalog: Catalog) -> Settings:
    """The residents' unconditional table published (`IDS`), the consumer registered."""
    published = TableSet(catalog.get("population.residents"), settings.warehouse_location)
    rows = pa.table({"citizen_id": IDS, "name": [f"居民{i}" for i in IDS],
                     "birth_year": [1950 + n for n in range(len(IDS))]})  # fmt: skip
    write_deltalake(published.published("unconditional").location.uri, rows)
    return settings


@pytest.fixture
def serve(platform: Settings, catalog: Catalog) -> Callable[..., Any]:
    """Starts the server with access tokens living `seconds`, its clock at `at` (when the
    consumer got its bearer token)."""

    @contextmanager
    def started(seconds: int, at: datetime = START) -> Iterator[Server]:
        settings = platform.model_copy(update={"sharing_oauth_token_seconds": seconds})
        bearer = consumers_with_tokens(settings, catalog, [USER], at=at, days=30)[USER]
        clock = Clock(at)
        with running(settings, app=create_app(settings, catalog, clock=clock)) as endpoint:
            yield Server(settings, endpoint, clock, bearer)

    return started


def _cli(cli_runner: Callable[..., CliRunner], settings: Settings, *args: str) -> str:
    result = cli_runner(settings).invoke(cli_app, ["share", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _profile(path: Path) -> dict[str, Any]:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found: dict[str, Any] = json.loads(path.read_text())
    return found


def _shown(output: str) -> tuple[str, str]:
    """The client id and secret `govlake share client add` printed."""
    found = re.search(r"clientId:\s+(\S+)\s+clientSecret:\s+(\S+)", output)
    assert found is not None, output
    return found[1], found[2]


def _ids(profile: Path) -> list[str]:
    return sorted(delta_sharing.load_as_pandas(f"{profile}#{UNCONDITIONAL}")["citizen_id"])


def test_the_official_client_reads_with_a_v2_profile_across_token_expiry(
    serve: Callable[..., Any], cli_runner: Callable[..., CliRunner], tmp_path: Path
) -> None:
    """Access tokens live 60 s, under the client's 10-minute renewal threshold: the client
    asks for a new token before each call, so when the server's clock passes the expiry of
    the tokens issued so far, the same profile keeps reading with fresh ones."""
    with serve(60) as server:
        path = tmp_path / "oauth.share"
        output = _cli(cli_runner, server.settings, "profile", "--consumer", USER, "--oauth",
                      "--out", str(path), "--endpoint", server.endpoint)  # fmt: skip
        profile = _profile(path)
        assert profile["shareCredentialsVersion"] == 2
        assert profile["type"] == "oauth_client_credentials"
        assert profile["tokenEndpoint"] == server.token_endpoint
        assert profile["clientId"] in output and profile["clientSecret"] not in output
        assert _ids(path) == IDS

        credentials = (profile["clientId"], profile["clientSecret"])
        first = server.token(credentials)
        assert first.status_code == 200, first.text
        assert first.headers["cache-control"] == "no-store"
        body = first.json()
        assert (body["token_type"], body["expires_in"]) == ("bearer", 60)
        assert server.shares(body["access_token"]).status_code == 200

        server.clock.at = START + timedelta(seconds=61)
        expired = server.shares(body["access_token"])
        assert expired.status_code == 401 and "expired" in expired.json()["message"]
        assert _ids(path) == IDS  # the same profile: the client got itself a new token

        issued = server.entries("oauth.token")
        assert {(e.consumer, e.outcome) for e in issued} == {(USER, "ok")}
        assert len({_detail(e)["token_id"] for e in issued}) == len(issued)
        assert any(e.at > START + timedelta(seconds=60) for e in issued)
        assert all(_detail(e)["client_id"] == profile["clientId"] for e in issued)
        # A refused use of the expired token is journaled under its owner.
        (refused,) = [e for e in server.entries("share.list_shares") if e.outcome == "refused"]
        assert refused.consumer == USER

        # The bearer profile (version 1) keeps working next to it.
        assert server.shares(server.bearer).status_code == 200

        # A day on, a new token clears the client's tokens that expired a day before it.
        server.clock.at = START + timedelta(days=1, minutes=2)
        assert server.token(credentials).status_code == 200
        with session(server.settings) as s:
            kept = s.scalars(select(Token.issued_at).where(Token.client_id == credentials[0]))
            assert min(kept) > START


def test_with_the_default_lifetime_the_client_keeps_its_token(
    serve: Callable[..., Any], cli_runner: Callable[..., CliRunner], tmp_path: Path
) -> None:
    """900 s, the default, is above the client's renewal threshold (600 s): a reading
    system asks for one token every 5 minutes, not one per call."""
    with serve(Settings.model_fields["sharing_oauth_token_seconds"].default) as server:
        path = tmp_path / "client.share"
        _cli(cli_runner, server.settings, "client", "add", "--consumer", USER, "--out",
             str(path), "--endpoint", server.endpoint)  # fmt: skip
        assert _profile(path)["tokenEndpoint"] == server.token_endpoint
        assert _ids(path) == IDS
        assert _ids(path) == IDS
        (issued,) = server.entries("oauth.token")
        assert _detail(issued)["expires_in"] == 900


def _refusal(reply: httpx.Response, status: int, error: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"] == error, reply.text
    assert "Traceback" not in reply.text


def test_the_token_endpoint_refuses_bad_calls_and_journals_each(
    serve: Callable[..., Any], cli_runner: Callable[..., CliRunner]
) -> None:
    with serve(900) as server:
        output = _cli(cli_runner, server.settings, "client", "add", "--consumer", USER,
                      "--endpoint", server.endpoint)  # fmt: skip
        client_id, secret = _shown(output)
        assert server.token_endpoint in output
        grant = {"grant_type": "client_credentials"}
        calls: list[tuple[str, Callable[[], httpx.Response], int, str, str | None]] = [
            ("wrong secret", lambda: server.token((client_id, "not-the-secret")),
             401, "invalid_client", USER),
            ("unknown client", lambda: server.token(("govlake-nobody", secret)),
             401, "invalid_client", None),
            ("no client authentication", lambda: server.token(None), 401, "invalid_client", None),
            ("Basic credentials that are not base64",
             lambda: server.token(None, headers={"Authorization": "Basic %%%"}),
             401, "invalid_client", None),
            ("Basic credentials that are not ASCII",
             lambda: server.token(None, headers={"Authorization": "Basic é".encode("latin-1")}),
             401, "invalid_client", None),
            ("a NUL in the client id", lambda: server.token(
                None, grant | {"client_id": "a\x00b", "client_secret": secret}),
             401, "invalid_client", None),
            ("another grant type", lambda: server.token(
                (client_id, secret), {"grant_type": "password"}),
             400, "unsupported_grant_type", USER),
            ("no grant type", lambda: server.token((client_id, secret), {"scope": "sharing"}),
             400, "invalid_request", USER),
            ("an unknown scope", lambda: server.token(
                (client_id, secret), grant | {"scope": "admin"}),
             400, "invalid_scope", USER),
            ("two ways of client authentication", lambda: server.token(
                (client_id, secret), grant | {"client_secret": secret}),
             400, "invalid_request", USER),
            ("a parameter twice", lambda: httpx.post(
                server.token_endpoint, auth=(client_id, secret),
                content=b"grant_type=client_credentials&grant_type=client_credentials",
                headers={"Content-Type": "application/x-www-form-urlencoded"}),
             400, "invalid_request", USER),
            ("JSON instead of a form", lambda: httpx.post(
                server.token_endpoint, auth=(client_id, secret), json=grant),
             400, "invalid_request", USER),
            ("a form that is not UTF-8", lambda: httpx.post(
                server.token_endpoint, auth=(client_id, secret), content=b"grant_type=%ff%fe",
                headers={"Content-Type": "application/x-www-form-urlencoded"}),
             400, "invalid_request", USER),
            ("an oversized form", lambda: server.token(
                (client_id, secret), grant | {"padding": "x" * 5000}),
             413, "invalid_request", USER),
        ]  # fmt: skip
        for what, call, status, error, consumer in calls:
            before = server.last_seq()
            reply = call()
            _refusal(reply, status, error)
            if status == 401:
                assert reply.headers["www-authenticate"].startswith("Basic "), what
            (entry,) = server.entries("oauth.token", after=before)
            outcome = "refused" if status == 401 else "error"
            assert (entry.consumer, entry.outcome) == (consumer, outcome), what
            assert _detail(entry)["error"] == error, what
            assert server.last_seq() == entry.seq, what  # one entry per call

        # The credentials in the form body, as RFC 6749 §2.3.1 allows, with the one scope.
        before = server.last_seq()
        reply = server.token(None, grant | {"client_id": client_id, "client_secret": secret,
                                            "scope": oauth.SCOPE})  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert server.shares(reply.json()["access_token"]).status_code == 200
        (issued,) = server.entries("oauth.token", after=before)
        assert (issued.consumer, issued.outcome) == (USER, "ok")
        with session(server.settings) as s:
            assert audit.verify(s, server.settings).ok


def test_a_revoked_client_gets_no_token_and_its_tokens_stop_working(
    serve: Callable[..., Any], cli_runner: Callable[..., CliRunner]
) -> None:
    # The server's clock follows the commands' (the time they issue and revoke at).
    with serve(900, at=now()) as server:
        client_id, secret = _shown(
            _cli(cli_runner, server.settings, "client", "add", "--consumer", USER)
        )
        tokens = [server.token((client_id, secret)).json()["access_token"] for _ in range(2)]
        assert [server.shares(t).status_code for t in tokens] == [200, 200]

        # Neither the secret nor an access token is stored anywhere in plain text.
        with session(server.settings) as s:
            stored = s.get(OAuthClient, client_id)
            assert stored is not None and stored.secret_hash.startswith("$argon2id$")
            dump = " ".join(str(row) for table in Base.metadata.sorted_tables
                            for row in s.execute(select(table)))  # fmt: skip
        assert client_id in dump
        assert secret not in dump and not any(t in dump for t in tokens)

        output = _cli(cli_runner, server.settings, "client", "revoke", client_id, "--by", "auditor")
        assert "2 live access token(s) ended" in output
        (revoked,) = server.entries("oauth.client_revoke")
        assert revoked.consumer == USER and _detail(revoked)["tokens_ended"] == 2
        server.clock.at = now()
        assert [server.shares(t).status_code for t in tokens] == [401, 401]
        before = server.last_seq()
        _refusal(server.token((client_id, secret)), 401, "invalid_client")
        (refused,) = server.entries("oauth.token", after=before)
        assert (refused.consumer, refused.outcome) == (USER, "refused")
        # The department's bearer token is not the client's: it still reads.
        assert server.shares(server.bearer).status_code == 200

        listed = _cli(cli_runner, server.settings, "client", "list", "--consumer", USER)
        (line,) = [line for line in listed.splitlines() if client_id in line]
        assert "by auditor" in line and secret not in listed
        (issued,) = server.entries("oauth.client_issue")
        assert (issued.consumer, _detail(issued)["client_id"]) == (USER, client_id)


#: `consumer_tokens` as databases made before the OAuth clients have it.
_OLD_TOKENS = Table(
    "consumer_tokens", MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consumer", String(64), index=True),
    Column("token_hash", String(64), unique=True),
    Column("issued_at", DateTime),
    Column("expires_at", DateTime),
    Column("revoked_at", DateTime, nullable=True),
)  # fmt: skip


def test_a_database_made_before_the_oauth_clients_is_upgraded(
    settings: Settings, catalog: Catalog
) -> None:
    made = engine(settings.database_url)
    with made.begin() as connection:
        Base.metadata.tables["consumer_tokens"].drop(connection)
    _OLD_TOKENS.create(made)
    with session(settings) as s:
        access.register_consumer(s, catalog, USER, email=None, at=START)
    bearer = "a token issued before the upgrade"
    with made.begin() as connection:
        connection.execute(_OLD_TOKENS.insert().values(
            consumer=USER, token_hash=access.hash_token(bearer), issued_at=START,
            expires_at=START + timedelta(days=30)))  # fmt: skip
    dispose_engines()  # as a new process of the new version finds it

    with session(settings) as s:
        assert access.authenticate(s, bearer, at=START).code == USER
    found = inspect(engine(settings.database_url))
    assert "client_id" in {c["name"] for c in found.get_columns("consumer_tokens")}
    assert any(i["column_names"] == ["client_id"] for i in found.get_indexes("consumer_tokens"))
    with session(settings) as s:
        client, secret = oauth.issue_client(s, USER, by="operator", at=START)
        token = oauth.exchange(s, client_id=client.client_id, secret=secret,
                               grant_type="client_credentials", scope=None, at=START,
                               seconds=900)  # fmt: skip
    with session(settings) as s:
        assert access.authenticate(s, token.value, at=START).code == USER
        row = s.scalar(select(Token).where(Token.id == token.token_id))
        assert row is not None and row.client_id == client.client_id
