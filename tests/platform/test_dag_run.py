"""One ingestion DAG run end to end through Airflow (`dag.test()`), on generated extracts: the
sensor finds them, the tasks run the jobs over the run's data interval, and the run leaves a
new published version and its quality results behind. The lakehouse and landing zone are on
a real S3 server (SeaweedFS), as in a deployment; the platform DAGs then run on the same
bucket. (The scheduled run under `govlake airflow` covers a local lakehouse.)

Airflow runs in a child interpreter with its own `AIRFLOW_HOME` and metadata database, so its
configuration (read once, at import) cannot leak into other tests, nor theirs into it.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from govlake_tools.generate import generate
from govlake_tools.s3server import SeaweedS3

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.lake.statements import version
from govlake.lake.tables import TableSet

pytestmark = pytest.mark.slow

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "ingest_population_residents"
AS_OF = datetime.date(2026, 3, 1)
#: The daily run that covers 2026-03-01: data interval [03-01 00:00, 03-02 00:00) UTC.
LOGICAL_DATE = "2026-03-02T00:00:00+00:00"

# Runs the DAG in the child interpreter. Retries are turned off so that a failing task fails
# the test at once instead of after two five-minute retry delays.
RUN_DAGS = """
import datetime, json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils import db

db.resetdb()
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
outcomes = {}
for dag_id, logical_date in zip(sys.argv[2::2], sys.argv[3::2]):
    dag = bag.dags[dag_id]
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(logical_date=datetime.datetime.fromisoformat(logical_date))
    instances = run.get_task_instances()
    outcomes[dag_id] = {
        "state": str(run.state),
        "interval": [run.data_interval_start.isoformat(), run.data_interval_end.isoformat()],
        "tasks": {ti.task_id: str(ti.state) for ti in instances},
        "xcom": {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in instances},
    }
