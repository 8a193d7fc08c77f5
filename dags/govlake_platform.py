"""Platform DAGs: timeliness monitor with the catalogue's upkeep (hourly), steward reports
(daily), table maintenance (weekly), backups by importance (daily), subscription webhook
retries (every 5 minutes), and the department scorecard and sharing reports (yearly). Thin wiring
over the same functions the `govlake` CLI runs; every task takes the run's data interval, none
reads the clock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from govlake.core.runs import naive_utc
from govlake_app.orchestration import timetable

START = pendulum.datetime(2026, 1, 1, tz="UTC")
log = logging.getLogger(__name__)
DEFAULTS = {"owner": "platform", "retries": 2, "retry_delay": timedelta(minutes=5)}


def _naive(moment: datetime | None) -> datetime:
    assert moment is not None, "the task needs the run's data interval"
    return naive_utc(moment)


def _session() -> tuple[Any, Any, Any]:
    from govlake.lake.engine import get_spark
    from govlake_app.orchestration import load_catalog, settings_for_task

    settings = settings_for_task()
    catalog = load_catalog(settings)
    return get_spark(settings, catalog), catalog, settings


def _catalogue_upkeep(catalog: Any, settings: Any, at: datetime) -> list[Any]:
    """The catalogue entries' reviews, updates after duty changes and unrecorded edits."""
    from govlake.governance import changes
    from govlake.platform.database import session
    from govlake_app.orchestration import sync_change_register

    sync_change_register(settings, catalog, at=at)
    with session(settings) as s:
        return changes.upkeep(s, catalog, at=at)


@dag(
    dag_id="platform_timeliness",
    schedule=timetable("hourly"),
    start_date=START,
    catchup=False,
    tags=["platform", "quality"],
    default_args=DEFAULTS,
    doc_md="Every resource's last publication and each provider's last delivery against the "
    "update cycle (`govlake quality timeliness`); fails the run when something is overdue, so "
    "it shows red in the UI.",
)
def platform_timeliness() -> None:
    @task
    def assess(data_interval_end: datetime | None = None) -> list[dict[str, Any]]:
        from govlake.governance.timeliness import deliveries, monitor

        spark, catalog, settings = _session()
        at = _naive(data_interval_end)
        states = [*monitor(spark, catalog, settings, at=at),
                  *deliveries(spark, catalog, settings, at=at)]  # fmt: skip
        for t in states:
            log.info("%s %s (%s): %s, %.1f h late", t.subject, t.resource, t.provider, t.state,
                     t.hours_late)  # fmt: skip
        overdue = [f"{t.subject} of {t.resource} by {t.provider} ({t.hours_late:.0f} h late)"
                   for t in states if t.state == "overdue"]  # fmt: skip
        for u in _catalogue_upkeep(catalog, settings, at):
            log.info("catalogue %s of %s (%s): %s, due %s", u.duty, u.resource, u.provider,
                     u.state, u.due_on or "now")  # fmt: skip
            if u.state == "overdue":
                overdue.append(f"catalogue {u.duty} of {u.resource} by {u.provider} ({u.detail})")
        if overdue:
            from airflow.sdk.exceptions import AirflowFailException

            # No retry would change the answer for this interval.
            raise AirflowFailException("overdue: " + "; ".join(overdue))
        return [
            {"resource": t.resource, "provider": t.provider, "subject": t.subject,
             "state": t.state, "hours_late": round(t.hours_late, 1)}
            for t in states
        ]  # fmt: skip

    assess()


@dag(
    dag_id="platform_quality_reports",
    schedule=timetable("daily"),
    start_date=START,
    catchup=False,
    tags=["platform", "quality", "reports"],
    default_args=DEFAULTS,
    doc_md="One quality report per provider department for the day's data interval, mailed "
    "to the department's steward (`govlake report quality --send`).",
)
def platform_quality_reports() -> None:
    @task
    def reports(
        data_interval_start: datetime | None = None, data_interval_end: datetime | None = None
    ) -> list[str]:
        from govlake.platform.mail import send_report
        from govlake.reports.quality import write_quality_report
        from govlake_app.orchestration import sync_change_register

        spark, catalog, settings = _session()
        at = _naive(data_interval_end)
        sync_change_register(settings, catalog, at=at)  # the reports only read the register
        written = []
        for provider in catalog.providers:
            report = write_quality_report(
                spark, catalog, settings, provider,
                since=_naive(data_interval_start).date(), at=at,
            )  # fmt: skip
            send_report(
                settings,
                to=catalog.department(provider).steward.email,
                subject=report.report.subject,
                html=report.path.read_text(encoding="utf-8"),
                filename=report.path.name,
            )
            written.append(str(report.path))
        return written

    reports()


@dag(
    dag_id="platform_maintenance",
    schedule=timetable("weekly"),
    start_date=START,
    catchup=False,
    tags=["platform", "maintenance"],
    default_args=DEFAULTS,
    doc_md="Compaction and vacuum of every Delta table through delta-rs. Every version stays "
    "readable for `GOVLAKE_RETENTION_DAYS` (at least 30 days); `ops.*` tables, the platform's "
    "records, for at least 3 years.",
)
def platform_maintenance() -> None:
    @task
    def maintain() -> list[dict[str, Any]]:
        from dataclasses import asdict

        from govlake_app.orchestration import load_catalog, settings_for_task
        from jobs import maintenance

        settings = settings_for_task()
        return [asdict(m) for m in maintenance.run(load_catalog(settings), settings)]

    maintain()


