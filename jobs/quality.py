"""Quality gates: run the catalogue's expectation suites and keep every result.

`check_extract` judges one extract as delivered (called by `validate`): an error-level
failure holds the extract back, so none of its records reach silver. `check_publication`
judges the table about to be published (called by `publish`): an error-level failure holds
the publication back, so consumers keep the version they have. Either way the outcome of
every expectation goes to `ops.quality_results` and the run to `ops.quality_runs`, with the
reason for a hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from expectations.runner import Outcome, run_suite
from expectations.suites import (
    AS_OF_COLUMN,
    DISPUTED_COLUMN,
    RECORD_TIME_COLUMN,
    Check,
    Scope,
    extract_suite,
    publication_suite,
)
from govlake.core.catalog import Resource, grace
from govlake.core.runs import Interval
from govlake.core.settings import Settings
from govlake.lake.statements import append, sql_literal
from govlake.lake.tables import Table, TableSet, ops_tables, quality_tables, register
from govlake.transforms.rules import quote, result_column
from jobs import registry


@dataclass(frozen=True)
class Verdict:
    """The outcome of one suite run."""

    run_id: str
    outcome: str  # passed | warned | held
    reason: str | None
    outcomes: list[Outcome]

    @property
    def held(self) -> bool:
        return self.outcome == "held"


@dataclass(frozen=True)
class _Run:
    """What one suite run checks: an extract (`extract_id`) or a silver version about to be
    published (`silver_version`), with the time of the check and the rows checked."""

    resource: Resource
    provider: str
    checked_at: datetime
    rows: int
    extract_id: str | None = None
    silver_version: int | None = None

    @property
    def scope(self) -> Scope:
        return "extract" if self.extract_id is not None else "publication"

    @property
    def subject(self) -> str:
        return self.extract_id if self.extract_id is not None else f"silver-v{self.silver_version}"

    @property
    def run_id(self) -> str:
        return (
            f"{self.scope}:{self.resource.qualified_name}:{self.subject}:"
            f"{self.checked_at:%Y%m%dT%H%M%S}"
        )


def project_dir(settings: Settings) -> Path | None:
    """The Great Expectations project (suites, results, Data Docs) in a local warehouse."""
    warehouse = settings.warehouse_location
    return Path(warehouse.child("quality").uri) if warehouse.is_local else None


def _failure(outcome: Outcome) -> str:
    check = outcome.check
    text = f"{check.expectation} ({check.dimension}, {check.severity}): {check.description}"
    text += f"; expected {check.threshold}, observed {outcome.observed_value}"
    if outcome.sample:
        text += f"; e.g. {', '.join(quote(v) for v in outcome.sample[:3])}"
    return text


def _verdict(run_id: str, outcomes: list[Outcome]) -> Verdict:
    errors = [o for o in outcomes if not o.success and o.check.severity == "error"]
    warnings = [o for o in outcomes if not o.success and o.check.severity == "warn"]
    if errors:
        return Verdict(run_id, "held", "; ".join(_failure(o) for o in errors), outcomes)
    if warnings:
        return Verdict(run_id, "warned", "; ".join(_failure(o) for o in warnings), outcomes)
    return Verdict(run_id, "passed", None, outcomes)


def _record(
    spark: SparkSession, settings: Settings, verdict: Verdict, run: _Run, data_docs: str | None
) -> None:
    runs, results = quality_tables(settings.warehouse_location)
    resource, provider, scope, checked_at = run.resource, run.provider, run.scope, run.checked_at
    register(spark, runs)
    register(spark, results)
    failed = [o for o in verdict.outcomes if not o.success]
    run_row = (
        verdict.run_id, resource.qualified_name, provider, scope, run.extract_id,
        run.silver_version, checked_at, run.rows, len(verdict.outcomes),
        sum(o.check.severity == "error" for o in failed),
        sum(o.check.severity == "warn" for o in failed),
        verdict.outcome, verdict.reason, data_docs,
    )  # fmt: skip
    append(spark.createDataFrame([run_row], runs.ddl_columns()), runs)
    result_rows = [
        (
            verdict.run_id,
            resource.qualified_name,
            provider,
            scope,
            run.extract_id,
            checked_at,
            o.check.expectation,
            o.check.kind,
            o.check.dimension,
            o.check.item,
            o.check.severity,
            o.check.threshold,
            o.observed_value,
            o.observed_ratio,
            o.unexpected_count,
            o.element_count,
            o.success,
            " | ".join(quote(v) for v in o.sample) or None,
        )
        for o in verdict.outcomes
    ]
    append(spark.createDataFrame(result_rows, results.ddl_columns()), results)


def previous_extract_rows(
    spark: SparkSession, extracts: Table, resource: Resource, provider: str, extract_id: str
) -> int | None:
    """Rows of the provider's latest earlier extract that went through (merged or published)."""
    last = registry.latest(
        spark, extracts, resource, columns="rows_read", order="as_of DESC, ingested_at DESC",
        where=f"AND provider = {sql_literal(provider)} AND extract_id <> {sql_literal(extract_id)} "
        "AND status IN ('merged', 'published') ",
    )  # fmt: skip
    return None if last is None else int(last.rows_read)


