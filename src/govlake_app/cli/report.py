"""`govlake report …`: the steward's quality report (optionally mailed), the yearly
department scorecard and the yearly sharing report. Heavy imports (engine, matplotlib) wait
until a command runs."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import typer
from rich.table import Table as RichTable

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.reports import ReportError, percent
from govlake_app.cli.console import at_moment, console, fail, load_catalog, load_settings

report_app = typer.Typer(
    help="Reports for department stewards, the yearly department scorecard and sharing report.",
    no_args_is_help=True,
)

ReportAt = Annotated[str | None, typer.Option(help="report up to this UTC time (ISO), default now")]


def _inputs(
    at: str | None, *, since: str | None = None
) -> tuple[Settings, Catalog, datetime, date | None]:
    """What every report command reads first: the settings, the catalogue, `--at` and
    `--since` (the first day, if given)."""
    settings = load_settings(variables=True)
    catalog = load_catalog(settings)
    try:
        first_day = date.fromisoformat(since) if since else None
    except ValueError as exc:
        raise typer.BadParameter(f"--since {since!r} is not a date (YYYY-MM-DD)") from exc
    return settings, catalog, at_moment(at), first_day


@report_app.command("quality")
def quality(
    provider: Annotated[str, typer.Option(help="provider department code, e.g. public_security")],
    since: Annotated[
        str | None, typer.Option(help="first day, YYYY-MM-DD (UTC); default 30 days before now")
    ] = None,
    send: Annotated[
        bool, typer.Option("--send", help="mail the report to the department's data steward")
    ] = False,
    at: ReportAt = None,
) -> None:
    """One department's extracts, checks, quarantine and findings as HTML; --send mails it."""
    from govlake.governance import changes
    from govlake.lake.engine import get_spark
    from govlake.platform.mail import MailError, send_report
    from govlake.reports.quality import known_department, report_period, write_quality_report

    settings, catalog, moment, first_day = _inputs(at, since=since)
    try:
        department = known_department(catalog, provider)
        report_period(since=first_day, at=moment)  # refuse an empty period before the engine
        spark = get_spark(settings, catalog, fresh=True)
        changes.sync_register(settings, catalog, at=moment)  # the report reads it
        written = write_quality_report(
            spark, catalog, settings, provider, since=first_day, at=moment
        )
    except ReportError as exc:
        raise fail(str(exc)) from exc
    report = written.report
    if not report.has_data:
        console.print(f"[yellow]no extracts from {provider} in {report.period.label}[/yellow]")
    console.print(str(written.path), highlight=False, soft_wrap=True)
    if send:
        steward = department.steward
        try:
            send_report(
                settings,
                to=steward.email,
                subject=report.subject,
                html=written.path.read_text(encoding="utf-8"),
                filename=written.path.name,
            )
        except MailError as exc:
            raise fail(f"report written but not mailed: {exc}", code=1) from exc
        console.print(f"mailed to {steward.name} <{steward.email}>", highlight=False)


@report_app.command("scorecard")
def scorecard(
    year: Annotated[int, typer.Option(help="calendar year to score (UTC)")],
    at: Annotated[
        str | None, typer.Option(help="score up to this UTC time (ISO), default now")
    ] = None,
) -> None:
    """Score and rank every provider department over a year; write the scorecard (HTML, CSV)."""
    from govlake.lake.engine import get_spark
    from govlake.reports.scorecard import write_scorecard, year_period

    settings, catalog, moment, _ = _inputs(at)
    try:
        year_period(year, at=moment)  # refuse a future year before starting the engine
        spark = get_spark(settings, catalog, fresh=True)
        written = write_scorecard(spark, catalog, settings, year=year, at=moment)
    except ReportError as exc:
        raise fail(str(exc)) from exc
    card = written.scorecard
    weights = card.weights
    table = RichTable(
        "rank",
        "department",
        "name",
        "score",
        *(f"{name} ({weights[name]:.0%})" for name in weights),
        "weakest",
        title=f"department scorecard {card.year} ({card.period.label})",
    )
    for s in card.departments:
        table.add_row(
            str(s.rank),
            s.department.code,
            s.department.name,
            f"[bold]{percent(s.score)}[/bold]",
            *(percent(s.component(name)) for name in weights),
            s.weakest or "-",
        )
    console.print(table)
    console.print(str(written.html), highlight=False, soft_wrap=True)
    console.print(str(written.csv), highlight=False, soft_wrap=True)


@report_app.command("sharing")
def sharing(
    year: Annotated[int, typer.Option(help="calendar year to report (UTC)")],
    department: Annotated[
        str | None,
        typer.Option(help="department code; default: the platform summary and every department"),
    ] = None,
    at: ReportAt = None,
) -> None:
    """The yearly sharing report: what a department provided and used (HTML, CSV)."""
    from govlake.lake.engine import get_spark
    from govlake.reports.scorecard import year_period
    from govlake.reports.sharing import check_department, write_sharing_reports

    settings, catalog, moment, _ = _inputs(at)
    try:
        # Refuse an unknown department or a future year before starting the engine.
        if department is not None:
            check_department(catalog, department)
        year_period(year, at=moment)
        spark = get_spark(settings, catalog, fresh=True)
        written = write_sharing_reports(
            spark, catalog, settings, year=year, at=moment, department=department
        )
    except ReportError as exc:
        raise fail(str(exc)) from exc
    summary = written.summary
    reports = summary.departments if department is None else (summary.department(department),)
    table = RichTable(
        "department",
        "publications",
        "reads by others",
        "requests received (in time)",
        "reads",
        "rows read",
        "refused",
        "requests filed",
        title=f"sharing {summary.year} ({summary.period.label})",
    )
    for r in reports:
        received = r.access_received.filed + r.verification_received.filed
        in_time = r.access_received.answered_on_time + r.verification_received.answered_on_time
        table.add_row(
            f"{r.department.name} ({r.code})",
            str(r.publications),
            f"{r.reads_received:,}",
            f"{received} ({in_time})",
            f"{r.reads_made:,}",
            f"{r.rows_read:,}",
            str(r.refused_reads),
            str(r.access_filed.filed + r.verification_filed.filed),
        )
    console.print(table)
    if department is None and summary.overdue:
        console.print(
            f"[yellow]{len(summary.overdue)} request(s) overdue at the period end[/yellow]"
        )
    for path in written.paths:
        console.print(str(path), highlight=False, soft_wrap=True)
