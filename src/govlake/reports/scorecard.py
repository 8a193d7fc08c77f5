"""The yearly department scorecard (51号 art. 16–18; 宝鸡 art. 23): every provider department
scored on catalogue upkeep, provision, quality and on-time delivery, ranked, with advice.

Each component is a share in [0, 1]:

- **catalogue**: over the entries the department is responsible for (`provider`), the mean
  share of documentation filled — description, legal basis (only when the entry's sharing is
  not unconditional), the steward's phone, and the share of items whose title gives the
  Chinese name or that carry a description (one field) — averaged half and half with the
  share of entries reviewed within `REVIEW_DAYS` before the period end. The catalogue keeps
  only the latest review date, so a review after the period end counts too. A department
  responsible for no entry cannot keep one: the component is not applicable and its weight
  is spread over the others in proportion to their weights.
- **provision**: the share of the department's catalogued sources (resources it supplies)
  that delivered at least one extract in the period that was neither rejected nor held.
- **quality**: the share of the department's extract-scope expectations in
  `ops.quality_results` that passed in the period (0 when nothing of it was checked).
- **timeliness**: the share of its extracts received in the period whose
  `as_of.timeliness` expectation passed; rejected files count as not on time (0 when it
  delivered nothing).

The score is the weighted sum with `settings.scorecard_weights`. The period is the calendar
year in UTC, up to `at` for the current year; extracts count by receipt (`ingested_at`),
checks by `checked_at`.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from govlake.core.catalog import Catalog, Department, Resource
from govlake.core.figures import Summed
from govlake.core.runs import naive_utc
from govlake.core.settings import SCORECARD_COMPONENTS, Settings
from govlake.lake.tables import ops_tables, quality_tables
from govlake.reports import Period, ReportError, fetch, render

REVIEW_DAYS = 92
_CHINESE = re.compile(r"[\u4e00-\u9fff]")
_ADVICE = 5

Rows = Sequence[Mapping[str, Any]]


# -- components --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntryUpkeep:
    """How well one catalogue entry is kept."""

    resource: str
    fields: tuple[tuple[str, float], ...]  # counted field -> share filled (1 or 0; items: share)
    reviewed_on: date | None
    review_current: bool

    @property
    def fill_share(self) -> float:
        return sum(value for _, value in self.fields) / len(self.fields)

    @property
    def missing(self) -> list[str]:
        return [name for name, value in self.fields if value < 1]


@dataclass(frozen=True)
class CatalogueUpkeep:
    entries: tuple[EntryUpkeep, ...]  # entries the department is responsible for

    @property
    def fill_share(self) -> float | None:
        if not self.entries:
            return None
        return sum(e.fill_share for e in self.entries) / len(self.entries)

    @property
    def review_share(self) -> float | None:
        if not self.entries:
            return None
        return sum(e.review_current for e in self.entries) / len(self.entries)

    @property
    def score(self) -> float | None:
        fill, review = self.fill_share, self.review_share
        return None if fill is None or review is None else (fill + review) / 2


@dataclass(frozen=True)
class Provision:
    sources: tuple[str, ...]  # resources the department is catalogued to supply
    delivered: tuple[str, ...]  # of those, with an extract neither rejected nor held
    extracts: int
    held: int
    rejected: int
    rows_read: int
    rows_merged: int

    @property
    def resources_provided(self) -> int:
        return len(self.delivered)

    @property
    def missing(self) -> list[str]:
        return [s for s in self.sources if s not in self.delivered]

    @property
    def score(self) -> float:
        return len(self.delivered) / len(self.sources) if self.sources else 0.0


@dataclass(frozen=True)
class ExpectationTally:
    resource: str
    expectation: str
    dimension: str
    checks: int
    passed: int

    @property
    def failed(self) -> int:
        return self.checks - self.passed


@dataclass(frozen=True)
class QualityPass:
    tallies: tuple[ExpectationTally, ...]

    expectations = Summed("tallies", "checks")
    passed = Summed("tallies")

    @property
    def by_dimension(self) -> list[tuple[str, int, int, float]]:
        """(dimension, checks, passed, pass rate), in the usual order."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for t in self.tallies:
            totals[t.dimension][0] += t.checks
            totals[t.dimension][1] += t.passed
        order = ["completeness", "validity", "uniqueness", "volume", "consistency", "timeliness"]
        names = [d for d in order if d in totals] + sorted(set(totals) - set(order))
        return [(d, totals[d][0], totals[d][1], totals[d][1] / totals[d][0]) for d in names]

    @property
    def worst(self) -> list[ExpectationTally]:
        failing = [t for t in self.tallies if t.failed]
        return sorted(failing, key=lambda t: (-t.failed / t.checks, -t.failed, t.expectation))

    @property
    def score(self) -> float:
        return self.passed / self.expectations if self.expectations else 0.0


