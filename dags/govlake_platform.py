"""Platform DAGs: timeliness monitor with the catalogue's upkeep (hourly), steward reports
(daily), table maintenance (weekly), backups by importance (daily), subscription webhook
retries (every 5 minutes), and the department scorecard and sharing reports (yearly). Thin wiring
over the same functions the `govlake` CLI runs; every task takes the run's data interval, none
reads the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag

from govlake_app.orchestration import (
    archive_journal,
    assess_timeliness,
    backup,
    interval_task,
    maintain,
    quality_reports,
    retry_webhooks,
    scorecard,
    sharing_reports,
    sharing_requests,
    timetable,
)

START = pendulum.datetime(2026, 1, 1, tz="UTC")
DEFAULTS = {"owner": "platform", "retries": 2, "retry_delay": timedelta(minutes=5)}

#: A task: its id, its step (`govlake_app.orchestration`) and whether its dict result goes to
#: XCom key by key too. The tasks of a chain run one after the other.
Task = tuple[str, Callable[..., Any], bool]

DOCS = {
    "platform_timeliness": "Every resource's last publication and each provider's last "
    "delivery against the update cycle (`govlake quality timeliness`); fails the run when "
    "something is overdue, so it shows red in the UI.",
    "platform_quality_reports": "One quality report per provider department for the day's "
    "data interval, mailed to the department's steward (`govlake report quality --send`).",
    "platform_maintenance": "Compaction (deletion vectors purged) and vacuum of every Delta "
    "table through delta-rs. Every version stays readable for `GOVLAKE_RETENTION_DAYS` (at "
    "least 30 days); `ops.*` tables, the platform's records, for "
    "`GOVLAKE_RECORDS_RETENTION_DAYS` (at least 3 years).",
    "platform_scorecard": "The yearly department scorecard (51号 art. 17, 宝鸡 art. 23) and "
    "sharing reports (51号 art. 18, 宝鸡 art. 24: what each department provided and used, and "
    "the platform-wide summary) of the year that ended: HTML and CSV in the reports folder "
    "(`govlake report scorecard`, `govlake report sharing`).",
    "platform_subscriptions": "Sends again the subscription webhook deliveries whose retry "
    "time has come (one attempt each; `govlake share subscription retry`). The first attempts "
    "happen during the publication itself; this picks up the receivers that were down.",
    "platform_sharing": "The sharing service's daily duties: escalate access requests past "
    "their 10 working days (mail to the provider's steward and the authority), link corrected "
    "verification requests to the published version that carries the fix, archive the audit "
    "journal to its Delta table and verify its hash chain (the run fails when it is broken).",
    "platform_backup": "Backups by importance (石景山 art. 31; `govlake backup`): every table "
    "whose resource is due by its catalogued importance (core daily, important weekly, general "
    "monthly; `ops.*` tables as core) is copied to `GOVLAKE_BACKUP`, log and data files up to "
    "its current version, only what the backup lacks. Fails the run when a table could not be "
    "backed up (the retry backs up only what is still due). `govlake restore TABLE "
    "[--version N]` brings a table back.",
}


def platform_dag(dag_id: str, schedule: Any, tags: list[str], *chains: list[Task]) -> Any:
    """A platform DAG: its chains of tasks, each over the run's data interval."""

    @dag(dag_id=dag_id, schedule=schedule, start_date=START, catchup=False, tags=tags,
         default_args=DEFAULTS, doc_md=DOCS[dag_id])  # fmt: skip
    def platform() -> None:
        for chain in chains:
            previous = None
            for task_id, step, multiple_outputs in chain:
                previous = interval_task(task_id, step, multiple_outputs=multiple_outputs)(previous)

    return platform()


# fmt: off
platform_dag(
    "platform_timeliness", timetable("hourly"), ["platform", "quality"],
    [("assess", assess_timeliness, False)])
platform_dag(
    "platform_quality_reports", timetable("daily"), ["platform", "quality", "reports"],
    [("reports", quality_reports, False)])
platform_dag(
    "platform_maintenance", timetable("weekly"), ["platform", "maintenance"],
    [("maintain", maintain, False)])
platform_dag(
    "platform_scorecard", timetable("yearly"), ["platform", "evaluation"],
    [("scorecard", scorecard, False)], [("sharing_reports", sharing_reports, False)])
platform_dag(
    "platform_sharing", timetable("daily"), ["platform", "sharing", "audit"],
    [("requests", sharing_requests, True), ("journal", archive_journal, False)])
platform_dag(
    "platform_backup", timetable("daily"), ["platform", "backup", "security"],
    [("backup", backup, False)])
platform_dag(
    "platform_subscriptions", CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
    ["platform", "sharing", "subscriptions"], [("retry", retry_webhooks, True)])
# fmt: on
