"""The benchmark's measured steps, each run in a process of its own (`govlake_tools.bench.worker`):
arguments and results are plain JSON values."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from govlake.core.catalog import Catalog, Resource
from govlake.core.settings import Settings
from govlake_tools.bench.results import peak_rss_bytes, rss_bytes

RESOURCE = "population.residents"


def settings_for(run_dir: str | Path, catalog_dir: str | Path) -> Settings:
    """A lakehouse, landing zone and platform database of one benchmark run's own."""
    root = Path(run_dir)
    return Settings(
        warehouse=str(root / "lakehouse"),
        landing=str(root / "landing"),
        database_url=f"sqlite:///{root / 'govlake.db'}",
        catalog_dir=Path(catalog_dir),
        reports_dir=root / "reports",
        spark_remote=None,
    )


def _resource(settings: Settings) -> tuple[Catalog, Resource]:
    catalog = Catalog.load(settings.catalog_dir)
    return catalog, catalog.get(RESOURCE)


@contextmanager
def _timing_suites() -> Iterator[list[float]]:
    """Seconds spent in Great Expectations suite runs while the block runs (every suite of
    the pipeline goes through `jobs.quality.run_suite`)."""
    from jobs import quality

    spent: list[float] = []
    original = quality.run_suite

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    quality.run_suite = timed
    try:
        yield spent
    finally:
        quality.run_suite = original


def _warm_up() -> None:
    """Import what every stage needs, so no one-off import lands in a stage's time (Great
    Expectations alone takes ~10 s to import)."""
    import great_expectations
    import great_expectations.expectations  # noqa: F401

    import expectations.custom  # noqa: F401
    from govlake.core import reference

    reference.division_codes()


def ingest(
    *,
    run_dir: str,
    catalog_dir: str,
    end: str,
    prepare: list[str] | None = None,
    prepare_end: str | None = None,
) -> dict[str, Any]:
    """landing → bronze → validate → silver → publish, each stage timed. Then, not measured,
    the change extracts of the `prepare` runs through bronze and validation (this process has
    Great Expectations imported already)."""
    from govlake.core.runs import Interval, StageCounts
    from govlake.lake.engine import get_spark
    from govlake_app import pipeline as pipeline

    settings = settings_for(run_dir, catalog_dir)
    catalog, resource = _resource(settings)
    _warm_up()
    spark = get_spark(settings, catalog, fresh=True)
    interval = Interval.ending(datetime.fromisoformat(end))
    counts = StageCounts(resource.qualified_name)
    stages: dict[str, float] = {}
    rss_before = rss_bytes()
    with _timing_suites() as suites:
        started = time.perf_counter()
        for stage in pipeline.STAGES:
            begun = time.perf_counter()
            stage.run(spark, resource=resource, interval=interval, settings=settings, counts=counts)
            stages[stage.__name__.rsplit(".", 1)[-1]] = time.perf_counter() - begun
        seconds = time.perf_counter() - started
    spark.stop()
    peak = peak_rss_bytes()
    prepared = prepare_changes(
        run_dirs=prepare or [], catalog_dir=catalog_dir, end=prepare_end or end
    )
    return {
        "seconds": seconds,
        "ingest_peak_rss_bytes": peak,
        "prepared": prepared,
        "stages": stages,
        "gx_seconds": sum(suites),
        "gx_suites": len(suites),
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


def prepare_changes(*, run_dirs: list[str], catalog_dir: str, end: str) -> dict[str, Any]:
    """Bring each run's change extract through bronze and validation (not measured), so that
    it waits for silver."""
    from govlake.core.runs import Interval, StageCounts
    from govlake.lake.engine import get_spark
    from jobs import bronze, validate

    done: dict[str, Any] = {}
    for run_dir in run_dirs:
        settings = settings_for(run_dir, catalog_dir)
        catalog, resource = _resource(settings)
        spark = get_spark(settings, catalog, fresh=True)
        interval = Interval.ending(datetime.fromisoformat(end))
        counts = StageCounts(resource.qualified_name)
        started = time.perf_counter()
        for stage in (bronze, validate):
            stage.run(spark, resource=resource, interval=interval, settings=settings, counts=counts)
        done[run_dir] = {
            "seconds": time.perf_counter() - started,
            "rows_read": counts.rows_read,
            "rows_quarantined": counts.rows_quarantined,
            "held": counts.held,
        }
        spark.stop()
    return done


def merge(*, run_dir: str, catalog_dir: str, end: str) -> dict[str, Any]:
    """The silver stage on a waiting change extract: MERGE into the existing silver table."""
    from govlake.core.runs import Interval, StageCounts
    from govlake.lake.engine import get_spark
    from govlake.lake.statements import history
    from govlake.lake.tables import TableSet
    from jobs import silver

    settings = settings_for(run_dir, catalog_dir)
    catalog, resource = _resource(settings)
    spark = get_spark(settings, catalog, fresh=True)
    interval = Interval.ending(datetime.fromisoformat(end))
    counts = StageCounts(resource.qualified_name)
    rss_before = rss_bytes()
    started = time.perf_counter()
    silver.run(spark, resource=resource, interval=interval, settings=settings, counts=counts)
    seconds = time.perf_counter() - started
    spark.stop()
    commit = next(
        (
            c
            for c in history(TableSet(resource, settings.warehouse_location).silver, limit=5)
            if c.get("operation") == "MERGE"
        ),
        {},
    )
    return {
        "seconds": seconds,
        "rows_merged": counts.rows_merged,
        "rss_before_bytes": rss_before,
        "merge_metrics": commit.get("operationMetrics") or {},
    }


def serve(*, run_dir: str, catalog_dir: str, port: int) -> dict[str, Any]:
    """The project's Delta Sharing server, until terminated."""
    import uvicorn

    from govlake_app.cli.serve import app_for

    settings = settings_for(run_dir, catalog_dir)
    uvicorn.run(app_for(settings), host="127.0.0.1", port=port, log_level="warning")
    return {}


def serve_floor(*, port: int, metadata: str, query: str) -> dict[str, Any]:
    """The floor of the HTTP stack: the same framework and server answering the metadata and
    query paths with fixed bodies (what the real server answered), no work behind them."""
    import uvicorn
    from fastapi import FastAPI, Response

    app = FastAPI()
    table = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{name}"
    ndjson = "application/x-ndjson; charset=utf-8"

    @app.get(table + "/metadata")
    def _metadata(share: str, schema: str, name: str) -> Response:
        return Response(metadata.encode(), media_type=ndjson)

    @app.post(table + "/query")
    def _query(share: str, schema: str, name: str) -> Response:
        return Response(query.encode(), media_type=ndjson)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return {}


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest,
    "peer": peer,
    "merge": merge,
    "serve": serve,
    "serve_floor": serve_floor,
}
