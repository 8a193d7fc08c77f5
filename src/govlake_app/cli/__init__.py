"""The `govlake` command line: catalogue, generator, ingestion, SQL and the demo."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable

from govlake.core.catalog import Catalog, CatalogError
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings, get_settings
from govlake_app.cli import changes as changes_cli
from govlake_app.cli import open as open_cli
from govlake_app.cli.audit import audit_app
from govlake_app.cli.backup import backup, backup_status, restore
from govlake_app.cli.console import (
    DEBUG_VARIABLE,
    ENGINE_LOG_VARIABLE,
    GovlakeTyper,
    parse_date,
    parse_moment,
)
from govlake_app.cli.report import report_app
from govlake_app.cli.serve import profile, serve
from govlake_app.cli.share import share_app

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


catalog_app = typer.Typer(
    help="Read and check the information-resource catalogue.", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")
catalog_app.command("change")(changes_cli.change)
catalog_app.command("review")(changes_cli.review)
catalog_app.command("duty-change")(changes_cli.duty_change)
catalog_app.command("status")(changes_cli.status)
catalog_app.command("history")(changes_cli.history)
catalog_app.command("export")(open_cli.catalog_export)
quality_app = typer.Typer(
    help="Quality and timeliness of what providers deliver.", no_args_is_help=True
)
app.add_typer(quality_app, name="quality")
app.add_typer(report_app, name="report")
app.add_typer(audit_app, name="audit")
share_app.command()(serve)
share_app.command()(profile)
app.add_typer(share_app, name="share")
app.command()(backup)
app.command()(restore)
app.command("backup-status")(backup_status)
if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Wide enough for the summary when the output is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)


def _catalog(settings: Settings) -> Catalog:
    try:
        return Catalog.load(settings.catalog_dir)
    except CatalogError as exc:
        console.print(f"[red]catalogue error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@catalog_app.command("list")
def catalog_list() -> None:
    """One line per catalogued resource."""
    catalog = _catalog(get_settings())
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
    r = _catalog(get_settings()).get(resource)
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


@app.command()
def generate(
    rows: Annotated[int, typer.Option(help="residents; other resources scale from it")] = 10_000,
    seed: Annotated[int, typer.Option(help="same seed, same files")] = 7,
    defects: Annotated[float, typer.Option(help="share of rows with one injected defect")] = 0.01,
    encoding: Annotated[str, typer.Option(help="utf-8 or gbk (text formats)")] = "utf-8",
    fmt: Annotated[str, typer.Option("--format", help="csv, parquet or jsonl")] = "csv",
    as_of: Annotated[str | None, typer.Option(help="extract date, YYYY-MM-DD")] = None,
    resource: Annotated[str | None, typer.Option(help="only this resource")] = None,
) -> None:
    """Write one realistic extract per provider per resource into the landing zone."""
    _generate(
        rows=rows,
        seed=seed,
        defects=defects,
        encoding=encoding,
        fmt=fmt,
        as_of=as_of,
        resource=resource,
    )


def _generate(
    *,
    rows: int,
    seed: int,
    defects: float,
    encoding: str,
    fmt: str,
    as_of: str | None,
    resource: str | None,
) -> None:
    from govlake_tools.generate import generate as run_generate
    from govlake_tools.generate import planned_rows

    if encoding not in ("utf-8", "gbk"):
        raise typer.BadParameter("encoding must be utf-8 or gbk")
    if fmt not in ("csv", "parquet", "jsonl"):
        raise typer.BadParameter("format must be csv, parquet or jsonl")
    chosen_encoding = cast(Literal["utf-8", "gbk"], encoding)
    chosen_format = cast(Literal["csv", "parquet", "jsonl"], fmt)
    day = parse_date(as_of, "--as-of") if as_of else datetime.now(UTC).date()
    settings = get_settings()
    catalog = _catalog(settings)
    if resource:
        catalog.get(resource)  # an unknown resource is refused before anything is written
    selected = [resource] if resource else None
    totals = planned_rows(catalog, rows=rows, resources=selected)
    with _progress() as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, done: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=totals.get(label))
            progress.advance(tasks[label], done)

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


@app.command()
def ingest(
    resource: Annotated[str | None, typer.Option(help="only this resource")] = None,
    end: Annotated[
        str | None,
        typer.Option(help="end of the data interval, an ISO time (UTC unless given), default now"),
    ] = None,
) -> None:
    """Run landing → bronze → validate → silver → publish for every (or one) resource."""
    _ingest(resource, end=_moment(end) if end else None)


def _moment(text: str) -> datetime:
    """An ISO time from the command line; without an offset it is UTC."""
    moment = parse_moment(text, "--end")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ingest(
    resource: str | None, settings: Settings | None = None, *, end: datetime | None = None
) -> list[StageCounts]:
    from govlake.lake.engine import get_spark
    from govlake_app import pipeline as ingest_job

    settings = settings or get_settings()
    catalog = _catalog(settings)
    resources = catalog.select(resource)
    started = time.perf_counter()
    spark = get_spark(settings, catalog, fresh=True)
    interval = Interval.ending(end)
    results = []
    with _progress() as progress:
        task = progress.add_task("ingesting", total=len(resources) * len(ingest_job.STAGES))
        for r in resources:
            counts = StageCounts(r.qualified_name)
            for stage in ingest_job.STAGES:
                name = ingest_job.stage_name(stage)
                progress.update(task, description=f"{r.qualified_name}: {name}")
                ingest_job.run_stage(stage, spark, resource=r, interval=interval,
                                     settings=settings, counts=counts)  # fmt: skip
                progress.advance(task)
            results.append(counts)
    _summary(results, time.perf_counter() - started)
    _quality_summary(spark, settings, interval)
    return results


def _quality_summary(spark: SparkSession, settings: Settings, interval: Interval) -> None:
    """The expectation-suite runs of this ingestion: outcome and what failed."""
    from govlake.lake.tables import quality_tables, register

    runs, results = quality_tables(settings.warehouse_location)
    if not runs.location.is_delta_table():
        return
    register(spark, runs)
    register(spark, results)
    at = interval.end_naive_utc.isoformat(sep=" ")
    rows = spark.sql(
        f"SELECT q.resource, q.provider, q.scope, q.outcome, q.expectations, "
        f"q.failed_errors, q.failed_warnings, "
        f"concat_ws(', ', collect_list(CASE WHEN NOT r.success THEN "
        f"concat(r.expectation, ' (', r.observed_value, ')') END)) AS failing "
        f"FROM {runs.sql_name} q JOIN {results.sql_name} r USING (run_id) "
        f"WHERE q.checked_at = timestamp'{at}' "
        f"GROUP BY q.resource, q.provider, q.scope, q.outcome, q.expectations, "
        f"q.failed_errors, q.failed_warnings ORDER BY q.resource, q.scope, q.provider"
    ).collect()
    if not rows:
        return
    colours = {"passed": "green", "warned": "yellow", "held": "red"}
    table = RichTable(
        "resource",
        "provider",
        "suite",
        "outcome",
        "expectations",
        "failed (error / warn)",
        "failing",
        title="quality summary (ops.quality_results)",
    )
    for r in rows:
        table.add_row(
            r.resource,
            r.provider,
            r.scope,
            f"[{colours[r.outcome]}]{r.outcome}[/]",
            str(r.expectations),
            f"{r.failed_errors} / {r.failed_warnings}",
            r.failing or "-",
        )
    console.print(table)
    from jobs.quality import project_dir

    project = project_dir(settings)
    if project is not None:
        docs = project / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
        console.print(f"Great Expectations Data Docs: {docs}")


def _summary(results: list[StageCounts], seconds: float) -> None:
    table = RichTable(
        "resource",
        "extracts",
        "read",
        "malformed",
        "quarantined",
        "merged",
        "cross-check",
        "published",
        "silver v",
        "published versions",
        title=f"ingestion summary ({seconds:.1f} s)",
    )
    for c in results:
        versions = ", ".join(f"{k} v{v}" for k, v in c.published_versions.items())
        table.add_row(
            c.resource,
            str(len(c.extracts)),
            f"{c.rows_read:,}",
            f"{c.rows_malformed:,}",
            f"{c.rows_quarantined:,}",
            f"{c.rows_merged:,}",
            f"{c.crosscheck_findings:,}",
            f"{c.rows_published:,}" if c.published else "unchanged",
            "-" if c.silver_version is None else str(c.silver_version),
            versions or "-",
        )
    console.print(table)
    for c in results:
        for held in c.held:
            console.print(f"[red]held back:[/red] {c.resource}: {held}")
    for c in results:
        for rejected in c.rejected:
            console.print(
                f"[red]rejected[/red] {c.resource}: {rejected.file}: "
                f"{rejected.rule}: {rejected.reason}"
            )
        for name in c.skipped_files:
            console.print(f"[yellow]skipped[/yellow] {c.resource}: {name} (already ingested)")
        for name, columns in c.ignored_columns.items():
            console.print(
                f"[yellow]ignored columns[/yellow] {c.resource}: {name}: "
                f"{', '.join(columns)} (not in the catalogue)"
            )


@app.command()
def sql(query: str, limit: Annotated[int, typer.Option(help="rows to show")] = 50) -> None:
    """Run a SQL query over the lakehouse and print the result as a table."""
    from govlake.lake.engine import get_spark

    settings = get_settings()
    spark = get_spark(settings, _catalog(settings), fresh=True)
    frame = spark.sql(query)
    rows = frame.limit(limit).collect()
    table = RichTable(*frame.columns)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)
    console.print(f"{len(rows)} row(s) shown (limit {limit})")


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
    catalog = _catalog(settings)
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
    colours = {"on_time": "green", "due": "yellow", "overdue": "red"}
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
            f"[{colours[t.state]}]{t.state}[/]",
            f"{t.hours_late:.1f}",
        )
    console.print(table)
    from govlake.governance import changes
    from govlake.platform.database import session

    changes.ensure_tables(settings)
    with session(settings) as s:
        changes.sync(s, catalog, at=moment)
        upkeep = changes.upkeep(s, catalog, at=moment)
    console.print(changes_cli.upkeep_table(upkeep, title="catalogue upkeep (China dates)"))


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


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="residents to generate")] = 20_000,
    seed: Annotated[int, typer.Option()] = 7,
    defects: Annotated[float, typer.Option()] = 0.01,
) -> None:
    """Generate extracts for every resource, ingest them, and show what was published."""
    logging.basicConfig(level=logging.ERROR)
    settings = get_settings()
    console.rule("[bold]1. department extracts → landing zone")
    console.print(f"landing zone: {settings.landing_location.uri}")
    _generate(
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
        results = _ingest(None, settings)
    console.rule("[bold]4. subscription notices")
    _demo_notices(settings, receiver, secret)
    console.rule("[bold]5. open data: the de-identified open variant and its DCAT catalogue")
    _demo_open(settings)
    console.rule("[bold]6. reports to data owners")
    _demo_reports(settings)
    console.rule("[bold]7. sharing through the Delta Sharing protocol")
    _demo_sharing(settings)
    console.rule("[bold]8. queries to try")
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


@app.command("demo-s3")
def demo_s3(
    rows: Annotated[int, typer.Option(help="residents to generate")] = 20_000,
    seed: Annotated[int, typer.Option()] = 7,
    defects: Annotated[float, typer.Option()] = 0.01,
    workdir: Annotated[Path, typer.Option(help="folder of the S3 server's data")] = Path(
        ".demo-s3"
    ),
    bucket: Annotated[str, typer.Option(help="bucket of the lakehouse and landing zone")] = (
        "govlake"
    ),
    serve: Annotated[
        bool, typer.Option(help="keep the S3 server running afterwards, until Ctrl-C")
    ] = False,
) -> None:
    """The demo with the warehouse and landing zone on S3: a local SeaweedFS server starts for
    it, every step runs against s3://BUCKET/…, and the bucket's contents are listed."""
    import contextlib

    from govlake_tools.s3demo import bucket_summary, s3_lakehouse
    from govlake_tools.s3server import S3ServerError

    try:
        with s3_lakehouse(workdir, bucket) as (server, variables):
            console.print(f"S3 server: SeaweedFS at {server.endpoint}, credentials enforced, "
                          f"data in {workdir / 'seaweedfs'}; bucket {bucket}")  # fmt: skip
            demo(rows=rows, seed=seed, defects=defects)
            console.rule(f"[bold]6. what the bucket {bucket} holds")
            table = RichTable("folder", "objects", "MiB", title=f"s3://{bucket}")
            for p in bucket_summary(server, bucket):
                table.add_row(p.prefix, str(p.objects), f"{p.bytes / 2**20:.2f}")
            console.print(table)
            if not serve:
                console.print(f"The S3 server stops now; its data stays in {workdir}: `make "
                              "demo-s3` again reuses it, `--serve` keeps it running.")  # fmt: skip
                return
            console.print("Run govlake against it from another shell with:")
            for name, value in variables.items():
                console.print(f"export {name}={value}", soft_wrap=True)
            console.print("Ctrl-C stops the S3 server.")
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
    except S3ServerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _demo_sharing(settings: Settings) -> None:
    """Register civil affairs as a consumer, write its profile, start the sharing server for a
    moment and read a shared table with the official client, as an analyst would."""
    import delta_sharing

    from govlake.platform import audit
    from govlake.platform.database import Consumer, session
    from govlake.sharing import access
    from govlake_app.cli.serve import running, write_profile

    catalog = _catalog(settings)
    at = datetime.now(UTC).replace(tzinfo=None)
    consumer = "civil_affairs"
    with session(settings) as s:
        if s.get(Consumer, consumer) is None:
            access.register_consumer(s, catalog, consumer, email=None, at=at)
            audit.record(s, at=at, actor="platform", action="consumer.register",
                         consumer=consumer)  # fmt: skip
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
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    from govlake.platform import audit
    from govlake.platform.database import Consumer, session
    from govlake.sharing import access
    from govlake.sharing import subscriptions as subs

    catalog = _catalog(settings)
    at = datetime.now(UTC).replace(tzinfo=None)
    with session(settings) as s:
        if s.get(Consumer, DEMO_SUBSCRIBER) is None:
            access.register_consumer(s, catalog, DEMO_SUBSCRIBER, email=None, at=at)
            audit.record(s, at=at, actor="platform", action="consumer.register",
                         consumer=DEMO_SUBSCRIBER)  # fmt: skip
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
    import json

    from sqlalchemy import select

    from govlake.platform.database import Notification, session
    from govlake.sharing.subscriptions import SignatureError, verify_signature

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
    import json

    from deltalake import DeltaTable

    from govlake.governance import dcat
    from govlake.lake.reads import read_delta
    from govlake.lake.tables import TableSet

    catalog = _catalog(settings)
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
    from govlake.lake.engine import get_spark
    from govlake.reports.quality import write_quality_report
    from govlake.reports.scorecard import write_scorecard

    catalog = _catalog(settings)
    spark = get_spark(settings, catalog, fresh=True)
    at = datetime.now(UTC).replace(tzinfo=None)
    table = RichTable("department", "steward", "report", title="steward reports")
    for provider in catalog.providers:
        written = write_quality_report(spark, catalog, settings, provider, at=at)
        steward = catalog.department(provider).steward
        table.add_row(provider, f"{steward.name} <{steward.email}>", str(written.path))
    console.print(table)
    files = write_scorecard(spark, catalog, settings, year=at.year, at=at)
    console.print(f"department scorecard {at.year}: {files.html} and {files.csv}")


