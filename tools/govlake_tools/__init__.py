"""Development tooling, never part of a runtime install: the extract generator, throw-away
PostgreSQL and SeaweedFS servers, the demos and the benchmark."""

from __future__ import annotations
