"""OAuth client credentials (RFC 6749 §4.4) for the Delta Sharing profile format version 2
(`"type": "oauth_client_credentials"`): the platform issues a consumer department an OAuth
client, whose system exchanges the client's id and secret at the token endpoint for access
tokens that live minutes; the official client renews them itself.

- A client's id is public; its secret is a random 256-bit string shown once and stored only
  as an Argon2 hash (argon2-cffi), so a copy of the database gives no secret away.
- An access token is a `Token` row (its SHA-256 hash, `expires_at` minutes ahead) linked to
  its client: the sharing server authenticates it as it does an operator's bearer token.
- Revoking a client ends its live access tokens at once. A consumer may hold several clients
  (one per system that reads), each revoked on its own.
- Each token issued clears the client's tokens that expired more than `KEEP_EXPIRED` ago:
  a system renewing every few minutes would otherwise add hundreds of rows a day.

The token endpoint's HTTP side (client authentication, the form, the answers) is
`govlake.sharing.server.token_api`; refusals here carry their RFC 6749 §5.2 error code.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from govlake.core.errors import GovlakeError
from govlake.platform.database import OAuthClient, Token, overlong
from govlake.sharing.access import SharingError, consumer, hash_token, where_given

#: The one grant type the token endpoint serves.
CLIENT_CREDENTIALS = "client_credentials"
#: The one scope there is: reading through the sharing server what the department may read.
#: A request may omit it or ask for it; a token never gives more than the department's grants.
SCOPE = "sharing"
#: The token endpoint's path under the sharing endpoint (`<endpoint>/oauth/token`).
TOKEN_PATH = "/oauth/token"
#: How long a client's expired access tokens are kept (a refused call names their owner).
KEEP_EXPIRED = timedelta(days=1)

# Argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane): ~30 ms a check here, against
# ~190 ms and 64 MiB for the library's defaults. A secret is 256 random bits, which no
# hash cost makes easier or harder to guess; the hash only keeps a copied database from
# giving secrets away, while each check costs the token endpoint CPU and memory (anyone
# naming a client id may ask for one). Hashes made with other parameters are renewed when
# their client next authenticates.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class OAuthError(GovlakeError):
    """A token request refused, with its RFC 6749 §5.2 error code."""

    code: ClassVar[str] = "invalid_request"


class InvalidRequest(OAuthError):
    """A parameter missing, repeated or malformed; more than one way of client
    authentication."""


class InvalidClient(OAuthError):
    """Client authentication failed: unknown client, wrong secret, revoked client, or a
    department that no longer reads."""

    code = "invalid_client"


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"


class InvalidScope(OAuthError):
    code = "invalid_scope"


@dataclass(frozen=True)
class AccessToken:
    """An access token as the token endpoint answers it (RFC 6749 §5.1); the value exists
    only here, the database keeps its hash."""

    value: str
    expires_in: int  # seconds
    token_id: int
    client_id: str
    consumer: str

    def answer(self) -> dict[str, Any]:
        return {"access_token": self.value, "token_type": "bearer",
                "expires_in": self.expires_in, "scope": SCOPE}  # fmt: skip


# -- clients --------------------------------------------------------------------------------
def _fits(**values: str) -> None:
    if too_long := overlong(OAuthClient, values):
        raise SharingError("; ".join(too_long))


def _named(client_id: str | None) -> str | None:
    """`client_id` if some client could have it, else None (no database look-up: a NUL
    character would be a PostgreSQL error)."""
    if not client_id or "\x00" in client_id or overlong(OAuthClient, {"client_id": client_id}):
        return None
    return client_id


def issue_client(s: Session, code: str, *, by: str, at: datetime) -> tuple[OAuthClient, str]:
    """A new OAuth client of the consumer `code`, and its secret: returned once, never
    stored."""
    found = consumer(s, code)
    if not found.active:
        raise SharingError(f"consumer {code} is not active")
    _fits(issued_by=by)
    secret = secrets.token_urlsafe(32)
    # Letters, digits, '-' and '_' only, in id and secret: the same whether or not a client
    # form-encodes them before Basic authentication (RFC 6749 §2.3.1; the official client
    # does not).
    client = OAuthClient(client_id=f"govlake-{secrets.token_hex(12)}", consumer=code,
                         secret_hash=_hasher.hash(secret), issued_at=at, issued_by=by)  # fmt: skip
    s.add(client)
    s.flush()
    return client, secret


def revoke_client(s: Session, client_id: str, *, by: str, at: datetime) -> tuple[OAuthClient, int]:
    """Revoke a client and end its access tokens now; the client and how many of them were
    still live."""
    named = _named(client_id)
    client = s.get(OAuthClient, named) if named else None
    if client is None:
        raise SharingError(f"no OAuth client {client_id!r}")
    if client.revoked_at is not None:
        raise SharingError(f"OAuth client {client_id} was already revoked")
    _fits(revoked_by=by)
    client.revoked_at, client.revoked_by = at, by
    # Expired ones too: a server whose clock is behind this one's may still take them.
    tokens = list(s.scalars(select(Token).where(Token.client_id == client.client_id,
                                                Token.revoked_at.is_(None))))  # fmt: skip
    for token in tokens:
        token.revoked_at = at
    return client, sum(token.expires_at > at for token in tokens)


def clients(s: Session, *, consumer: str | None = None) -> list[OAuthClient]:
    """The OAuth clients issued (of one consumer), oldest first."""
    query = where_given(select(OAuthClient), OAuthClient, consumer=consumer)
    return list(s.scalars(query.order_by(OAuthClient.issued_at, OAuthClient.client_id)))


def client_owner(s: Session, client_id: str | None) -> str | None:
    """The consumer an OAuth client was issued to, revoked or not; None for no such client
    (a refused token request is journaled under its owner)."""
    named = _named(client_id)
    if named is None:
        return None
    return s.scalar(select(OAuthClient.consumer).where(OAuthClient.client_id == named))


# -- the token endpoint ---------------------------------------------------------------------
def check_request(grant_type: str | None, scope: str | None) -> None:
    """Refuse a token request whose grant type or scope the endpoint does not serve."""
    if not grant_type:
        raise InvalidRequest("grant_type is required")
    if grant_type != CLIENT_CREDENTIALS:
        raise UnsupportedGrantType(f"grant_type {grant_type[:100]!r} is not supported; "
                                   f"use {CLIENT_CREDENTIALS}")  # fmt: skip
    if scope is not None and set(scope.split()) - {SCOPE}:
        raise InvalidScope(f"the only scope is {SCOPE!r}")


def authenticate_client(s: Session, client_id: str, secret: str, *, at: datetime) -> OAuthClient:
    """The live client `client_id` whose secret is `secret`, or `InvalidClient` (the same
    message whatever failed, so that a caller learns nothing of the client)."""
    named = _named(client_id)
    client = s.get(OAuthClient, named) if named else None
    refused = InvalidClient("client authentication failed")
    if client is None:
        raise refused
    try:
        _hasher.verify(client.secret_hash, secret)
    except (VerificationError, InvalidHashError) as exc:
        raise refused from exc
    if client.revoked_at is not None and client.revoked_at <= at:
        raise refused
    owner = consumer(s, client.consumer)
    if not owner.active:
        raise refused
    if _hasher.check_needs_rehash(client.secret_hash):  # the hasher's parameters have grown
        client.secret_hash = _hasher.hash(secret)
    return client


def issue_access_token(s: Session, client: OAuthClient, *, at: datetime,
                       seconds: int) -> AccessToken:  # fmt: skip
    """A new access token of `client`, valid `seconds` from `at`."""
    value = secrets.token_urlsafe(32)
    expires = at + timedelta(seconds=seconds)
    token = Token(consumer=client.consumer, token_hash=hash_token(value), issued_at=at,
                  expires_at=expires, client_id=client.client_id)  # fmt: skip
    s.add(token)
    client.last_used_at = at
    s.execute(delete(Token).where(Token.client_id == client.client_id,
                                  Token.expires_at < at - KEEP_EXPIRED))  # fmt: skip
    s.flush()
    return AccessToken(value, seconds, token.id, client.client_id, client.consumer)


def exchange(s: Session, *, client_id: str, secret: str, grant_type: str | None,
             scope: str | None, at: datetime, seconds: int) -> AccessToken:  # fmt: skip
    """RFC 6749 §4.4: the client credentials of a token request for an access token."""
    check_request(grant_type, scope)
    client = authenticate_client(s, client_id, secret, at=at)
    return issue_access_token(s, client, at=at, seconds=seconds)


def profile(endpoint: str, client_id: str, secret: str) -> dict[str, Any]:
    """The Delta Sharing profile (format version 2) of a client, for the server at
    `endpoint`: the official client fetches and renews its access tokens itself."""
    return {"shareCredentialsVersion": 2, "type": "oauth_client_credentials",
            "endpoint": endpoint.rstrip("/"), "tokenEndpoint": token_endpoint(endpoint),
            "clientId": client_id, "clientSecret": secret}  # fmt: skip


def token_endpoint(endpoint: str) -> str:
    """The token endpoint of the sharing server at `endpoint`."""
    return endpoint.rstrip("/") + TOKEN_PATH