@app.command()
def airflow(
    port: Annotated[int, typer.Option(help="port of the UI and API on 127.0.0.1")] = 8080,
    home: Annotated[Path, typer.Option(help="AIRFLOW_HOME: metadata DB, logs, password")] = Path(
        ".airflow"
    ),
    dags: Annotated[Path, typer.Option(help="the DAGs folder")] = Path("dags"),
) -> None:
    """Run Airflow standalone on loopback with the project's DAGs until Ctrl-C (or SIGTERM)."""
    import signal

    from govlake_tools.standalone import (
        PASSWORDS_FILE,
        USER,
        StandaloneError,
        dag_ids,
        start,
        token,
    )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop Airflow. Started from a script or in the background, this
    # process may inherit SIGINT as ignored, and an exec'd child keeps an ignored signal: set
    # a handler here, so that the standalone processes get SIGINT's default again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    settings = get_settings()
    expected = {f"ingest_{r.theme}_{r.name}" for r in _catalog(settings)}
    console.print(f"starting Airflow standalone (log: {home / 'standalone.log'}) …")
    try:
        running = start(home=home.resolve(), port=port, dags=dags, settings=settings)
    except StandaloneError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    try:
        console.print(f"Airflow UI: [bold]{running.url}[/bold]")
        console.print(f"login: [bold]{USER}[/bold] / password [bold]{running.password}[/bold] "
                      f"(kept in {running.home / PASSWORDS_FILE})")  # fmt: skip
        bearer = token(running.url, running.password)
        listed: set[str] = set()
        deadline = time.monotonic() + 180
        while not expected <= listed and time.monotonic() < deadline:
            time.sleep(2)
            listed = dag_ids(running.url, bearer)
        console.print(
            f"{len(listed)} DAGs listed ({len(expected & listed)} of {len(expected)} "
            f"ingestion DAGs): {', '.join(sorted(listed))}"
        )
        console.print("New DAGs start paused: unpause one or trigger it in the UI.")
        console.print(
            f"lakehouse: {settings.warehouse_location.uri}; landing zone: "
            f"{settings.landing_location.uri} (`govlake generate` lands extracts)"
        )
        console.print("Ctrl-C stops Airflow.")
        running.process.wait()
        console.print(f"[red]Airflow stopped on its own ({running.process.returncode}); "
                      f"see {running.log}[/red]")  # fmt: skip
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping Airflow …")
    finally:
        running.stop()