@dataclass(frozen=True)
class OnTime:
    extracts: int
    on_time: int
    rejected: int
    late_by_resource: tuple[tuple[str, int, int], ...]  # (resource, not on time, extracts)

    @property
    def score(self) -> float:
        return self.on_time / self.extracts if self.extracts else 0.0


@dataclass(frozen=True)
class DepartmentScore:
    department: Department
    catalogue: CatalogueUpkeep
    provision: Provision
    quality: QualityPass
    timeliness: OnTime
    weights: dict[str, float] = field(default_factory=dict)  # effective, see `effective_weights`
    score: float = 0.0
    weakest: str | None = None  # the lowest applicable component below 1
    advice: tuple[str, ...] = ()
    rank: int = 0

    def component(self, name: str) -> float | None:
        return {
            "catalogue": self.catalogue.score,
            "provision": self.provision.score,
            "quality": self.quality.score,
            "timeliness": self.timeliness.score,
        }[name]

    @property
    def components(self) -> dict[str, float | None]:
        return {name: self.component(name) for name in SCORECARD_COMPONENTS}


@dataclass(frozen=True)
class Scorecard:
    year: int
    period: Period
    weights: dict[str, float]  # as configured
    departments: tuple[DepartmentScore, ...]  # ranked, best first

    @property
    def file_stem(self) -> str:
        return f"scorecard_{self.year}"


@dataclass(frozen=True)
class ScorecardFiles:
    html: Path
    csv: Path
    scorecard: Scorecard


# -- pure: catalogue and rows → scorecard ------------------------------------------------------
def entry_upkeep(resource: Resource, *, period_end: date) -> EntryUpkeep:
    """Pure: which documentation fields of `resource` are filled and whether it was reviewed
    within `REVIEW_DAYS` before `period_end` (or later)."""
    fields: list[tuple[str, float]] = [("description", float(bool(resource.description)))]
    if resource.sharing != "unconditional":
        fields.append(("legal_basis", float(bool(resource.legal_basis))))
    fields.append(("steward phone", float(bool(resource.steward.phone))))
    described = sum(bool(_CHINESE.search(i.title) or i.description) for i in resource.items)
    fields.append(("item titles or descriptions", described / len(resource.items)))
    reviewed = resource.reviewed_on
    return EntryUpkeep(
        resource=resource.qualified_name,
        fields=tuple(fields),
        reviewed_on=reviewed,
        review_current=reviewed is not None
        and reviewed >= period_end - timedelta(days=REVIEW_DAYS),
    )


def effective_weights(
    weights: Mapping[str, float], components: Mapping[str, float | None]
) -> dict[str, float]:
    """Weights of the applicable components scaled to sum to 1; 0 for the others."""
    applicable = {n: weights[n] for n in SCORECARD_COMPONENTS if components[n] is not None}
    total = sum(applicable.values())
    return {n: (applicable[n] / total if total and n in applicable else 0.0) for n in weights}


