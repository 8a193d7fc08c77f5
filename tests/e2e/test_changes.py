"""The catalogue's change register: recorded changes with reason and effective date, duty
changes due within 15 working days, quarterly reviews, and schema evolution of real Delta
tables (additive changes reach them, breaking ones are refused unless a new version)."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from govlake_tools.generate import generate
from support import Inbox
from typer.testing import CliRunner

from govlake.core.catalog import Catalog
from govlake.core.runs import Interval
from govlake.core.settings import Settings
from govlake.governance import changes
from govlake.lake.engine import get_spark
from govlake.lake.evolution import SchemaChangeRefused, evolve, evolve_tables, plan
from govlake.lake.reads import read_delta
from govlake.lake.tables import TableSet
from govlake.platform import audit
from govlake.platform.database import Notification, session
from govlake_app import pipeline as ingest
from jobs import bronze

REPO = Path(__file__).resolve().parents[2]
AT = datetime.datetime(2026, 11, 2, 2, 0)  # naive UTC, a Monday
SOURCE = (
    "public_security: [name, gender, ethnicity, birth_date, household_division_code, "
    "residence_address]"
)
ADDRESS = "  - {name: residence_address,"
NATIVE_PLACE = "  - {name: native_place, title: Native place (籍贯), authority: public_security}\n"


def _catalog_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", target)
    return target


def _edit(catalog_dir: Path, name: str, old: str, new: str) -> None:
    path = catalog_dir / name.replace(".", "/", 1)
    path = path.with_suffix(".yaml")
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def register(settings: Settings, tmp_path: Path) -> Settings:
    """Settings on a catalogue copy the test may edit, with the register's tables."""
    settings = settings.model_copy(update={"catalog_dir": _catalog_copy(tmp_path)})
    changes.ensure_tables(settings)
    return settings


# -- pure ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "widening"),
    [
        ("integer", "bigint", True),
        ("integer", "double", True),
        ("date", "timestamp", True),
        ("decimal(18,2)", "decimal(20,2)", True),
        ("decimal(18,2)", "decimal(18,4)", False),  # fewer integer digits
        ("integer", "decimal(10,0)", True),
        ("bigint", "integer", False),
        ("double", "integer", False),
        ("string", "integer", False),
        ("timestamp", "date", False),
    ],
)
def test_widening(old: str, new: str, widening: bool) -> None:
    assert changes.widens(old, new) is widening


def test_differences_name_what_changed_and_what_breaks(catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    old = changes.snapshot(residents)
    new = json.loads(json.dumps(old))
    new["update_cycle"] = "hourly"
    new["items"]["native_place"] = {**new["items"]["name"], "type": "string"}
    del new["items"]["insured_since"]
    new["items"]["gender"]["sharing"] = "conditional"
    found = {d.detail: d.breaking for d in changes.differences(old, new)}
    assert found == {
        "update_cycle daily → hourly": False,
        "item native_place (string) added": False,
        "item insured_since removed": True,
        "gender: sharing unconditional → conditional": False,
    }
    new["key"] = ["name"]
    assert "key citizen_id → name" in changes.breaking_reasons(old, new)
    new["items"]["birth_date"]["type"] = "string"
    assert "birth_date: type date → string is not a widening" in changes.breaking_reasons(old, new)


def test_plan_adds_widens_and_refuses_removal_and_narrowing() -> None:
    existing = [("id", "integer"), ("amount", "decimal(10,2)"), ("name", "string")]
    add, widen = plan(
        "t",
        existing,
        [("id", "bigint"), ("amount", "decimal(12,2)"), ("name", "string"), ("note", "string")],
    )
    assert add == [("note", "string")]
    assert widen == [("id", "integer", "bigint"), ("amount", "decimal(10,2)", "decimal(12,2)")]
    with pytest.raises(SchemaChangeRefused, match=r"t: column\(s\) name .*new resource version"):
        plan("t", existing, [("id", "integer"), ("amount", "decimal(10,2)")])
    with pytest.raises(SchemaChangeRefused, match=r"id integer → string .*breaking"):
        plan("t", existing, [("id", "string"), ("amount", "decimal(10,2)"), ("name", "string")])


def test_evolve_widens_a_real_table_keeping_rows_and_history(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"id": pa.array([1, 2], pa.int32()), "v": ["a", "b"]}))
    write_deltalake(uri, pa.table({"id": pa.array([3], pa.int32()), "v": ["c"]}), mode="append")
    done = evolve("t", uri, [("id", "bigint"), ("v", "string"), ("w", "double")], {})
    assert done.widened == ("id",) and done.added == ("w",)
    table = DeltaTable(uri)
    assert table.schema().to_arrow().field("id").type == pa.int64()
    rows = sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["id"])
    assert rows == [
        {"id": 1, "v": "a", "w": None},
        {"id": 2, "v": "b", "w": None},
        {"id": 3, "v": "c", "w": None},
    ]
    DeltaTable(uri, version=1).to_pyarrow_table()  # the narrower history still reads
    assert not evolve("t", uri, [("id", "bigint"), ("v", "string"), ("w", "double")], {})


