"""The Delta Sharing server, split as the reference server is: `routes` (short handlers that
delegate), `tables` (table lookup, versions and paging), `files` (URL signing and serving),
`errors` (the one place domain errors become HTTP answers), `gate` (one journal entry per call)."""

from __future__ import annotations
