"""The hash-chained audit journal on a real platform database (a SQLite file, and a
PostgreSQL server) and a real Delta archive: tampering is found and named, the archive
exposes a deleted tail, purges keep 3 years, and each department gets its own trail."""

from __future__ import annotations

import csv
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from govlake.core import settings as settings_module
from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.platform.audit import (
    FIELDS,
    GENESIS_HASH,
    AuditError,
    archive,
    archive_location,
    entry_hash,
    export,
    purge,
    record,
    trail,
    verify,
    years_before,
)
from govlake.platform.database import AuditEntry, Consumer, engine, session
from govlake_app.cli.audit import audit_app

#: Every test that uses `settings` runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.platform_state

START = datetime(2026, 3, 2, 9, 0, 0, 250_000)

# (actor, action, consumer, purpose, resource, table_name, rows, files)
CALLS = [
    ("education", "share.query", "education", "administrative_basis", "population.residents",
     "population.residents_conditional", 120, None),
    ("taxation", "share.query", "taxation", "business_collaboration", "legal_entity.enterprises",
     "legal_entity.enterprises_conditional", 40, None),
    ("public_security", "request.approve", "education", "administrative_basis",
     "population.residents", None, None, None),
    ("platform", "consumer.register", "education", None, None, None, None, None),
    ("education", "share.file", "education", "work_reference", "credit.records",
     "credit.records_unconditional", None, 3),
    ("platform", "pipeline.publish", None, None, "geospatial.admin_divisions",
     "geospatial.admin_divisions_unconditional", 3511, None),
    ("education", "share.metadata", "education", None, "population.residents",
     "population.residents_unconditional", None, None),
    ("public_security", "grant.revoke", "education", None, "population.residents", None, None,
     None),
]  # fmt: skip


def fill(settings: Settings, count: int, *, start: datetime = START) -> list[AuditEntry]:
    """`count` entries, one a minute, cycling through CALLS."""
    entries = []
    with session(settings) as s:
        for n in range(count):
            actor, action, consumer, purpose, resource, table_name, rows, files = CALLS[
                n % len(CALLS)
            ]
            entries.append(
                record(
                    s,
                    at=start + timedelta(minutes=n),
                    actor=actor,
                    action=action,
                    consumer=consumer,
                    purpose=purpose,
                    resource=resource,
                    table_name=table_name,
                    version=n if table_name else None,
                    rows=rows,
                    files=files,
                    detail={"request_id": n, "client": "delta-sharing-python"},
                )
            )
    return entries


def sql(settings: Settings, statement: str, **params: object) -> None:
    """Tamper with the database behind the platform's back."""
    with engine(settings.database_url).begin() as connection:
        connection.execute(text(statement), params)


def rehash(entry: AuditEntry) -> str:
    """What a forger with database access computes after editing an entry."""
    return entry_hash({name: getattr(entry, name) for name in FIELDS})


def check(settings: Settings) -> tuple[bool, list[str]]:
    with session(settings) as s:
        result = verify(s, settings)
    return result.ok, result.problems


def archive_now(settings: Settings, at: datetime = START + timedelta(days=1)) -> int:
    with session(settings) as s:
        return archive(s, settings, at=at)


def test_a_chain_of_entries_verifies(settings: Settings) -> None:
    entries = fill(settings, 20)
    assert [e.seq for e in entries] == list(range(1, 21))
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    with session(settings) as s:
        result = verify(s, settings)
        stored = s.get(AuditEntry, 5)
        assert stored is not None
        assert json.loads(stored.detail) == {"client": "delta-sharing-python", "request_id": 4}
        assert stored.at == START + timedelta(minutes=4)  # microseconds survive the round trip
    assert result.ok and result.problems == []
    assert result.checked == 20


def test_unknown_action_is_refused(settings: Settings) -> None:
    with (
        pytest.raises(AuditError, match=r"unknown audit action 'share\.download'"),
        session(settings) as s,
    ):
        record(s, at=START, actor="education", action="share.download")
    with session(settings) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("rows", 1),
        ("consumer", "taxation"),
        ("purpose", "work_reference"),
        ("at", "2026-03-02 09:06:59.000000"),
        ("detail", '{"client":"delta-sharing-python","request_id":99}'),
        ("outcome", "refused"),
    ],
)
def test_an_edited_entry_is_named_by_seq(settings: Settings, column: str, value: object) -> None:
    fill(settings, 20)
    sql(settings, f"UPDATE audit_journal SET {column} = :value WHERE seq = 7", value=value)
    ok, problems = check(settings)
    assert not ok
    assert problems == ["seq 7: content does not match its hash (entry edited)"]


