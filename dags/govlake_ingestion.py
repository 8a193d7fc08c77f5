"""One ingestion DAG per catalogued resource, generated from the catalogue: a new resource
YAML is a new DAG, with no code. Each task is thin wiring over the job the CLI runs.

wait for an extract (sensor, reschedule mode: no worker slot held) → bronze → validate →
silver → publish → announce (journal, verification fixes, subscription notices) → steward
report. Tasks receive the run's data interval; none reads the clock.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import pendulum
from airflow.sdk import PokeReturnValue, dag, task

from govlake.core.catalog import CYCLE_HOURS, Resource
from govlake_app.orchestration import (
    announce,
    doc_md,
    interval_task,
    load_catalog,
    run_stage,
    steward_report,
    timetable,
)

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _sensor(resource: Resource) -> Any:
    """Wait for an extract of `resource` in the landing zone, without holding a worker slot."""
    cycle = timedelta(hours=CYCLE_HOURS[resource.update_cycle])

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

    return wait_for_extract


def ingestion_dag(resource: Resource) -> Any:
    name = resource.qualified_name

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
        # A stage's counts (a dict) go to XCom whole and key by key.
        step = partial(interval_task, multiple_outputs=True)
        landed = _sensor(resource)()
        loaded = step("bronze", partial(run_stage, "bronze", name))(landed)
        validated = step("validate", partial(run_stage, "validate", name))(loaded)
        merged = step("silver", partial(run_stage, "silver", name))(validated)
        published = step("publish", partial(run_stage, "publish", name))(merged)
        announced = step("announce", partial(announce, name))(published)
        report = partial(steward_report, resource.provider)
        interval_task("report", report)(announced)

    return ingest()


for _resource in load_catalog():
    globals()[f"ingest_{_resource.theme}_{_resource.name}"] = ingestion_dag(_resource)