# -- the register -------------------------------------------------------------------------------
def test_changes_are_recorded_with_reason_and_effective_date(register: Settings) -> None:
    catalog = Catalog.load(register.catalog_dir)
    with session(register) as s:
        made = changes.sync(s, catalog, at=AT)
        assert {r.resource for r in made} == set(catalog.resources)
        assert changes.sync(s, catalog, at=AT) == []
        with pytest.raises(changes.ChangeError, match=r"same as revision 1.*catalog review"):
            changes.record_change(
                s,
                catalog,
                "population.residents",
                reason="nothing",
                effective_on=AT.date(),
                by="王建国",
                at=AT,
            )
    _edit(
        register.catalog_dir, "population.residents", "update_cycle: daily", "update_cycle: hourly"
    )
    catalog = Catalog.load(register.catalog_dir)
    with session(register) as s:
        with pytest.raises(changes.ChangeError, match="needs its reason"):
            changes.record_change(
                s,
                catalog,
                "population.residents",
                reason=" ",
                effective_on=AT.date(),
                by="王建国",
                at=AT,
            )
        revision = changes.record_change(
            s,
            catalog,
            "population.residents",
            reason="hourly refresh for e-services",
            effective_on=datetime.date(2026, 12, 1),
            by="王建国",
            at=AT,
        )
        assert (revision.revision, revision.kind) == (2, "change")
        assert json.loads(revision.changes) == [
            {"field": "update_cycle", "detail": "update_cycle daily → hourly"}
        ]
    with session(register) as s:
        from sqlalchemy import select

        from govlake.platform.database import AuditEntry

        logged = s.scalars(select(AuditEntry).where(AuditEntry.action == "catalog.change")).all()
        assert len(logged) == 1
        detail = json.loads(logged[0].detail)
        assert detail["reason"] == "hourly refresh for e-services"
        assert detail["effective_on"] == "2026-12-01"
        assert detail["changes"] == ["update_cycle daily → hourly"]
        assert audit.verify(s, register).ok


