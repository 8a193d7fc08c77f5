"""The one helper module of the `govlake` command.

How a command ends: one clear line for each error instead of a traceback, and an exit with
the command's true status that native thread pools cannot turn into an abort.
`GovlakeTyper` is the console entry point (`govlake = "govlake_app.cli:app"` calls the app).
Tests that use typer's `CliRunner` build the click command themselves and get the same error
lines through `run`, without the process exit.

What every command module shares: the output console, the error line that ends a command with
its exit code, the time and user a command records, and loading the settings, the catalogue
and a platform database transaction with their errors said in one line.
"""

from __future__ import annotations

import atexit
import getpass
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session
from typer._click import exceptions as click_exceptions

from govlake.core.catalog import Catalog, CatalogError
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings, get_settings
from govlake.platform.database import session
from govlake.sharing.requests import PLATFORM

#: The variable `--verbose` and the `debug` setting stand for: full tracebacks.
DEBUG_VARIABLE = "GOVLAKE_DEBUG"
#: The setting of the embedded engine's log filter (`Settings.engine_log`).
ENGINE_LOG_VARIABLE = "GOVLAKE_ENGINE_LOG"

errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


# -- values --------------------------------------------------------------------------------
def parse_date(value: str, option: str) -> date:
    """A YYYY-MM-DD day, or a usage error naming the option and the expected form."""
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"invalid date {value!r} for {option}: expected YYYY-MM-DD"
        ) from exc


def parse_moment(value: str, option: str) -> datetime:
    """An ISO date or date-time (`2026-12-01`, `2026-12-01T08:00`, with or without zone)."""
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"invalid date-time {value!r} for {option}: expected YYYY-MM-DD[THH:MM[:SS]][+HH:MM]"
        ) from exc


# -- errors ----------------------------------------------------------------------------------
def verbose() -> bool:
    """Whether errors show their traceback: `--verbose` or `GOVLAKE_DEBUG=1`."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _masked(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given, minus nothing secret to hide
        return url


def describe(exc: BaseException) -> str:
    """One line that says what went wrong, in the user's terms where the error is known."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or exc.title}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid {exc.title}: {fields}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file or folder: {exc.filename}"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"permission denied: {exc.filename}"
    try:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError) and exc.connection_invalidated is False:
            from govlake.core.settings import get_settings

            reason = _first_line(str(exc.orig)) if exc.orig is not None else _first_line(str(exc))
            try:
                where = _masked(get_settings().database_url)
            except Exception:  # the settings themselves are broken: say what failed
                where = "the platform database"
            return f"platform database {where}: {reason}"
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        pass
    message = _first_line(str(exc))
    if isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    name = type(exc).__name__
    if not message:
        return name
    module = type(exc).__module__
    if module.startswith("govlake") or module == "builtins":
        return message
    # A library's error (delta-rs, botocore, pyarrow, Spark): name it, it helps a search.
    return f"{name}: {message}"


def report(exc: BaseException) -> int:
    """Print `exc` as one red line on stderr (and its traceback when verbose); its exit code."""
    if isinstance(exc, click_exceptions.ClickException) and not _first_line(exc.format_message()):
        return exc.exit_code  # a group called without a command: its help was shown
    if isinstance(exc, click_exceptions.UsageError):
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _line(f"{_first_line(exc.format_message())}{hint}")
        return exc.exit_code
    if isinstance(exc, click_exceptions.ClickException):
        _line(_first_line(exc.format_message()))
        return exc.exit_code
    if verbose():
        traceback.print_exception(exc, file=sys.stderr)
    _line(describe(exc))
    return 1


def _line(message: str) -> None:
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def run(command: Any, args: Sequence[str] | None = None, prog_name: str = "govlake") -> int:
    """Run the click command of the app; every outcome becomes an exit code, every error one
    line on stderr."""
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        _line("aborted")
        return 1
    except KeyboardInterrupt:
        _line("interrupted")
        return 130
    except SystemExit as done:
        return _code(done.code)
    except Exception as exc:
        return report(exc)
    # Non-standalone click returns the code of a `typer.Exit`, else what the command returned.
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def finish(code: int) -> NoReturn:
    """End the process with `code` once the command's work is done and said.

    Why not a normal interpreter exit: a command that has read a Delta table through pyarrow's
    dataset scanner (delta-rs `to_pyarrow_dataset()`/`to_pyarrow_table()`) leaves Arrow's
    native thread-pool threads alive; when the interpreter finalises and C++ static
    destructors tear the pools down, a still-joinable `std::thread` is destroyed and
    `std::terminate` aborts the process ("terminate called without an active exception",
    exit 134) after the command has printed all its output (apache/arrow#39862, #34314).
    So everything Python owes the outside world is done here, in order, and then the process
    ends with `os._exit`, which runs no native destructors:
    - the threading exit hooks run and non-daemon threads are joined, as the interpreter
      would;
    - the `atexit` handlers run: the Spark Connect session is released on the server, the
      embedded engine stops, logging flushes and closes its handlers;
    - the platform database connections are closed (a PostgreSQL server then sees a clean
      disconnect, SQLite's WAL is checkpointed);
    - stdout and stderr are flushed.
    """
    if threading.current_thread() is threading.main_thread():
        # What the interpreter does first at exit: the threading exit hooks (an idle
        # ThreadPoolExecutor's workers are told to stop there), then every non-daemon thread
        # joined. Joining without the hooks waits forever on such a worker.
        threading._shutdown()  # type: ignore[attr-defined]
    try:
        atexit._run_exitfuncs()
    except Exception as exc:  # a failing handler must not change the command's status
        _line(f"at exit: {describe(exc)}")
    try:
        from govlake.platform.database import dispose_engines

        dispose_engines()
    except Exception as exc:
        _line(f"closing the platform database: {describe(exc)}")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`govlake … | head`): nothing to flush to
            if code == 0:
                code = 1
    os._exit(code)


class GovlakeTyper(typer.Typer):
    """The `govlake` app: run as a program it reports errors in one line and exits through
    `finish`; typer's test runner and `get_command` see an ordinary Typer."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        command = typer.main.get_command(self)
        finish(run(command, kwargs.get("args"), kwargs.get("prog_name") or "govlake"))


# -- what the command modules share ---------------------------------------------------------
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