def test_an_edited_and_rehashed_entry_breaks_the_next_link(settings: Settings) -> None:
    fill(settings, 20)
    with session(settings) as s:
        entry = s.get(AuditEntry, 7)
        assert entry is not None
        entry.rows = 1
        entry.hash = rehash(entry)
    ok, problems = check(settings)
    assert not ok
    assert problems == [
        "seq 8: does not link to seq 7 (an entry before it was inserted, deleted or replaced)"
    ]


def test_a_deleted_entry_is_found(settings: Settings) -> None:
    fill(settings, 20)
    sql(settings, "DELETE FROM audit_journal WHERE seq = 10")
    ok, problems = check(settings)
    assert not ok
    assert problems == ["seq 10: missing from the chain (entries deleted)"]


def test_deleting_the_oldest_entries_is_found(settings: Settings) -> None:
    fill(settings, 20)
    sql(settings, "DELETE FROM audit_journal WHERE seq <= 3")
    ok, problems = check(settings)
    assert not ok
    assert problems == ["seq 1–3: missing with no recorded purge (oldest entries deleted)"]


def test_a_forged_entry_inserted_in_the_middle_is_found(settings: Settings) -> None:
    entries = fill(settings, 20)
    # Make room after seq 10 and slip in an entry chained to seq 10 with a correct hash.
    sql(settings, "UPDATE audit_journal SET seq = -seq WHERE seq > 10")
    sql(settings, "UPDATE audit_journal SET seq = 1 - seq WHERE seq < 0")
    forged = {
        "seq": 11,
        "at": entries[9].at + timedelta(seconds=30),
        "actor": "education",
        "action": "share.query",
        "consumer": "education",
        "purpose": "administrative_basis",
        "resource": "population.residents",
        "table_name": "population.residents_conditional",
        "version": 3,
        "rows": 5,
        "files": None,
        "outcome": "ok",
        "detail": "{}",
        "prev_hash": entries[9].hash,
    }
    forged["hash"] = entry_hash(forged)
    sql(
        settings,
        "INSERT INTO audit_journal (seq, at, actor, action, consumer, purpose, resource, "
        "table_name, version, rows, files, outcome, detail, prev_hash, hash) VALUES (:seq, :at, "
        ":actor, :action, :consumer, :purpose, :resource, :table_name, :version, :rows, "
        ":files, :outcome, :detail, :prev_hash, :hash)",
        **forged,
    )
    ok, problems = check(settings)
    assert not ok
    assert "seq 11: content does not match its hash (entry edited)" not in problems
    assert (
        "seq 12: does not link to seq 11 (an entry before it was inserted, deleted or replaced)"
        in problems
    )
    # Every entry after the forgery moved, and its hash covers its seq.
    assert "seq 21: content does not match its hash (entry edited)" in problems


def test_deleting_the_newest_entries_is_found_through_the_archive(settings: Settings) -> None:
    fill(settings, 20)
    assert archive_now(settings) == 21  # the 20 entries and the audit.archive entry
    sql(settings, "DELETE FROM audit_journal WHERE seq >= 18")
    ok, problems = check(settings)
    assert not ok
    assert problems == [
        "seq 18–21: archived but missing from the database (newest entries deleted)"
    ]


def test_rewriting_the_newest_entry_is_found_through_the_archive(settings: Settings) -> None:
    fill(settings, 20)
    archive_now(settings)
    with session(settings) as s:
        entry = s.get(AuditEntry, 21)
        assert entry is not None
        entry.detail = '{"first_seq":1,"last_seq":5}'
        entry.hash = rehash(entry)
    assert check(settings) == (False, ["seq 21: differs from its archived copy (entry edited)"])


def test_archive_is_idempotent_and_holds_the_entries(settings: Settings) -> None:
    entries = fill(settings, 20)
    assert archive_now(settings) == 21
    location = archive_location(settings)
    assert location.uri.endswith("/ops/audit_journal")
    table = DeltaTable(location.uri)
    version = table.version()
    rows = table.to_pyarrow_table().sort_by("seq").to_pylist()
    assert [r["seq"] for r in rows] == list(range(1, 22))
    assert [r["hash"] for r in rows[:20]] == [e.hash for e in entries]
    assert rows[3]["rows"] is None and rows[4]["files"] == 3
    assert rows[20]["action"] == "audit.archive"
    assert json.loads(rows[20]["detail"])["first_seq"] == 1

    assert archive_now(settings) == 0
    assert DeltaTable(location.uri).version() == version

    fill(settings, 2, start=START + timedelta(days=2))
    assert archive_now(settings, START + timedelta(days=3)) == 3
    assert DeltaTable(location.uri).to_pyarrow_table().num_rows == 24
    assert check(settings) == (True, [])