def test_breaking_change_needs_a_new_resource_version(register: Settings) -> None:
    catalog = Catalog.load(register.catalog_dir)
    with session(register) as s:
        changes.sync(s, catalog, at=AT)
    # Remove insured_since: from the items and from human resources' source list.
    _edit(
        register.catalog_dir,
        "population.residents",
        "  human_resources: [name, social_insurance_status, insured_since]",
        "  human_resources: [name, social_insurance_status]",
    )
    path = register.catalog_dir / "population" / "residents.yaml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "{name: insured_since" in line)
    del lines[start : start + 2]
    path.write_text("".join(lines), encoding="utf-8")
    catalog = Catalog.load(register.catalog_dir)
    with session(register) as s, pytest.raises(changes.BreakingChange) as refused:
        changes.record_change(
            s,
            catalog,
            "population.residents",
            reason="not needed",
            effective_on=AT.date(),
            by="王建国",
            at=AT,
        )
    message = str(refused.value)
    assert "population.residents" in message and "item insured_since removed" in message
    assert "version: 2" in message and "residents_v2_" in message
    _edit(
        register.catalog_dir,
        "population.residents",
        "importance: core",
        "importance: core\nversion: 2",
    )
    catalog = Catalog.load(register.catalog_dir)
    with session(register) as s:
        revision = changes.record_change(
            s,
            catalog,
            "population.residents",
            reason="insured_since moves to its own resource",
            effective_on=AT.date(),
            by="王建国",
            at=AT,
        )
        assert revision.resource_version == 2
        assert "version 1 → 2" in revision.changes
    assert TableSet(
        catalog.get("population.residents"), register.warehouse_location
    ).silver.name == ("residents_v2")


def test_duty_change_puts_entries_due_in_15_working_days_and_mails_the_steward(
    register: Settings, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    settings = register.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})
    catalog = Catalog.load(settings.catalog_dir)
    registered = datetime.datetime(2026, 9, 25, 2)  # Friday before the National Day week
    with session(settings) as s:
        changes.sync(s, catalog, at=registered)
        change = changes.register_duty_change(
            s,
            catalog,
            settings,
            provider="public_security",
            basis="户口登记条例 (revised)",
            reason="household registration moves online",
            effective_on=datetime.date(2026, 9, 25),
            by="大数据局",
            at=registered,
        )
        # 15 working days from Fri 25 Sep, skipping 1–7 Oct, with make-up days worked.
        assert change.due_on > datetime.date(2026, 10, 16)
        from govlake.platform.workdays import default_holidays_file, working_days_between

        holidays = default_holidays_file(settings.catalog_dir)
        assert (
            working_days_between(change.effective_on, change.due_on, holidays_file=holidays) == 15
        )
        notice = s.query(Notification).filter_by(kind="catalog.duty_change").one()
        assert (
            notice.sent and notice.recipient == catalog.department("public_security").steward.email
        )
    assert inbox.messages and "population.residents" in inbox.messages[0]
    assert str(change.due_on) in inbox.messages[0]

    def states(at: datetime.datetime) -> dict[tuple[str, str], str]:
        with session(settings) as s:
            return {
                (u.resource, u.duty): u.state
                for u in changes.upkeep(s, catalog, at=at)
                if u.provider == "public_security"
            }

    assert (
        states(registered + datetime.timedelta(days=3))[("population.residents", "update")] == "due"
    )
    late = datetime.datetime.combine(change.due_on + datetime.timedelta(days=1), datetime.time(3))
    assert states(late)[("population.residents", "update")] == "overdue"
    with session(settings) as s:
        changes.record_review(
            s,
            catalog,
            "population.residents",
            by="王建国",
            note="checked against the revised regulation",
            at=late,
        )
    after = states(late)
    assert ("population.residents", "update") not in after
    assert after[("population.residents", "review")] == "on_time"


