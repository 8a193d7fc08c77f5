"""Backups and restore (石景山 art. 31) on real Delta tables written by the pipeline: a deleted
table comes back with the same rows and versions, an existing one gets an old version as a
new commit, backups are incremental and follow the importance schedule, a commit or a lost
file during a backup never makes the manifest claim what the backup lacks, bad requests are
refused clearly, the CLI, and one round trip with the lakehouse and the backups on S3."""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from deltalake import DeltaTable, write_deltalake
from govlake_tools.s3server import SeaweedS3
from sqlalchemy import select
from support import deliver, lake_settings
from typer.testing import CliRunner

from govlake.core.catalog import Catalog
from govlake.core.location import Location
from govlake.core.settings import Settings, get_settings
from govlake.governance import backup as backups
from govlake.governance.backup import NotBackedUp, RestoreRefused, UnknownTable
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.platform import audit
from govlake.platform.database import AuditEntry, session
from govlake_app.cli.backup import backup as backup_command
from govlake_app.cli.backup import backup_status as backup_status_command
from govlake_app.cli.backup import restore as restore_command

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RESIDENTS = "population.residents"
PUBLISHED = "population.residents_unconditional"
DAYS = (datetime.date(2026, 3, 1), datetime.date(2026, 3, 2))
DAY3 = datetime.date(2026, 3, 3)
AT = datetime.datetime(2026, 3, 3, 1)


def _settings(root: Path, database_url: str | None = None) -> Settings:
    return lake_settings(root, database_url=database_url, backup=str(root / "backups"))


def _ingest(settings: Settings, catalog: Catalog, day: datetime.date, names: list[str]) -> None:
    spark = get_spark(settings, catalog, fresh=True)
    end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(2),
                                    datetime.UTC)  # fmt: skip
    deliver(spark, settings, catalog, day=day, names=names, rows=150, end=end)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Path:
    """A small lakehouse: residents (a core resource) published twice."""
    root = tmp_path_factory.mktemp("lake")
    settings = _settings(root)
    for day in DAYS:
        _ingest(settings, catalog, day, [RESIDENTS])
    return root / "lakehouse"


@dataclass
class Lake:
    settings: Settings
    catalog: Catalog

    def location(self, name: str) -> Location:
        return backups.find_target(self.settings, self.catalog, name).location

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(self.location(name).uri, version=version,
                          storage_options=self.location(name).storage_options())  # fmt: skip

    def rows(self, name: str, version: int | None = None) -> pa.Table:
        """The rows of a version in a fixed order, to compare two reads."""
        data = read_delta(self.table(name, version))
        return data.sort_by([(c, "ascending") for c in data.column_names])

    def history(self, name: str) -> dict[int, pa.Table]:
        return {v: self.rows(name, v) for v in range(self.table(name).version() + 1)}

    def manifest(self, name: str) -> backups.Manifest:
        target = backups.find_target(self.settings, self.catalog, name)
        found = backups.read_manifest(target, self.settings.backup_location)
        assert found is not None, name
        return found

    def journal(self, action: str) -> list[AuditEntry]:
        with session(self.settings) as s:
            query = select(AuditEntry).where(AuditEntry.action == action)
            return list(s.scalars(query.order_by(AuditEntry.seq)).all())


@pytest.fixture
def lake(built: Path, tmp_path: Path, catalog: Catalog, database_url: str) -> Lake:
    """A copy of the built lakehouse of the test's own, with its own backups and journal."""
    shutil.copytree(built, tmp_path / "lakehouse")
    return Lake(_settings(tmp_path, database_url), catalog)


def _data_files(folder: Path) -> set[str]:
    """Data files and deletion-vector files below a table folder (log files left out)."""
    found = [*folder.rglob("*.parquet"), *folder.rglob("deletion_vector_*.bin")]
    return {str(p.relative_to(folder)) for p in found if "_delta_log" not in p.parts}