def test_entries_younger_than_3_years_cannot_be_purged(settings: Settings) -> None:
    fill(settings, 10, start=datetime(2024, 5, 1))
    archive_now(settings, datetime(2024, 6, 1))
    with (
        pytest.raises(AuditError, match="younger than 3 years cannot be removed"),
        session(settings) as s,
    ):
        purge(s, settings, before=datetime(2024, 6, 1), at=datetime(2027, 5, 31), actor="ops")
    with session(settings) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 11
    assert years_before(datetime(2028, 2, 29, 12), 3) == datetime(2025, 2, 28, 12)


def test_unarchived_entries_cannot_be_purged(settings: Settings) -> None:
    fill(settings, 10, start=datetime(2022, 5, 1))
    with (
        pytest.raises(AuditError, match=r"entries 1–10 are not archived yet"),
        session(settings) as s,
    ):
        purge(s, settings, before=datetime(2023, 1, 1), at=datetime(2026, 3, 1), actor="ops")
    with session(settings) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 10


def test_archived_entries_older_than_3_years_are_purged_and_the_chain_still_verifies(
    settings: Settings,
) -> None:
    fill(settings, 10, start=datetime(2022, 5, 1))
    fill(settings, 5, start=datetime(2025, 6, 1))
    archive_now(settings, datetime(2025, 7, 1))  # seq 16
    with session(settings) as s:
        removed = purge(
            s, settings, before=datetime(2023, 1, 1), at=datetime(2026, 3, 1), actor="ops"
        )
    assert removed == 10
    with session(settings) as s:
        seqs = s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
        purge_entry = s.get(AuditEntry, 17)
        assert purge_entry is not None
    assert seqs == list(range(11, 18))
    assert purge_entry.action == "audit.purge" and purge_entry.actor == "ops"
    assert json.loads(purge_entry.detail)["last_seq"] == 10
    assert check(settings) == (True, [])
    # The archive keeps what the database let go.
    archived = DeltaTable(archive_location(settings).uri).to_pyarrow_table()
    assert sorted(archived.column("seq").to_pylist()) == list(range(1, 17))

    # The chain goes on, and deleting right after the purge is still found.
    fill(settings, 3, start=datetime(2026, 3, 2))
    archive_now(settings, datetime(2026, 3, 3))
    assert check(settings) == (True, [])
    sql(settings, "DELETE FROM audit_journal WHERE seq = 11")
    ok, problems = check(settings)
    assert not ok
    assert problems == ["seq 11: missing with no recorded purge (oldest entries deleted)"]


def test_a_department_gets_its_own_trail(settings: Settings, catalog: Catalog) -> None:
    fill(settings, len(CALLS))
    with session(settings) as s:
        consumer_side = [e.seq for e in trail(s, catalog, "education")]
        provider_side = trail(s, catalog, "public_security")
        source_side = [e.seq for e in trail(s, catalog, "civil_affairs")]
        dated = [
            e.seq
            for e in trail(
                s,
                catalog,
                "education",
                since=START + timedelta(minutes=3),
                until=START + timedelta(minutes=6),
            )
        ]
    # education: its reads (1, 5, 7), the decisions and registration about it (3, 4, 8)
    assert consumer_side == [1, 3, 4, 5, 7, 8]
    # public_security: who read its residents, when and for which purpose, and its decisions
    assert [(e.seq, e.consumer, e.purpose) for e in provider_side] == [
        (1, "education", "administrative_basis"),
        (3, "education", "administrative_basis"),
        (7, "education", None),
        (8, "education", None),
    ]
    # civil_affairs supplies residents' marital status and governs the divisions
    assert source_side == [1, 3, 6, 7, 8]
    assert dated == [4, 5]


