"""`govlake catalog`: read and check the information-resource catalogue, keep its change
register (`govlake.governance.changes`) and export the open catalogue for data portals."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from govlake.core.catalog import Catalog, CatalogError
from govlake.core.settings import Settings, get_settings
from govlake.governance import changes, dcat
from govlake.platform.database import session
from govlake_app.cli.console import (
    console,
    errors,
    fail,
    load_catalog,
    load_settings,
    now,
    parse_moment,
)

catalog_app = typer.Typer(
    help="Read and check the information-resource catalogue.", no_args_is_help=True
)

COLOURS = {"on_time": "green", "due": "yellow", "overdue": "red"}
#: Export formats: name → what it is.
FORMATS = {"dcat": "DCAT-AP JSON-LD of the open catalogue (CKAN's ckanext-dcat reads it)"}


def _setup() -> tuple[Settings, Catalog]:
    """Settings, catalogue and the change register's tables."""
    settings = get_settings()
    catalog = load_catalog(settings)
    changes.ensure_tables(settings)
    return settings, catalog


def _date(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise fail(f"{what} must be a date YYYY-MM-DD, got {value!r}") from exc


@catalog_app.command("change")
def change(
    resource: Annotated[str, typer.Argument(help="theme.resource")],
    reason: Annotated[str, typer.Option(help="why the entry changed")],
    effective: Annotated[str, typer.Option(help="date the change takes effect, YYYY-MM-DD")],
    by: Annotated[str, typer.Option(help="who records it")] = "catalogue steward",
) -> None:
    """Record an edited catalogue entry as a new revision, with its reason and effective
    date; a breaking change needs a new resource version."""
    settings, catalog = _setup()
    effective_on = _date(effective, "--effective")
    try:
        with session(settings) as s:
            revision = changes.record_change(
                s, catalog, resource, reason=reason, effective_on=effective_on, by=by, at=now()
            )
            found = json.loads(revision.changes)
            number, kind = revision.revision, revision.kind
    except CatalogError as exc:
        raise fail(str(exc)) from exc
    console.print(f"{resource}: revision {number} ({kind}), effective {effective_on}")
    for entry in found:
        console.print(f"  {entry['detail']}", highlight=False)


@catalog_app.command("review")
def review(
    resource: Annotated[str, typer.Argument(help="theme.resource")],
    by: Annotated[str, typer.Option(help="who reviewed the entry")],
    note: Annotated[str, typer.Option(help="what the review found")] = "",
) -> None:
    """Record that an entry was reviewed and is current (at least quarterly)."""
    settings, catalog = _setup()
    try:
        with session(settings) as s:
            revision = changes.record_review(s, catalog, resource, by=by, note=note, at=now())
            number = revision.revision
            next_on = changes.next_review(revision.recorded_at.date())
    except CatalogError as exc:
        raise fail(str(exc)) from exc
    console.print(f"{resource}: reviewed (revision {number}); next review by {next_on}")


@catalog_app.command("duty-change")
def duty_change(
    provider: Annotated[str, typer.Argument(help="provider department code")],
    basis: Annotated[str, typer.Option(help="the law, regulation or decision that changed")],
    reason: Annotated[str, typer.Option(help="what changed for the provider")],
    effective: Annotated[str, typer.Option(help="date it takes effect, YYYY-MM-DD")],
    by: Annotated[str, typer.Option(help="who registers it")] = "competent authority",
) -> None:
    """Register a change in law or duties: the provider's entries are due for update within
    15 working days, and its steward is told."""
    settings, catalog = _setup()
    effective_on = _date(effective, "--effective")
    try:
        with session(settings) as s:
            registered = changes.register_duty_change(
                s, catalog, settings, provider=provider, basis=basis, reason=reason,
                effective_on=effective_on, by=by, at=now(),
            )  # fmt: skip
            due_on, entries = registered.due_on, json.loads(registered.resources)
            number = registered.id
    except CatalogError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"duty change {number} for {provider}: update {', '.join(entries)} by {due_on} "
        f"({changes.UPDATE_WORKING_DAYS} working days)"
    )


