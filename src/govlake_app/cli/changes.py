"""`govlake catalog change | review | duty-change | status | history`: the change register of
the catalogue (`govlake.governance.changes`) from the command line."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from govlake.core.catalog import Catalog, CatalogError
from govlake.core.settings import Settings, get_settings
from govlake.governance import changes
from govlake_app.cli.console import parse_moment

console = Console(width=None if sys.stdout.isatty() else 160)
COLOURS = {"on_time": "green", "due": "yellow", "overdue": "red"}


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _setup() -> tuple[Settings, Catalog]:
    settings = get_settings()
    try:
        catalog = Catalog.load(settings.catalog_dir)
    except CatalogError as exc:
        console.print(f"[red]catalogue error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    changes.ensure_tables(settings)
    return settings, catalog


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _date(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise _fail(ValueError(f"{what} must be a date YYYY-MM-DD, got {value!r}")) from exc


def change(
    resource: Annotated[str, typer.Argument(help="theme.resource")],
    reason: Annotated[str, typer.Option(help="why the entry changed")],
    effective: Annotated[str, typer.Option(help="date the change takes effect, YYYY-MM-DD")],
    by: Annotated[str, typer.Option(help="who records it")] = "catalogue steward",
) -> None:
    """Record an edited catalogue entry as a new revision, with its reason and effective
    date; a breaking change needs a new resource version."""
    from govlake.platform.database import session

    settings, catalog = _setup()
    effective_on = _date(effective, "--effective")
    try:
        with session(settings) as s:
            revision = changes.record_change(
                s, catalog, resource, reason=reason, effective_on=effective_on, by=by, at=_now()
            )
            found = json.loads(revision.changes)
            number, kind = revision.revision, revision.kind
    except CatalogError as exc:
        raise _fail(exc) from exc
    console.print(f"{resource}: revision {number} ({kind}), effective {effective_on}")
    for entry in found:
        console.print(f"  {entry['detail']}", highlight=False)


def review(
    resource: Annotated[str, typer.Argument(help="theme.resource")],
    by: Annotated[str, typer.Option(help="who reviewed the entry")],
    note: Annotated[str, typer.Option(help="what the review found")] = "",
) -> None:
    """Record that an entry was reviewed and is current (at least quarterly)."""
    from govlake.platform.database import session

    settings, catalog = _setup()
    try:
        with session(settings) as s:
            revision = changes.record_review(s, catalog, resource, by=by, note=note, at=_now())
            number = revision.revision
            next_on = changes.next_review(revision.recorded_at.date())
    except CatalogError as exc:
        raise _fail(exc) from exc
    console.print(f"{resource}: reviewed (revision {number}); next review by {next_on}")


def duty_change(
    provider: Annotated[str, typer.Argument(help="provider department code")],
    basis: Annotated[str, typer.Option(help="the law, regulation or decision that changed")],
    reason: Annotated[str, typer.Option(help="what changed for the provider")],
    effective: Annotated[str, typer.Option(help="date it takes effect, YYYY-MM-DD")],
    by: Annotated[str, typer.Option(help="who registers it")] = "competent authority",
) -> None:
    """Register a change in law or duties: the provider's entries are due for update within
    15 working days, and its steward is told."""
    from govlake.platform.database import session

    settings, catalog = _setup()
    effective_on = _date(effective, "--effective")
    try:
        with session(settings) as s:
            registered = changes.register_duty_change(
                s, catalog, settings, provider=provider, basis=basis, reason=reason,
                effective_on=effective_on, by=by, at=_now(),
            )  # fmt: skip
            due_on, entries = registered.due_on, json.loads(registered.resources)
            number = registered.id
    except CatalogError as exc:
        raise _fail(exc) from exc
    console.print(
        f"duty change {number} for {provider}: update {', '.join(entries)} by {due_on} "
        f"({changes.UPDATE_WORKING_DAYS} working days)"
    )


def status(
    at: Annotated[str | None, typer.Option(help="assess on this UTC time (ISO)")] = None,
) -> None:
    """Each entry's quarterly review, updates due after duty changes, and unrecorded edits."""
    from govlake.platform.database import session

    moment = parse_moment(at, "--at").replace(tzinfo=None) if at else _now()
    settings, catalog = _setup()
    with session(settings) as s:
        changes.sync(s, catalog, at=moment)
        found = changes.upkeep(s, catalog, at=moment)
    console.print(upkeep_table(found, title=f"catalogue upkeep on {moment:%Y-%m-%d}"))
    if any(u.state == "overdue" for u in found):
        raise typer.Exit(1)


def upkeep_table(found: list[changes.Upkeep], *, title: str) -> RichTable:
    table = RichTable("provider", "resource", "duty", "due on", "state", "days late", "detail",
                      title=title)  # fmt: skip
    for u in sorted(found, key=lambda u: (u.provider, u.resource, u.duty)):
        table.add_row(u.provider, u.resource, u.duty, str(u.due_on or "-"),
                      f"[{COLOURS[u.state]}]{u.state}[/]", str(u.days_late), u.detail)  # fmt: skip
    return table


def history(
    resource: Annotated[str | None, typer.Argument(help="theme.resource (default: all)")] = None,
) -> None:
    """The change register: every revision with its reason, effective date and changes."""
    from govlake.platform.database import session

    settings, catalog = _setup()
    if resource is not None:
        try:
            catalog.get(resource)
        except CatalogError as exc:
            raise _fail(exc) from exc
    table = RichTable("resource", "rev", "kind", "version", "recorded (UTC)", "by", "effective",
                      "reason", "changes", title="catalogue change register")  # fmt: skip
    with session(settings) as s:
        for r in changes.revisions(s, resource):
            detail = "; ".join(c["detail"] for c in json.loads(r.changes)) or "-"
            table.add_row(r.resource, str(r.revision), r.kind, str(r.resource_version),
                          f"{r.recorded_at:%Y-%m-%d %H:%M}", r.recorded_by,
                          str(r.effective_on), r.reason, detail)  # fmt: skip
    console.print(table)
