"""Data files larger than the chunks the sharing server sends them in (`files.CHUNK_BYTES`),
tried on a running server: the official client reads every row, a whole download is the
file byte for byte, and a byte range across chunk boundaries is exactly those bytes."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import delta_sharing
import httpx
import pyarrow as pa
import pytest
from delta_sharing.protocol import DeltaSharingProfile, Table
from delta_sharing.rest_client import DataSharingRestClient
from deltalake import DeltaTable, write_deltalake
from support import Clock, lake_settings

from govlake.core.catalog import Catalog
from govlake.lake.reads import read_delta
from govlake.lake.tables import TableSet
from govlake.platform.database import session
from govlake.sharing import access
from govlake.sharing.server.app import create_app
from govlake.sharing.server.files import CHUNK_BYTES
from govlake_app.cli.serve import running

START = datetime.datetime(2026, 11, 4, 9)  # the server's clock
KEY = b"a signing key known to the test"
RESIDENTS = "population.residents"
UNCONDITIONAL = "population.population.residents_unconditional"
ROWS = 40_000


@dataclass
class Served:
    profile: Path
    location: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The unconditional residents table as one data file of several chunks (random names
    do not compress), on a running server, and a consumer's profile."""
    root = tmp_path_factory.mktemp("large")
    settings = lake_settings(root)
    catalog = Catalog.load(settings.catalog_dir)
    uri = (
        TableSet(catalog.get(RESIDENTS), settings.warehouse_location)
        .published("unconditional")
        .location.uri
    )
    names = [os.urandom(48).hex() for _ in range(ROWS)]
    years = [1950 + n % 60 for n in range(ROWS)]
    ids = [f"{n:018d}" for n in range(ROWS)]
    write_deltalake(uri, pa.table({"citizen_id": ids, "name": names, "birth_year": years}))
    app = create_app(settings, catalog, clock=Clock(START), signing_key=KEY)
    with running(settings, app=app) as endpoint:
        with session(settings) as s:
            access.register_consumer(s, catalog, "civil_affairs", email=None, at=START)
            token = access.issue_token(s, "civil_affairs", at=START, days=30)
        profile = root / "civil_affairs.share"
        profile.write_text(json.dumps({"shareCredentialsVersion": 1, "endpoint": endpoint,
                                       "bearerToken": token}))  # fmt: skip
        yield Served(profile, uri)


def _file(served: Served) -> tuple[str, bytes]:
    """The table's one data file: its signed URL and its bytes on disk."""
    share, schema, name = UNCONDITIONAL.split(".")
    client = DataSharingRestClient(DeltaSharingProfile.read_from_file(str(served.profile)))
    (entry,) = client.list_files_in_table(Table(name, share, schema)).add_files
    (path,) = DeltaTable(served.location).file_uris()
    content = Path(path.removeprefix("file://")).read_bytes()
    assert len(content) > 2 * CHUNK_BYTES, "the file must span several chunks"
    return str(entry.url), content


def test_the_official_client_reads_a_file_of_several_chunks(served: Served) -> None:
    read = delta_sharing.load_as_pandas(f"{served.profile}#{UNCONDITIONAL}")
    direct = read_delta(DeltaTable(served.location)).to_pandas()
    assert len(read) == ROWS
    assert (
        read.sort_values("citizen_id")
        .reset_index(drop=True)
        .equals(direct.sort_values("citizen_id").reset_index(drop=True)[list(read.columns)])
    )


def test_a_whole_file_and_a_range_across_chunks_are_its_bytes(served: Served) -> None:
    url, content = _file(served)
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == content
    first, last = CHUNK_BYTES - 10, 2 * CHUNK_BYTES + 10
    part = httpx.get(url, headers={"Range": f"bytes={first}-{last}"})
    assert part.status_code == 206 and part.content == content[first : last + 1]
    tail = httpx.get(url, headers={"Range": f"bytes={len(content) - CHUNK_BYTES - 1}-"})
    assert tail.status_code == 206 and tail.content == content[-CHUNK_BYTES - 1 :]
