"""The steward's quality report: what one provider department delivered in a period and how
it fared against the catalogue's expectations (51号 art. 13, 15).

`gather_quality_report` queries `ops.extracts`, `ops.quality_results`, the quarantine and
cross-check tables and the timeliness monitor; `build_quality_report` (pure) turns those rows
into a `QualityReport`; `render_quality_report` draws the charts and fills
`templates/quality.html.j2`. The period covers the extracts the platform *received* (their
`ingested_at`) and the checks it ran (`checked_at`) from `since` 00:00 UTC up to `at`.

A report only reads: its callers bring the catalogue change register up to date first
(`govlake.governance.changes.sync`), as the CLI and the DAGs do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pyspark.sql import SparkSession

from govlake.core.catalog import CYCLE_HOURS, Catalog, Department, Resource, grace
from govlake.core.figures import Summed
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings
from govlake.governance.changes import Upkeep, upkeep
from govlake.governance.timeliness import Timeliness, assess, last_deliveries, last_publications
from govlake.lake.statements import sql_literal
from govlake.lake.tables import TableSet, ops_tables, quality_tables
from govlake.platform.database import session
from govlake.reports import Period, ReportError, fetch, render
from govlake.reports.charts import Series, bar_chart, time_chart
from govlake.sharing.requests import Awaiting, awaiting_answer

#: Quality dimensions in the order the report shows them; the first four always appear.
DIMENSIONS = ("completeness", "validity", "uniqueness", "timeliness", "volume", "consistency")
_ALWAYS_SHOWN = DIMENSIONS[:4]
DEFAULT_DAYS = 30
_TOP = 10
_FAILURES_SHOWN = 50
_EXAMPLES = 3

Rows = Sequence[Mapping[str, Any]]


# -- what the report holds ---------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractLine:
    """One extract the department delivered in the period."""

    extract_id: str
    file_name: str
    as_of: datetime | None
    ingested_at: datetime | None
    status: str
    reason: str | None
    rows_read: int
    rows_quarantined: int
    rows_merged: int
    crosscheck_findings: int
    on_time: bool | None  # the `as_of.timeliness` expectation; None when never checked


class _Checked(Protocol):
    @property
    def expectations(self) -> int: ...
    @property
    def passed(self) -> int: ...


class _PassRate:
    """The share of expectations that passed, None without any."""

    @property
    def pass_rate(self: _Checked) -> float | None:
        return self.passed / self.expectations if self.expectations else None


def _row_totals(over: str) -> tuple[Summed, Summed, Summed]:
    """`rows_read`, `rows_quarantined`, `rows_merged` summed over the items of `over`."""
    return Summed(over, "rows_read"), Summed(over, "rows_quarantined"), Summed(over, "rows_merged")


@dataclass(frozen=True)
class DimensionFigure(_PassRate):
    """How the department's extracts fared on one quality dimension."""

    dimension: str
    expectations: int
    passed: int
    rows_checked: int  # rows judged by row-level expectations
    rows_passing: int

    @property
    def row_pass_rate(self) -> float | None:
        return self.rows_passing / self.rows_checked if self.rows_checked else None


@dataclass(frozen=True)
class FailedCheck:
    """One expectation that failed on one run."""

    checked_at: datetime
    scope: str
    file_name: str
    expectation: str
    dimension: str
    severity: str
    threshold: str
    observed_value: str
    sample: str


@dataclass(frozen=True)
class FailingRule:
    """An expectation that failed at least once in the period."""

    expectation: str
    dimension: str
    severity: str
    runs: int
    failed_runs: int
    unexpected_rows: int


@dataclass(frozen=True)
class QuarantineRule:
    """A row rule and the records it sent to quarantine, with one reason as an example."""

    rule: str
    rows: int
    example: str


@dataclass(frozen=True)
class FindingExample:
    key: str
    authority_value: str
    provider_value: str