def test_quarterly_review_and_unrecorded_edits_show_in_upkeep(register: Settings) -> None:
    catalog = Catalog.load(register.catalog_dir)
    reviewed = catalog.get("geospatial.admin_divisions").reviewed_on
    assert reviewed == datetime.date(2026, 9, 30)
    with session(register) as s:
        changes.sync(s, catalog, at=AT)

    def upkeep(at: datetime.datetime) -> dict[tuple[str, str], changes.Upkeep]:
        with session(register) as s:
            return {(u.resource, u.duty): u for u in changes.upkeep(s, catalog, at=at)}

    on_time = upkeep(datetime.datetime(2026, 12, 1))[("geospatial.admin_divisions", "review")]
    assert (on_time.due_on, on_time.state) == (datetime.date(2026, 12, 30), "on_time")
    assert (
        upkeep(datetime.datetime(2026, 12, 20))[("geospatial.admin_divisions", "review")].state
        == "due"
    )
    late = upkeep(datetime.datetime(2027, 1, 5))[("geospatial.admin_divisions", "review")]
    assert (late.state, late.days_late) == ("overdue", 6)
    _edit(
        register.catalog_dir,
        "geospatial.admin_divisions",
        "update_cycle: yearly",
        "update_cycle: monthly",
    )
    catalog = Catalog.load(register.catalog_dir)
    edited = upkeep(datetime.datetime(2026, 12, 1))[("geospatial.admin_divisions", "record")]
    assert edited.state == "overdue" and "update_cycle yearly → monthly" in edited.detail
    with session(register) as s, pytest.raises(changes.ChangeError, match="record the change"):
        changes.record_review(
            s,
            catalog,
            "geospatial.admin_divisions",
            by="赵磊",
            note="",
            at=datetime.datetime(2026, 12, 1),
        )


