"""What every `govlake` command module shares: the output console, the error line that ends a
command with its exit code, the time and user a command records, and loading the settings,
the catalogue and a platform database transaction with their errors said in one line."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session

from govlake.core.catalog import Catalog, CatalogError
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings, get_settings
from govlake.platform.database import session
from govlake.sharing.requests import PLATFORM
from govlake_app.cli.console import errors

# Wide enough for the tables when the output is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)

#: Options that several commands take.
By = Annotated[str | None, typer.Option(help="who acts (recorded); default the OS user")]
OnlyConsumer = Annotated[str | None, typer.Option(help="only this consumer's")]


def fail(message: str, code: int = 2, *, stderr: bool = False) -> typer.Exit:
    """Print `message` as a red line (on stderr when the command's output is data) and return
    the exit that ends the command with `code`: `raise fail(...)`."""
    out = errors if stderr else console
    out.print(f"[red]{message}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def now() -> datetime:
    """The current time as the platform database stores it: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def at_moment(at: str | None) -> datetime:
    """`--at` as naive UTC (an ISO date-time, UTC unless it names its offset), default now."""
    if at is None:
        return now()
    try:
        return naive_utc(datetime.fromisoformat(at))
    except ValueError as exc:
        raise typer.BadParameter(f"--at {at!r} is not an ISO date-time") from exc


def user() -> str:
    """Who runs the command, when `--by` does not say."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return PLATFORM


def load_settings(*, stderr: bool = False, variables: bool = False) -> Settings:
    """The settings, or exit 2 saying what is wrong with them (naming the `GOVLAKE_*` variable
    of each broken field when `variables`)."""
    try:
        return get_settings()
    except ValidationError as exc:
        problems = str(exc)
        if variables:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])} (GOVLAKE_"
                f"{'_'.join(str(p) for p in err['loc']).upper()}): {err['msg']}"
                for err in exc.errors()
            )
        raise fail(f"settings error: {problems}", stderr=stderr) from exc


def load_catalog(settings: Settings, *, stderr: bool = False) -> Catalog:
    """The catalogue, or exit 2 naming the broken entry."""
    try:
        return Catalog.load(settings.catalog_dir)
    except CatalogError as exc:
        raise fail(f"catalogue error: {exc}", stderr=stderr) from exc


@contextmanager
def work(*refused: type[Exception]) -> Iterator[tuple[Settings, Catalog, Session]]:
    """Settings, catalogue and one transaction; an error of the `refused` kinds (a broken
    rule) rolls the transaction back and exits 2 with its message."""
    settings = load_settings()
    catalog = load_catalog(settings)
    try:
        with session(settings) as s:
            yield settings, catalog, s
    except refused as exc:
        raise fail(str(exc)) from exc


def progress(*, elapsed: bool = True, transient: bool = False) -> Progress:
    """A progress display with one bar per task: description, bar, done of total (and the
    time elapsed)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if elapsed:
        columns.append(TimeElapsedColumn())
    return Progress(*columns, console=console, transient=transient)
