"""`govlake generate`, `govlake demo`, `govlake demo-s3` and `govlake airflow`: the commands the
development tooling adds to `govlake` through the `govlake.commands` entry point (`register`).

This module is imported by every `govlake` run: it declares the commands only, and each one
imports its work (the generator, the demo, the S3 server, Airflow) when it runs, so that
`govlake --help` and the runtime commands stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the tooling's commands to the root `govlake` app."""
    app.command()(generate)
    app.command()(demo)
    app.command("demo-s3")(demo_s3)
    app.command()(airflow)


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
    from govlake_tools.demo import land_extracts

    land_extracts(
        rows=rows,
        seed=seed,
        defects=defects,
        encoding=encoding,
        fmt=fmt,
        as_of=as_of,
        resource=resource,
    )


def demo(
    rows: Annotated[int, typer.Option(help="residents to generate")] = 20_000,
    seed: Annotated[int, typer.Option()] = 7,
    defects: Annotated[float, typer.Option()] = 0.01,
) -> None:
    """Generate extracts for every resource, ingest them, and show what was published."""
    from govlake_tools.demo import run_demo

    run_demo(rows=rows, seed=seed, defects=defects)


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
    from govlake_tools.s3demo import run_demo_s3

    run_demo_s3(rows=rows, seed=seed, defects=defects, workdir=workdir, bucket=bucket,
                serve=serve)  # fmt: skip


def airflow(
    port: Annotated[int, typer.Option(help="port of the UI and API on 127.0.0.1")] = 8080,
    home: Annotated[Path, typer.Option(help="AIRFLOW_HOME: metadata DB, logs, password")] = Path(
        ".airflow"
    ),
    dags: Annotated[Path, typer.Option(help="the DAGs folder")] = Path("dags"),
) -> None:
    """Run Airflow standalone on loopback with the project's DAGs until Ctrl-C (or SIGTERM)."""
    from govlake_tools import standalone

    standalone.run(port=port, home=home, dags=dags)
