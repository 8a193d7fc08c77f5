"""The whole pipeline for one resource: bronze → validate → silver → publish → announce.

The four stages (`jobs`) write the lake; the step after them, `announce`
(`govlake.sharing.published`), journals what was published, links the verification fixes it
carries and notifies the subscribers. The CLI runs them in order; the Airflow DAGs run the
same steps as separate tasks. Every step runs under its resource's lease
(`govlake.platform.leases`), so two runs of one resource never work on it at once, whichever
machines they run on.
"""

from __future__ import annotations

from typing import Protocol

from pyspark.sql import SparkSession

from govlake.core.catalog import Resource
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings
from govlake.governance import changes
from govlake.platform import leases
from govlake.sharing import published
from jobs import bronze, publish, silver, validate


class Stage(Protocol):
    """A step of the pipeline: a `jobs` stage module, or `ANNOUNCE`."""

    __name__: str

    def run(self, spark: SparkSession, *, resource: Resource, interval: Interval,
            settings: Settings, counts: StageCounts | None = None) -> StageCounts: ...  # fmt: skip


class _Announce:
    """The step after `publish`, run like a stage (it needs no engine)."""

    __name__ = "announce"

    @staticmethod
    def run(spark: SparkSession, *, resource: Resource, interval: Interval, settings: Settings,
            counts: StageCounts | None = None) -> StageCounts:  # fmt: skip
        published.announce(settings, resource=resource, interval=interval)
        return counts or StageCounts(resource.qualified_name)


ANNOUNCE: Stage = _Announce()
STAGES: tuple[Stage, ...] = (bronze, validate, silver, publish, ANNOUNCE)


def stage_name(stage: Stage) -> str:
    return stage.__name__.rsplit(".", 1)[-1]


def run_stage(
    stage: Stage,
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


def announce(
    *, resource: Resource, interval: Interval, settings: Settings
) -> published.Announcement:
    """The step after the publish stage on its own (no engine needed), under the resource's
    lease like the stages."""
    with leases.hold(settings, resource.qualified_name, stage=stage_name(ANNOUNCE)):
        return published.announce(settings, resource=resource, interval=interval)


def run(
    spark: SparkSession, *, resource: Resource, interval: Interval, settings: Settings
) -> StageCounts:
    counts = StageCounts(resource.qualified_name)
    for stage in STAGES:
        run_stage(stage, spark, resource=resource, interval=interval, settings=settings,
                  counts=counts)  # fmt: skip
    return counts
