"""`govlake quality`: quality and timeliness of what providers deliver."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table as RichTable

from govlake.core.settings import get_settings
from govlake.governance import changes
from govlake.platform.database import session
from govlake_app.cli.catalog import COLOURS, upkeep_table
from govlake_app.cli.console import console, load_catalog, parse_moment

quality_app = typer.Typer(
    help="Quality and timeliness of what providers deliver.", no_args_is_help=True
)


@quality_app.command("timeliness")
def quality_timeliness(
    at: Annotated[
        str | None, typer.Option(help="assess at this UTC time (ISO), default now")
    ] = None,
) -> None:
    """Each resource's last publication, and each provider's last delivery, against the
    update cycle: on time, due or overdue."""
    from govlake.governance.timeliness import deliveries, monitor
    from govlake.lake.engine import get_spark

    moment = parse_moment(at, "--at") if at else datetime.now(UTC)
    settings = get_settings()
    catalog = load_catalog(settings)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    spark = get_spark(settings, catalog, fresh=True)
    results = sorted(
        [
            *monitor(spark, catalog, settings, at=moment),
            *deliveries(spark, catalog, settings, at=moment),
        ],
        key=lambda t: (t.provider, t.resource, t.subject != "publication"),
    )
    table = RichTable(
        "provider",
        "resource",
        "what",
        "cycle",
        "last (UTC)",
        "next due (UTC)",
        "state",
        "hours late",
        title=f"timeliness at {moment:%Y-%m-%d %H:%M} UTC",
    )
    for t in results:
        table.add_row(
            t.provider,
            t.resource,
            "publication" if t.subject == "publication" else "delivery (extract as of)",
            t.update_cycle,
            f"{t.last_published_at:%Y-%m-%d %H:%M}" if t.last_published_at else "never",
            f"{t.next_due_at:%Y-%m-%d %H:%M}" if t.next_due_at else "-",
            f"[{COLOURS[t.state]}]{t.state}[/]",
            f"{t.hours_late:.1f}",
        )
    console.print(table)
    changes.ensure_tables(settings)
    with session(settings) as s:
        changes.sync(s, catalog, at=moment)
        upkeep = changes.upkeep(s, catalog, at=moment)
    console.print(upkeep_table(upkeep, title="catalogue upkeep (China dates)"))
