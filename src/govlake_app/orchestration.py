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
- `interval_task()`: the Airflow task that runs one of these steps over the run's data
  interval; the platform DAGs' steps: `assess_timeliness()`, `quality_reports()`,
  `maintain()`, `scorecard()`, `sharing_reports()`, `retry_webhooks()`, `sharing_requests()`,
  `archive_journal()` and `backup()`.

Every step takes the data interval as `start` and `end` (given by Airflow, timezone-aware) and
none reads the clock. The engine and the platform's modules are imported inside the steps, so
that parsing the DAG files stays fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from govlake.core.catalog import Catalog, Resource
from govlake.core.runs import Interval, StageCounts, naive_utc
from govlake.core.settings import Settings, get_settings

SPARK_CONNECT_CONN_ID = "spark_connect_default"
log = logging.getLogger(__name__)

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


def _engine() -> tuple[Any, Catalog, Settings]:
    """The engine session, catalogue and settings of a task."""
    from govlake.lake.engine import get_spark

    settings = settings_for_task()
    catalog = load_catalog(settings)
    return get_spark(settings, catalog), catalog, settings


def _given(moment: datetime | None) -> datetime:
    """A bound of the run's data interval, as naive UTC."""
    assert moment is not None, "the task needs the run's data interval"
    return naive_utc(moment)


def _interval(start: datetime | None, end: datetime | None) -> Interval:
    assert start is not None and end is not None
    return Interval(start, end)


