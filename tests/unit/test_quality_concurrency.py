"""Expectation suites of different resources validate side by side: processes that run
suites at the same moment on one warehouse's Great Expectations project (a fresh one, and
then one they all write to) all succeed, and the Data Docs site lists every run.

Great Expectations rewrites `great_expectations.yml` in place (truncate, then write): a
context loading it in between finds it empty and fails (`InvalidDataContextConfigError:
... _schema`). The window is short, so the processes here write through a slow disk
(`_slow_config_writes`), which turns a race seen once in dozens of runs into one seen on
nearly every run of code that lets runs load and rewrite the project at the same time."""

from __future__ import annotations

import multiprocessing
import time
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from expectations.runner import run_suite
from expectations.suites import Check
from govlake.core.settings import Settings
from govlake.lake.engine import remote_url

pytestmark = pytest.mark.slow

PROCESSES, ROUNDS, SUITES = 3, 3, 2


def _checks() -> list[Check]:
    return [
        Check("id.required", "completeness", "id", "error", "ExpectColumnValuesToNotBeNull",
              {"column": "id"}, "every row", "the id is not blank"),
        Check("key.unique", "uniqueness", "id", "error", "ExpectColumnValuesToBeUnique",
              {"column": "id"}, "every row", "the key occurs once"),
    ]  # fmt: skip


def _suite(worker: int, suite: int) -> str:
    return f"theme{worker}.resource{suite}.extract"


def _slow_config_writes(seconds: float = 0.2) -> None:
    """Leave `great_expectations.yml` empty for `seconds` whenever a context saves it, as
    `open(path, "w")` does for an instant before the new content is written."""
    from great_expectations.data_context.data_context.file_data_context import (
        FileDataContext,
    )

    save = FileDataContext._save_project_config

    def slowly(self: FileDataContext) -> None:
        Path(self.root_directory, self.GX_YML).write_text("", encoding="utf-8")
        time.sleep(seconds)
        save(self)

    FileDataContext._save_project_config = slowly  # type: ignore[method-assign]


def _validate(
    url: str, projects: list[str], worker: int, barrier: Barrier, failures: Queue[str]
) -> None:
    """One process: in each round, wait for the others, then run its suites on that round's
    project. Puts what went wrong, if anything, on `failures`."""
    try:
        _slow_config_writes()
        spark = SparkSession.builder.remote(url).create()
        df = spark.createDataFrame([(i,) for i in range(20)], "id int")
        run_suite(df, _checks(), name="warm-up", project=None)  # imports and first plans
        for project in projects:
            barrier.wait(timeout=300)
            for suite in range(SUITES):
                run = run_suite(df, _checks(), name=_suite(worker, suite), project=Path(project))
                assert all(o.success for o in run.outcomes), run.outcomes
                assert run.data_docs and Path(run.data_docs.removeprefix("file://")).exists()
    except BaseException:
        barrier.abort()
        failures.put(f"process {worker}: {traceback.format_exc()}")


def test_suites_of_different_resources_validate_side_by_side(tmp_path: Path) -> None:
    url = remote_url(Settings(spark_remote=None))  # one engine; the processes are clients
    projects = [str(tmp_path / f"round{r}" / "quality") for r in range(ROUNDS)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    failures: Queue[str] = context.Queue()
    processes = [
        context.Process(target=_validate, args=(url, projects, worker, barrier, failures))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(900)
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert not found, "\n".join(found)
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    for project in projects:
        site = Path(project) / "gx" / "uncommitted" / "data_docs" / "local_site"
        index = (site / "index.html").read_text(encoding="utf-8")
        for worker in range(PROCESSES):
            for suite in range(SUITES):
                name = _suite(worker, suite)
                assert name in index, f"{name} missing from {site / 'index.html'}"
                assert list(site.joinpath("validations", *name.split(".")).rglob("*.html")), name
