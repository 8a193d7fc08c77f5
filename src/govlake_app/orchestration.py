"""What the Airflow DAGs need from the platform, kept out of the DAG files so that parsing
them stays fast and they stay thin wiring.

- `spark_remote()`: the Spark Connect endpoint of a deployment, from the apache-spark
  provider's Spark Connect connection (`spark_connect_default`) when one is configured,
  else `SPARK_REMOTE`, else None (the embedded engine).
- `SCHEDULES`: the Airflow schedule of each update cycle.
- `run_stage()`: one pipeline stage for one resource over a data interval; `announce()`:
  the step after its publish stage (journal, fixes, subscription notices).
- `sync_change_register()`: the step before a quality report, which only reads the register;
  `steward_report()`: that step and the report of a resource's responsible department.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from govlake.core.catalog import Catalog, Resource
from govlake.core.settings import Settings, get_settings

SPARK_CONNECT_CONN_ID = "spark_connect_default"

#: Update cycle → cron preset. "realtime" resources are polled hourly here; a push
#: interface would replace the schedule with an asset event.
SCHEDULES: dict[str, str] = {
    "realtime": "@hourly",
    "hourly": "@hourly",
    "daily": "@daily",
    "weekly": "@weekly",
    "monthly": "@monthly",
    "quarterly": "@quarterly",
    "yearly": "@yearly",
}


def timetable(cycle: str) -> Any:
    """The Airflow timetable of an update cycle: a cron schedule whose runs cover a real data
    interval [previous tick, this tick) in UTC. (Airflow 3's default for a cron string is a
    trigger timetable whose interval is a single instant, which would leave the jobs and
    reports nothing to cover.)"""
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(SCHEDULES[cycle], timezone="UTC")


def spark_remote(conn_id: str = SPARK_CONNECT_CONN_ID) -> str | None:
    """The deployment's Spark Connect URL: the Airflow connection if configured, else
    `SPARK_REMOTE`, else None."""
    try:
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        return str(SparkConnectHook(conn_id=conn_id).get_connection_url())
    except Exception:  # no such connection (AirflowNotFoundException) or no provider
        return os.environ.get("SPARK_REMOTE") or None


def settings_for_task() -> Settings:
    settings = get_settings()
    remote = spark_remote()
    if remote and remote != settings.spark_remote:
        settings = settings.model_copy(update={"spark_remote": remote})
    if "engine_log" not in settings.model_fields_set:
        # A task's log is where the engine's own lines belong (the terminal is not).
        settings = settings.model_copy(update={"engine_log": "info"})
    return settings


def load_catalog(settings: Settings | None = None) -> Catalog:
    return Catalog.load((settings or get_settings()).catalog_dir)


def run_stage(stage: str, resource_name: str, *, start: datetime, end: datetime) -> dict[str, Any]:
    """Run one stage (`bronze`, `validate`, `silver`, `publish`) of the pipeline for one
    resource over the data interval [start, end); returns its counts for XCom."""
    from dataclasses import asdict
    from importlib import import_module

    from govlake.core.runs import Interval, StageCounts
    from govlake.lake.engine import get_spark
    from govlake_app import pipeline

    settings = settings_for_task()
    catalog = load_catalog(settings)
    resource = catalog.get(resource_name)
    spark = get_spark(settings, catalog)
    counts = StageCounts(resource.qualified_name)
    module = import_module(f"jobs.{stage}")
    interval = Interval(start, end)
    pipeline.run_stage(module, spark, resource=resource, interval=interval, settings=settings,
                       counts=counts)  # fmt: skip
    summary = asdict(counts)
    summary["rejected"] = [f"{r.file}: {r.rule}" for r in counts.rejected]
    return summary


def announce(resource_name: str, *, start: datetime, end: datetime) -> dict[str, Any]:
    """The step after the publish stage for one resource over the data interval [start, end):
    journal what it published, link the fixes, notify the subscribers; a summary for XCom."""
    from govlake.core.runs import Interval
    from govlake_app import pipeline

    settings = settings_for_task()
    resource = load_catalog(settings).get(resource_name)
    done = pipeline.announce(resource=resource, interval=Interval(start, end), settings=settings)
    return {
        "resource": done.resource,
        "journaled": {p.table_name: p.version for p in done.journaled},
        "fixed": done.fixed,
        "notices": len(done.notices),
    }


def sync_change_register(settings: Settings, catalog: Catalog, *, at: datetime) -> None:
    """Register in the catalogue change register every entry it has not met yet (the quality
    report reads the register and writes nothing)."""
    from govlake.governance import changes

    changes.sync_register(settings, catalog, at=at)


def steward_report(provider: str, *, start: datetime, end: datetime) -> str:
    """The quality report of `provider` over [start's day, end), after syncing the change
    register; the path of the file written."""
    from govlake.core.runs import naive_utc
    from govlake.lake.engine import get_spark
    from govlake.reports.quality import write_quality_report

    settings = settings_for_task()
    catalog = load_catalog(settings)
    at = naive_utc(end)
    sync_change_register(settings, catalog, at=at)
    written = write_quality_report(get_spark(settings, catalog), catalog, settings, provider,
                                   since=start.date(), at=at)  # fmt: skip
    return str(written.path)


def doc_md(resource: Resource) -> str:
    """The DAG's documentation, from the catalogue entry."""
    items = "\n".join(
        f"| `{i.name}` | {i.title} | {i.type} | {resource.sharing_of(i)} | {i.authority} |"
        for i in resource.items
    )
    sources = ", ".join(f"`{p}`" for p in resource.providers)
    return (
        f"# {resource.title}\n\n"
        f"`{resource.qualified_name}`: {resource.grain}. {resource.description or ''}\n\n"
        f"- responsible provider: `{resource.provider}`; steward {resource.steward.name} "
        f"<{resource.steward.email}>\n"
        f"- sources: {sources}\n"
        f"- update cycle: {resource.update_cycle} → schedule `{SCHEDULES[resource.update_cycle]}`\n"
        f"- sharing: {resource.sharing}; published classes: "
        f"{', '.join(resource.sharing_classes) or 'none'}\n"
        f"- usage requirements: {resource.usage_requirements}\n\n"
        "Tasks: wait for an extract in the landing zone (reschedule mode) → bronze → "
        "validate (row rules and the extract suite) → silver → publish (publication suite) "
        "→ announce (journal, verification fixes, subscription notices) → steward report.\n\n"
        "| item | title | type | sharing | authority |\n|---|---|---|---|---|\n" + items
    )