@dag(
    dag_id="platform_scorecard",
    schedule=timetable("yearly"),
    start_date=START,
    catchup=False,
    tags=["platform", "evaluation"],
    default_args=DEFAULTS,
    doc_md="The yearly department scorecard (51号 art. 17, 宝鸡 art. 23) and sharing reports "
    "(51号 art. 18, 宝鸡 art. 24: what each department provided and used, and the platform-wide "
    "summary) of the year that ended: HTML and CSV in the reports folder (`govlake report "
    "scorecard`, `govlake report sharing`).",
)
def platform_scorecard() -> None:
    @task
    def scorecard(data_interval_start: datetime | None = None) -> list[str]:
        from govlake.reports.scorecard import write_scorecard

        spark, catalog, settings = _session()
        year = _naive(data_interval_start).year
        files = write_scorecard(spark, catalog, settings, year=year, at=datetime(year + 1, 1, 1))
        return [str(files.html), str(files.csv)]

    @task
    def sharing_reports(data_interval_start: datetime | None = None) -> list[str]:
        from govlake.reports.sharing import write_sharing_reports

        spark, catalog, settings = _session()
        year = _naive(data_interval_start).year
        written = write_sharing_reports(spark, catalog, settings, year=year,
                                        at=datetime(year + 1, 1, 1))  # fmt: skip
        return [str(path) for path in written.paths]

    scorecard()
    sharing_reports()


@dag(
    dag_id="platform_subscriptions",
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
    start_date=START,
    catchup=False,
    tags=["platform", "sharing", "subscriptions"],
    default_args=DEFAULTS,
    doc_md="Sends again the subscription webhook deliveries whose retry time has come (one "
    "attempt each; `govlake share subscription retry`). The first attempts happen during the "
    "publication itself; this picks up the receivers that were down.",
)
def platform_subscriptions() -> None:
    @task
    def retry(data_interval_end: datetime | None = None) -> dict[str, int]:
        from govlake.sharing.subscriptions import retry_deliveries
        from govlake_app.orchestration import load_catalog, settings_for_task

        settings = settings_for_task()
        notices = retry_deliveries(settings, at=_naive(data_interval_end),
                                   catalog=load_catalog(settings))  # fmt: skip
        outcomes: dict[str, int] = {}
        for notice in notices:
            log.info("subscription %s → %s: %s (%s)", notice.subscription_id, notice.target,
                     notice.outcome, notice.detail)  # fmt: skip
            outcomes[notice.outcome] = outcomes.get(notice.outcome, 0) + 1
        return outcomes

    retry()


@dag(
    dag_id="platform_sharing",
    schedule=timetable("daily"),
    start_date=START,
    catchup=False,
    tags=["platform", "sharing", "audit"],
    default_args=DEFAULTS,
    doc_md="The sharing service's daily duties: escalate access requests past their 10 "
    "working days (mail to the provider's steward and the authority), link corrected "
    "verification requests to the published version that carries the fix, archive the audit "
    "journal to its Delta table and verify its hash chain (the run fails when it is broken).",
)
def platform_sharing() -> None:
    @task
    def requests(data_interval_end: datetime | None = None) -> dict[str, int]:
        from govlake.platform.database import session
        from govlake.sharing.requests import escalate_overdue, link_fixes
        from govlake_app.orchestration import load_catalog, settings_for_task

        settings = settings_for_task()
        catalog = load_catalog(settings)
        at = _naive(data_interval_end)
        with session(settings) as s:
            escalated = escalate_overdue(s, catalog, settings, at=at)
            linked = link_fixes(s, None, catalog, settings, at=at)
        return {"escalated": len(escalated), "linked": len(linked)}

    @task
    def journal(counts: dict[str, int], data_interval_end: datetime | None = None) -> int:
        from govlake.platform import audit
        from govlake.platform.database import session
        from govlake_app.orchestration import settings_for_task

        settings = settings_for_task()
        with session(settings) as s:
            archived = audit.archive(s, settings, at=_naive(data_interval_end))
        with session(settings) as s:
            result = audit.verify(s, settings)
        if not result.ok:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException("audit journal: " + "; ".join(result.problems[:20]))
        return archived

    journal(requests())


@dag(
    dag_id="platform_backup",
    schedule=timetable("daily"),
    start_date=START,
    catchup=False,
    tags=["platform", "backup", "security"],
    default_args=DEFAULTS,
    doc_md="Backups by importance (石景山 art. 31; `govlake backup`): every table whose "
    "resource is due by its catalogued importance (core daily, important weekly, general "
    "monthly; `ops.*` tables as core) is copied to `GOVLAKE_BACKUP`, log and data files up to "
    "its current version, only what the backup lacks. Fails the run when a table could not be "
    "backed up (the retry backs up only what is still due). `govlake restore TABLE "
    "[--version N]` brings a table back.",
)
def platform_backup() -> None:
    @task
    def backup(data_interval_end: datetime | None = None) -> list[dict[str, Any]]:
        from govlake.governance import backup as backups
        from govlake_app.orchestration import load_catalog, settings_for_task

        settings = settings_for_task()
        catalog = load_catalog(settings)
        at = _naive(data_interval_end)
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

    backup()


platform_timeliness()
platform_quality_reports()
platform_maintenance()
platform_scorecard()
platform_sharing()
platform_backup()
platform_subscriptions()
