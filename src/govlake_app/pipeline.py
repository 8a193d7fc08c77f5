"""The whole pipeline for one resource: bronze → validate → silver → publish.

The CLI runs this; the Airflow DAGs run the same stages as separate tasks. Every stage runs
under its resource's lease (`govlake.platform.leases`), so two runs of one resource never
work on it at once, whichever machines they run on.
"""

from __future__ import annotations

from types import ModuleType

from pyspark.sql import SparkSession

from govlake.core.catalog import Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.governance import changes
from govlake.platform import leases
from jobs import bronze, publish, silver, validate

STAGES = (bronze, validate, silver, publish)


def stage_name(stage: ModuleType) -> str:
    return stage.__name__.rsplit(".", 1)[-1]


def run_stage(
    stage: ModuleType,
    spark: SparkSession,
    *,
    resource: Resource,
    interval: Interval,
    settings: Settings,
    counts: StageCounts,
) -> StageCounts:
    """One stage of `resource`'s pipeline, holding the resource's lease while it runs. The
    first stage registers a new catalogue entry, and refuses one whose edit breaks its tables
    without a new resource version (`govlake.governance.changes`)."""
    if stage is bronze:
        changes.check_entry(settings, resource, at=interval.end_naive_utc)
    with leases.hold(settings, resource.qualified_name, stage=stage_name(stage)):
        stage.run(spark, resource=resource, interval=interval, settings=settings, counts=counts)
    return counts


def run(
    spark: SparkSession, *, resource: Resource, interval: Interval, settings: Settings
) -> StageCounts:
    counts = StageCounts(resource.qualified_name)
    for stage in STAGES:
        run_stage(stage, spark, resource=resource, interval=interval, settings=settings,
                  counts=counts)  # fmt: skip
    return counts