def _failed(message: str) -> Exception:
    """The error that fails a run at once: no retry would change the answer for its interval."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


def interval_task(task_id: str, step: Callable[..., Any], *, multiple_outputs: bool = False) -> Any:
    """The task that runs `step(start=…, end=…)` over the run's data interval, after the task
    whose result it is given (only an ordering). With `multiple_outputs`, a dict result goes to
    XCom whole and key by key."""
    from airflow.sdk import task

    @task(task_id=task_id, multiple_outputs=multiple_outputs)
    def run(
        _previous: Any = None,
        data_interval_start: datetime | None = None,
        data_interval_end: datetime | None = None,
    ) -> Any:
        return step(start=data_interval_start, end=data_interval_end)

    return run


def run_stage(
    stage: str, resource_name: str, *, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    """Run one stage (`bronze`, `validate`, `silver`, `publish`) of the pipeline for one
    resource over the data interval [start, end); returns its counts for XCom."""
    from dataclasses import asdict
    from importlib import import_module

    from govlake_app import pipeline

    interval = _interval(start, end)
    spark, catalog, settings = _engine()
    resource = catalog.get(resource_name)
    counts = StageCounts(resource.qualified_name)
    module = import_module(f"jobs.{stage}")
    pipeline.run_stage(module, spark, resource=resource, interval=interval, settings=settings,
                       counts=counts)  # fmt: skip
    summary = asdict(counts)
    summary["rejected"] = [f"{r.file}: {r.rule}" for r in counts.rejected]
    return summary


def announce(resource_name: str, *, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """The step after the publish stage for one resource over the data interval [start, end):
    journal what it published, link the fixes, notify the subscribers; a summary for XCom."""
    from govlake_app import pipeline

    interval = _interval(start, end)
    settings = settings_for_task()
    resource = load_catalog(settings).get(resource_name)
    done = pipeline.announce(resource=resource, interval=interval, settings=settings)
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


def steward_report(provider: str, *, start: datetime | None, end: datetime | None) -> str:
    """The quality report of `provider` over [start's day, end), after syncing the change
    register; the path of the file written."""
    from govlake.reports.quality import write_quality_report

    interval = _interval(start, end)
    spark, catalog, settings = _engine()
    at = naive_utc(interval.end)
    sync_change_register(settings, catalog, at=at)
    written = write_quality_report(spark, catalog, settings, provider,
                                   since=interval.start.date(), at=at)  # fmt: skip
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


# -- the platform DAGs' steps ---------------------------------------------------------------
def assess_timeliness(*, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    """Every resource's last publication and each provider's last delivery against the update
    cycle, then the catalogue's upkeep; fails the run when something is overdue."""
    from govlake.governance import changes
    from govlake.governance.timeliness import deliveries, monitor
    from govlake.platform.database import session

    spark, catalog, settings = _engine()
    at = _given(end)
    states = [*monitor(spark, catalog, settings, at=at),
              *deliveries(spark, catalog, settings, at=at)]  # fmt: skip
    for t in states:
        log.info("%s %s (%s): %s, %.1f h late", t.subject, t.resource, t.provider, t.state,
                 t.hours_late)  # fmt: skip
    overdue = [f"{t.subject} of {t.resource} by {t.provider} ({t.hours_late:.0f} h late)"
               for t in states if t.state == "overdue"]  # fmt: skip
    # The catalogue entries' reviews, updates after duty changes and unrecorded edits.
    sync_change_register(settings, catalog, at=at)
    with session(settings) as s:
        upkeep = changes.upkeep(s, catalog, at=at)
    for u in upkeep:
        log.info("catalogue %s of %s (%s): %s, due %s", u.duty, u.resource, u.provider,
                 u.state, u.due_on or "now")  # fmt: skip
        if u.state == "overdue":
            overdue.append(f"catalogue {u.duty} of {u.resource} by {u.provider} ({u.detail})")
    if overdue:
        raise _failed("overdue: " + "; ".join(overdue))
    return [
        {"resource": t.resource, "provider": t.provider, "subject": t.subject,
         "state": t.state, "hours_late": round(t.hours_late, 1)}
        for t in states
    ]  # fmt: skip


def quality_reports(*, start: datetime | None, end: datetime | None) -> list[str]:
    """One quality report per provider department for the data interval, mailed to the
    department's steward."""
    from govlake.platform.mail import send_report
    from govlake.reports.quality import write_quality_report

    spark, catalog, settings = _engine()
    at = _given(end)
    sync_change_register(settings, catalog, at=at)  # the reports only read the register
    written = []
    for provider in catalog.providers:
        report = write_quality_report(spark, catalog, settings, provider,
                                      since=_given(start).date(), at=at)  # fmt: skip
        send_report(settings, to=catalog.department(provider).steward.email,
                    subject=report.report.subject, html=report.path.read_text(encoding="utf-8"),
                    filename=report.path.name)  # fmt: skip
        written.append(str(report.path))
    return written


def maintain(*, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    """Compaction and vacuum of every Delta table."""
    from dataclasses import asdict

    from jobs import maintenance

    settings = settings_for_task()
    done = maintenance.run(load_catalog(settings), settings, at=_given(end))
    return [asdict(m) for m in done]


def _year_end(start: datetime | None) -> tuple[int, datetime]:
    """The year a yearly run covers and the moment it ends."""
    year = _given(start).year
    return year, datetime(year + 1, 1, 1)


def scorecard(*, start: datetime | None, end: datetime | None) -> list[str]:
    """The department scorecard of the year (HTML and CSV)."""
    from govlake.reports.scorecard import write_scorecard

    spark, catalog, settings = _engine()
    year, at = _year_end(start)
    files = write_scorecard(spark, catalog, settings, year=year, at=at)
    return [str(files.html), str(files.csv)]


def sharing_reports(*, start: datetime | None, end: datetime | None) -> list[str]:
    """The sharing reports of the year (HTML and CSV)."""
    from govlake.reports.sharing import write_sharing_reports

    spark, catalog, settings = _engine()
    year, at = _year_end(start)
    written = write_sharing_reports(spark, catalog, settings, year=year, at=at)
    return [str(path) for path in written.paths]


def retry_webhooks(*, start: datetime | None, end: datetime | None) -> dict[str, int]:
    """Send again the webhook deliveries whose retry time has come; how many of each outcome."""
    from govlake.sharing.subscriptions import retry_deliveries

    settings = settings_for_task()
    notices = retry_deliveries(settings, at=_given(end), catalog=load_catalog(settings))
    outcomes: dict[str, int] = {}
    for notice in notices:
        log.info("subscription %s → %s: %s (%s)", notice.subscription_id, notice.target,
                 notice.outcome, notice.detail)  # fmt: skip
        outcomes[notice.outcome] = outcomes.get(notice.outcome, 0) + 1
    return outcomes


def sharing_requests(*, start: datetime | None, end: datetime | None) -> dict[str, int]:
    """Escalate the access requests past their due day; link the published fixes."""
    from govlake.platform.database import session
    from govlake.sharing.requests import escalate_overdue, link_fixes

    settings = settings_for_task()
    catalog = load_catalog(settings)
    at = _given(end)
    with session(settings) as s:
        escalated = escalate_overdue(s, catalog, settings, at=at)
        linked = link_fixes(s, None, catalog, settings, at=at)
    return {"escalated": len(escalated), "linked": len(linked)}


def archive_journal(*, start: datetime | None, end: datetime | None) -> int:
    """Archive the audit journal to its Delta table and verify its hash chain (the run fails
    when it is broken); how many entries were archived."""
    from govlake.platform import audit
    from govlake.platform.database import session

    settings = settings_for_task()
    with session(settings) as s:
        archived = audit.archive(s, settings, at=_given(end))
    with session(settings) as s:
        result = audit.verify(s, settings)
    if not result.ok:
        raise _failed("audit journal: " + "; ".join(result.problems[:20]))
    return archived


def backup(*, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    """Back up every table due by its importance; fails when a table could not be."""
    from govlake.governance import backup as backups

    settings = settings_for_task()
    catalog = load_catalog(settings)
    at = _given(end)
    report = backups.backup(settings, catalog, at=at)
    done = [t for t in report.tables if t.outcome != "no_table"]
    for t in done:
        added = backups.version_ranges(t.versions_added)
        log.info("%s (%s): %s, version %s, versions added %s, %d files, %d bytes",
                 t.table, t.importance, t.outcome, t.version, added, t.files_copied,
                 t.bytes_copied)  # fmt: skip
    for s in backups.backup_status(settings, catalog, at):
        if s.table_version is not None or s.backed_up_version is not None:
            log.info("%s: table version %s, backed up %s (versions %s), next due %s",
                     s.table, s.table_version, s.backed_up_version, s.versions,
                     s.next_due)  # fmt: skip
    if report.failed:
        raise RuntimeError(
            "backup failed: " + "; ".join(f"{t.table}: {t.error}" for t in report.failed)
        )
    return [
        {"table": t.table, "outcome": t.outcome, "version": t.version,
         "versions_added": backups.version_ranges(t.versions_added), "files": t.files_copied,
         "bytes": t.bytes_copied}
        for t in done
    ]  # fmt: skip