def test_catalog_cli_change_review_status_history(
    register: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from govlake.core.settings import get_settings
    from govlake_app.cli import app

    for key, value in {
        "GOVLAKE_DATABASE_URL": register.database_url,
        "GOVLAKE_CATALOG_DIR": str(register.catalog_dir),
        "GOVLAKE_WAREHOUSE": register.warehouse,
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        status = runner.invoke(app, ["catalog", "status", "--at", "2026-11-02T02:00"])
        assert status.exit_code == 0, status.output
        assert "population.residents" in status.output and "on_time" in status.output
        _edit(register.catalog_dir, "credit.records", "update_cycle: daily", "update_cycle: hourly")
        edited = runner.invoke(app, ["catalog", "status", "--at", "2026-11-02T02:00"])
        assert edited.exit_code == 1 and "without a change record" in edited.output
        bad = runner.invoke(
            app, ["catalog", "change", "credit.records", "--reason", "x", "--effective", "soon"]
        )
        assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
        done = runner.invoke(
            app,
            [
                "catalog",
                "change",
                "credit.records",
                "--reason",
                "hourly publicity",
                "--effective",
                "2026-12-01",
            ],
        )
        assert done.exit_code == 0, done.output
        assert "revision 2" in done.output and "daily → hourly" in done.output
        review = runner.invoke(app, ["catalog", "review", "credit.records", "--by", "陈静"])
        assert review.exit_code == 0 and "next review by" in review.output
        history = runner.invoke(app, ["catalog", "history", "credit.records"])
        assert history.exit_code == 0
        assert "hourly publicity" in history.output and "review" in history.output
        duty = runner.invoke(
            app,
            [
                "catalog",
                "duty-change",
                "taxation",
                "--basis",
                "税收征管法",
                "--reason",
                "x",
                "--effective",
                "2026-11-02",
            ],
        )
        assert duty.exit_code == 2 and "responsible for no catalogue entry" in duty.output
        # The timeliness monitor shows the entries' upkeep beside the publications.
        late = runner.invoke(app, ["quality", "timeliness", "--at", "2027-02-01T02:00"])
        assert late.exit_code == 0, late.output
        monitor = late.output[late.output.index("catalogue upkeep") :]
        assert "geospatial.admin_divisions" in monitor and "overdue" in monitor
    finally:
        get_settings.cache_clear()


# -- tables -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_additive_change_reaches_the_tables_and_breaking_one_is_refused(register: Settings) -> None:
    settings = register
    catalog = Catalog.load(settings.catalog_dir)
    day1, day2 = datetime.date(2026, 11, 2), datetime.date(2026, 11, 3)
    spark = get_spark(settings, catalog, fresh=True)

    def run(catalog: Catalog, day: datetime.date) -> None:
        end = datetime.datetime.combine(
            day + datetime.timedelta(days=1), datetime.time(2), datetime.UTC
        )
        ingest.run(
            spark,
            resource=catalog.get("population.residents"),
            interval=Interval.ending(end),
            settings=settings,
        )

    generate(
        catalog,
        settings.landing_location,
        rows=300,
        seed=3,
        as_of=day1,
        resources=["population.residents"],
    )
    run(catalog, day1)
    tables = TableSet(catalog.get("population.residents"), settings.warehouse_location)
    silver_before = DeltaTable(tables.silver.location.uri).version()

    # An item added: native place (籍贯), supplied by public security.
    _edit(settings.catalog_dir, "population.residents", SOURCE, SOURCE[:-1] + ", native_place]")
    _edit(settings.catalog_dir, "population.residents", ADDRESS, NATIVE_PLACE + ADDRESS)
    catalog = Catalog.load(settings.catalog_dir)
    with session(settings) as s:
        changes.record_change(
            s, catalog, "population.residents", reason="native place requested",
            effective_on=day2, by="王建国", at=datetime.datetime(2026, 11, 3, 1),
        )  # fmt: skip
    generate(Catalog.load(REPO / "schemas"), settings.landing_location, rows=300, seed=4,
             as_of=day2, resources=["population.residents"])  # fmt: skip
    # The department's new extract carries the new column.
    (extract,) = (Path(settings.landing) / "population/residents/public_security").iterdir()
    lines = extract.read_text(encoding="utf-8").splitlines()
    lines = [lines[0] + ",native_place", *(line + ",浙江绍兴" for line in lines[1:])]
    extract.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run(catalog, day2)
    silver = DeltaTable(tables.silver.location.uri)
    assert "native_place" in silver.schema().to_arrow().names
    # Read through delta-rs's engine: silver carries deletion vectors.
    rows = read_delta(silver, ["native_place"]).column(0).to_pylist()
    assert "浙江绍兴" in rows and None in rows  # new rows have it; rows not re-delivered do not
    assert read_delta(DeltaTable(tables.silver.location.uri, version=silver_before)).num_rows > 0
    conditional = DeltaTable(tables.published("conditional").location.uri)
    assert "native_place" in conditional.schema().to_arrow().names
    unconditional = DeltaTable(tables.published("unconditional").location.uri)
    assert "native_place" not in unconditional.schema().to_arrow().names  # not a base item

    # A breaking edit (an item removed) that nobody recorded: the pipeline refuses it.
    before = {
        t.name: DeltaTable(t.location.uri).version()
        for t in tables.all()
        if t.location.is_delta_table()
    }
    _edit(settings.catalog_dir, "population.residents", SOURCE[:-1] + ", native_place]", SOURCE)
    _edit(settings.catalog_dir, "population.residents", NATIVE_PLACE, "")
    catalog = Catalog.load(settings.catalog_dir)
    with pytest.raises(
        changes.BreakingChange,
        match=r"residents\.yaml: population\.residents: "
        r"breaking change refused \(item native_place removed\)",
    ):
        run(catalog, datetime.date(2026, 11, 4))
    after = {
        t.name: DeltaTable(t.location.uri).version()
        for t in tables.all()
        if t.location.is_delta_table()
    }
    assert after == before
    # Even past the register (say, its database was replaced), the tables refuse it: the
    # first stage's schema evolution step, before it writes anything.
    residents = catalog.get("population.residents")
    day4 = Interval.ending(datetime.datetime(2026, 11, 5, 2, tzinfo=datetime.UTC))
    with pytest.raises(
        SchemaChangeRefused, match=r"population\.residents_bronze: column\(s\) native_place"
    ):
        bronze.run(spark, resource=residents, interval=day4, settings=settings)
    with pytest.raises(
        SchemaChangeRefused, match=r"population\.residents: column\(s\) native_place"
    ):
        evolve_tables([TableSet(residents, settings.warehouse_location).silver])
    assert {
        t.name: DeltaTable(t.location.uri).version()
        for t in tables.all()
        if t.location.is_delta_table()
    } == before