def test_a_deleted_table_comes_back_with_its_rows_and_versions(lake: Lake) -> None:
    names = [PUBLISHED, RESIDENTS, "ops.publications"]
    before = {name: lake.history(name) for name in names}
    report = backups.backup(lake.settings, lake.catalog, at=AT)
    assert not report.failed
    done = {t.table: t for t in report.tables}
    assert done[PUBLISHED].outcome == "backed_up"
    assert done["credit.records"].outcome == "no_table"  # never ingested here
    # The manifest holds every version, each with its rows.
    manifest = lake.manifest(PUBLISHED)
    assert sorted(manifest.versions) == sorted(before[PUBLISHED])
    for version, rows in before[PUBLISHED].items():
        assert manifest.versions[version].rows == rows.num_rows
    assert done[PUBLISHED].rows == before[PUBLISHED][max(before[PUBLISHED])].num_rows

    for name in names:
        shutil.rmtree(lake.location(name).uri)
        restored = backups.restore(lake.settings, lake.catalog, name, at=AT)
        assert restored.mode == "recreated"
        assert restored.table_version == restored.version == max(before[name])
        # Same version number, same rows, and every older version reads as it did.
        after = lake.history(name)
        assert after.keys() == before[name].keys()
        for version, rows in before[name].items():
            assert after[version].equals(rows), (name, version)

    # Each table backed up and each restore is in the audit journal.
    backed_up = {e.table_name: e for e in lake.journal(backups.BACKUP_ACTION)}
    assert backed_up[PUBLISHED].version == max(before[PUBLISHED])
    assert backed_up[PUBLISHED].resource == RESIDENTS
    assert backed_up["ops.publications"].outcome == "ok"
    restores = lake.journal(backups.RESTORE_ACTION)
    assert [(e.table_name, e.outcome) for e in restores] == [(n, "ok") for n in names]
    assert json.loads(restores[0].detail)["mode"] == "recreated"


def test_an_existing_table_gets_the_old_version_as_a_new_commit(lake: Lake) -> None:
    backups.backup(lake.settings, lake.catalog, at=AT)
    first = lake.rows(PUBLISHED, 1)
    latest = lake.table(PUBLISHED).version()
    # A bad publication replaces everything; vacuum then removes the files only old versions
    # used, so the live table can no longer restore them by itself.
    table = lake.table(PUBLISHED)
    write_deltalake(lake.location(PUBLISHED).uri, read_delta(table).slice(0, 3),
                    mode="overwrite")  # fmt: skip
    bad = lake.rows(PUBLISHED)
    lake.table(PUBLISHED).vacuum(retention_hours=0, enforce_retention_duration=False,
                                 dry_run=False)  # fmt: skip
    folder = Path(lake.location(PUBLISHED).uri)
    assert len(_data_files(folder)) == 1
    vacuumed = lake.table(PUBLISHED).version()  # delta-rs commits its vacuums too

    restored = backups.restore(lake.settings, lake.catalog, PUBLISHED, version=1, at=AT)
    assert restored.mode == "new_commit"
    assert restored.table_version == vacuumed + 1
    assert restored.files_copied > 0  # the vacuumed files came back from the backup
    assert lake.rows(PUBLISHED).equals(first)
    assert restored.rows == first.num_rows
    # Nothing newer was lost: the bad version still reads as it was.
    assert lake.rows(PUBLISHED, latest + 1).equals(bad)
    # Restoring the version the table is at commits nothing.
    backups.backup(lake.settings, lake.catalog, at=AT, resource=RESIDENTS, force=True)
    again = backups.restore(lake.settings, lake.catalog, PUBLISHED, at=AT)
    assert (again.mode, again.version) == ("current", vacuumed + 1)
    assert lake.table(PUBLISHED).version() == again.table_version == vacuumed + 1