def _advice(name: str, score: DepartmentScore) -> list[str]:
    if name == "catalogue":
        tips = []
        for entry in score.catalogue.entries:
            if entry.missing:
                tips.append(f"{entry.resource}: fill in {', '.join(entry.missing)}")
            if not entry.review_current:
                last = entry.reviewed_on.isoformat() if entry.reviewed_on else "never"
                tips.append(
                    f"{entry.resource}: review the entry (last reviewed {last}); entries are "
                    f"reviewed at least quarterly (宝鸡 art. 10)"
                )
        return tips
    if name == "provision":
        p = score.provision
        tips = [f"deliver {r}: no usable extract in the period" for r in p.missing]
        if p.held or p.rejected:
            tips.append(
                f"{p.held} extract(s) were held back by quality checks and {p.rejected} "
                f"rejected as unreadable; deliver corrected files"
            )
        return tips
    if name == "quality":
        return [
            f"{t.resource}: {t.expectation} ({t.dimension}) failed {t.failed} of {t.checks} checks"
            for t in score.quality.worst[:_ADVICE]
        ] or ["nothing was checked: deliver readable extracts"]
    t = score.timeliness
    tips = [
        f"{resource}: {late} of {total} extracts late (as of more than one update cycle "
        f"plus grace before they were checked); deliver within the update cycle"
        for resource, late, total in t.late_by_resource
        if late
    ]
    if t.rejected:
        tips.append(f"{t.rejected} file(s) rejected as unreadable count as not on time")
    return tips or ["nothing was delivered: deliver every catalogued source within its cycle"]


# On a tie, the component that explains the others comes first: nothing usable delivered
# also means nothing checked and nothing on time.
_ROOT_CAUSE_FIRST = ("provision", "quality", "timeliness", "catalogue")


def _weakest(components: Mapping[str, float | None]) -> str | None:
    scored = [
        (value, _ROOT_CAUSE_FIRST.index(name), name)
        for name, value in components.items()
        if value is not None
    ]
    if not scored or min(scored)[0] >= 1:
        return None
    return min(scored)[2]


def provision_of(sources: Sequence[str], extracts: Rows) -> Provision:
    """Pure: what was delivered of `sources`, from `extracts` rows (per resource and status:
    `extracts`, `rows_read`, `rows_merged`)."""
    usable = {
        e["resource"] for e in extracts if e["status"] not in ("held", "rejected") and e["extracts"]
    }
    return Provision(
        sources=tuple(sources),
        delivered=tuple(s for s in sources if s in usable),
        extracts=sum(int(e["extracts"]) for e in extracts),
        held=sum(int(e["extracts"]) for e in extracts if e["status"] == "held"),
        rejected=sum(int(e["extracts"]) for e in extracts if e["status"] == "rejected"),
        rows_read=sum(int(e["rows_read"] or 0) for e in extracts),
        rows_merged=sum(int(e["rows_merged"] or 0) for e in extracts),
    )


def on_time_of(timeliness: Rows) -> OnTime:
    """Pure: extracts on time, from `timeliness` rows (per resource and `rejected` flag:
    `extracts`, `on_time`)."""
    late: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in timeliness:
        late[row["resource"]][0] += int(row["extracts"]) - int(row["on_time"] or 0)
        late[row["resource"]][1] += int(row["extracts"])
    return OnTime(
        extracts=sum(int(r["extracts"]) for r in timeliness),
        on_time=sum(int(r["on_time"] or 0) for r in timeliness),
        rejected=sum(int(r["extracts"]) for r in timeliness if r["rejected"]),
        late_by_resource=tuple((r, n, total) for r, (n, total) in sorted(late.items())),
    )


def quality_of(quality: Rows) -> QualityPass:
    """Pure: expectations passed, from `quality` rows (per resource, expectation and
    dimension: `checks`, `passed`)."""
    return QualityPass(
        tuple(
            ExpectationTally(
                resource=q["resource"],
                expectation=q["expectation"],
                dimension=q["dimension"],
                checks=int(q["checks"]),
                passed=int(q["passed"] or 0),
            )
            for q in sorted(quality, key=lambda q: (q["resource"], q["expectation"]))
        )
    )


