"""Run a suite of `Check`s on a Spark Connect DataFrame with Great Expectations.

The Great Expectations project lives in the warehouse (`<warehouse>/quality/gx`) when the
warehouse is a local folder: suites, validation results and the Data Docs site
(`<warehouse>/quality/gx/uncommitted/data_docs/local_site/index.html`) accumulate there run
after run. On object storage no project is kept and no Data Docs are written; the results
still land in `ops.quality_results`.

Runs of different resources validate side by side, in threads or processes: each
validates in an ephemeral context of its own, and only then files its suite and result
into the project and rebuilds the Data Docs, one run at a time under the project's lock
(Great Expectations rewrites its files in place, `great_expectations.yml` truncated first,
so a context that loads while another writes fails with `InvalidDataContextConfigError`).
"""

from __future__ import annotations

import fcntl
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from expectations import custom
from expectations.suites import Check

log = logging.getLogger(__name__)

_SAMPLE = 5
#: The lock file in a project folder, next to `gx/`.
LOCK_FILE = ".gx.lock"
# flock is per open file: threads of one process also need to take turns.
_thread_lock = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    """What one expectation found."""

    check: Check
    success: bool
    observed_value: str
    observed_ratio: float | None  # share of rows that kept the rule, for row-level checks
    unexpected_count: int | None
    element_count: int | None
    sample: list[str]


@dataclass(frozen=True)
class SuiteRun:
    outcomes: list[Outcome]
    data_docs: str | None  # the Data Docs page of this run, when a site is kept


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _context() -> Any:
    """A context that keeps everything in memory: nothing another run could see or break."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context: Any = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


@contextmanager
def project_context(project: Path) -> Iterator[Any]:
    """The file context of `project`, created if new, held by this run alone until the block
    ends (an exclusive lock on `project/.gx.lock`, across processes and threads)."""
    import great_expectations as gx

    project.mkdir(parents=True, exist_ok=True)
    with _thread_lock, open(project / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        yield gx.get_context(mode="file", project_root_dir=str(project))


def _expectations(checks: list[Check]) -> list[Any]:
    import great_expectations.expectations as gxe

    classes = {**vars(gxe), **vars(custom)}
    expectations = []
    for check in checks:
        expectation = classes[check.kind](**check.kwargs)
        expectation.meta = {
            "expectation": check.expectation,
            "dimension": check.dimension,
            "severity": check.severity,
            "threshold": check.threshold,
            "description": check.description,
        }
        expectations.append(expectation)
    return expectations


def _file_result(
    project: Path, name: str, checks: list[Check], identifier: Any, result: Any
) -> str | None:
    """Put the suite and one validation result into the project and update its Data Docs
    (the run's page, the suite's page and the index); the URL of the run's page."""
    import great_expectations as gx
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    with project_context(project) as context:
        context.suites.add_or_update(
            gx.ExpectationSuite(name=name, expectations=_expectations(checks))
        )
        context.validation_results_store.set(identifier, result)
        context.build_data_docs(
            resource_identifiers=[identifier, ExpectationSuiteIdentifier(name=name)]
        )
        sites = context.get_docs_sites_urls(resource_identifier=identifier)
    return next((site["site_url"] for site in sites if site.get("site_url")), None)


def _observed(result: dict[str, Any]) -> str:
    if "observed_value" in result:
        value = result["observed_value"]
        return value.isoformat() if hasattr(value, "isoformat") else str(value)
    if "unexpected_count" in result:
        return f"{result['unexpected_count']} unexpected of {result.get('element_count')}"
    return ""


def _ratio(result: dict[str, Any]) -> float | None:
    percent = result.get("unexpected_percent")
    if percent is None or "observed_value" in result:
        return None
    return round(1 - float(percent) / 100, 6)


def run_suite(df: DataFrame, checks: list[Check], *, name: str, project: Path | None) -> SuiteRun:
    """Validate `df` against `checks`; one `Outcome` per check, in order."""
    import great_expectations as gx

    for check in checks:
        if check.rule is not None and "rule_key" in check.kwargs:
            custom.register_rule(check.kwargs["rule_key"], check.rule)
    context = _context()
    name = _safe(name)
    batch = (
        context.data_sources.add_spark(name="govlake")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=_expectations(checks)))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            result_format={"result_format": "BASIC", "partial_unexpected_count": _SAMPLE},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df})
    identifier, validation = next(iter(result.run_results.items()))
    by_id = {r.expectation_config.meta.get("expectation"): r for r in validation.results}
    outcomes = []
    for check in checks:
        found = by_id[check.expectation]
        body = dict(found.result or {})
        if found.exception_info and found.exception_info.get("raised_exception"):
            message = found.exception_info.get("exception_message")
            raise RuntimeError(f"expectation {check.expectation} could not run: {message}")
        sample = [
            "<blank>" if v is None or str(v).strip() == "" else str(v)
            for v in body.get("partial_unexpected_list") or []
        ][:_SAMPLE]
        outcomes.append(
            Outcome(
                check=check,
                success=bool(found.success),
                observed_value=_observed(body),
                observed_ratio=_ratio(body),
                unexpected_count=body.get("unexpected_count"),
                element_count=body.get("element_count"),
                sample=sample,
            )
        )
    docs = None if project is None else _file_result(project, name, checks, identifier, validation)
    return SuiteRun(outcomes, docs)