@dataclass(frozen=True)
class Finding:
    """Open cross-check findings of one item: `provider`'s copy differs from `authority`'s."""

    resource: str
    item: str
    authority: str
    provider: str
    open_findings: int
    new_in_period: int
    examples: tuple[FindingExample, ...]


@dataclass(frozen=True)
class ResourceQuality(_PassRate):
    """Everything about one resource the department supplies."""

    resource: str
    title: str
    update_cycle: str
    responsible: bool  # the department is the resource's responsible provider
    authority_for: tuple[str, ...]  # items whose authoritative value the department supplies
    extracts: tuple[ExtractLine, ...]
    dimensions: tuple[DimensionFigure, ...]
    publication_checks: DimensionFigure | None  # publication suite, if responsible
    failures: tuple[FailedCheck, ...]
    failures_total: int
    failing_rules: tuple[FailingRule, ...]
    quarantine: tuple[QuarantineRule, ...]
    completeness: tuple[tuple[datetime, float], ...]  # per extract run: share of required values
    ages: tuple[tuple[datetime, float], ...]  # per extract: age at receipt ÷ allowed age

    @property
    def role(self) -> str:
        if self.responsible:
            return "responsible provider"
        if self.authority_for:
            return f"authority for {', '.join(self.authority_for)}"
        return "copy for cross-checking"

    rows_read, rows_quarantined, rows_merged = _row_totals("extracts")

    @property
    def expectations(self) -> int:
        return sum(d.expectations for d in self.dimensions)

    @property
    def passed(self) -> int:
        return sum(d.passed for d in self.dimensions)

    @property
    def held(self) -> list[ExtractLine]:
        return [e for e in self.extracts if e.status in ("held", "rejected")]


@dataclass(frozen=True)
class QualityReport(_PassRate):
    """The steward report of one provider department over one period."""

    department: Department
    period: Period
    resources: tuple[ResourceQuality, ...]
    disputed: tuple[Finding, ...]  # items it is the authority for, disputed by others
    disagreeing: tuple[Finding, ...]  # its copies that differ from another authority's
    timeliness: tuple[Timeliness, ...]  # publications it is responsible for, its deliveries
    awaiting: tuple[Awaiting, ...] = ()  # access and verification requests it must answer
    catalogue: tuple[Upkeep, ...] = ()  # reviews, updates and records of its entries

    @property
    def has_data(self) -> bool:
        return any(r.extracts for r in self.resources)

    @property
    def extracts(self) -> int:
        return sum(len(r.extracts) for r in self.resources)

    rows_read, rows_quarantined, rows_merged = _row_totals("resources")
    expectations, passed = Summed("resources"), Summed("resources")

    @property
    def held(self) -> int:
        return sum(len(r.held) for r in self.resources)

    @property
    def subject(self) -> str:
        d = self.department
        return f"Data quality report: {d.name} ({d.code}), {self.period.label}"

    @property
    def file_name(self) -> str:
        return f"quality_{self.department.code}_{self.period.last_day:%Y-%m-%d}.html"


@dataclass(frozen=True)
class ReportFile:
    """A written report and what it holds."""

    path: Path
    report: QualityReport


# -- pure: rows → report -----------------------------------------------------------------------
def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _dimensions(results: Rows) -> tuple[DimensionFigure, ...]:
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in results:
        grouped[row["dimension"]].append(row)
    shown = [d for d in DIMENSIONS if d in _ALWAYS_SHOWN or d in grouped]
    shown += sorted(set(grouped) - set(DIMENSIONS))
    return tuple(_figure(name, grouped.get(name, [])) for name in shown)


def _figure(dimension: str, rows: Rows) -> DimensionFigure:
    row_level = [r for r in rows if r["observed_ratio"] is not None and r["element_count"]]
    checked = sum(_int(r["element_count"]) for r in row_level)
    failing = sum(_int(r["unexpected_count"]) for r in row_level)
    return DimensionFigure(
        dimension=dimension,
        expectations=len(rows),
        passed=sum(bool(r["success"]) for r in rows),
        rows_checked=checked,
        rows_passing=checked - failing,
    )


