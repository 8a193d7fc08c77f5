"""The throw-away PostgreSQL server and the platform database on it: the password is
enforced, the schema is created as the models declare it, timestamps stay naive UTC, and
writers in several processes, racing from an empty database, keep the audit chain whole."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from govlake_tools import pgserver
from govlake_tools.pgserver import PostgresServer, PostgresServerError
from sqlalchemy import func, inspect, select, text
from typer.testing import CliRunner

from govlake.core import settings as settings_module
from govlake.core.settings import Settings
from govlake.platform.audit import GENESIS_HASH, record
from govlake.platform.database import AuditEntry, Base, engine, session
from govlake_app.cli.audit import audit_app

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, 9, 0, 0, 250_000)
#: Writer processes in the race (each pays an interpreter start and the imports).
WRITERS = 3

#: One writer process: waits for the go, then appends 25 entries, one transaction each,
#: on a database whose schema nobody has created yet.
WRITER = """
import sys
from datetime import datetime, timedelta
from govlake.core.settings import Settings
from govlake.platform.audit import record
from govlake.platform.database import session

url, name = sys.argv[1:3]
settings = Settings(database_url=url)
print("ready", flush=True)
sys.stdin.readline()
for n in range(25):
    with session(settings) as s:
        record(s, at=datetime(2026, 3, 2, 9) + timedelta(seconds=n), actor=name,
               action="share.version", consumer=name, rows=n)
"""


def connect(postgres: PostgresServer, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user,
                           password=password, dbname="govlake", autocommit=True,
                           connect_timeout=5)  # fmt: skip


def test_the_password_is_enforced(postgres: PostgresServer) -> None:
    connect(postgres, postgres.password).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(postgres, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password"):
        connect(postgres, "")


def test_missing_binaries_name_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pgserver.shutil, "which", lambda name: None)
    monkeypatch.setattr(pgserver, "DEBIAN_BINDIRS", str(tmp_path / "postgresql/*/bin"))
    with pytest.raises(PostgresServerError, match="install Debian's postgresql package"):
        PostgresServer.start(tmp_path / "pg")


def test_the_schema_is_created_with_naive_utc_timestamps(postgres: PostgresServer) -> None:
    url = postgres.create_database("schema_check")
    with connect(postgres, postgres.password) as admin:  # a database whose zone is not UTC
        admin.execute("ALTER DATABASE schema_check SET timezone TO 'Asia/Shanghai'")
    made = engine(url)
    assert made.dialect.name == "postgresql" and made.dialect.driver == "psycopg"
    found = inspect(made)
    assert set(found.get_table_names()) == set(Base.metadata.tables)
    columns = {c["name"]: c for c in found.get_columns("audit_journal")}
    with made.connect() as connection:
        at_type = connection.scalar(
            text("SELECT data_type FROM information_schema.columns "
                 "WHERE table_name = 'audit_journal' AND column_name = 'at'")
        )  # fmt: skip
    assert at_type == "timestamp without time zone"
    assert str(columns["actor"]["type"]) == "VARCHAR(100)"
    assert str(columns["table_name"]["type"]) == "TEXT"
    assert found.get_pk_constraint("audit_journal")["constrained_columns"] == ["seq"]
    settings = Settings(database_url=url)
    china = timezone(timedelta(hours=8))
    with session(settings) as s:
        assert s.scalar(text("SHOW TIME ZONE")) == "UTC"
        first = record(s, at=START, actor="education", action="share.query")
        # An aware time lands as its UTC wall clock, whatever the server's own zone.
        record(s, at=datetime(2026, 3, 2, 17, tzinfo=china), actor="education",
               action="share.query")  # fmt: skip
    with session(settings) as s:
        stored = s.scalars(select(AuditEntry.at).order_by(AuditEntry.seq)).all()
        assert s.scalar(select(AuditEntry.prev_hash).where(AuditEntry.seq == 1)) == GENESIS_HASH
    assert stored == [START, datetime(2026, 3, 2, 9)]  # microseconds kept, offsets applied
    assert first.at.tzinfo is None
    made.dispose()
    postgres.drop_database("schema_check")


def test_writer_processes_racing_from_an_empty_database_keep_the_chain(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database("process_race")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"dept_{n}"],
            cwd=REPO,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(WRITERS)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        for writer in writers:  # all at once: each creates the schema, then appends
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        failures = []
        for writer in writers:
            _, err = writer.communicate(timeout=120)
            if writer.returncode != 0:
                failures.append(err)
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    assert failures == []

    settings = Settings(database_url=url, warehouse=str(tmp_path / "lakehouse"))
    with session(settings) as s:
        seqs = s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
        grouped = select(AuditEntry.actor, func.count()).group_by(AuditEntry.actor)
        per_actor = {actor: count for actor, count in s.execute(grouped)}
    assert seqs == list(range(1, 25 * WRITERS + 1))  # none lost, none taken twice
    assert per_actor == {f"dept_{n}": 25 for n in range(WRITERS)}

    settings_module.get_settings.cache_clear()
    try:
        result = CliRunner(
            env={"GOVLAKE_DATABASE_URL": url, "GOVLAKE_WAREHOUSE": settings.warehouse}
        ).invoke(audit_app, ["verify"])
    finally:
        settings_module.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert f"{25 * WRITERS} entries, chain intact" in result.output
    engine(url).dispose()
    postgres.drop_database("process_race")
