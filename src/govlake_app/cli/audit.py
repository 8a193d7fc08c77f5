"""`govlake audit …`: verify the hash chain, archive it to Delta, export a department's trail,
purge entries older than 3 years."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated

import typer

from govlake.platform.audit import (
    AuditError,
    ExportFormat,
    archive,
    archive_location,
    export,
    purge,
    trail,
    verify,
)
from govlake.platform.database import Consumer, session
from govlake_app.cli.console import console, fail, load_catalog, load_settings, now

audit_app = typer.Typer(help="The audit journal: verify, archive, export.", no_args_is_help=True)
#: Problems listed by `verify`; the rest are counted.
SHOWN_PROBLEMS = 50


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{option} {value!r} is not a date (YYYY-MM-DD)") from exc


@audit_app.command("verify")
def verify_command() -> None:
    """Recompute the hash chain and compare it with the archive; exit 1 if tampered with."""
    settings = load_settings()
    with session(settings) as s:
        result = verify(s, settings)
    if not result.ok:
        console.print(
            f"[red bold]audit journal tampered with: {len(result.problems)} problem(s) in "
            f"{result.checked} entries[/red bold]",
            highlight=False,
        )
        for problem in result.problems[:SHOWN_PROBLEMS]:
            console.print(f"[red]  {problem}[/red]", highlight=False)
        if len(result.problems) > SHOWN_PROBLEMS:
            console.print(f"[red]  … and {len(result.problems) - SHOWN_PROBLEMS} more[/red]")
        raise typer.Exit(1)
    console.print(f"[green]{result.checked} entries, chain intact[/green]", highlight=False)
    if result.archived:
        console.print(f"{result.archived} archived entries match", highlight=False)
    else:
        console.print(
            "[yellow]nothing archived yet: deleting the newest entries cannot be detected "
            "until `govlake audit archive` runs[/yellow]",
            highlight=False,
        )


@audit_app.command("archive")
def archive_command() -> None:
    """Append the entries not yet archived to the Delta table ops/audit_journal."""
    settings = load_settings()
    with session(settings) as s:
        written = archive(s, settings, at=now())
    target = archive_location(settings).uri
    if written:
        console.print(f"{written} entries archived to {target}", highlight=False, soft_wrap=True)
    else:
        console.print(f"nothing new to archive; {target} is up to date", highlight=False)


@audit_app.command("export")
def export_command(
    department: Annotated[str, typer.Option(help="department code, e.g. public_security")],
    since: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (UTC), included")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv or jsonl")] = "csv",
    out: Annotated[
        Path | None, typer.Option(help="file to write; default <reports>/audit_<department>.<ext>")
    ] = None,
) -> None:
    """A department's own trail: its reads and actions, and every use of the data it supplies."""
    settings = load_settings()
    catalog = load_catalog(settings)
    first = _day(since, "--since") if since else None
    last = _day(until, "--until") if until else None
    if first and last and first > last:
        raise typer.BadParameter(f"--since {first} is after --until {last}")
    path = out or settings.reports_dir / f"audit_{department}.{fmt}"
    with session(settings) as s:
        known = department in catalog.departments or department in catalog.providers
        if not known and s.get(Consumer, department) is None:
            raise fail(
                f"unknown department {department!r}: neither a catalogued provider nor a "
                "registered consumer"
            )
        entries = trail(
            s,
            catalog,
            department,
            since=datetime.combine(first, time()) if first else None,
            until=datetime.combine(last + timedelta(days=1), time()) if last else None,
        )
        written = export(entries, path, fmt=fmt)
    console.print(f"{written} entries for {department}", highlight=False)
    console.print(str(path), highlight=False, soft_wrap=True)


@audit_app.command("purge")
def purge_command(
    before: Annotated[str, typer.Option(help="remove archived entries dated before this day")],
    actor: Annotated[str, typer.Option(help="who purges, recorded in the journal")] = "platform",
) -> None:
    """Remove archived entries older than 3 years from the database (the archive keeps them)."""
    settings = load_settings()
    day = _day(before, "--before")
    try:
        with session(settings) as s:
            removed = purge(
                s, settings, before=datetime.combine(day, time()), at=now(), actor=actor
            )
    except AuditError as exc:
        raise fail(f"refused: {exc}", code=1) from exc
    console.print(
        f"{removed} entries dated before {day} removed from the database", highlight=False
    )