def _department_score(
    catalog: Catalog,
    code: str,
    *,
    period: Period,
    weights: Mapping[str, float],
    extracts: Rows,
    quality: Rows,
    timeliness: Rows,
) -> DepartmentScore:
    sources = tuple(r.qualified_name for r in catalog if code in r.sources)
    provision = provision_of(sources, extracts)
    on_time = on_time_of(timeliness)
    upkeep = CatalogueUpkeep(
        tuple(entry_upkeep(r, period_end=period.end.date()) for r in catalog if r.provider == code)
    )
    quality_pass = quality_of(quality)
    unscored = DepartmentScore(catalog.department(code), upkeep, provision, quality_pass, on_time)
    components = unscored.components
    effective = effective_weights(weights, components)
    weakest = _weakest(components)
    return replace(
        unscored,
        weights=effective,
        score=sum(effective[n] * (components[n] or 0.0) for n in SCORECARD_COMPONENTS),
        weakest=weakest,
        advice=(
            tuple(_advice(weakest, unscored))
            if weakest
            else ("keep it up: every component is at 100 %",)
        ),
    )


def build_scorecard(
    catalog: Catalog,
    *,
    year: int,
    period: Period,
    weights: Mapping[str, float],
    extracts: Rows,
    quality: Rows,
    timeliness: Rows,
) -> Scorecard:
    """Pure: the ranked scorecard. `extracts`: per provider, resource and status the number of
    extracts, rows read and merged; `quality`: per provider, resource, expectation and
    dimension the extract-scope checks and passes; `timeliness`: per provider, resource and
    `rejected` flag the extracts and those on time."""
    scores = [
        _department_score(
            catalog,
            code,
            period=period,
            weights=weights,
            extracts=[e for e in extracts if e["provider"] == code],
            quality=[q for q in quality if q["provider"] == code],
            timeliness=[t for t in timeliness if t["provider"] == code],
        )
        for code in catalog.providers
    ]
    scores.sort(key=lambda s: (-s.score, s.department.code))
    ranked = tuple(replace(s, rank=rank) for rank, s in enumerate(scores, start=1))
    return Scorecard(year=year, period=period, weights=dict(weights), departments=ranked)


# -- queries -----------------------------------------------------------------------------------
def year_period(year: int, *, at: datetime) -> Period:
    """The calendar year `year` in UTC, up to `at` if the year is not over yet."""
    now = naive_utc(at)
    start = datetime(year, 1, 1)
    if start >= now:
        raise ReportError(f"year {year} has not started yet at {now:%Y-%m-%d %H:%M} UTC")
    return Period(start, min(datetime(year + 1, 1, 1), now))


@dataclass(frozen=True)
class DeliveryRows:
    """What providers delivered in a period, grouped for `build_scorecard`: see there."""

    extracts: list[dict[str, Any]]
    quality: list[dict[str, Any]]
    timeliness: list[dict[str, Any]]


