"""Values the sharing server hands out and takes back unchanged (file URLs, query page and
refresh tokens): JSON in base64url under an HMAC-SHA256 with the server's signing key, so
that what comes back is read only if this server issued it.

A `purpose` goes into the MAC, so that a value issued for one use is never taken for another
(a file URL's grant is signed without one, as it always was).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

_MAC = re.compile(r"[0-9a-f]{64}")


class NotIssued(ValueError):
    """A value this server did not issue, or whose content it cannot read."""


def mac(key: bytes, body: str, *, purpose: str = "") -> str:
    """The MAC of `body` for `purpose`."""
    signed = f"{purpose}:{body}" if purpose else body
    return hmac.new(key, signed.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, payload: Mapping[str, Any], *, purpose: str = "") -> tuple[str, str]:
    """`payload` as base64url JSON (keys sorted), and its MAC."""
    body = base64.urlsafe_b64encode(json.dumps(dict(payload), sort_keys=True).encode()).decode()
    return body, mac(key, body, purpose=purpose)


def opened(key: bytes, body: str, given: str, *, purpose: str = "") -> Any:
    """The JSON `body` holds, if `given` is its MAC for `purpose`; `NotIssued` otherwise, and
    for a body that is not base64url JSON (both come from outside: any text at all)."""
    if not body.isascii() or not _MAC.fullmatch(given):
        raise NotIssued("not signed by this server")
    if not hmac.compare_digest(given.encode(), mac(key, body, purpose=purpose).encode()):
        raise NotIssued("not signed by this server")
    try:
        return json.loads(base64.urlsafe_b64decode(body.encode()))
    # JSON, UTF-8 and base64 errors are ValueErrors; deeply nested JSON is a RecursionError.
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise NotIssued("not readable") from exc
