"""The one base of govlake's errors.

Every error govlake raises on purpose derives from `GovlakeError`; its subclasses say what
failed (a catalogue rule, a refused extract, a refused access, ...) and know nothing of HTTP
or exit codes: the sharing server's one mapping (`govlake.sharing.server.errors`) and the
CLI's error handling (`govlake_app.cli.console`) decide how each is answered. Subclasses
also keep the builtin class they always had (`ValueError`, `RuntimeError`, ...), so code
that caught those still does.
"""

from __future__ import annotations


class GovlakeError(Exception):
    """Something govlake refused or could not do, with a message that names what and why."""