def _failing_rules(results: Rows) -> tuple[FailingRule, ...]:
    grouped: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in results:
        grouped[row["expectation"], row["dimension"], row["severity"]].append(row)
    rules = [
        FailingRule(
            expectation=expectation,
            dimension=dimension,
            severity=severity,
            runs=len(rows),
            failed_runs=sum(not r["success"] for r in rows),
            unexpected_rows=sum(_int(r["unexpected_count"]) for r in rows if not r["success"]),
        )
        for (expectation, dimension, severity), rows in grouped.items()
    ]
    failing = [r for r in rules if r.failed_runs]
    failing.sort(key=lambda r: (-r.failed_runs, -r.unexpected_rows, r.expectation))
    return tuple(failing[:_TOP])


def _completeness(results: Rows) -> tuple[tuple[datetime, float], ...]:
    by_run: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in results:
        if row["dimension"] == "completeness" and row["element_count"]:
            by_run[row["run_id"]].append(row)
    points = []
    for rows in by_run.values():
        checked = sum(_int(r["element_count"]) for r in rows)
        missing = sum(_int(r["unexpected_count"]) for r in rows)
        points.append((rows[0]["checked_at"], (checked - missing) / checked))
    return tuple(sorted(points))


def _extract_lines(extracts: Rows, results: Rows) -> tuple[ExtractLine, ...]:
    """The period's extracts in arrival order, each with whether its as-of check passed."""
    on_time = {
        r["extract_id"]: bool(r["success"])
        for r in results
        if r["scope"] == "extract" and r["expectation"] == "as_of.timeliness"
    }
    return tuple(
        ExtractLine(
            extract_id=e["extract_id"],
            file_name=_text(e["file_name"]),
            as_of=e["as_of"],
            ingested_at=e["ingested_at"],
            status=_text(e["status"]),
            reason=e["reason"],
            rows_read=_int(e["rows_read"]),
            rows_quarantined=_int(e["rows_quarantined"]),
            rows_merged=_int(e["rows_merged"]),
            crosscheck_findings=_int(e["crosscheck_findings"]),
            on_time=on_time.get(e["extract_id"]),
        )
        for e in sorted(extracts, key=lambda e: (e["ingested_at"] or datetime.min, e["file_name"]))
    )


def _failed_checks(
    results: Rows, files: Mapping[str, str]
) -> tuple[list[Mapping[str, Any]], tuple[FailedCheck, ...]]:
    """Every failed check, and the latest of them as shown (within one run, errors before
    warnings)."""
    failed = sorted(
        (r for r in results if not r["success"]),
        key=lambda r: (r["severity"] != "error", r["expectation"]),
    )
    failed.sort(key=lambda r: r["checked_at"], reverse=True)
    shown = tuple(
        FailedCheck(
            checked_at=r["checked_at"],
            scope=r["scope"],
            file_name=files.get(r["extract_id"], r["extract_id"] or "published table"),
            expectation=r["expectation"],
            dimension=r["dimension"],
            severity=r["severity"],
            threshold=_text(r["threshold"]),
            observed_value=_text(r["observed_value"]),
            sample=_text(r["sample"]),
        )
        for r in failed[:_FAILURES_SHOWN]
    )
    return failed, shown


def _ages(
    resource: Resource, lines: Sequence[ExtractLine], grace_fraction: float
) -> tuple[tuple[datetime, float], ...]:
    """Each extract's age on arrival as a share of what the extract check allows: one update
    cycle plus the monitor's grace."""
    allowed = timedelta(hours=CYCLE_HOURS[resource.update_cycle]) + grace(resource, grace_fraction)
    return tuple(
        sorted(
            (e.ingested_at, (e.ingested_at - e.as_of) / allowed)
            for e in lines
            if e.as_of is not None and e.ingested_at is not None
        )
    )


