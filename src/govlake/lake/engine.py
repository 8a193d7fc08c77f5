"""The one session factory: embedded Sail when `SPARK_REMOTE` is unset, else that server.

On start the session registers every catalogued table that exists in its themed database,
so `SELECT … FROM population.residents` works in a fresh process.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from pyspark.sql import SparkSession

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.tables import TableSet, ops_tables, quality_tables, register

log = logging.getLogger(__name__)

_lock = threading.Lock()
_embedded_url: str | None = None


def _start_embedded(settings: Settings) -> str:
    """Start Sail's Spark Connect server in this process once, on a free loopback port."""
    global _embedded_url
    with _lock:
        if _embedded_url is None:
            from pysail.spark import SparkConnectServer

            # Sail's Rust logger writes to stderr and reads its filter once, when the first
            # server of the process is created: set it from the settings just before.
            os.environ["RUST_LOG"] = settings.engine_log
            server = SparkConnectServer(ip="127.0.0.1", port=0)
            server.start(background=True)
            host, port = server.listening_address
            _embedded_url = f"sc://{host}:{port}"
            atexit.register(server.stop)
            log.info("started the embedded Sail engine at %s", _embedded_url)
        return _embedded_url


def remote_url(settings: Settings) -> str:
    return settings.spark_remote or _start_embedded(settings)


def get_spark(
    settings: Settings, catalog: Catalog | None = None, *, fresh: bool = False
) -> SparkSession:
    """A Spark Connect session with the catalogue's tables registered. `fresh` opens a new
    session (its own table catalogue) instead of reusing the process's default one."""
    builder = SparkSession.builder.remote(remote_url(settings))
    spark = builder.create() if fresh else builder.getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", settings.session_timezone)
    if catalog is not None:
        register_catalog(spark, catalog, settings)
    return spark


def register_catalog(spark: SparkSession, catalog: Catalog, settings: Settings) -> None:
    """Register every existing table of every catalogued resource, and the ops tables."""
    warehouse = settings.warehouse_location
    for resource in catalog:
        for table in TableSet(resource, warehouse).all():
            if table.location.is_delta_table():
                register(spark, table)
    for table in (*ops_tables(warehouse), *quality_tables(warehouse)):
        if table.location.is_delta_table():
            register(spark, table)
