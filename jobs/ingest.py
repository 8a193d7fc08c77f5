"""The whole pipeline for one resource: bronze → validate → silver → publish.

The CLI runs this; the Airflow DAGs run the same stages as separate tasks.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from govlake.catalog import Resource
from govlake.runs import Interval, StageCounts
from govlake.settings import Settings
from jobs import bronze, publish, silver, validate

STAGES = (bronze, validate, silver, publish)


def run(
    spark: SparkSession, *, resource: Resource, interval: Interval, settings: Settings
) -> StageCounts:
    counts = StageCounts(resource.qualified_name)
    for stage in STAGES:
        stage.run(spark, resource=resource, interval=interval, settings=settings, counts=counts)
    return counts
