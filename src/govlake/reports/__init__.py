"""Reports for people: the steward's quality report and the yearly department scorecard.

`govlake.reports.quality.write_quality_report` and `govlake.reports.scorecard.write_scorecard`
query the ops tables, turn the rows into dataclasses with pure builders, render them with the
Jinja templates shipped in `templates/`, and write the files under `settings.reports_dir`.
This module holds what both share: the reporting period, the query helper and the templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from govlake.core.errors import GovlakeError

if TYPE_CHECKING:  # the CLI imports this module at start: keep Spark and Jinja out of it
    import jinja2
    from pyspark.sql import SparkSession

    from govlake.lake.tables import Table


class ReportError(GovlakeError, ValueError):
    """A report cannot be made as asked (unknown department, empty period, bad year)."""


@dataclass(frozen=True)
class Period:
    """A reporting period in naive UTC: from `start` (inclusive) to `end` (exclusive)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ReportError(
                f"the period must start before it ends: {self.start:%Y-%m-%d %H:%M} is not "
                f"before {self.end:%Y-%m-%d %H:%M}"
            )

    def where(self, column: str) -> str:
        """A SQL predicate: `column` lies in the period."""
        from govlake.lake.statements import sql_literal

        return f"{column} >= {sql_literal(self.start)} AND {column} < {sql_literal(self.end)}"

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        """The last calendar day the period touches (the end is exclusive)."""
        return (self.end - timedelta(microseconds=1)).date()

    @property
    def label(self) -> str:
        return f"{self.first_day:%Y-%m-%d} – {self.last_day:%Y-%m-%d}"


def fetch(spark: SparkSession, query: str, *tables: Table) -> list[dict[str, Any]]:
    """The rows of `query`, which reads `tables`; none when a table does not exist yet (no
    data yet is not an error). Registers the tables, so any session can run the query."""
    from govlake.lake.tables import register

    if not all(table.location.is_delta_table() for table in tables):
        return []
    for table in tables:
        register(spark, table)
    return [row.asDict() for row in spark.sql(query).collect()]


def percent(value: float | None, places: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{places}%}"


def number(value: int | float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def timestamp(value: datetime | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M}"


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("govlake.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(pct=percent, num=number, ts=timestamp)
    return environment


def render(template: str, **context: Any) -> str:
    """Fill `templates/<template>` (autoescaped HTML)."""
    return _environment().get_template(template).render(**context)