def _resource_quality(
    resource: Resource,
    provider: str,
    extracts: Rows,
    results: Rows,
    quarantine: Rows,
    grace_fraction: float,
) -> ResourceQuality:
    lines = _extract_lines(extracts, results)
    extract_results = [r for r in results if r["scope"] == "extract"]
    publication_results = [r for r in results if r["scope"] == "publication"]
    failed, failures = _failed_checks(results, {e.extract_id: e.file_name for e in lines})
    return ResourceQuality(
        resource=resource.qualified_name,
        title=resource.title,
        update_cycle=resource.update_cycle,
        responsible=resource.provider == provider,
        authority_for=tuple(resource.authoritative_items(provider)),
        extracts=lines,
        dimensions=_dimensions(extract_results),
        publication_checks=(
            _figure("publication", publication_results) if publication_results else None
        ),
        failures=failures,
        failures_total=len(failed),
        failing_rules=_failing_rules(results),
        quarantine=tuple(
            QuarantineRule(rule=q["rule"], rows=_int(q["rows"]), example=_text(q["example"]))
            for q in sorted(quarantine, key=lambda q: (-_int(q["rows"]), q["rule"]))
        ),
        completeness=_completeness(extract_results),
        ages=_ages(resource, lines, grace_fraction),
    )


def _findings(rows: Rows) -> tuple[Finding, ...]:
    grouped: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["resource"], row["item"], row["authority"], row["provider"]].append(row)
    findings = [
        Finding(
            resource=resource,
            item=item,
            authority=authority,
            provider=provider,
            open_findings=_int(group[0]["open_findings"]),
            new_in_period=_int(group[0]["new_in_period"]),
            examples=tuple(
                FindingExample(
                    _text(r["key"]), _text(r["authority_value"]), _text(r["provider_value"])
                )
                for r in group[:_EXAMPLES]
            ),
        )
        for (resource, item, authority, provider), group in grouped.items()
    ]
    findings.sort(key=lambda f: (-f.open_findings, f.resource, f.item, f.provider))
    return tuple(findings)


def supplied_resources(catalog: Catalog, provider: str) -> list[Resource]:
    """The resources `provider` delivers extracts of (catalogued in their `sources`)."""
    return [r for r in catalog if provider in r.sources]


def build_quality_report(
    catalog: Catalog,
    department: Department,
    *,
    period: Period,
    extracts: Rows,
    results: Rows,
    quarantine: Mapping[str, Rows],
    findings: Rows,
    timeliness: Sequence[Timeliness],
    grace_fraction: float,
) -> QualityReport:
    """Pure: the report from the query rows. `extracts` and `results` are the department's
    rows of `ops.extracts` / `ops.quality_results` in the period; `quarantine` maps a resource
    to its rule counts (`rule`, `rows`, `example`); `findings` are open cross-check rows with
    `resource`, `key`, counts per group and up to a few examples each; `grace_fraction` is
    the timeliness grace (`settings.timeliness_grace`)."""
    code = department.code
    sections = []
    for resource in supplied_resources(catalog, code):
        name = resource.qualified_name
        sections.append(
            _resource_quality(
                resource,
                code,
                [e for e in extracts if e["resource"] == name],
                [r for r in results if r["resource"] == name],
                quarantine.get(name, []),
                grace_fraction,
            )
        )
    return QualityReport(
        department=department,
        period=period,
        resources=tuple(sections),
        disputed=_findings([f for f in findings if f["authority"] == code]),
        disagreeing=_findings([f for f in findings if f["provider"] == code]),
        timeliness=tuple(t for t in timeliness if t.provider == code),
    )


# -- queries -----------------------------------------------------------------------------------
def report_period(*, since: date | None, at: datetime) -> Period:
    """From `since` 00:00 UTC (default: `DEFAULT_DAYS` days before `at`) up to `at`."""
    end = naive_utc(at)
    start = (
        datetime.combine(since, datetime.min.time())
        if since is not None
        else end - timedelta(days=DEFAULT_DAYS)
    )
    if start >= end:
        raise ReportError(
            f"--since {start:%Y-%m-%d} is not before the report time {end:%Y-%m-%d %H:%M} UTC"
        )
    return Period(start, end)


