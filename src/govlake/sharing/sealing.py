"""Webhook secrets sealed at rest: the platform signs each delivery with the subscription's
secret, so it must get the secret back (a hash would not do), and keeps it encrypted with
Fernet (AES-128-CBC + HMAC-SHA256) under a platform key instead of in plain text.

Keys come from `GOVLAKE_SECRETS_KEY` (comma-separated, newest first) or else a key file, one
key a line, newest first (`GOVLAKE_SECRETS_KEY_FILE`; by default next to a SQLite database,
created with mode 0600 on first use, so that a fresh checkout runs without configuration).
The newest key seals; every key opens. `rotate` seals every stored secret again under the
newest key, after which the older keys may go. A stored value is `fernet:<token>`; a value
without the prefix is a secret stored in plain text by an earlier version, which `seal_plain`
seals in place.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from govlake.core.errors import GovlakeError
from govlake.core.settings import Settings
from govlake.platform import audit
from govlake.platform.database import Subscription, session

log = logging.getLogger(__name__)

PREFIX = "fernet:"


class SealingError(GovlakeError, RuntimeError):
    """No usable key: none configured for a server database, a malformed key, or a stored
    secret that no configured key opens. An operator's problem, never a consumer's."""


_lock = threading.Lock()
#: A key for an in-memory SQLite database: the data dies with the process, so may the key.
_memory_key = Fernet.generate_key()


def key_file(settings: Settings) -> Path | None:
    """The key file in use: the configured one, or `<stem>-secrets.key` next to a SQLite
    database file; None for a server database without one, and for an in-memory database."""
    if settings.secrets_key_file is not None:
        return settings.secrets_key_file
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    database = Path(str(url.database))
    return database.with_name(f"{database.stem}-secrets.key")


def _parse(text: str, where: str) -> list[bytes]:
    keys = [line.strip() for line in text.replace(",", "\n").splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError as exc:
            raise SealingError(
                f"key {number} of {where} is not a Fernet key (32 url-safe base64 bytes): {exc}"
            ) from exc
    if not keys:
        raise SealingError(f"{where} holds no key")
    return [key.encode("ascii") for key in keys]


def _create(path: Path) -> None:
    """Write a fresh key file, readable by its owner only; another process that created it
    first wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(Fernet.generate_key().decode("ascii") + "\n")
    log.warning("created the webhook secrets key file %s (keep it with the database backups)",
                path)  # fmt: skip


def keys(settings: Settings, *, create: bool = True) -> list[bytes]:
    """The Fernet keys, newest first. Read afresh on each call: a rotation is seen at once."""
    if settings.secrets_key is not None:
        return _parse(settings.secrets_key.get_secret_value(), "GOVLAKE_SECRETS_KEY")
    path = key_file(settings)
    if path is None:
        if make_url(settings.database_url).get_backend_name() == "sqlite":
            return [_memory_key]
        raise SealingError(
            "no key seals the webhook secrets: set GOVLAKE_SECRETS_KEY (Fernet keys, newest "
            "first) or GOVLAKE_SECRETS_KEY_FILE, the same on every host of the platform"
        )
    with _lock:
        if not path.exists() and create:
            _create(path)
        try:
            text = path.read_text(encoding="ascii")
        except OSError as exc:
            raise SealingError(f"cannot read the key file {path}: {exc}") from exc
    if path.stat().st_mode & 0o077:
        log.warning("the key file %s is readable by others than its owner (chmod 600)", path)
    return _parse(text, str(path))


def _fernet(settings: Settings) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys(settings)])


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def seal(settings: Settings, secret: str) -> str:
    """The stored form of `secret`, sealed under the newest key."""
    return PREFIX + _fernet(settings).encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(settings: Settings, stored: str) -> str:
    """The secret of a stored value (a plain-text value of an earlier version as it is)."""
    if not is_sealed(stored):
        return stored
    try:
        return _fernet(settings).decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SealingError(
            "a stored webhook secret opens with none of the configured keys (a key removed "
            "before `govlake share subscription rotate-key` sealed everything again?)"
        ) from exc


def seal_plain(s: Session, settings: Settings) -> int:
    """Seal the secrets an earlier version stored in plain text; how many. Without a usable
    key they stay as they are (still usable) and a warning says why."""
    plain = s.scalars(
        select(Subscription)
        .where(Subscription.webhook_secret.is_not(None))
        .where(Subscription.webhook_secret.not_like(f"{PREFIX}%"))
    ).all()
    if not plain:
        return 0
    try:
        for sub in plain:
            assert sub.webhook_secret is not None
            sub.webhook_secret = seal(settings, sub.webhook_secret)
    except SealingError as exc:
        log.warning("%d webhook secret(s) stay in plain text: %s", len(plain), exc)
        return 0
    return len(plain)


@dataclass(frozen=True)
class Rotation:
    resealed: int  # sealed secrets now under the newest key
    plain: int  # plain-text secrets sealed
    keys: int  # keys configured
    retired: int  # keys dropped from the key file


def rotate(settings: Settings, *, by: str, at: datetime, retire: bool = False) -> Rotation:
    """Seal every stored webhook secret again under the newest key (and seal plain-text
    ones), in one transaction, journaled (`subscription.rotate_key`). With `retire`, the key
    file then keeps the newest key only; keys from `GOVLAKE_SECRETS_KEY` are the operator's
    to remove."""
    configured = keys(settings)
    fernet = MultiFernet([Fernet(key) for key in configured])
    newest = Fernet(configured[0])
    resealed = plain = 0
    with session(settings) as s:
        stored = s.scalars(
            select(Subscription)
            .where(Subscription.webhook_secret.is_not(None))
            .order_by(Subscription.id)
            .with_for_update()
        ).all()
        for sub in stored:
            value = sub.webhook_secret
            assert value is not None
            if is_sealed(value):
                try:
                    token = fernet.rotate(value[len(PREFIX) :].encode("ascii"))
                except InvalidToken as exc:
                    raise SealingError(
                        f"the webhook secret of subscription {sub.id} opens with none of the "
                        "configured keys: nothing was changed"
                    ) from exc
                resealed += 1
            else:
                token = newest.encrypt(value.encode("utf-8"))
                plain += 1
            sub.webhook_secret = PREFIX + token.decode("ascii")
        audit.record(
            s,
            at=at,
            actor=by,
            action="subscription.rotate_key",
            detail={"resealed": resealed, "plain": plain, "keys": len(configured),
                    "retire": retire},
        )  # fmt: skip
    retired = 0
    if retire and len(configured) > 1:
        path = key_file(settings)
        if settings.secrets_key is not None or path is None:
            raise SealingError(
                "the keys come from GOVLAKE_SECRETS_KEY: every secret is sealed under the "
                "newest key now; remove the older keys from the variable yourself"
            )
        _rewrite(path, configured[:1])
        retired = len(configured) - 1
    return Rotation(resealed, plain, len(configured), retired)


def add_key(settings: Settings) -> Path:
    """Put a fresh key first in the key file (the older ones still open); the file's path."""
    path = key_file(settings)
    if settings.secrets_key is not None or path is None:
        raise SealingError(
            "the keys come from GOVLAKE_SECRETS_KEY: put a new key first in it yourself "
            "(python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'), then rotate"
        )
    current = keys(settings)
    _rewrite(path, [Fernet.generate_key(), *current])
    return path


def _rewrite(path: Path, new: list[bytes]) -> None:
    """Replace the key file atomically, mode 0600."""
    with _lock:
        temporary = path.with_name(path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(key.decode("ascii") + "\n" for key in new))
        os.replace(temporary, path)
