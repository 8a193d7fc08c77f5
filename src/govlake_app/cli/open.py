"""`govlake catalog export`: the open catalogue for data portals, as DCAT-AP JSON-LD
(`govlake.governance.dcat`), to a file or to standard output.

Needs no engine: the catalogue comes from the YAML files and the publication times from
`ops.publications` with delta-rs, so it works on a fresh checkout (no dates then) as on a
running lakehouse.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from govlake.core.catalog import Catalog, CatalogError
from govlake.core.settings import Settings, get_settings
from govlake.governance import dcat

#: Export formats: name → what it is.
FORMATS = {"dcat": "DCAT-AP JSON-LD of the open catalogue (CKAN's ckanext-dcat reads it)"}

errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]{message}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        raise _fail(f"settings error: {exc}") from exc


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
        raise _fail(f"unknown export format {format!r}; known: {known}")
    settings = _settings()
    try:
        catalog = Catalog.load(settings.catalog_dir)
    except CatalogError as exc:
        raise _fail(f"catalogue error: {exc}") from exc
    document = dcat.catalog_document(catalog, settings)
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc}") from exc
    datasets = len(document["dcat:dataset"])
    errors.print(f"wrote {datasets} open dataset(s) to {out}", highlight=False)