def test_backups_are_incremental_and_follow_importance(lake: Lake) -> None:
    assert lake.catalog.get(RESIDENTS).importance == "core"
    first = backups.backup(lake.settings, lake.catalog, at=AT)
    assert not first.failed and first.files_copied > 0
    held = _data_files(Path(lake.settings.backup_location.uri))

    # Nothing is due an hour later: nothing is read or copied.
    later = backups.backup(lake.settings, lake.catalog, at=AT + datetime.timedelta(hours=1))
    assert {t.outcome for t in later.tables} == {"not_due", "no_table"}
    assert later.files_copied == later.bytes_copied == 0

    # One more publication; a day later the core tables are due and only the new files are
    # copied: what the backup held before is left alone.
    live = Path(lake.settings.warehouse)
    files_before = _data_files(live)
    _ingest(lake.settings, lake.catalog, DAY3, [RESIDENTS])
    new_files = _data_files(live) - files_before
    day = backups.backup(lake.settings, lake.catalog, at=AT + datetime.timedelta(days=1))
    outcomes = {t.table: t for t in day.tables}
    assert outcomes[PUBLISHED].outcome == "backed_up"
    assert outcomes[PUBLISHED].versions_added == [lake.table(PUBLISHED).version()]
    assert outcomes["ops.publications"].outcome == "backed_up"  # ops.* count as core
    copied = _data_files(Path(lake.settings.backup_location.uri)) - held
    assert copied == new_files
    assert day.files_copied == len(new_files)

    # Were residents of general importance, they would be due a month after their last
    # backup, not a day; the platform's tables stay daily.
    general = Catalog([r.model_copy(update={"importance": "general"}) if r.qualified_name ==
                       RESIDENTS else r for r in lake.catalog])  # fmt: skip
    two_days = backups.backup(lake.settings, general, at=AT + datetime.timedelta(days=2))
    outcomes = {t.table: t for t in two_days.tables}
    assert outcomes[PUBLISHED].outcome == "not_due"
    assert outcomes[PUBLISHED].next_due == AT + datetime.timedelta(days=31)
    assert outcomes["ops.publications"].outcome == "unchanged"
    month = backups.backup(lake.settings, general, at=AT + datetime.timedelta(days=31))
    assert {t.table: t.outcome for t in month.tables}[PUBLISHED] == "unchanged"
    assert month.files_copied == 0
    status = {s.table: s for s in backups.backup_status(
        lake.settings, lake.catalog, AT + datetime.timedelta(days=31))}  # fmt: skip
    assert status[PUBLISHED].last_backup_at == AT + datetime.timedelta(days=31)
    assert status[PUBLISHED].next_due == AT + datetime.timedelta(days=32)
    assert not status[PUBLISHED].due and status[PUBLISHED].backup_days == 1
    assert status["credit.records"].backup_days == 7  # important: weekly
    assert status["credit.records"].table_version is None and not status["credit.records"].due


def test_only_versions_that_can_still_be_rebuilt_are_claimed(lake: Lake) -> None:
    # The platform table's oldest commits were cleaned up: it is backed up from its oldest
    # checkpoint on.
    extracts = Path(lake.location("ops.extracts").uri)
    log = extracts / "_delta_log"
    checkpoint = min(int(p.name[:20]) for p in log.glob("*.checkpoint.parquet"))
    for version in range(checkpoint):
        (log / f"{version:020d}.json").unlink()
    before = {v: lake.rows("ops.extracts", v)
              for v in range(checkpoint, lake.table("ops.extracts").version() + 1)}  # fmt: skip
    # The published table was overwritten and vacuumed: its first versions lost their files.
    write_deltalake(lake.location(PUBLISHED).uri, read_delta(lake.table(PUBLISHED)),
                    mode="overwrite")  # fmt: skip
    overwritten = lake.table(PUBLISHED).version()
    lake.table(PUBLISHED).vacuum(retention_hours=0, enforce_retention_duration=False,
                                 dry_run=False)  # fmt: skip

    report = backups.backup(lake.settings, lake.catalog, at=AT)
    assert not report.failed
    assert sorted(lake.manifest("ops.extracts").versions) == sorted(before)
    published = lake.manifest(PUBLISHED).versions
    assert sorted(published) == list(range(overwritten, lake.table(PUBLISHED).version() + 1))
    with pytest.raises(NotBackedUp, match=f"backed-up versions: {overwritten}–"):
        backups.restore(lake.settings, lake.catalog, PUBLISHED, version=1, at=AT)

    shutil.rmtree(extracts)
    backups.restore(lake.settings, lake.catalog, "ops.extracts", at=AT)
    for version, rows in before.items():
        assert lake.rows("ops.extracts", version).equals(rows), version


