"""The `govlake` command line: the root app built from one module per command group, plus
the commands other installed packages add through the `govlake.commands` entry points (the
development tooling adds `generate`, `demo`, `demo-s3` and `airflow` so)."""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import Annotated

import typer

from govlake.core.settings import get_settings
from govlake_app.cli.audit import audit_app
from govlake_app.cli.backup import backup, backup_status, restore
from govlake_app.cli.catalog import catalog_app
from govlake_app.cli.clients import client_app
from govlake_app.cli.console import DEBUG_VARIABLE, ENGINE_LOG_VARIABLE, GovlakeTyper
from govlake_app.cli.ingest import ingest, sql
from govlake_app.cli.quality import quality_app
from govlake_app.cli.report import report_app
from govlake_app.cli.serve import profile, serve
from govlake_app.cli.share import share_app

#: Entry-point group of packages that add commands: each entry is a `register(app)` function.
COMMANDS_GROUP = "govlake.commands"

app = GovlakeTyper(
    help="govlake: government information-resource sharing lakehouse.", no_args_is_help=True
)


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show the engine's own log lines, govlake's INFO log and the traceback of "
            "an error (GOVLAKE_ENGINE_LOG=info and GOVLAKE_DEBUG=1 for this run).",
        ),
    ] = False,
) -> None:
    """govlake: government information-resource sharing lakehouse."""
    if not verbose:
        return
    # Set as variables so that the settings (read after this) and child processes see them;
    # an explicit GOVLAKE_ENGINE_LOG still wins.
    os.environ.setdefault(ENGINE_LOG_VARIABLE, "info")
    os.environ[DEBUG_VARIABLE] = "1"
    get_settings.cache_clear()
    # govlake's own INFO lines; libraries (Great Expectations logs hundreds) from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for ours in ("govlake", "jobs", "expectations"):
        logging.getLogger(ours).setLevel(logging.INFO)


app.add_typer(catalog_app, name="catalog")
app.add_typer(quality_app, name="quality")
app.add_typer(report_app, name="report")
app.add_typer(audit_app, name="audit")
share_app.command()(serve)
share_app.command()(profile)
share_app.add_typer(client_app, name="client")
app.add_typer(share_app, name="share")
app.command()(backup)
app.command()(restore)
app.command("backup-status")(backup_status)
app.command()(ingest)
app.command()(sql)


def _add_plugin_commands(root: typer.Typer) -> None:
    """Let every installed `govlake.commands` entry point add its commands to `root`."""
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()(root)


_add_plugin_commands(app)
