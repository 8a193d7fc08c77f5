"""The one session factory: embedded Sail when `SPARK_REMOTE` is unset, else that server.

The embedded engine runs in the mode the settings name (`sail_mode`): `local`, or
`local-cluster`, where a driver and workers exchange tasks and shuffle data over RPC as in a
Kubernetes deployment, so the jobs meet a cluster's execution path in one process.
On start the session registers every catalogued table that exists in its themed database,
so `SELECT … FROM population.residents` works in a fresh process.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from unittest import mock

from pyspark.sql import SparkSession

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.tables import TableSet, ops_tables, quality_tables, register

log = logging.getLogger(__name__)

_lock = threading.Lock()
#: The embedded engines this process started, by Sail mode: their Spark Connect URLs.
_embedded: dict[str, str] = {}


def _start_embedded(settings: Settings) -> str:
    """Start Sail's Spark Connect server in this process once per mode, on a free loopback
    port."""
    mode = settings.sail_mode
    with _lock:
        if mode not in _embedded:
            from pysail.spark import SparkConnectServer

            # Sail's Rust logger writes to stderr and reads its filter once, when the first
            # server of the process is created: set it from the settings just before.
            os.environ["RUST_LOG"] = settings.engine_log
            # Sail reads its configuration (SAIL_*) from the environment when a server is
            # created: the mode applies to this server only, whatever the variable says
            # (patch.dict restores the environment afterwards).
            with mock.patch.dict(os.environ, {"SAIL_MODE": mode}):
                server = SparkConnectServer(ip="127.0.0.1", port=0)
                server.start(background=True)
            host, port = server.listening_address
            _embedded[mode] = f"sc://{host}:{port}"
            atexit.register(server.stop)
            log.info("started the embedded Sail engine (%s mode) at %s", mode, _embedded[mode])
        return _embedded[mode]


def remote_url(settings: Settings) -> str:
    return settings.spark_remote or _start_embedded(settings)


def get_spark(
    settings: Settings, catalog: Catalog | None = None, *, fresh: bool = False
) -> SparkSession:
    """A Spark Connect session with the catalogue's tables registered. `fresh` opens a new
    session (its own table catalogue) instead of reusing the process's default one; the
    default session stays on the engine it was first opened on, so a session on another
    engine (another `SPARK_REMOTE` or Sail mode) in the same process needs `fresh`."""
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