def test_a_commit_during_the_backup_is_left_for_the_next_one(lake: Lake) -> None:
    pinned = lake.table(PUBLISHED).version()
    rows_at_pin = lake.rows(PUBLISHED)
    extra = read_delta(lake.table(PUBLISHED)).slice(0, 5)

    def commit_meanwhile(table: str, done: int, total: int) -> None:
        if table == PUBLISHED and done == 0:  # pinned, nothing copied yet
            write_deltalake(lake.location(PUBLISHED).uri, extra, mode="append")

    report = backups.backup(lake.settings, lake.catalog, at=AT, resource=RESIDENTS,
                            progress=commit_meanwhile)  # fmt: skip
    assert {t.table: t.version for t in report.tables}[PUBLISHED] == pinned
    assert lake.table(PUBLISHED).version() == pinned + 1
    assert lake.manifest(PUBLISHED).latest_version == pinned
    # The backup is exactly version `pinned`: a restore reads as the table did then.
    shutil.rmtree(lake.location(PUBLISHED).uri)
    backups.restore(lake.settings, lake.catalog, PUBLISHED, at=AT)
    assert lake.table(PUBLISHED).version() == pinned
    assert lake.rows(PUBLISHED).equals(rows_at_pin)


def test_a_file_lost_during_the_backup_claims_nothing(lake: Lake) -> None:
    folder = Path(lake.location(PUBLISHED).uri)

    def lose_a_file(table: str, done: int, total: int) -> None:
        if table == PUBLISHED and done == 0:
            sorted(folder.glob("*.parquet"))[0].unlink()

    report = backups.backup(lake.settings, lake.catalog, at=AT, resource=RESIDENTS,
                            progress=lose_a_file)  # fmt: skip
    failed = {t.table: t for t in report.failed}
    assert list(failed) == [PUBLISHED]
    assert "parquet" in str(failed[PUBLISHED].error)
    assert {t.outcome for t in report.tables if t.table != PUBLISHED} == {"backed_up"}
    # No manifest: the backup claims no version; the table stays due; the failure is journaled.
    target = backups.find_target(lake.settings, lake.catalog, PUBLISHED)
    assert backups.read_manifest(target, lake.settings.backup_location) is None
    with pytest.raises(NotBackedUp, match="no backup"):
        backups.restore(lake.settings, lake.catalog, PUBLISHED, at=AT)
    entries = {e.table_name: e for e in lake.journal(backups.BACKUP_ACTION)}
    assert entries[PUBLISHED].outcome == "error"


def test_bad_restores_are_refused_with_the_reason(lake: Lake) -> None:
    backups.backup(lake.settings, lake.catalog, at=AT)
    where = lake.settings.backup_location.child("population", "residents_unconditional").uri
    with pytest.raises(NotBackedUp) as refused:
        backups.restore(lake.settings, lake.catalog, PUBLISHED, version=99, at=AT)
    message = str(refused.value)
    assert PUBLISHED in message and "version 99" in message and where in message
    assert "backed-up versions: 0–2" in message
    with pytest.raises(UnknownTable, match=r"population\.nope"):
        backups.restore(lake.settings, lake.catalog, "population.nope", at=AT)
    assert [e.outcome for e in lake.journal(backups.RESTORE_ACTION)] == ["refused"]

    # The audit archive is never rolled back while it exists.
    with session(lake.settings) as s:
        audit.archive(s, lake.settings, at=AT)
    backups.backup(lake.settings, lake.catalog, at=AT, resource="ops", force=True)
    audit.append(lake.settings, at=AT, actor="platform", action="audit.archive")
    with session(lake.settings) as s:
        audit.archive(s, lake.settings, at=AT)
    with pytest.raises(RestoreRefused, match="only grows"):
        backups.restore(lake.settings, lake.catalog, backups.AUDIT_ARCHIVE, version=0, at=AT)


