"""DAG integrity: every DAG file imports, one ingestion DAG per catalogued resource, each
DAG has an owner, retries, tags and docs, and parsing the folder stays fast."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from govlake_tools.generate import generate
from govlake_tools.s3server import SeaweedS3

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings, get_settings
from govlake_app.orchestration import timetable

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(home))
        patch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports(bag) -> None:  # type: ignore[no-untyped-def]
    assert bag.import_errors == {}


def test_parsing_the_dags_imports_no_heavy_library(tmp_path: Path) -> None:
    """The scheduler parses DAG files often: engine, Great Expectations and charting are
    imported inside tasks, never at parse time (checked in a fresh interpreter)."""
    heavy = ["great_expectations", "pyspark", "matplotlib", "deltalake"]
    script = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_one_ingestion_dag_per_resource(bag, catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    ingestion = {d for d in bag.dags if d.startswith("ingest_")}
    assert ingestion == {f"ingest_{r.theme}_{r.name}" for r in catalog}
    for resource in catalog:
        dag = bag.dags[f"ingest_{resource.theme}_{resource.name}"]
        assert dag.owner == resource.provider
        assert {resource.theme, resource.sharing} <= set(dag.tags)
        assert resource.title in (dag.doc_md or "")
        assert [t.task_id for t in dag.tasks] == [
            "wait_for_extract", "bronze", "validate", "silver", "publish", "announce", "report",
        ]  # fmt: skip
        sensor = dag.get_task("wait_for_extract")
        assert sensor.mode == "reschedule"
        assert dag.timetable == timetable(resource.update_cycle)


def test_platform_dags(bag) -> None:  # type: ignore[no-untyped-def]
    assert {
        "platform_timeliness", "platform_quality_reports", "platform_maintenance",
        "platform_scorecard", "platform_backup", "platform_subscriptions",
    } <= set(bag.dags)  # fmt: skip


def test_the_backup_dag_backs_up_what_is_due_daily(  # type: ignore[no-untyped-def]
    bag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Daily runs; each backs up the tables due at the end of its data interval (the task's
    function is called directly on a one-table lakehouse: no Airflow run needed)."""
    dag = bag.dags["platform_backup"]
    assert dag.timetable == timetable("daily")
    assert {"platform", "backup"} <= set(dag.tags)
    assert [t.task_id for t in dag.tasks] == ["backup"]
    publications = tmp_path / "lakehouse" / "ops" / "publications"
    write_deltalake(str(publications), pa.table({"resource": ["population.residents"]}))
    monkeypatch.setenv("GOVLAKE_WAREHOUSE", str(tmp_path / "lakehouse"))
    monkeypatch.setenv("GOVLAKE_BACKUP", str(tmp_path / "backups"))
    monkeypatch.setenv("GOVLAKE_DATABASE_URL", f"sqlite:///{tmp_path / 'govlake.db'}")
    get_settings.cache_clear()
    try:
        backup = dag.get_task("backup").python_callable
        end = datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC)
        assert backup(data_interval_end=end) == [
            {"table": "ops.publications", "outcome": "backed_up", "version": 0,
             "versions_added": "0", "files": 1,
             "bytes": sum(p.stat().st_size for p in publications.rglob("*") if p.is_file())},
        ]  # fmt: skip
        assert (tmp_path / "backups" / "ops" / "publications" / "manifest.json").is_file()
        # The run of the next day finds it due again (ops.* tables are core: daily).
        assert [t["outcome"] for t in backup(data_interval_end=end)] == ["not_due"]
        next_day = end + datetime.timedelta(days=1)
        assert [t["outcome"] for t in backup(data_interval_end=next_day)] == ["unchanged"]
    finally:
        get_settings.cache_clear()