def check_extract(
    spark: SparkSession,
    *,
    resource: Resource,
    extract: Row,
    records: DataFrame,
    interval: Interval,
    settings: Settings,
) -> Verdict:
    """Run the extract suite on `records` (the extract's bronze rows) and record it."""
    extracts, _ = ops_tables(settings.warehouse_location)
    checked_at = interval.end_naive_utc
    checks = extract_suite(
        resource,
        extract.provider,
        run_date=interval.end.date(),
        checked_at=checked_at,
        previous_rows=previous_extract_rows(
            spark, extracts, resource, extract.provider, extract.extract_id
        ),
        grace=grace(resource, settings.timeliness_grace),
    )
    data = records.withColumn(AS_OF_COLUMN, F.lit(extract.as_of or checked_at).cast("timestamp"))
    freshness = resource.quality.freshness
    if freshness is not None and freshness.item in data.columns:
        # A record time after the run is a validity defect (`not_future`), not freshness.
        record_time = F.expr(f"try_cast(`{freshness.item}` as timestamp)")
        data = data.withColumn(
            RECORD_TIME_COLUMN,
            F.when(record_time <= F.lit(checked_at).cast("timestamp"), record_time),
        )
    run = _Run(resource, extract.provider, checked_at, int(extract.rows_read or 0),
               extract_id=extract.extract_id)  # fmt: skip
    return _run_and_record(spark, settings, data.select(*_read_by(checks, data.columns)), checks,
                           run)  # fmt: skip


def _read_by(checks: list[Check], columns: list[str]) -> list[str]:
    """The columns of `columns` that `checks` read: the items they name and the rule results
    (`rules.evaluate`) of their row rules. Great Expectations gets only these: the uniqueness
    check's window sorts every column it is given."""
    wanted: set[str] = set()
    for check in checks:
        wanted.update(check.kwargs.get("column_list", []))
        if "column" in check.kwargs:
            wanted.add(check.kwargs["column"])
        if check.rule is not None:
            wanted.add(result_column(check.rule.rule_id))
    return [c for c in columns if c in wanted]


def last_held_silver_version(
    spark: SparkSession, settings: Settings, resource: Resource
) -> int | None:
    """The silver version whose publication was last held back, if the last check held it."""
    runs, _ = quality_tables(settings.warehouse_location)
    register(spark, runs)
    last = registry.latest(spark, runs, resource, columns="silver_version, outcome",
                           where="AND scope = 'publication' ",
                           order="checked_at DESC, silver_version DESC")  # fmt: skip
    if last is None or last.outcome != "held":
        return None
    return int(last.silver_version)


def check_publication(
    spark: SparkSession,
    *,
    resource: Resource,
    candidate: DataFrame,
    rows: int,
    silver_version: int,
    interval: Interval,
    settings: Settings,
    judge_volume: bool = True,
) -> Verdict:
    """Run the publication suite on `candidate` (silver rows about to be published: all of
    them, or only the changed ones, whose count says nothing of the table's volume — then
    `judge_volume` is false and the volume check is left out)."""
    tables = TableSet(resource, settings.warehouse_location)
    crosschecked = any(resource.crosscheck_items(p) for p in resource.providers)
    data = candidate
    if crosschecked:
        register(spark, tables.crosscheck)
        disputed = (
            spark.table(tables.crosscheck.sql_name)
            .where(F.col("status") == "open")
            .select(*resource.key)
            .distinct()
            .withColumn(DISPUTED_COLUMN, F.lit(True))
        )
        data = candidate.join(disputed, on=resource.key, how="left").withColumn(
            DISPUTED_COLUMN, F.coalesce(F.col(DISPUTED_COLUMN), F.lit(False))
        )
    latest = registry.latest_publication(spark, settings, resource)
    checks = publication_suite(
        resource,
        previous_rows=None if latest is None or not judge_volume else int(latest.rows),
        crosschecked=crosschecked,
    )
    run = _Run(resource, resource.provider, interval.end_naive_utc, rows,
               silver_version=silver_version)  # fmt: skip
    return _run_and_record(spark, settings, data, checks, run)


def _run_and_record(
    spark: SparkSession, settings: Settings, data: DataFrame, checks: list[Check], run: _Run
) -> Verdict:
    resource, provider, scope = run.resource, run.provider, run.scope
    suite = f"{resource.qualified_name}.{scope}" + (f".{provider}" if scope == "extract" else "")
    result = run_suite(data, checks, name=suite, project=project_dir(settings))
    verdict = _verdict(run.run_id, result.outcomes)
    _record(spark, settings, verdict, run, result.data_docs)
    return verdict
