"""`govlake backup`, `govlake restore` and `govlake backup-status`: back up the lakehouse's
Delta tables by importance, bring a table back to a backed-up version, and show when each
table was last backed up and is next due (see `govlake.governance.backup`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer
from rich.progress import Progress, TaskID
from rich.table import Table as RichTable

from govlake.core.catalog import CatalogError
from govlake.governance.backup import (
    BackupError,
    NotBackedUp,
    RestoreRefused,
    TableBackup,
    UnknownTable,
    version_ranges,
)
from govlake.governance.backup import backup as run_backup
from govlake.governance.backup import backup_status as table_statuses
from govlake.governance.backup import restore as run_restore
from govlake_app.cli.console import console, fail, load_catalog, load_settings, now, progress

_OUTCOME_STYLE = {
    "backed_up": "green",
    "unchanged": "green",
    "not_due": "dim",
    "no_table": "dim",
    "failed": "red bold",
}


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(moment: datetime | None) -> str:
    return "now (never backed up)" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def _bars(label: Callable[[str], str]) -> tuple[Progress, Callable[[str, int, int], None]]:
    """A transient progress display and the callback that keeps one bar per table in it,
    labelled `label(table)`."""
    bars = progress(elapsed=False, transient=True)
    tasks: dict[str, TaskID] = {}

    def advance(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bars.add_task(label(table), total=total)
        bars.update(tasks[table], completed=done, total=total)

    return bars, advance


def backup(
    resource: Annotated[
        str | None,
        typer.Option(help="one catalogued resource (theme.name), or `ops`; default: every table"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="back up now, whether or not the tables are due")
    ] = False,
) -> None:
    """Back up the tables that are due by their importance (core daily, important weekly,
    general monthly; ops.* as core): the log up to the current version and the data files it
    needs, copying only what the backup does not hold yet."""
    settings = load_settings()
    catalog = load_catalog(settings)
    bars, advance = _bars(str)

    try:
        with bars:
            report = run_backup(settings, catalog, at=now(), resource=resource, force=force,
                                progress=advance)  # fmt: skip
    except CatalogError as exc:
        raise fail(str(exc)) from exc

    shown = [t for t in report.tables if t.outcome != "no_table"]
    table = RichTable(title=f"backup to {report.location}", title_justify="left")
    for column in ("table", "importance", "outcome", "version", "versions added", "files",
                   "copied", "next due"):  # fmt: skip
        table.add_column(column, justify="right" if column in ("version", "files") else "left")
    for t in shown:
        table.add_row(*_backup_row(t))
    console.print(table)
    absent = len(report.tables) - len(shown)
    if absent:
        console.print(f"[dim]{absent} catalogued table(s) do not exist yet[/dim]")
    console.print(
        f"{report.files_copied} file(s), {_size(report.bytes_copied)} copied", highlight=False
    )
    for t in report.failed:
        console.print(f"[red]{t.table}: {t.error}[/red]", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


def _backup_row(t: TableBackup) -> list[str]:
    style = _OUTCOME_STYLE[t.outcome]
    return [
        t.table,
        t.importance,
        f"[{style}]{t.outcome.replace('_', ' ')}[/{style}]",
        "" if t.version is None else str(t.version),
        version_ranges(t.versions_added) if t.versions_added else "",
        str(t.files_copied) if t.outcome in ("backed_up", "unchanged") else "",
        _size(t.bytes_copied) if t.bytes_copied else "",
        "" if t.next_due is None else f"{t.next_due:%Y-%m-%d %H:%M}",
    ]


def restore(
    table: Annotated[
        str, typer.Argument(help="the table, e.g. population.residents_unconditional")
    ],
    version: Annotated[
        int | None,
        typer.Option(min=0, help="the backed-up version to restore; default: the latest"),
    ] = None,
) -> None:
    """Bring a table back to a backed-up version: a deleted table is recreated exactly as it
    was (same version number and history); an existing one gets that version as a new commit,
    its newer versions kept."""
    settings = load_settings()
    catalog = load_catalog(settings)
    bars, advance = _bars(lambda name: f"restoring {name}")

    try:
        with bars:
            report = run_restore(settings, catalog, table, version=version, at=now(),
                                 progress=advance)  # fmt: skip
    except (UnknownTable, NotBackedUp, RestoreRefused) as exc:
        raise fail(str(exc)) from exc
    except BackupError as exc:  # a damaged backup or a failed copy, not bad input
        raise fail(str(exc), 1) from exc
    if report.mode == "recreated":
        what = f"recreated at version {report.table_version}"
    elif report.mode == "new_commit":
        what = f"restored as new version {report.table_version}"
    else:
        what = f"already at version {report.table_version}"
    console.print(
        f"[green]{report.table}: backed-up version {report.version} {what}[/green], "
        f"{report.rows} rows; {report.files_copied} data file(s) and "
        f"{report.log_files_copied} log file(s) copied from {report.source}",
        highlight=False,
        soft_wrap=True,
    )


def backup_status() -> None:
    """When each table was last backed up, which versions the backup holds and when the next
    backup is due."""
    settings = load_settings()
    rows = table_statuses(settings, load_catalog(settings), now())
    table = RichTable(title=f"backups in {settings.backup_location.uri}", title_justify="left")
    for column in ("table", "importance", "every", "table version", "last backup",
                   "backed-up versions", "next due"):  # fmt: skip
        table.add_column(column)
    for s in rows:
        if s.table_version is None and s.backed_up_version is None:
            continue
        due = _when(s.next_due)
        table.add_row(
            s.table,
            s.importance,
            f"{s.backup_days} d",
            "gone" if s.table_version is None else str(s.table_version),
            "never" if s.last_backup_at is None else f"{s.last_backup_at:%Y-%m-%d %H:%M}",
            s.versions,
            f"[yellow]{due}[/yellow]" if s.due else due,
        )
    console.print(table)
    due_now = sum(1 for s in rows if s.due)
    console.print(f"{due_now} table(s) due now", highlight=False)