def delivery_rows(spark: SparkSession, settings: Settings, period: Period) -> DeliveryRows:
    """Query the extracts received in `period` (by `ingested_at`) and their extract-scope
    checks (by `checked_at`), grouped per provider and resource."""
    extracts_table, _ = ops_tables(settings.warehouse_location)
    _, results = quality_tables(settings.warehouse_location)
    received = period.where("ingested_at")
    extracts = fetch(
        spark,
        f"SELECT provider, resource, status, count(*) AS extracts, sum(rows_read) AS rows_read, "
        f"sum(rows_merged) AS rows_merged FROM {extracts_table.sql_name} WHERE {received} "
        f"GROUP BY provider, resource, status",
        extracts_table,
    )
    quality = fetch(
        spark,
        f"SELECT provider, resource, expectation, dimension, count(*) AS checks, "
        f"sum(CASE WHEN success THEN 1 ELSE 0 END) AS passed FROM {results.sql_name} "
        f"WHERE scope = 'extract' AND {period.where('checked_at')} "
        f"GROUP BY provider, resource, expectation, dimension",
        results,
    )
    rejected = "status = 'rejected'"
    if results.location.is_delta_table():
        # An extract is on time if its timeliness check passed (when first checked: a later
        # re-check of the same extract can only find it older).
        timeliness = fetch(
            spark,
            f"SELECT e.provider, e.resource, e.{rejected} AS rejected, count(*) AS extracts, "
            f"sum(coalesce(r.on_time, 0)) AS on_time FROM {extracts_table.sql_name} e "
            f"LEFT JOIN (SELECT extract_id, max(CASE WHEN success THEN 1 ELSE 0 END) AS on_time "
            f"FROM {results.sql_name} WHERE scope = 'extract' "
            f"AND expectation = 'as_of.timeliness' GROUP BY extract_id) r "
            f"ON e.extract_id = r.extract_id WHERE e.{received} "
            f"GROUP BY e.provider, e.resource, e.{rejected}",
            extracts_table,
            results,
        )
    else:
        timeliness = fetch(
            spark,
            f"SELECT provider, resource, {rejected} AS rejected, count(*) AS extracts, "
            f"0 AS on_time FROM {extracts_table.sql_name} WHERE {received} "
            f"GROUP BY provider, resource, {rejected}",
            extracts_table,
        )
    return DeliveryRows(extracts, quality, timeliness)


def gather_scorecard(
    spark: SparkSession, catalog: Catalog, settings: Settings, *, year: int, at: datetime
) -> Scorecard:
    period = year_period(year, at=at)
    rows = delivery_rows(spark, settings, period)
    return build_scorecard(
        catalog,
        year=year,
        period=period,
        weights=settings.scorecard_weights,
        extracts=rows.extracts,
        quality=rows.quality,
        timeliness=rows.timeliness,
    )


# -- output ------------------------------------------------------------------------------------
CSV_COLUMNS = (
    "rank", "department", "name", "score", *SCORECARD_COMPONENTS,
    *(f"weight_{n}" for n in SCORECARD_COMPONENTS),
    "resources_supplied", "resources_delivered", "extracts", "rows_read", "rows_merged",
    "expectations", "expectations_passed", "extracts_on_time", "weakest", "advice",
)  # fmt: skip


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def scorecard_csv(scorecard: Scorecard) -> str:
    """One row per department, best first; a not-applicable component is left empty and its
    weight is 0 (the others are scaled up)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in scorecard.departments:
        writer.writerow(
            [
                s.rank,
                s.department.code,
                s.department.name,
                f"{s.score:.4f}",
                *(_share(s.component(n)) for n in SCORECARD_COMPONENTS),
                *(f"{s.weights[n]:.4f}" for n in SCORECARD_COMPONENTS),
                len(s.provision.sources),
                s.provision.resources_provided,
                s.provision.extracts,
                s.provision.rows_read,
                s.provision.rows_merged,
                s.quality.expectations,
                s.quality.passed,
                s.timeliness.on_time,
                s.weakest or "",
                "; ".join(s.advice),
            ]
        )
    return buffer.getvalue()


def render_scorecard(scorecard: Scorecard) -> str:
    return render(
        "scorecard.html.j2",
        scorecard=scorecard,
        components=SCORECARD_COMPONENTS,
        review_days=REVIEW_DAYS,
    )


def write_scorecard(
    spark: SparkSession, catalog: Catalog, settings: Settings, *, year: int, at: datetime
) -> ScorecardFiles:
    """Gather the scorecard of `year` and write `reports_dir/scorecard_<year>.html|csv`."""
    scorecard = gather_scorecard(spark, catalog, settings, year=year, at=at)
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    html = settings.reports_dir / f"{scorecard.file_stem}.html"
    table = settings.reports_dir / f"{scorecard.file_stem}.csv"
    html.write_text(render_scorecard(scorecard), encoding="utf-8")
    # utf-8-sig: spreadsheet programs then read the Chinese department names correctly.
    table.write_text(scorecard_csv(scorecard), encoding="utf-8-sig")
    return ScorecardFiles(html, table, scorecard)
