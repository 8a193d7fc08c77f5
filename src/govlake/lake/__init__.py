"""The lake: storage, the engine, table registration, the landing zone, the Delta log reader
and schema evolution. Imports only `govlake.core`."""

from __future__ import annotations