def test_the_cli(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
    app.command("backup-status")(backup_status_command)
    for name, value in (("WAREHOUSE", lake.settings.warehouse),
                        ("BACKUP", lake.settings.backup),
                        ("DATABASE_URL", lake.settings.database_url),
                        ("CATALOG_DIR", str(lake.settings.catalog_dir))):  # fmt: skip
        monkeypatch.setenv(f"GOVLAKE_{name}", value)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        done = runner.invoke(app, ["backup", "--resource", RESIDENTS])
        assert done.exit_code == 0, done.output
        assert PUBLISHED in done.output and "backed up" in done.output
        done = runner.invoke(app, ["backup-status"])
        assert done.exit_code == 0, done.output
        assert PUBLISHED in done.output and "table(s) due now" in done.output

        shutil.rmtree(lake.location(PUBLISHED).uri)
        done = runner.invoke(app, ["restore", PUBLISHED])
        assert done.exit_code == 0, done.output
        assert "recreated at version 2" in done.output
        assert lake.table(PUBLISHED).version() == 2

        bad = runner.invoke(app, ["restore", PUBLISHED, "--version", "7"])
        assert bad.exit_code == 2 and "version 7 is not in the backup" in bad.output
        assert runner.invoke(app, ["restore", "nope.nothing"]).exit_code == 2
        assert runner.invoke(app, ["restore", PUBLISHED, "--version", "-1"]).exit_code == 2
        unknown = runner.invoke(app, ["backup", "--resource", "population.nobody"])
        assert unknown.exit_code == 2 and "unknown resource" in unknown.output
    finally:
        get_settings.cache_clear()


def test_an_s3_lakehouse_is_backed_up_to_s3_and_restored(
    built: Path, tmp_path: Path, catalog: Catalog, s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = "backup-test"
    s3.create_bucket(bucket)
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    client = s3.client()
    # Silver was merged into on the second day: it carries deletion vectors.
    assert _vectors(built / "population" / "residents")
    for table in ("population/residents_unconditional", "population/residents", "ops/publications"):
        for path in sorted(p for p in (built / table).rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"lakehouse/{path.relative_to(built)}")
    settings = Settings(warehouse=f"s3://{bucket}/lakehouse", backup=f"s3://{bucket}/backups",
                        database_url=f"sqlite:///{tmp_path / 'govlake.db'}",
                        catalog_dir=REPO / "schemas", spark_remote=None)  # fmt: skip
    lake = Lake(settings, catalog)

    report = backups.backup(settings, catalog, at=AT)
    assert not report.failed and report.files_copied > 0
    backed_up_tables = {t.table for t in report.tables if t.outcome == "backed_up"}
    assert backed_up_tables == {PUBLISHED, RESIDENTS, "ops.publications"}

    def keys(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for p in pages for o in p.get("Contents", [])]

    backed_up = keys("backups/population/residents_unconditional/")
    assert "backups/population/residents_unconditional/manifest.json" in backed_up
    assert not [k for k in backed_up if k.endswith("/")]  # no directory markers
    silver_rows = lake.rows(RESIDENTS)
    vectors = {k.rsplit("/", 1)[-1] for k in keys("backups/population/residents/")
               if "deletion_vector_" in k}  # fmt: skip
    assert vectors == {p.name for p in (built / "population" / "residents").rglob("*.bin")}
    for key in keys("lakehouse/population/residents/"):
        client.delete_object(Bucket=bucket, Key=key)
    silver = backups.restore(settings, catalog, RESIDENTS, at=AT)
    assert silver.mode == "recreated" and lake.rows(RESIDENTS).equals(silver_rows)

    # One more version on S3: the next backup copies just its file.
    extra = read_delta(lake.table(PUBLISHED)).slice(0, 4)
    write_deltalake(lake.location(PUBLISHED).uri, extra, mode="append",
                    storage_options=lake.location(PUBLISHED).storage_options())  # fmt: skip
    before = lake.history(PUBLISHED)
    again = backups.backup(settings, catalog, at=AT, resource=RESIDENTS, force=True)
    assert {t.table: t.files_copied for t in again.tables}[PUBLISHED] == 1
    assert again.files_copied == 1

    # Delete the table from the bucket, restore it, compare every version.
    for key in keys("lakehouse/population/residents_unconditional/"):
        client.delete_object(Bucket=bucket, Key=key)
    assert not backups.has_table(lake.location(PUBLISHED))
    restored = backups.restore(settings, catalog, PUBLISHED, at=AT)
    assert restored.mode == "recreated" and restored.table_version == max(before)
    after = lake.history(PUBLISHED)
    assert after.keys() == before.keys()
    for version, rows in before.items():
        assert after[version].equals(rows), version


def _delete_through_the_engine(lake: Lake, name: str, *conditions: str) -> None:
    """Each condition a DELETE through the engine: one version each, written as deletion
    vectors (the published and silver tables are created with them)."""
    spark = get_spark(lake.settings, lake.catalog, fresh=True)
    for condition in conditions:
        spark.sql(f"DELETE FROM {name} WHERE {condition}")


def _vectors(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("deletion_vector_*.bin")}


def test_a_table_with_deletion_vectors_is_copied_checked_and_restored(lake: Lake) -> None:
    key = lake.catalog.get(RESIDENTS).key[0]
    _delete_through_the_engine(lake, PUBLISHED, f"{key} LIKE '%1'", f"{key} LIKE '%2'")
    folder = Path(lake.location(PUBLISHED).uri)
    vectors = _vectors(folder)
    assert vectors, "the engine wrote no deletion vectors"
    before = lake.history(PUBLISHED)  # every version, read through delta-rs QueryBuilder
    latest = max(before)
    assert before[latest].num_rows < before[latest - 2].num_rows

    report = backups.backup(lake.settings, lake.catalog, at=AT, resource=RESIDENTS)
    assert not report.failed
    manifest = lake.manifest(PUBLISHED)
    assert sorted(manifest.versions) == sorted(before)
    for version, rows in before.items():  # rows less those the vectors delete
        assert manifest.versions[version].rows == rows.num_rows
    backed_up = Path(lake.settings.backup_location.uri) / "population" / "residents_unconditional"
    assert _vectors(backed_up) == vectors
    for vector in vectors:
        assert manifest.files[vector].size == (folder / vector).stat().st_size

    shutil.rmtree(folder)
    restored = backups.restore(lake.settings, lake.catalog, PUBLISHED, at=AT)
    assert (restored.mode, restored.table_version, restored.rows) == (
        "recreated", latest, before[latest].num_rows)  # fmt: skip
    after = lake.history(PUBLISHED)  # time travel to each version, vectors applied
    assert after.keys() == before.keys()
    for version, rows in before.items():
        assert after[version].equals(rows), version


def test_an_older_version_with_deletion_vectors_comes_back_as_a_new_commit(lake: Lake) -> None:
    key = lake.catalog.get(RESIDENTS).key[0]
    _delete_through_the_engine(lake, PUBLISHED, f"{key} LIKE '%3'")
    wanted = lake.table(PUBLISHED).version()
    rows = lake.rows(PUBLISHED)
    backups.backup(lake.settings, lake.catalog, at=AT, resource=RESIDENTS)
    _delete_through_the_engine(lake, PUBLISHED, f"{key} LIKE '%4'", f"{key} LIKE '%5'")
    folder = Path(lake.location(PUBLISHED).uri)
    for vector in _vectors(folder):  # lost from the table: the backup brings them back
        (folder / vector).unlink()

    restored = backups.restore(lake.settings, lake.catalog, PUBLISHED, version=wanted, at=AT)
    assert restored.mode == "new_commit" and restored.files_copied >= 1
    assert lake.rows(PUBLISHED).equals(rows)
    assert restored.rows == rows.num_rows


def test_a_damaged_deletion_vector_in_the_backup_is_refused(lake: Lake) -> None:
    key = lake.catalog.get(RESIDENTS).key[0]
    _delete_through_the_engine(lake, PUBLISHED, f"{key} LIKE '%6'")
    backups.backup(lake.settings, lake.catalog, at=AT, resource=RESIDENTS)
    backed_up = Path(lake.settings.backup_location.uri) / "population" / "residents_unconditional"
    vector = next(iter(_vectors(backed_up)))
    data = bytearray((backed_up / vector).read_bytes())
    data[-1] ^= 0xFF
    (backed_up / vector).write_bytes(bytes(data))
    shutil.rmtree(lake.location(PUBLISHED).uri)
    with pytest.raises(backups.BackupError, match="do not match their checksum"):
        backups.restore(lake.settings, lake.catalog, PUBLISHED, at=AT)