def _quarantine_rules(
    spark: SparkSession, tables: TableSet, provider: str, extract_ids: list[str]
) -> list[dict[str, Any]]:
    if not extract_ids:
        return []
    table = tables.quarantine
    ids = ", ".join(sql_literal(i) for i in extract_ids)
    # One record can break several rules (`_rules` is comma-separated): count it under each,
    # and prefer as the example a record that broke only that rule (its reason is clearest).
    return fetch(
        spark,
        f"SELECT rule, count(*) AS rows, "
        f"coalesce(first(CASE WHEN _rules = rule THEN _reason END, true), first(_reason, true)) "
        f"AS example FROM (SELECT explode(split(_rules, ',')) AS rule, _rules, _reason "
        f"FROM {table.sql_name} WHERE _provider = {sql_literal(provider)} "
        f"AND _extract_id IN ({ids})) WHERE rule <> '' GROUP BY rule",
        table,
    )


def _open_findings(
    spark: SparkSession, resource: Resource, settings: Settings, provider: str, period: Period
) -> list[dict[str, Any]]:
    table = TableSet(resource, settings.warehouse_location).crosscheck
    key = ", ".join(f"cast(`{k}` AS string)" for k in resource.key)
    group = "PARTITION BY item, authority, provider"
    who = sql_literal(provider)
    return fetch(
        spark,
        f"SELECT {sql_literal(resource.qualified_name)} AS resource, * FROM ("
        f"SELECT concat_ws(' / ', {key}) AS key, item, authority, authority_value, provider, "
        f"provider_value, count(*) OVER ({group}) AS open_findings, "
        f"sum(CASE WHEN {period.where('detected_at')} THEN 1 ELSE 0 END) OVER ({group}) "
        f"AS new_in_period, "
        f"row_number() OVER ({group} ORDER BY detected_at DESC, {key}) AS example "
        f"FROM {table.sql_name} WHERE status = 'open' "
        f"AND detected_at < {sql_literal(period.end)} "
        f"AND (authority = {who} OR provider = {who})) WHERE example <= {_EXAMPLES}",
        table,
    )


def _timeliness(
    spark: SparkSession, catalog: Catalog, settings: Settings, provider: str, at: datetime
) -> list[Timeliness]:
    """The monitor's view at `at`: publications of the resources `provider` is responsible
    for, and its own deliveries of every resource it supplies."""
    extracts, publications = ops_tables(settings.warehouse_location)
    # The monitor's queries create missing ops tables; a report only reads.
    published = last_publications(spark, settings) if publications.location.is_delta_table() else {}
    delivered = last_deliveries(spark, settings) if extracts.location.is_delta_table() else {}
    fraction = settings.timeliness_grace
    states = [
        assess(r, published.get(r.qualified_name), at=at, grace_fraction=fraction)
        for r in catalog
        if r.provider == provider
    ]
    states += [
        assess(
            r,
            delivered.get((r.qualified_name, provider)),
            at=at,
            grace_fraction=fraction,
            provider=provider,
        )
        for r in supplied_resources(catalog, provider)
    ]
    return states


def known_department(catalog: Catalog, provider: str) -> Department:
    """The provider department `provider`, or a `ReportError` listing the known ones."""
    if provider not in catalog.providers:
        raise ReportError(
            f"unknown provider department {provider!r}; known: {', '.join(catalog.providers)}"
        )
    return catalog.department(provider)


