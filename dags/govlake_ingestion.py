"""One ingestion DAG per catalogued resource, generated from the catalogue: a new resource
YAML is a new DAG, with no code. Each task is thin wiring over the job the CLI runs.

wait for an extract (sensor, reschedule mode: no worker slot held) → bronze → validate →
silver → publish → steward report. Tasks receive the run's data interval; none reads the
clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import PokeReturnValue, dag, task

from govlake.core.catalog import CYCLE_HOURS, Resource
from govlake.core.runs import naive_utc
from govlake_app.orchestration import doc_md, load_catalog, run_stage, timetable

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def ingestion_dag(resource: Resource) -> Any:
    name = resource.qualified_name
    cycle = timedelta(hours=CYCLE_HOURS[resource.update_cycle])

    @dag(
        dag_id=f"ingest_{resource.theme}_{resource.name}",
        schedule=timetable(resource.update_cycle),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=[resource.theme, resource.sharing, "ingestion"],
        doc_md=doc_md(resource),
        default_args={
            "owner": resource.provider,
            "retries": 2,
            "retry_delay": timedelta(minutes=5),
        },
    )
    def ingest() -> None:
        @task.sensor(
            poke_interval=min(300, cycle.total_seconds() / 4),
            timeout=cycle.total_seconds(),
            mode="reschedule",
            soft_fail=True,
        )
        def wait_for_extract() -> PokeReturnValue:
            from govlake.lake.landing import discover
            from govlake_app.orchestration import settings_for_task

            files = discover(settings_for_task().landing_location, resource)
            return PokeReturnValue(is_done=bool(files), xcom_value=[f.name for f in files])

        @task
        def bronze(
            files: list[str],
            data_interval_start: datetime | None = None,
            data_interval_end: datetime | None = None,
        ) -> dict[str, Any]:
            assert data_interval_start is not None and data_interval_end is not None
            return run_stage("bronze", name, start=data_interval_start, end=data_interval_end)

        def stage(step: str) -> Any:
            @task(task_id=step)
            def run(
                previous: dict[str, Any],
                data_interval_start: datetime | None = None,
                data_interval_end: datetime | None = None,
            ) -> dict[str, Any]:
                assert data_interval_start is not None and data_interval_end is not None
                return run_stage(step, name, start=data_interval_start, end=data_interval_end)

            return run

        @task
        def report(
            published: dict[str, Any],
            data_interval_start: datetime | None = None,
            data_interval_end: datetime | None = None,
        ) -> str:
            assert data_interval_start is not None and data_interval_end is not None
            from govlake.lake.engine import get_spark
            from govlake.reports.quality import write_quality_report
            from govlake_app.orchestration import settings_for_task

            settings = settings_for_task()
            catalog = load_catalog(settings)
            written = write_quality_report(
                get_spark(settings, catalog), catalog, settings, resource.provider,
                since=data_interval_start.date(),
                at=naive_utc(data_interval_end),
            )  # fmt: skip
            return str(written.path)

        landed = wait_for_extract()
        loaded = bronze(landed)
        validated = stage("validate")(loaded)
        merged = stage("silver")(validated)
        published = stage("publish")(merged)
        report(published)

    return ingest()


for _resource in load_catalog():
    globals()[f"ingest_{_resource.theme}_{_resource.name}"] = ingestion_dag(_resource)
