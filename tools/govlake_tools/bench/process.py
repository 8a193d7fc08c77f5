"""What every benchmark task process shares: a lakehouse of its own, the imports done before
any timing starts, the pipeline's stages run and timed one by one, and the time spent in
Great Expectations."""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from govlake.core.catalog import Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings


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
        # The load runs call as one department, from one address, far above the limits a
        # polling department is held to: the server is measured without them.
        sharing_rate_per_second=0,
        sharing_anonymous_rate_per_second=0,
    )


def warm_up() -> None:
    """Import what every stage needs, so no one-off import lands in a stage's time (Great
    Expectations alone takes ~10 s to import)."""
    import great_expectations
    import great_expectations.expectations  # noqa: F401

    import expectations.custom  # noqa: F401
    from govlake.core import reference

    reference.division_codes()


def run_stages(
    spark: SparkSession,
    *,
    resource: Resource,
    interval: Interval,
    settings: Settings,
    counts: StageCounts,
) -> dict[str, float]:
    """Every step of the pipeline (`govlake_app.pipeline.STAGES`, the announcement included),
    each through `pipeline.run_stage` as the CLI runs it; seconds per step."""
    from govlake_app import pipeline

    seconds: dict[str, float] = {}
    for stage in pipeline.STAGES:
        started = time.perf_counter()
        pipeline.run_stage(stage, spark, resource=resource, interval=interval,
                           settings=settings, counts=counts)  # fmt: skip
        seconds[pipeline.stage_name(stage)] = time.perf_counter() - started
    return seconds


@dataclass
class GxTime:
    """Seconds spent in Great Expectations while a block runs, and the checkpoints it ran
    (one per suite run)."""

    seconds: float = 0.0
    checkpoints: int = 0
    _depth: int = field(default=0, repr=False)


def _timed(function: Callable[..., Any], spent: GxTime, *, checkpoint: bool) -> Any:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        spent.checkpoints += checkpoint
        if spent._depth:  # inside a call already timed
            return function(*args, **kwargs)
        spent._depth += 1
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent._depth -= 1
            spent.seconds += time.perf_counter() - started

    return timed


@contextmanager
def timing_gx() -> Iterator[GxTime]:
    """Time every call into Great Expectations while the block runs: the project's GX
    module (`expectations.runner`: each of its public functions, wherever a module imported
    it by name) and, whoever calls it, GX's own `Checkpoint.run`. Nested calls count once."""
    import great_expectations as gx

    from expectations import runner

    spent = GxTime()
    functions = {
        name: value
        for name, value in vars(runner).items()
        if inspect.isfunction(value) and not name.startswith("_")
        and value.__module__ == runner.__name__
    }  # fmt: skip
    wrapped = {id(f): _timed(f, spent, checkpoint=False) for f in functions.values()}
    patched: list[tuple[Any, str, Any]] = []
    for module in list(sys.modules.values()):
        if module is None or not module.__name__.startswith(("jobs", "expectations", "govlake")):
            continue
        for name, value in list(vars(module).items()):
            if inspect.isfunction(value) and id(value) in wrapped:
                patched.append((module, name, value))
                setattr(module, name, wrapped[id(value)])
    run = gx.Checkpoint.run
    patched.append((gx.Checkpoint, "run", run))
    gx.Checkpoint.run = _timed(run, spent, checkpoint=True)  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