def test_export_writes_a_departments_trail(
    settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    fill(settings, len(CALLS))
    with session(settings) as s:
        entries = trail(s, catalog, "market_regulation")
        assert export(entries, tmp_path / "mr.jsonl", fmt="jsonl") == 1
        assert export(entries, tmp_path / "mr.csv") == 1
    line = json.loads((tmp_path / "mr.jsonl").read_text(encoding="utf-8"))
    assert line["seq"] == 2 and line["consumer"] == "taxation" and line["rows"] == 40
    assert line["detail"] == {"client": "delta-sharing-python", "request_id": 1}
    assert line["at"] == "2026-03-02T09:01:00.250000Z"
    with (tmp_path / "mr.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["seq"], r["resource"], r["purpose"]) for r in rows] == [
        ("2", "legal_entity.enterprises", "business_collaboration")
    ]
    assert rows[0]["hash"] == line["hash"]


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Iterator[CliRunner]:
    settings_module.get_settings.cache_clear()
    yield CliRunner(
        env={
            "GOVLAKE_DATABASE_URL": settings.database_url,
            "GOVLAKE_WAREHOUSE": settings.warehouse,
            "GOVLAKE_CATALOG_DIR": str(settings.catalog_dir),
            "GOVLAKE_REPORTS_DIR": str(tmp_path / "reports"),
        }
    )
    settings_module.get_settings.cache_clear()


def test_cli_exports_a_departments_trail(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    fill(settings, len(CALLS))
    with session(settings) as s:
        s.add(Consumer(code="education", name="教育局", contact_email="data@edu.gov.example",
                       registered_at=START))  # fmt: skip
    result = cli.invoke(audit_app, ["export", "--department", "public_security"])
    assert result.exit_code == 0, result.output
    assert "4 entries for public_security" in result.output
    with (tmp_path / "reports" / "audit_public_security.csv").open(encoding="utf-8") as handle:
        assert [r["seq"] for r in csv.DictReader(handle)] == ["1", "3", "7", "8"]

    out = tmp_path / "edu.jsonl"
    result = cli.invoke(
        audit_app,
        ["export", "--department", "education", "--since", "2026-03-02", "--until", "2026-03-02",
         "--format", "jsonl", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 3, 4, 5, 7, 8]

    result = cli.invoke(
        audit_app,
        ["export", "--department", "education", "--since", "2026-03-03", "--format", "jsonl",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "0 entries for education" in result.output
    assert out.read_text(encoding="utf-8") == ""  # the earlier export was replaced

    result = cli.invoke(audit_app, ["export", "--department", "police"])
    assert result.exit_code == 2
    assert "unknown department 'police'" in result.output
    assert not (tmp_path / "reports" / "audit_police.csv").exists()


def test_cli_verify_archive_and_purge(cli: CliRunner, settings: Settings) -> None:
    fill(settings, 12)
    result = cli.invoke(audit_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert "12 entries, chain intact" in result.output
    assert "nothing archived yet" in result.output

    result = cli.invoke(audit_app, ["archive"])
    assert result.exit_code == 0, result.output
    assert "13 entries archived to" in result.output
    assert "nothing new to archive" in cli.invoke(audit_app, ["archive"]).output

    # The CLI purges as of now: a cutoff of today is always too young.
    result = cli.invoke(audit_app, ["purge", "--before", date.today().isoformat()])
    assert result.exit_code == 1
    assert "younger than 3 years cannot be removed" in result.output
    with session(settings) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 13

    sql(settings, "UPDATE audit_journal SET rows = 0 WHERE seq = 9")
    sql(settings, "DELETE FROM audit_journal WHERE seq = 13")
    result = cli.invoke(audit_app, ["verify"])
    assert result.exit_code == 1
    assert "2 problem(s) in 12 entries" in result.output
    assert "seq 9: content does not match its hash (entry edited)" in result.output
    assert "seq 13: archived but missing from the database" in result.output


def test_concurrent_appends_take_distinct_seqs(settings: Settings) -> None:
    engine(settings.database_url)  # create the schema before the writers race
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for n in range(25):
                with session(settings) as s:
                    record(s, at=START + timedelta(seconds=n), actor=name, action="share.version",
                           consumer=name, rows=n)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"dept_{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with session(settings) as s:
        seqs = s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
        per_actor = {
            row.actor: row.count
            for row in s.execute(
                select(AuditEntry.actor, func.count().label("count")).group_by(AuditEntry.actor)
            )
        }
    assert seqs == list(range(1, 101))
    assert per_actor == {f"dept_{n}": 25 for n in range(4)}
    assert check(settings) == (True, [])