@catalog_app.command("status")
def status(
    at: Annotated[str | None, typer.Option(help="assess on this UTC time (ISO)")] = None,
) -> None:
    """Each entry's quarterly review, updates due after duty changes, and unrecorded edits."""
    moment = parse_moment(at, "--at").replace(tzinfo=None) if at else now()
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


@catalog_app.command("history")
def history(
    resource: Annotated[str | None, typer.Argument(help="theme.resource (default: all)")] = None,
) -> None:
    """The change register: every revision with its reason, effective date and changes."""
    settings, catalog = _setup()
    if resource is not None:
        try:
            catalog.get(resource)
        except CatalogError as exc:
            raise fail(str(exc)) from exc
    table = RichTable("resource", "rev", "kind", "version", "recorded (UTC)", "by", "effective",
                      "reason", "changes", title="catalogue change register")  # fmt: skip
    with session(settings) as s:
        for r in changes.revisions(s, resource):
            detail = "; ".join(c["detail"] for c in json.loads(r.changes)) or "-"
            table.add_row(r.resource, str(r.revision), r.kind, str(r.resource_version),
                          f"{r.recorded_at:%Y-%m-%d %H:%M}", r.recorded_by,
                          str(r.effective_on), r.reason, detail)  # fmt: skip
    console.print(table)


@catalog_app.command("export")
def catalog_export(
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="Export format: dcat (DCAT-AP JSON-LD)."),
    ] = "dcat",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File to write; standard output when not given."),
    ] = None,
) -> None:
    """Export the open catalogue (resources with open attribute `open`) for data portals."""
    if format not in FORMATS:
        known = "; ".join(f"{name}: {what}" for name, what in FORMATS.items())
        raise fail(f"unknown export format {format!r}; known: {known}", stderr=True)
    settings = load_settings(stderr=True)
    catalog = load_catalog(settings, stderr=True)
    document = dcat.catalog_document(catalog, settings)
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc}", stderr=True) from exc
    datasets = len(document["dcat:dataset"])
    errors.print(f"wrote {datasets} open dataset(s) to {out}", highlight=False)


@catalog_app.command("list")
def catalog_list() -> None:
    """One line per catalogued resource."""
    catalog = load_catalog(get_settings())
    table = RichTable("resource", "title", "provider", "cycle", "sharing", "items", "grain")
    for r in catalog:
        table.add_row(
            r.qualified_name,
            r.title,
            r.provider,
            r.update_cycle,
            r.sharing,
            str(len(r.items)),
            r.grain,
        )
    console.print(table)


@catalog_app.command("show")
def catalog_show(resource: str) -> None:
    """Every catalogue field of one resource, and its items."""
    r = load_catalog(get_settings()).get(resource)
    head = RichTable(show_header=False, title=f"{r.qualified_name}: {r.title}")
    for name in (
        "category",
        "classification",
        "provider",
        "update_cycle",
        "sharing",
        "legal_basis",
        "purposes",
        "sharing_method",
        "usage_requirements",
        "open_attribute",
        "format",
        "key",
        "grain",
        "reviewed_on",
        "sources",
    ):
        head.add_row(name, str(getattr(r, name)))
    head.add_row("steward", f"{r.steward.name} <{r.steward.email}>")
    head.add_row("published as", ", ".join(f"{r.name}_{c}" for c in r.sharing_classes) or "-")
    console.print(head)
    items = RichTable(
        "item", "title", "type", "required", "pii", "base", "sharing", "authority", "check"
    )
    for i in r.items:
        check = i.check or (f"values: {','.join(i.values)}" if i.values else "")
        items.add_row(
            i.name,
            i.title,
            i.type,
            _yes(i.required),
            _yes(i.pii),
            _yes(i.base_item),
            r.sharing_of(i),
            i.authority,
            check,
        )
    console.print(items)


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


@catalog_app.command("validate")
def catalog_validate(
    directory: Annotated[Path | None, typer.Argument(help="catalogue folder")] = None,
) -> None:
    """Load every entry and check the sharing rules; exit 2 on the first broken rule."""
    settings = get_settings()
    folder = directory or settings.catalog_dir
    try:
        catalog = Catalog.load(folder)
    except CatalogError as exc:
        console.print(f"[red]invalid:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    console.print(f"[green]valid:[/green] {len(catalog)} resources in {folder}")