def test_the_subscriptions_dag_resends_a_webhook_once_its_receiver_is_up(  # type: ignore[no-untyped-def]
    bag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 5 minutes; a delivery whose receiver was down at publication is sent again by the
    task once its retry time has come (the task's function is called directly)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from govlake.core.net import free_port
    from govlake.platform.database import session
    from govlake.sharing import access
    from govlake.sharing import subscriptions as subs

    dag = bag.dags["platform_subscriptions"]
    from airflow.sdk import CronDataIntervalTimetable

    assert dag.timetable == CronDataIntervalTimetable("*/5 * * * *", timezone="UTC")
    port = free_port()  # nothing listens there yet
    monkeypatch.setenv("GOVLAKE_DATABASE_URL", f"sqlite:///{tmp_path / 'govlake.db'}")
    monkeypatch.setenv("GOVLAKE_WEBHOOK_ATTEMPTS", "1")
    monkeypatch.setenv("GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS", "127.0.0.1")  # the receiver below
    get_settings.cache_clear()
    try:
        settings = get_settings()
        catalog = Catalog.load(settings.catalog_dir)
        published = datetime.datetime(2026, 3, 2, 2)
        with session(settings) as s:
            access.register_consumer(s, catalog, "taxation", email=None, at=published)
            subs.subscribe(s, catalog, settings, consumer="taxation",
                           resource="legal_entity.enterprises",
                           webhook_url=f"http://127.0.0.1:{port}/hook", at=published)  # fmt: skip
        version = subs.PublishedVersion("unconditional", "legal_entity.enterprises_unconditional",
                                        3, 120, published)  # fmt: skip
        first = subs.notify_publication(settings, catalog, resource="legal_entity.enterprises",
                                        versions=[version], at=published)  # fmt: skip
        assert [n.outcome for n in first if n.channel == "webhook"] == ["retrying"]
        received: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            retry = dag.get_task("retry").python_callable
            too_soon = (published + datetime.timedelta(minutes=1)).replace(tzinfo=datetime.UTC)
            assert retry(data_interval_end=too_soon) == {}
            later = (published + datetime.timedelta(minutes=10)).replace(tzinfo=datetime.UTC)
            assert retry(data_interval_end=later) == {"delivered": 1}
        finally:
            server.shutdown()
            server.server_close()
        assert len(received) == 1 and b"enterprises_unconditional" in received[0]
    finally:
        get_settings.cache_clear()


def test_the_yearly_dag_writes_the_scorecard_and_the_sharing_reports(bag) -> None:  # type: ignore[no-untyped-def]
    dag = bag.dags["platform_scorecard"]
    assert sorted(t.task_id for t in dag.tasks) == ["scorecard", "sharing_reports"]
    assert dag.timetable == timetable("yearly")


def test_every_dag_has_owner_retries_tags_and_docs(bag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in bag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", (dag_id, t.task_id)
            assert t.retries >= 2, (dag_id, t.task_id)


def test_the_sensor_waits_until_an_extract_lands(  # type: ignore[no-untyped-def]
    bag, catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sensor's poke looks in the configured landing zone for the resource's extracts."""
    monkeypatch.setenv("GOVLAKE_LANDING", settings.landing)
    get_settings.cache_clear()
    try:
        poke = bag.dags["ingest_population_residents"].get_task("wait_for_extract").python_callable
        assert poke().is_done is False
        day = datetime.date(2026, 3, 1)
        made = generate(catalog, settings.landing_location, rows=50, as_of=day,
                        resources=["population.residents"])  # fmt: skip
        landed = poke()
        assert landed.is_done is True
        assert sorted(landed.xcom_value) == sorted(m.location.name for m in made)
        # Another resource's sensor still waits.
        other = bag.dags["ingest_credit_records"].get_task("wait_for_extract").python_callable
        assert other().is_done is False
    finally:
        get_settings.cache_clear()


def test_the_spark_connect_endpoint_comes_from_the_airflow_connection_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from govlake_app.orchestration import settings_for_task, spark_remote

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("SPARK_REMOTE", "sc://from-env:15002")
    assert spark_remote() == "sc://from-env:15002"
    # A Spark Connect connection of the apache-spark provider wins over SPARK_REMOTE.
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT",
        '{"conn_type": "spark_connect", "host": "spark.gov.internal", "port": 15002, '
        '"login": "govlake", "password": "s3cret-token", "extra": {"use_ssl": true}}',
    )
    url = "sc://spark.gov.internal:15002/;user_id=govlake;token=s3cret-token;use_ssl=True"
    assert spark_remote() == url
    get_settings.cache_clear()
    try:
        assert settings_for_task().spark_remote == url
    finally:
        get_settings.cache_clear()
    # Neither: the embedded engine.
    monkeypatch.delenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT")
    monkeypatch.delenv("SPARK_REMOTE")
    assert spark_remote() is None


def test_the_sensor_finds_extracts_in_an_s3_landing_zone(  # type: ignore[no-untyped-def]
    bag, catalog: Catalog, s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.create_bucket("sensor-landing")
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GOVLAKE_LANDING", "s3://sensor-landing/landing")
    get_settings.cache_clear()
    try:
        poke = bag.dags["ingest_legal_entity_enterprises"].get_task("wait_for_extract")
        assert poke.python_callable().is_done is False
        day = datetime.date(2026, 3, 1)
        made = generate(catalog, get_settings().landing_location, rows=50, as_of=day,
                        resources=["legal_entity.enterprises"])  # fmt: skip
        assert all(m.location.uri.startswith("s3://sensor-landing/") for m in made)
        landed = poke.python_callable()
        assert landed.is_done is True
        assert sorted(landed.xcom_value) == sorted(m.location.name for m in made)
        # Wrong credentials are an error the task shows, not an empty landing zone.
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(OSError):
            poke.python_callable()
    finally:
        get_settings.cache_clear()
