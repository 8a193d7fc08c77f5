"""The floor of the sharing server's HTTP stack: the same framework and server (FastAPI +
uvicorn) answering the metadata and query paths with fixed bodies (what the real server
answered), no work behind them. An application factory, so that uvicorn can start it in
several worker processes: the bodies come from the JSON file `BODIES_VARIABLE` names."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI, Response

#: The environment variable naming the JSON file of the bodies ({"metadata", "query"}).
BODIES_VARIABLE = "GOVLAKE_BENCH_FLOOR_BODIES"
TABLE = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{name}"
NDJSON = "application/x-ndjson; charset=utf-8"


def create() -> FastAPI:
    bodies = json.loads(Path(os.environ[BODIES_VARIABLE]).read_text())
    metadata, query = bodies["metadata"].encode(), bodies["query"].encode()
    app = FastAPI()

    @app.get(TABLE + "/metadata")
    def _metadata(share: str, schema: str, name: str) -> Response:
        return Response(metadata, media_type=NDJSON)

    @app.post(TABLE + "/query")
    def _query(share: str, schema: str, name: str) -> Response:
        return Response(query, media_type=NDJSON)

    return app
