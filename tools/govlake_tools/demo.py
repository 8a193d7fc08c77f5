"""`govlake demo`: generate extracts for every resource, ingest them, and show what the
platform does with them, step by step: a subscriber's signed webhook and mail notice, the
open variant and its DCAT catalogue, the steward reports and scorecard, and a read through
the Delta Sharing protocol with the official client. `land_extracts` is `govlake generate`."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, cast
from urllib.parse import urlsplit

import typer
from deltalake import DeltaTable
from rich.progress import TaskID
from rich.table import Table as RichTable
from sqlalchemy import select
from sqlalchemy.orm import Session

from govlake.core.catalog import Catalog
from govlake.core.runs import StageCounts
from govlake.core.settings import Settings, get_settings
from govlake.governance import changes, dcat
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.lake.tables import TableSet
from govlake.platform import audit
from govlake.platform.database import Consumer, Notification, session
from govlake.sharing import access
from govlake.sharing import subscriptions as subs
from govlake.sharing.subscriptions import SignatureError, verify_signature
from govlake_app.cli.console import console, load_catalog, parse_date, progress
from govlake_app.cli.ingest import ingest_resources
from govlake_app.cli.serve import running, write_profile
from govlake_tools.generate import generate as run_generate
from govlake_tools.generate import planned_rows


def land_extracts(
    *,
    rows: int,
    seed: int,
    defects: float,
    encoding: str,
    fmt: str,
    as_of: str | None,
    resource: str | None,
) -> None:
    """Write the extracts `govlake generate` describes into the landing zone, with a progress
    bar per resource, and print what was written."""
    if encoding not in ("utf-8", "gbk"):
        raise typer.BadParameter("encoding must be utf-8 or gbk")
    if fmt not in ("csv", "parquet", "jsonl"):
        raise typer.BadParameter("format must be csv, parquet or jsonl")
    chosen_encoding = cast(Literal["utf-8", "gbk"], encoding)
    chosen_format = cast(Literal["csv", "parquet", "jsonl"], fmt)
    day = parse_date(as_of, "--as-of") if as_of else datetime.now(UTC).date()
    settings = get_settings()
    catalog = load_catalog(settings)
    if resource:
        catalog.get(resource)  # an unknown resource is refused before anything is written
    selected = [resource] if resource else None
    totals = planned_rows(catalog, rows=rows, resources=selected)
    with progress() as bars:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, done: int) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=totals.get(label))
            bars.advance(tasks[label], done)

        made = run_generate(
            catalog,
            settings.landing_location,
            rows=rows,
            seed=seed,
            defects=defects,
            encoding=chosen_encoding,
            fmt=chosen_format,
            as_of=day,
            resources=selected,
            on_progress=on_progress,
        )
    table = RichTable("resource", "provider", "rows", "defects", "file")
    for extract in made:
        table.add_row(
            extract.resource,
            extract.provider,
            f"{extract.rows:,}",
            str(sum(extract.defects.values())),
            extract.location.uri,
        )
    console.print(table)


QUERIES = {
    "population.residents": "SELECT gender, count(*) AS residents FROM "
    "population.residents_unconditional GROUP BY gender ORDER BY gender",
    "legal_entity.enterprises": "SELECT status, count(*) AS enterprises, "
    "sum(registered_capital) AS capital FROM legal_entity.enterprises_unconditional "
    "GROUP BY status ORDER BY enterprises DESC",
    "geospatial.admin_divisions": "SELECT level, count(*) AS divisions FROM "
    "geospatial.admin_divisions_unconditional GROUP BY level",
    "geospatial.registered_addresses": "SELECT division_code, count(*) AS addresses FROM "
    "geospatial.registered_addresses_unconditional GROUP BY division_code "
    "ORDER BY addresses DESC LIMIT 5",
    "credit.records": "SELECT record_type, issuing_department, count(*) AS decisions FROM "
    "credit.records_unconditional GROUP BY record_type, issuing_department "
    "ORDER BY decisions DESC LIMIT 5",
}


def run_demo(*, rows: int, seed: int, defects: float) -> None:
    """`govlake demo`: generate extracts for every resource, ingest them, and show what was
    published, subscribed to, opened, reported and shared."""
    logging.basicConfig(level=logging.ERROR)
    settings = get_settings()
    console.rule("[bold]1. department extracts → landing zone")
    console.print(f"landing zone: {settings.landing_location.uri}")
    land_extracts(
        rows=rows,
        seed=seed,
        defects=defects,
        encoding="utf-8",
        fmt="csv",
        as_of=None,
        resource=None,
    )
    console.rule("[bold]2. a consumer subscribes to new versions")
    with _webhook_receiver() as receiver:
        # Webhooks go to public addresses only: the demo allows its own receiver on loopback,
        # as a deployment lists its internal receivers in GOVLAKE_WEBHOOK_ALLOWED_RECEIVERS.
        own = urlsplit(receiver.url).netloc
        settings = settings.model_copy(
            update={"webhook_allowed_receivers": [*settings.webhook_allowed_receivers, own]}
        )
        secret = _demo_subscribe(settings, receiver.url)
        console.rule("[bold]3. landing → bronze → validate → silver → publish")
        console.print(f"warehouse: {settings.warehouse_location.uri}")
        results = ingest_resources(None, settings)
    console.rule("[bold]4. subscription notices")
    _demo_notices(settings, receiver, secret)
    console.rule("[bold]5. open data: the de-identified open variant and its DCAT catalogue")
    _demo_open(settings)
    console.rule("[bold]6. reports to data owners")
    _demo_reports(settings)
    console.rule("[bold]7. sharing through the Delta Sharing protocol")
    _demo_sharing(settings)
    console.rule("[bold]8. queries to try")
    _queries_to_try(results)


def _queries_to_try(results: list[StageCounts]) -> None:
    for c in results:
        query = QUERIES.get(c.resource)
        if query:
            console.print(f'govlake sql "{query}"')
    console.print(
        'govlake sql "SELECT resource, sharing_class, version, rows, published_at '
        'FROM ops.publications ORDER BY published_at DESC"'
    )
    console.print(
        'govlake sql "SELECT _rules, count(*) AS n FROM '
        'population.residents_quarantine GROUP BY _rules ORDER BY n DESC"'
    )
    console.print(
        'govlake sql "SELECT resource, provider, expectation, severity, observed_value, success '
        'FROM ops.quality_results WHERE NOT success"'
    )
    console.print("govlake quality timeliness")
    console.print(
        "govlake report quality --provider public_security --send   # needs GOVLAKE_SMTP_*"
    )
    console.print("govlake catalog status; govlake backup; govlake backup-status")
    console.print(f"govlake report sharing --year {datetime.now(UTC).year}")
    console.print("Re-run `make demo`: the same extracts are skipped and no new version appears.")


def _demo_sharing(settings: Settings) -> None:
    """Register civil affairs as a consumer, write its profile, start the sharing server for a
    moment and read a shared table with the official client, as an analyst would."""
    import delta_sharing  # pandas: only when the demo gets this far

    catalog = load_catalog(settings)
    at = datetime.now(UTC).replace(tzinfo=None)
    consumer = "civil_affairs"
    with session(settings) as s:
        _register(s, catalog, consumer, at=at)
    table = "population.population.residents_unconditional"
    with running(settings) as endpoint:
        path = write_profile(settings, catalog, consumer,
                             settings.reports_dir / "profiles" / f"{consumer}.share", days=30,
                             at=at, endpoint=endpoint)  # fmt: skip
        client = delta_sharing.SharingClient(str(path))
        tables = sorted(f"{t.share}.{t.schema}.{t.name}" for t in client.list_all_tables())
        frame = delta_sharing.load_as_pandas(f"{path}#{table}", limit=5)
        version = delta_sharing.get_table_version(f"{path}#{table}")
    console.print(f"server {endpoint} (stopped again); profile {path}")
    console.print(f"{consumer} may read {len(tables)} tables: {', '.join(tables)}")
    console.print(f'delta_sharing.load_as_pandas("{path}#{table}", limit=5)  → version {version}')
    console.print(frame.to_string(index=False))
    console.print(
        "Run the server yourself: govlake share serve; every read is in the audit "
        "journal: govlake audit verify, govlake audit export --department civil_affairs"
    )


def _register(s: Session, catalog: Catalog, consumer: str, *, at: datetime) -> None:
    """Register `consumer` (journaled as `govlake share consumer add` does) unless it is."""
    if s.get(Consumer, consumer) is None:
        access.register_consumer(s, catalog, consumer, email=None, at=at)
        audit.record(s, at=at, actor="platform", action="consumer.register", consumer=consumer)


DEMO_SUBSCRIBER = "civil_affairs"
DEMO_SUBSCRIBED = "legal_entity.enterprises"
DEMO_OPEN = "legal_entity.enterprises"


class _Receiver:
    """A webhook receiver on 127.0.0.1 that keeps what it is sent, as a subscriber's
    system would."""

    def __init__(self, url: str):
        self.url = url
        self.received: list[tuple[dict[str, str], bytes]] = []


@contextmanager
def _webhook_receiver() -> Iterator[_Receiver]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver = _Receiver(f"http://127.0.0.1:{server.server_address[1]}/govlake-webhook")
    receiver.received = received
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def _demo_subscribe(settings: Settings, url: str) -> str | None:
    """Civil affairs subscribes to the enterprises with a webhook to the demo's receiver (a
    subscription of an earlier demo run, to a receiver gone since, is cancelled first)."""
    catalog = load_catalog(settings)
    at = datetime.now(UTC).replace(tzinfo=None)
    with session(settings) as s:
        _register(s, catalog, DEMO_SUBSCRIBER, at=at)
        for old in subs.list_subscriptions(s, consumer=DEMO_SUBSCRIBER, resource=DEMO_SUBSCRIBED):
            subs.unsubscribe(s, old.id, by="demo", at=at)
        made, secret = subs.subscribe(s, catalog, settings, consumer=DEMO_SUBSCRIBER,
                                      resource=DEMO_SUBSCRIBED, webhook_url=url, at=at)  # fmt: skip
        console.print(f"{DEMO_SUBSCRIBER} subscribes to {DEMO_SUBSCRIBED} (subscription "
                      f"{made.id}): mail to {made.email}, webhook {url}, signed with a secret "
                      "shown once: govlake share subscription add …")  # fmt: skip
    return secret


def _demo_notices(settings: Settings, receiver: _Receiver, secret: str | None) -> None:
    """What the subscriber got: the signed webhook, checked as a receiver would, and the
    mail notice as recorded."""
    if not receiver.received:
        console.print(f"No new version of {DEMO_SUBSCRIBED} was published, so no notice: "
                      "subscribers hear only of new versions.")  # fmt: skip
        return
    headers, body = receiver.received[-1]
    try:
        verify_signature(secret or "", body=body, timestamp=headers["X-Govlake-Timestamp"],
                         signature=headers["X-Govlake-Signature"])  # fmt: skip
        verdict = "[green]signature verified[/green] (HMAC-SHA256 of timestamp and body)"
    except (SignatureError, KeyError) as exc:
        verdict = f"[red]signature not verified: {exc}[/red]"
    console.print(f"webhook received by {receiver.url}: event {headers.get('X-Govlake-Event')}, "
                  f"delivery {headers.get('X-Govlake-Delivery')}, {verdict}")  # fmt: skip
    console.print_json(json.dumps(json.loads(body), ensure_ascii=False))
    with session(settings) as s:
        notice = s.scalars(
            select(Notification).where(Notification.kind == "subscription.version")
            .order_by(Notification.id.desc()).limit(1)
        ).first()  # fmt: skip
        if notice is not None:
            mailed = "mailed" if notice.sent else f"not mailed ({notice.error})"
            console.print(f"mail notice to {notice.recipient}, {mailed}: {notice.subject}",
                          highlight=False)  # fmt: skip
            console.print(notice.body, highlight=False)


def _demo_open(settings: Settings) -> None:
    """A few rows of the enterprises' open variant beside the published ones, its licence and
    notice, and the DCAT-AP export of the open catalogue."""
    catalog = load_catalog(settings)
    resource = catalog.get(DEMO_OPEN)
    tables = TableSet(resource, settings.warehouse_location)
    if not tables.open.location.is_delta_table():
        console.print(f"{DEMO_OPEN} has no open variant yet")
        return
    opened = DeltaTable(tables.open.location.uri,
                        storage_options=tables.open.location.storage_options())  # fmt: skip
    # Read through delta-rs's engine (storage.read_delta), not a pyarrow dataset scan.
    rows = read_delta(opened).slice(0, 3).to_pylist()
    # Compared with the fullest shared table: what a granted department reads.
    published = tables.published(resource.sharing_classes[-1]).location
    shared = DeltaTable(published.uri, storage_options=published.storage_options())
    keys = [r["credit_code"] for r in rows]
    source = {r["credit_code"]: r for r in read_delta(shared).to_pylist()
              if r["credit_code"] in keys}  # fmt: skip
    rules = dict(resource.open_items())
    table = RichTable("item", "rule", *(f"row {i + 1}: shared → open" for i in range(len(rows))),
                      title=f"{tables.open.qualified_name} v{opened.version()}")  # fmt: skip
    for item in resource.items:
        rule = rules.get(item.name, "drop")
        before = [source.get(r["credit_code"], {}).get(item.name, "(not shared)") for r in rows]
        after = [r.get(item.name, "—") if rule != "drop" else "—" for r in rows]
        table.add_row(item.name, rule, *(f"{b} → {a}" for b, a in zip(before, after, strict=True)))
    console.print(table)
    terms = resource.open
    if terms is not None:
        console.print(f"licence: {terms.licence} ({terms.licence_url})")
        console.print(f"usage notice: {terms.notice}", highlight=False)
    document = dcat.catalog_document(catalog, settings)
    out = settings.reports_dir / "open" / "catalog.jsonld"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    datasets = document.get("dcat:dataset", [])
    console.print(f"DCAT-AP JSON-LD of the open catalogue ({len(datasets)} datasets, for a CKAN "
                  f"DCAT harvester): {out}  ← govlake catalog export --format dcat")  # fmt: skip
    console.print(f"public routes (govlake share serve): {settings.open_endpoint}/catalog.jsonld, "
                  f"{settings.open_endpoint}/{resource.theme}/{tables.open.name}.csv")  # fmt: skip


def _demo_reports(settings: Settings) -> None:
    """One steward report per provider department, and this year's scorecard."""
    # The reports draw their charts with matplotlib: loaded only when the demo gets here.
    from govlake.reports.quality import write_quality_report
    from govlake.reports.scorecard import write_scorecard

    catalog = load_catalog(settings)
    spark = get_spark(settings, catalog, fresh=True)
    at = datetime.now(UTC).replace(tzinfo=None)
    changes.sync_register(settings, catalog, at=at)  # the steward reports read the register
    table = RichTable("department", "steward", "report", title="steward reports")
    for provider in catalog.providers:
        written = write_quality_report(spark, catalog, settings, provider, at=at)
        steward = catalog.department(provider).steward
        table.add_row(provider, f"{steward.name} <{steward.email}>", str(written.path))
    console.print(table)
    files = write_scorecard(spark, catalog, settings, year=at.year, at=at)
    console.print(f"department scorecard {at.year}: {files.html} and {files.csv}")