def gather_quality_report(
    spark: SparkSession,
    catalog: Catalog,
    settings: Settings,
    provider: str,
    *,
    since: date | None = None,
    at: datetime,
) -> QualityReport:
    """Query what `provider` delivered from `since` (default 30 days before `at`) up to `at`."""
    department = known_department(catalog, provider)
    period = report_period(since=since, at=at)
    who = sql_literal(provider)
    extracts_table, _ = ops_tables(settings.warehouse_location)
    _, results_table = quality_tables(settings.warehouse_location)
    extracts = fetch(
        spark,
        f"SELECT extract_id, resource, file_name, as_of, ingested_at, status, reason, rows_read, "
        f"rows_quarantined, rows_merged, crosscheck_findings FROM {extracts_table.sql_name} "
        f"WHERE provider = {who} AND {period.where('ingested_at')}",
        extracts_table,
    )
    # Extract checks of the department's deliveries, and publication checks of the resources
    # it is responsible for (those carry the responsible provider).
    results = fetch(
        spark,
        f"SELECT run_id, resource, scope, extract_id, checked_at, expectation, dimension, "
        f"severity, threshold, observed_value, observed_ratio, unexpected_count, element_count, "
        f"success, sample FROM {results_table.sql_name} "
        f"WHERE provider = {who} AND {period.where('checked_at')}",
        results_table,
    )
    quarantine: dict[str, list[dict[str, Any]]] = {}
    findings: list[dict[str, Any]] = []
    for resource in supplied_resources(catalog, provider):
        name = resource.qualified_name
        tables = TableSet(resource, settings.warehouse_location)
        ids = sorted(e["extract_id"] for e in extracts if e["resource"] == name)
        quarantine[name] = _quarantine_rules(spark, tables, provider, ids)
        findings += _open_findings(spark, resource, settings, provider, period)
    with session(settings) as s:
        awaiting = tuple(awaiting_answer(s, provider, at=period.end))
        catalogue = tuple(u for u in upkeep(s, catalog, at=period.end) if u.provider == provider)
    report = build_quality_report(
        catalog,
        department,
        period=period,
        extracts=extracts,
        results=results,
        quarantine=quarantine,
        findings=findings,
        timeliness=_timeliness(spark, catalog, settings, provider, period.end),
        grace_fraction=settings.timeliness_grace,
    )
    return replace(report, awaiting=awaiting, catalogue=catalogue)


# -- rendering ---------------------------------------------------------------------------------
def _short(resource: str) -> str:
    return resource.rpartition(".")[2]


def charts(report: QualityReport) -> dict[str, str | None]:
    """The report's charts as PNG data URIs (None where there is nothing to draw)."""
    quarantine = [
        (f"{_short(r.resource)}: {q.rule}", float(q.rows))
        for r in report.resources
        for q in r.quarantine
    ]
    quarantine.sort(key=lambda bar: -bar[1])
    span = (report.period.start, report.period.end)
    return {
        "completeness": time_chart(
            [Series(r.resource, r.completeness) for r in report.resources],
            title="Completeness per extract: share of required values present",
            ylabel="required values present",
            span=span,
            share=True,
            floor=0.9,
        ),
        "timeliness": time_chart(
            [Series(r.resource, r.ages) for r in report.resources],
            title="Timeliness per extract: age when received, share of the allowed age",
            ylabel="age ÷ (update cycle + grace)",
            span=span,
            limit=1.0,
            limit_label="allowed age (late above)",
            share=True,
        ),
        "quarantine": bar_chart(
            quarantine[:_TOP],
            title="Top quarantine rules: records held back per rule",
            xlabel="records",
        ),
    }


def render_quality_report(report: QualityReport) -> str:
    """The report as one self-contained HTML page."""
    return render("quality.html.j2", report=report, charts=charts(report))


def write_quality_report(
    spark: SparkSession,
    catalog: Catalog,
    settings: Settings,
    provider: str,
    *,
    since: date | None = None,
    at: datetime,
) -> ReportFile:
    """Gather, render and write the report to `reports_dir/quality_<provider>_<date>.html`."""
    report = gather_quality_report(spark, catalog, settings, provider, since=since, at=at)
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / report.file_name
    path.write_text(render_quality_report(report), encoding="utf-8")
    return ReportFile(path, report)
