"""Shared fixtures: the repository catalogue, throw-away lakehouses, engine sessions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from govlake.catalog import Catalog
from govlake.engine import get_spark
from govlake.s3server import SeaweedS3
from govlake.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load(REPO / "schemas")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A lakehouse and landing zone of the test's own, on the embedded engine."""
    return Settings(
        warehouse=str(tmp_path / "lakehouse"),
        landing=str(tmp_path / "landing"),
        database_url=f"sqlite:///{tmp_path / 'govlake.db'}",
        catalog_dir=REPO / "schemas",
        spark_remote=None,
    )


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
    with SeaweedS3.start(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