print(json.dumps(outcomes, default=str))
"""


def _run_dags(settings: Settings, home: Path, *runs: tuple[str, str]) -> tuple[dict[str, Any], str]:
    """Run DAGs one after another in one child interpreter; their outcomes and its output."""
    env = {
        **os.environ,  # with the S3 server's AWS_* variables
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "GOVLAKE_WAREHOUSE": settings.warehouse,
        "GOVLAKE_LANDING": settings.landing,
        "GOVLAKE_DATABASE_URL": settings.database_url,
        "GOVLAKE_REPORTS_DIR": str(settings.reports_dir),
        "GOVLAKE_CATALOG_DIR": str(settings.catalog_dir),
        "GOVLAKE_BACKUP": settings.backup,
    }
    env.pop("SPARK_REMOTE", None)  # the embedded engine, started inside the task process
    done = subprocess.run(
        [sys.executable, "-c", RUN_DAGS, str(DAGS), *(arg for run in runs for arg in run)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1])), done.stdout + done.stderr


def test_an_ingestion_dag_run_publishes_a_version_and_records_its_quality(
    catalog: Catalog, settings: Settings, tmp_path: Path, s3: SeaweedS3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    residents = catalog.get("population.residents")
    s3.create_bucket("dagrun")
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    settings = settings.model_copy(update={
        "reports_dir": tmp_path / "reports", "warehouse": "s3://dagrun/lakehouse",
        "landing": "s3://dagrun/landing", "backup": "s3://dagrun/backups"})  # fmt: skip
    made = generate(catalog, settings.landing_location, rows=1500, seed=11, defects=0.005,
                    as_of=AS_OF, resources=[residents.qualified_name])  # fmt: skip

    outcomes, output = _run_dags(
        settings, tmp_path / "airflow_home",
        (DAG_ID, LOGICAL_DATE),
        # An hour later the monitor sees residents on time, the resources never published
        # overdue; weekly maintenance compacts and vacuums what the run wrote.
        ("platform_timeliness", "2026-03-02T01:00:00+00:00"),
        ("platform_maintenance", "2026-03-02T00:00:00+00:00"),
        ("platform_sharing", "2026-03-03T00:00:00+00:00"),
        # The daily backup copies every table (none was backed up before) to the backup prefix.
        ("platform_backup", "2026-03-03T00:00:00+00:00"),
    )  # fmt: skip
    outcome = outcomes[DAG_ID]

    assert outcome["state"] == "success", outcome
    assert outcome["interval"] == ["2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00"]
    assert outcome["tasks"] == dict.fromkeys(
        ["wait_for_extract", "bronze", "validate", "silver", "publish", "announce", "report"],
        "success",
    )

    # A new published version of every sharing class, stamped with the interval's end.
    spark = get_spark(settings, catalog, fresh=True)  # registers the tables the run made
    published = spark.sql(
        "SELECT sharing_class, version, rows, published_at FROM ops.publications "
        "WHERE resource = 'population.residents'"
    ).collect()
    assert sorted(p.sharing_class for p in published) == sorted(residents.sharing_classes)
    # Each recorded version is there and holds the published rows, also after the weekly
    # maintenance below compacted the table (a commit of its own).
    tables = TableSet(residents, settings.warehouse_location)
    for p in published:
        location = tables.published(p.sharing_class).location
        at_version = DeltaTable(location.uri, version=p.version,
                                storage_options=location.storage_options())  # fmt: skip
        assert read_delta(at_version).num_rows == p.rows
        assert version(tables.published(p.sharing_class)) >= p.version
    assert {p.published_at for p in published} == {datetime.datetime(2026, 3, 2)}
    quarantined = spark.table("population.residents_quarantine").count()
    delivered = sum(m.rows for m in made)
    assert quarantined > 0
    silver_rows = spark.table("population.residents").count()
    assert 0 < silver_rows <= delivered - quarantined  # providers' copies merge by key
    # Rows still waiting for a required item from its authority stay in silver.
    for p in published:
        assert 0 < p.rows == spark.table(tables.published(p.sharing_class).sql_name).count()
        assert p.rows <= silver_rows

    # The quality results the run wrote: one extract suite per provider, one publication
    # suite, each with a row per expectation, all judged at the interval's end.
    runs = spark.sql(
        "SELECT run_id, scope, provider, outcome, expectations, checked_at FROM ops.quality_runs "
        "WHERE resource = 'population.residents'"
    ).collect()
    assert sorted(r.scope for r in runs) == ["extract"] * len(made) + ["publication"]
    assert {r.provider for r in runs if r.scope == "extract"} == {m.provider for m in made}
    assert {r.outcome for r in runs} <= {"passed", "warned"}
    assert {r.checked_at for r in runs} == {datetime.datetime(2026, 3, 2)}
    for run in runs:
        results = spark.sql(
            f"SELECT count(*) AS n, count_if(success) AS ok FROM ops.quality_results "
            f"WHERE run_id = '{run.run_id}'"
        ).first()
        assert results.n == run.expectations > 0
        if run.outcome == "passed":
            assert results.ok == results.n

    # The steward report the last task wrote covers the interval.
    report = Path(str(outcome["xcom"]["report"]))
    assert report.is_file() and report.parent == tmp_path / "reports"
    assert "2026-03-01" in report.read_text(encoding="utf-8")

    # The platform DAGs over the same lakehouse.
    monitor = outcomes["platform_timeliness"]
    assert monitor["state"] == "failed" and monitor["tasks"] == {"assess": "failed"}
    overdue = next(line for line in output.splitlines() if "overdue: publication" in line)
    never_published = {r.qualified_name for r in catalog} - {"population.residents"}
    assert all(f"publication of {name} " in overdue for name in never_published), overdue
    assert "population.residents" not in overdue
    maintenance = outcomes["platform_maintenance"]
    assert maintenance["state"] == "success", maintenance
    maintained = {m["table"] for m in maintenance["xcom"]["maintain"]}
    assert {"population.residents", "population.residents_unconditional"} <= maintained
    # The sharing duties: nothing to escalate or link; the journal, which holds the run's
    # publications, is archived and its chain verified.
    duties = outcomes["platform_sharing"]
    assert duties["state"] == "success", duties
    assert duties["xcom"]["requests"] == {"escalated": 0, "linked": 0}
    journal = settings.warehouse_location.child("ops", "audit_journal")
    archived = DeltaTable(journal.uri, storage_options=journal.storage_options()).to_pandas()
    assert duties["xcom"]["journal"] == len(archived) > len(residents.sharing_classes)
    # The run registered the catalogue entry it met first (the change register).
    assert set(archived["action"]) == {"pipeline.publish", "audit.archive", "catalog.registration"}
    backups = outcomes["platform_backup"]
    assert backups["state"] == "success", backups
    copied = {b["table"]: b["outcome"] for b in backups["xcom"]["backup"]}
    assert copied["population.residents_unconditional"] == "backed_up"
    assert copied["ops.publications"] == "backed_up"
    backup = settings.backup_location.child("population", "residents_unconditional")
    restored = DeltaTable(backup.uri, storage_options=backup.storage_options())
    published = settings.warehouse_location.child("population", "residents_unconditional")
    live = DeltaTable(published.uri, storage_options=published.storage_options())
    assert restored.version() == live.version()
    assert read_delta(restored).num_rows == read_delta(live).num_rows
