"""Shared fixtures: the repository catalogue, throw-away lakehouses, engine sessions, the
platform database on SQLite or on a real PostgreSQL server, a real mail server, and CLI
runners bound to a test's platform.

The tests sit by kind: `unit/` (small DataFrames, pure functions, local files, no server),
`platform/` (a real database, S3, mail or HTTP server, Airflow), `e2e/` (the pipeline over
generated extracts, read back with the official sharing client). Helpers that are not
fixtures are in `support.py`.

A test module marked `pytest.mark.platform_state` runs each of its tests that use
`settings` twice, `[sqlite]` and `[postgresql]`; every other test gets a SQLite file.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from govlake_tools.pgserver import PostgresServer
from govlake_tools.s3server import SeaweedS3
from pyspark.sql import SparkSession
from support import REPO, Inbox, lake_settings
from typer.testing import CliRunner

from govlake.core.catalog import Catalog
from govlake.core.net import free_port
from govlake.core.settings import Settings, get_settings
from govlake.lake.engine import get_spark

#: The platform database backends a `platform_state` test runs on.
DATABASE_BACKENDS = ("sqlite", "postgresql")
_database_numbers = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "platform_state: the module's tests that use `settings` run on each platform database "
        "backend (SQLite and PostgreSQL)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        metafunc.definition.get_closest_marker("platform_state") is not None
        and "database_backend" in metafunc.fixturenames
    ):
        # Direct parametrization overrides the `database_backend` fixture below.
        metafunc.parametrize("database_backend", DATABASE_BACKENDS)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load(REPO / "schemas")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port, password enforced; stopped at the
    end of the session."""
    with PostgresServer.start(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def database_backend() -> str:
    """The platform database backend: SQLite unless the module is `platform_state`."""
    return "sqlite"


@pytest.fixture
def database_url(
    database_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A platform database of the test's own: a SQLite file in `tmp_path`, or a fresh
    database on the session's PostgreSQL server, dropped afterwards."""
    if database_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'govlake.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    name = f"t{next(_database_numbers)}_{slug}".rstrip("_")
    yield server.create_database(name)
    # FORCE ends the connections the test's cached engine still pools.
    server.drop_database(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """A lakehouse, landing zone and platform database of the test's own, on the embedded
    engine."""
    return lake_settings(tmp_path, database_url=database_url)


@pytest.fixture(scope="session")
def shared_spark() -> SparkSession:
    """One engine session for transform tests that register no tables."""
    return get_spark(Settings(spark_remote=None))


@pytest.fixture
def spark(settings: Settings, catalog: Catalog) -> Iterator[SparkSession]:
    """A fresh session (own table catalogue) bound to the test's lakehouse."""
    session = get_spark(settings, catalog, fresh=True)
    yield session


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) on free loopback ports, credentials enforced."""
    if os.environ.get("FAKETIME"):
        # libfaketime fakes this process's clock, not the Go server's, and S3 refuses a
        # request signed more than 15 minutes off its own time (RequestTimeTooSkewed).
        pytest.skip("S3 server on the real clock, tests on a faked one (libfaketime)")
    with SeaweedS3.start(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server (aiosmtpd) on a free loopback port, and the inbox it fills."""
    inbox, port = Inbox(), free_port()
    server = Controller(inbox, hostname="127.0.0.1", port=port)
    server.start()
    try:
        yield inbox, port
    finally:
        server.stop()


@pytest.fixture
def cli_runner() -> Iterator[Callable[..., CliRunner]]:
    """Makes CliRunners whose `get_settings()` reads the given platform (its database,
    catalogue and lakehouse) with the extra variables given; the settings cache is cleared
    when a runner is made and after the test."""

    def runner(settings: Settings, **env: str) -> CliRunner:
        get_settings.cache_clear()
        return CliRunner(
            env={
                "COLUMNS": "300",
                "GOVLAKE_DATABASE_URL": settings.database_url,
                "GOVLAKE_CATALOG_DIR": str(settings.catalog_dir),
                "GOVLAKE_WAREHOUSE": settings.warehouse,
                **env,
            }
        )

    yield runner
    get_settings.cache_clear()
