"""DAG integrity: every DAG file imports, one ingestion DAG per catalogued resource, each
DAG has an owner, retries, tags and docs, and parsing the folder stays fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from govlake.catalog import Catalog
from govlake.orchestration import SCHEDULES

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(home))
        patch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        from airflow.dag_processing.dagbag import DagBag

        started = time.perf_counter()
        bag = DagBag(dag_folder=str(DAGS))
        bag.parse_seconds = time.perf_counter() - started
        yield bag


def test_every_dag_file_imports(bag) -> None:  # type: ignore[no-untyped-def]
    assert bag.import_errors == {}
    # generous: parsing is a couple of seconds here; a slow import would show up
    assert bag.parse_seconds < 30


def test_one_ingestion_dag_per_resource(bag, catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    ingestion = {d for d in bag.dags if d.startswith("ingest_")}
    assert ingestion == {f"ingest_{r.theme}_{r.name}" for r in catalog}
    for resource in catalog:
        dag = bag.dags[f"ingest_{resource.theme}_{resource.name}"]
        assert dag.owner == resource.provider
        assert {resource.theme, resource.sharing} <= set(dag.tags)
        assert resource.title in (dag.doc_md or "")
        assert [t.task_id for t in dag.tasks] == [
            "wait_for_extract", "bronze", "validate", "silver", "publish", "report",
        ]  # fmt: skip
        sensor = dag.get_task("wait_for_extract")
        assert sensor.mode == "reschedule"
        assert dag.schedule == SCHEDULES[resource.update_cycle]


def test_platform_dags(bag) -> None:  # type: ignore[no-untyped-def]
    assert {"platform_timeliness", "platform_quality_reports", "platform_maintenance",
            "platform_scorecard"} <= set(bag.dags)  # fmt: skip


def test_every_dag_has_owner_retries_tags_and_docs(bag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in bag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", (dag_id, t.task_id)
            assert t.retries >= 2, (dag_id, t.task_id)
