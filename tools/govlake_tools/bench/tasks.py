"""The benchmark's measured steps, each run in a process of its own (`govlake_tools.bench.worker`):
arguments and results are plain JSON values."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from govlake.core.catalog import Catalog, Resource
from govlake.core.settings import Settings
from govlake_tools.bench import cycle
from govlake_tools.bench.process import run_stages, settings_for, timing_gx, warm_up
from govlake_tools.bench.results import peak_rss_bytes, rss_bytes

RESOURCE = "population.residents"


def _resource(settings: Settings) -> tuple[Catalog, Resource]:
    catalog = Catalog.load(settings.catalog_dir)
    return catalog, catalog.get(RESOURCE)


def ingest(*, run_dir: str, catalog_dir: str, end: str) -> dict[str, Any]:
    """landing → bronze → validate → silver → publish → announce, each step timed, with the
    time spent in Great Expectations."""
    from govlake.core.runs import Interval, StageCounts
    from govlake.lake.engine import get_spark

    settings = settings_for(run_dir, catalog_dir)
    catalog, resource = _resource(settings)
    warm_up()
    spark = get_spark(settings, catalog, fresh=True)
    interval = Interval.ending(datetime.fromisoformat(end))
    counts = StageCounts(resource.qualified_name)
    rss_before = rss_bytes()
    with timing_gx() as gx:
        started = time.perf_counter()
        stages = run_stages(spark, resource=resource, interval=interval, settings=settings,
                            counts=counts)  # fmt: skip
        seconds = time.perf_counter() - started
    spark.stop()
    return {
        "seconds": seconds,
        "ingest_peak_rss_bytes": peak_rss_bytes(),
        "stages": stages,
        "gx_seconds": gx.seconds,
        "gx_suites": gx.checkpoints,
        "rss_before_bytes": rss_before,
        "rows_read": counts.rows_read,
        "rows_quarantined": counts.rows_quarantined,
        "rows_merged": counts.rows_merged,
        "rows_published": counts.rows_published,
        "held": counts.held,
        "quality": counts.quality,
    }


def peer(*, extracts: dict[str, str], warehouse: str, catalog_dir: str, end: str) -> dict[str, Any]:
    """The polars + delta-rs peer on the same extracts."""
    from govlake_tools.bench import peer as peer_pipeline

    resource = Catalog.load(Path(catalog_dir)).get(RESOURCE)
    started = time.perf_counter()
    written = peer_pipeline.run(
        resource,
        {p: Path(f) for p, f in extracts.items()},
        Path(warehouse),
        updated_at=datetime.fromisoformat(end),
    )
    return {"seconds": time.perf_counter() - started, "written": written}


def serve(*, run_dir: str, catalog_dir: str, port: int) -> dict[str, Any]:
    """The project's Delta Sharing server, until terminated."""
    import uvicorn

    from govlake.sharing.server.gate import uvicorn_options
    from govlake_app.cli.serve import app_for

    app = app_for(settings_for(run_dir, catalog_dir))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options(app))
    return {}


def serve_floor(*, port: int, workers: int, metadata: str, query: str) -> dict[str, Any]:
    """The floor of the HTTP stack (`govlake_tools.bench.floor`) with `workers` uvicorn
    workers, until terminated."""
    import json
    import os
    import tempfile

    import uvicorn

    from govlake_tools.bench import floor

    with tempfile.TemporaryDirectory() as scratch:
        bodies = Path(scratch) / "bodies.json"
        bodies.write_text(json.dumps({"metadata": metadata, "query": query}))
        os.environ[floor.BODIES_VARIABLE] = str(bodies)
        uvicorn.run(f"{floor.__name__}:create", factory=True, host="127.0.0.1", port=port,
                    workers=workers, log_level="warning")  # fmt: skip
    return {}


def load(**arguments: Any) -> dict[str, Any]:
    """A load generator's share of the clients (`workloads.load`): its load and latencies."""
    from dataclasses import asdict

    from govlake_tools.bench import workloads

    go, ready = Path(arguments.pop("go")), Path(arguments.pop("ready"))
    done, latencies = workloads.load(**arguments, go=go, ready=ready)
    return asdict(done) | {"latencies": latencies}


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest,
    "peer": peer,
    "seed": cycle.seed,
    "cycle": cycle.cycle,
    "serve": serve,
    "serve_floor": serve_floor,
    "load": load,
}
