"""`govlake ingest` and `govlake sql`: run the pipeline of every (or one) resource from the
landing zone to its published tables, and query the lakehouse."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table as RichTable

from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings, get_settings
from govlake_app.cli.console import console, load_catalog, parse_moment, progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def ingest(
    resource: Annotated[str | None, typer.Option(help="only this resource")] = None,
    end: Annotated[
        str | None,
        typer.Option(help="end of the data interval, an ISO time (UTC unless given), default now"),
    ] = None,
) -> None:
    """Run landing → bronze → validate → silver → publish for every (or one) resource."""
    ingest_resources(resource, end=_moment(end) if end else None)


def _moment(text: str) -> datetime:
    """An ISO time from the command line; without an offset it is UTC."""
    moment = parse_moment(text, "--end")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def ingest_resources(
    resource: str | None, settings: Settings | None = None, *, end: datetime | None = None
) -> list[StageCounts]:
    """Run the stages of every (or one) resource's pipeline, with a progress bar, then print
    the ingestion and quality summaries; the counts of each resource."""
    from govlake.lake.engine import get_spark
    from govlake_app import pipeline as ingest_job

    settings = settings or get_settings()
    catalog = load_catalog(settings)
    resources = catalog.select(resource)
    started = time.perf_counter()
    spark = get_spark(settings, catalog, fresh=True)
    interval = Interval.ending(end)
    results = []
    with progress() as bars:
        task = bars.add_task("ingesting", total=len(resources) * len(ingest_job.STAGES))
        for r in resources:
            counts = StageCounts(r.qualified_name)
            for stage in ingest_job.STAGES:
                name = ingest_job.stage_name(stage)
                bars.update(task, description=f"{r.qualified_name}: {name}")
                ingest_job.run_stage(stage, spark, resource=r, interval=interval,
                                     settings=settings, counts=counts)  # fmt: skip
                bars.advance(task)
            results.append(counts)
    _summary(results, time.perf_counter() - started)
    _quality_summary(spark, settings, interval)
    return results


def _quality_summary(spark: SparkSession, settings: Settings, interval: Interval) -> None:
    """The expectation-suite runs of this ingestion: outcome and what failed."""
    from govlake.lake.tables import quality_tables, register

    runs, results = quality_tables(settings.warehouse_location)
    if not runs.location.is_delta_table():
        return
    register(spark, runs)
    register(spark, results)
    at = interval.end_naive_utc.isoformat(sep=" ")
    rows = spark.sql(
        f"SELECT q.resource, q.provider, q.scope, q.outcome, q.expectations, "
        f"q.failed_errors, q.failed_warnings, "
        f"concat_ws(', ', collect_list(CASE WHEN NOT r.success THEN "
        f"concat(r.expectation, ' (', r.observed_value, ')') END)) AS failing "
        f"FROM {runs.sql_name} q JOIN {results.sql_name} r USING (run_id) "
        f"WHERE q.checked_at = timestamp'{at}' "
        f"GROUP BY q.resource, q.provider, q.scope, q.outcome, q.expectations, "
        f"q.failed_errors, q.failed_warnings ORDER BY q.resource, q.scope, q.provider"
    ).collect()
    if not rows:
        return
    colours = {"passed": "green", "warned": "yellow", "held": "red"}
    table = RichTable(
        "resource",
        "provider",
        "suite",
        "outcome",
        "expectations",
        "failed (error / warn)",
        "failing",
        title="quality summary (ops.quality_results)",
    )
    for r in rows:
        table.add_row(
            r.resource,
            r.provider,
            r.scope,
            f"[{colours[r.outcome]}]{r.outcome}[/]",
            str(r.expectations),
            f"{r.failed_errors} / {r.failed_warnings}",
            r.failing or "-",
        )
    console.print(table)
    from jobs.quality import project_dir

    project = project_dir(settings)
    if project is not None:
        docs = project / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
        console.print(f"Great Expectations Data Docs: {docs}")


def _summary(results: list[StageCounts], seconds: float) -> None:
    table = RichTable(
        "resource",
        "extracts",
        "read",
        "malformed",
        "quarantined",
        "merged",
        "removed",
        "cross-check",
        "published",
        "silver v",
        "published versions",
        title=f"ingestion summary ({seconds:.1f} s)",
    )
    for c in results:
        versions = ", ".join(f"{k} v{v}" for k, v in c.published_versions.items())
        table.add_row(
            c.resource,
            str(len(c.extracts)),
            f"{c.rows_read:,}",
            f"{c.rows_malformed:,}",
            f"{c.rows_quarantined:,}",
            f"{c.rows_merged:,}",
            f"{c.rows_removed:,}",
            f"{c.crosscheck_findings:,}",
            f"{c.rows_published:,}" if c.published else "unchanged",
            "-" if c.silver_version is None else str(c.silver_version),
            versions or "-",
        )
    console.print(table)
    for c in results:
        for held in c.held:
            console.print(f"[red]held back:[/red] {c.resource}: {held}")
    for c in results:
        for rejected in c.rejected:
            console.print(
                f"[red]rejected[/red] {c.resource}: {rejected.file}: "
                f"{rejected.rule}: {rejected.reason}"
            )
        for name in c.skipped_files:
            console.print(f"[yellow]skipped[/yellow] {c.resource}: {name} (already ingested)")
        for name, columns in c.ignored_columns.items():
            console.print(
                f"[yellow]ignored columns[/yellow] {c.resource}: {name}: "
                f"{', '.join(columns)} (not in the catalogue)"
            )


def sql(query: str, limit: Annotated[int, typer.Option(help="rows to show")] = 50) -> None:
    """Run a SQL query over the lakehouse and print the result as a table."""
    from govlake.lake.engine import get_spark

    settings = get_settings()
    spark = get_spark(settings, load_catalog(settings), fresh=True)
    frame = spark.sql(query)
    rows = frame.limit(limit).collect()
    table = RichTable(*frame.columns)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)
    console.print(f"{len(rows)} row(s) shown (limit {limit})")
