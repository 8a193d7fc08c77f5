"""The extract generator: realistic identifiers, overlap between departments, time, defects,
formats and reproducibility. No Spark: files are read back with csv and pyarrow."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest
from govlake_tools import generate as gen
from govlake_tools.generate import DEFECT_RULES, GeneratedExtract, GeneratorError, generate
from stdnum.cn import ric, uscc

from govlake.core import reference
from govlake.core.catalog import Catalog, Resource
from govlake.core.location import Location

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
AS_OF = datetime.date(2026, 3, 31)
ROWS = 20_000
DEFECT_RATE = 0.05

Rows = list[dict[str, str | None]]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(SCHEMAS)


def _read(extract: GeneratedExtract, encoding: str = "utf-8") -> Rows:
    text = Path(extract.location.uri).read_bytes().decode(encoding)
    # The generator never writes empty strings, so an empty CSV field is a missing value.
    return [
        {k: (v if v != "" else None) for k, v in row.items()}
        for row in csv.DictReader(io.StringIO(text, newline=""))
    ]


def _run(root: Path, **kwargs: object) -> dict[tuple[str, str], GeneratedExtract]:
    catalog = Catalog.load(SCHEMAS)
    options: dict[str, object] = {"rows": ROWS, "as_of": AS_OF, **kwargs}
    extracts = generate(catalog, Location.parse(root), **options)  # type: ignore[arg-type]
    return {(e.resource, e.provider): e for e in extracts}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], GeneratedExtract]:
    return _run(tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="module")
def clean_rows(clean: dict[tuple[str, str], GeneratedExtract]) -> dict[tuple[str, str], Rows]:
    return {key: _read(extract) for key, extract in clean.items()}


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], GeneratedExtract]:
    return _run(tmp_path_factory.mktemp("dirty"), defects=DEFECT_RATE)


# -- layout ------------------------------------------------------------------------------------
def test_one_extract_per_provider_with_the_catalogued_columns(
    catalog: Catalog, clean: dict[tuple[str, str], GeneratedExtract]
) -> None:
    expected = {(r.qualified_name, p) for r in catalog for p in r.providers}
    assert set(clean) == expected
    for (name, provider), extract in clean.items():
        resource = catalog.get(name)
        path = Path(extract.location.uri)
        assert path.parent.parts[-3:] == (resource.theme, resource.name, provider)
        assert path.name == f"{resource.name}_{provider}_20260331.csv"
        header = path.read_text(encoding="utf-8").splitlines()[0]
        assert header.replace('"', "").split(",") == resource.supplied_items(provider)
        assert extract.defects == {}
    assert not [p for p in path.parents[3].rglob("_*")], "temporary files left behind"


def test_row_counts(clean: dict[tuple[str, str], GeneratedExtract]) -> None:
    rows = {key: e.rows for key, e in clean.items()}
    assert rows["population.residents", "public_security"] == ROWS
    assert rows["legal_entity.enterprises", "market_regulation"] == ROWS // 10
    assert rows["geospatial.registered_addresses", "natural_resources"] == ROWS // 10
    assert rows["credit.records", "development_reform"] == ROWS // 5
    assert rows["geospatial.admin_divisions", "civil_affairs"] == 3511
    with_centroid = sum(d.longitude is not None for d in reference.divisions())
    assert rows["geospatial.admin_divisions", "natural_resources"] == with_centroid
    assert 0.82 < rows["population.residents", "civil_affairs"] / ROWS < 0.88
    assert 0.67 < rows["population.residents", "human_resources"] / ROWS < 0.73
    assert 0.80 < rows["legal_entity.enterprises", "taxation"] / (ROWS // 10) < 0.90


# -- realism -----------------------------------------------------------------------------------
def test_citizen_ids_are_valid_unique_and_match_gender_and_birth_date(
    clean_rows: dict[tuple[str, str], Rows],
) -> None:
    people = clean_rows["population.residents", "public_security"]
    ids = [str(p["citizen_id"]) for p in people]
    assert len(set(ids)) == len(ids)
    counties = {d.code for d in reference.divisions() if d.level == "county"}
    births = []
    for person, number in zip(people, ids, strict=True):
        assert re.fullmatch(r"\d{17}[\dX]", number)
        assert ric.calc_check_digit(number) == number[-1]
        assert number[:6] in counties
        assert ric.get_birth_date(number).isoformat() == person["birth_date"]
        assert person["gender"] == ("1" if int(number[16]) % 2 else "2")
        births.append(ric.get_birth_date(number))
    # stdnum also checks the birthplace against its own historical table; where it knows the
    # county the whole number must pass.
    known = [n for n in ids if _stdnum_knows_place(n)]
    assert len(known) > len(ids) // 10
    assert all(ric.is_valid(n) for n in known)
    ages = [(AS_OF - b).days / 365.25 for b in births]
    assert min(ages) >= 18 and max(ages) <= 87


def _stdnum_knows_place(number: str) -> bool:
    try:
        ric.get_birth_place(number)
    except Exception:
        return False
    return True


def test_credit_codes_are_valid_and_unique(clean_rows: dict[tuple[str, str], Rows]) -> None:
    firms = clean_rows["legal_entity.enterprises", "market_regulation"]
    codes = [str(f["credit_code"]) for f in firms]
    assert len(set(codes)) == len(codes)
    assert all(uscc.is_valid(c) and c.startswith("91") for c in codes)
    for key in clean_rows:
        for row in clean_rows[key]:
            if "credit_code" in row:
                assert uscc.is_valid(str(row["credit_code"]))
    # Registered addresses: one per enterprise, same codes, near the division centroid.
    addresses = clean_rows["geospatial.registered_addresses", "natural_resources"]
    assert [a["credit_code"] for a in addresses] == codes
    centroid = {d.code: (d.longitude, d.latitude) for d in reference.divisions()}
    for address, firm in zip(addresses, firms, strict=True):
        assert address["division_code"] == firm["division_code"]
        lon, lat = centroid[str(address["division_code"])]
        assert lon is not None and lat is not None
        assert abs(float(str(address["longitude"])) - lon) <= 0.05
        assert abs(float(str(address["latitude"])) - lat) <= 0.05
        assert str(address["geocoded_on"]) >= str(firm["established_on"])


def test_legal_representatives_are_residents(clean_rows: dict[tuple[str, str], Rows]) -> None:
    people = {p["citizen_id"]: p for p in clean_rows["population.residents", "public_security"]}
    firms = clean_rows["legal_entity.enterprises", "market_regulation"]
    for firm in firms:
        person = people[firm["legal_representative_id"]]
        assert firm["legal_representative"] == person["name"]
        assert str(firm["established_on"]) > str(person["birth_date"])
    statuses = Counter(f["status"] for f in firms)
    assert statuses.most_common(1)[0][0] == "operating"


def test_credit_records_describe_enterprises(clean_rows: dict[tuple[str, str], Rows]) -> None:
    names = {
        f["credit_code"]: f["name"]
        for f in clean_rows["legal_entity.enterprises", "market_regulation"]
    }
    records = clean_rows["credit.records", "development_reform"]
    pattern = re.compile(r"[\u4e00-\u9fff]+[罚许]〔(\d{4})〕\d{5,}号")
    for record in records:
        assert record["subject_name"] == names[record["credit_code"]]
        match = pattern.fullmatch(str(record["decision_number"]))
        assert match and match.group(1) == str(record["decision_date"])[:4]
        assert str(record["valid_until"]) > str(record["decision_date"])
        assert (record["penalty_amount"] is not None) == (record["record_type"] == "penalty")
    types = Counter(r["record_type"] for r in records)
    assert types["penalty"] > 0 and types["licence"] > 0


def test_every_extract_passes_its_catalogue_rules_without_defects(
    catalog: Catalog, clean_rows: dict[tuple[str, str], Rows]
) -> None:
    for (name, _), rows in clean_rows.items():
        assert _violations(catalog.get(name), rows) == Counter()
        for row in rows:
            for column, value in row.items():
                if (
                    catalog.get(name).item(column).type == "date"
                    and value
                    and column != "valid_until"
                ):
                    assert value <= AS_OF.isoformat(), (name, column, value)


def test_everything_is_gbk_encodable(clean_rows: dict[tuple[str, str], Rows]) -> None:
    for rows in clean_rows.values():
        for row in rows:
            for value in row.values():
                if value:
                    value.encode("gbk")


# -- overlap and disagreement ------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["civil_affairs", "human_resources"])
def test_other_departments_hold_subsets_with_a_few_disagreeing_names(
    clean_rows: dict[tuple[str, str], Rows], provider: str
) -> None:
    names = {
        p["citizen_id"]: p["name"] for p in clean_rows["population.residents", "public_security"]
    }
    rows = clean_rows["population.residents", provider]
    assert all(r["citizen_id"] in names for r in rows)
    disagree = [r for r in rows if r["name"] != names[r["citizen_id"]]]
    assert 0.002 < len(disagree) / len(rows) < 0.03
    for row in disagree:
        authority = str(names[row["citizen_id"]])
        name = str(row["name"])
        assert len(name) == len(authority)
        assert sum(a != b for a, b in zip(name, authority, strict=True)) == 1


def test_taxation_disagrees_on_few_enterprises(clean_rows: dict[tuple[str, str], Rows]) -> None:
    market = {
        f["credit_code"]: f for f in clean_rows["legal_entity.enterprises", "market_regulation"]
    }
    taxation = clean_rows["legal_entity.enterprises", "taxation"]
    assert all(t["credit_code"] in market for t in taxation)
    differing = [
        t
        for t in taxation
        if (t["name"], t["registered_capital"])
        != (market[t["credit_code"]]["name"], market[t["credit_code"]]["registered_capital"])
    ]
    assert 0 < len(differing) / len(taxation) < 0.04


def test_natural_resources_names_a_few_divisions_differently(
    clean_rows: dict[tuple[str, str], Rows],
) -> None:
    civil = {
        d["division_code"]: d["name"]
        for d in clean_rows["geospatial.admin_divisions", "civil_affairs"]
    }
    natural = clean_rows["geospatial.admin_divisions", "natural_resources"]
    differing = [d for d in natural if d["name"] != civil[d["division_code"]]]
    assert 0 < len(differing) / len(natural) < 0.02


# -- time --------------------------------------------------------------------------------------
def test_a_later_extract_changes_few_rows(
    tmp_path: Path, catalog: Catalog, clean_rows: dict[tuple[str, str], Rows]
) -> None:
    later = _run(
        tmp_path,
        as_of=AS_OF + datetime.timedelta(days=1),
        resources=["population.residents", "legal_entity.enterprises", "credit.records"],
    )
    expected = {
        ("population.residents", "public_security"): ({"residence_address"}, 0.01),
        ("population.residents", "civil_affairs"): ({"marital_status"}, 0.005),
        ("population.residents", "human_resources"): (
            {"social_insurance_status", "insured_since"},
            0.005,
        ),
        ("legal_entity.enterprises", "market_regulation"): ({"registered_capital", "status"}, 0.01),
        ("credit.records", "development_reform"): (set(), 0.0),
    }
    for key, (columns, share) in expected.items():
        resource = catalog.get(key[0])
        before = {tuple(r[k] for k in resource.key): r for r in clean_rows[key]}
        after = {tuple(r[k] for k in resource.key): r for r in _read(later[key])}
        assert before.keys() == after.keys(), key
        changed = [k for k in before if before[k] != after[k]]
        assert share / 3 <= len(changed) / len(before) <= share * 3, (key, len(changed))
        touched = {c for k in changed for c in before[k] if before[k][c] != after[k][c]}
        assert touched <= columns, key
        for row in after.values():
            for column, value in row.items():
                if resource.item(column).check == "not_future" and value:
                    assert value <= (AS_OF + datetime.timedelta(days=1)).isoformat()


# -- defects -----------------------------------------------------------------------------------
_CODES = reference.division_codes()


def _date(value: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        return None


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _violations(resource: Resource, rows: Rows) -> Counter[str]:
    """What a quality checker would find, per rule, from the catalogue alone."""
    found: Counter[str] = Counter()
    seen: set[tuple[str | None, ...]] = set()
    for row in rows:
        key = tuple(row[k] for k in resource.key)
        if key in seen:
            found["key_duplicate"] += 1
        seen.add(key)
        for column, value in row.items():
            item = resource.item(column)
            if value is None:
                if item.required:
                    found["required"] += 1
                continue
            if item.check == "citizen_id" and ric.calc_check_digit(value) != value[-1]:
                found["citizen_id"] += 1
            if item.check == "credit_code" and not uscc.is_valid(value):
                found["credit_code"] += 1
            if item.check == "division_code" and value not in _CODES:
                found["division_code"] += 1
            if item.values and value not in item.values:
                found["values"] += 1
            if item.type == "date":
                day = _date(value)
                if day is None:
                    found["type"] += 1
                elif item.check == "not_future" and day > AS_OF:
                    found["not_future"] += 1
            elif item.type == "double" or item.type.startswith("decimal"):
                number = _number(value)
                if number is None:
                    found["type"] += 1
                elif (
                    (item.check == "china_longitude" and not 73.5 <= number <= 135.1)
                    or (item.check == "china_latitude" and not 3.8 <= number <= 53.6)
                    or (item.minimum is not None and number < item.minimum)
                ):
                    found["range"] += 1
    return found


def test_defects_are_reported_exactly(
    catalog: Catalog, dirty: dict[tuple[str, str], GeneratedExtract]
) -> None:
    kinds: Counter[str] = Counter()
    for (name, provider), extract in dirty.items():
        assert set(extract.defects) <= set(DEFECT_RULES)
        rows = _read(extract)
        assert _violations(catalog.get(name), rows) == Counter(extract.defects), (name, provider)
        total = sum(extract.defects.values())
        expected = DEFECT_RATE * extract.rows
        assert abs(total - expected) < 4 * expected**0.5 + 3, (name, provider, total)
        kinds.update(extract.defects)
    assert set(kinds) == set(DEFECT_RULES)


def test_defects_only_use_kinds_the_columns_can_express(
    dirty: dict[tuple[str, str], GeneratedExtract],
) -> None:
    civil = dirty["population.residents", "civil_affairs"].defects
    assert not {"credit_code", "division_code", "not_future", "range", "type"} & set(civil)
    taxation = dirty["legal_entity.enterprises", "taxation"].defects
    assert not {"citizen_id", "not_future", "division_code"} & set(taxation)


def test_bad_check_characters_fail_stdnum(dirty: dict[tuple[str, str], GeneratedExtract]) -> None:
    people = _read(dirty["population.residents", "public_security"])
    bad = [p["citizen_id"] for p in people if not ric.is_valid(str(p["citizen_id"]))]
    wrong_check = [n for n in bad if ric.calc_check_digit(str(n)) != str(n)[-1]]
    assert (
        len(wrong_check) == dirty["population.residents", "public_security"].defects["citizen_id"]
    )
    firms = _read(dirty["legal_entity.enterprises", "market_regulation"])
    invalid = [f for f in firms if not uscc.is_valid(str(f["credit_code"]))]
    assert len(invalid) == dirty["legal_entity.enterprises", "market_regulation"].defects.get(
        "credit_code", 0
    )


# -- reproducibility and formats ---------------------------------------------------------------
def test_same_arguments_give_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    small = {"rows": 3000, "defects": DEFECT_RATE}
    first = _run(tmp_path / "a", **small)
    second = _run(tmp_path / "b", **small)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert [e.defects for e in first.values()] == [e.defects for e in second.values()]
    _run(tmp_path / "c", seed=8, **small)
    other = _digests(tmp_path / "c")
    same = [k for k, v in _digests(tmp_path / "a").items() if other[k] == v]
    assert same == [], same


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_chunk_size_does_not_change_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    # Small row groups, so that Parquet files span several of them.
    monkeypatch.setattr(gen, "PARQUET_ROW_GROUP", 1000)
    small = {"rows": 3000, "defects": DEFECT_RATE, "fmt": fmt}
    _run(tmp_path / "default", **small)
    _run(tmp_path / "small", chunk_rows=317, **small)
    assert _digests(tmp_path / "default") == _digests(tmp_path / "small")


def test_gbk_csv_has_the_same_rows(tmp_path: Path) -> None:
    resources = ["population.residents", "geospatial.admin_divisions"]
    utf8 = _run(tmp_path / "utf8", rows=2000, resources=resources)
    gbk = _run(tmp_path / "gbk", rows=2000, resources=resources, encoding="gbk")
    for key, extract in gbk.items():
        data = Path(extract.location.uri).read_bytes()
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        assert data.decode("gbk") == Path(utf8[key].location.uri).read_text(encoding="utf-8")


def test_gbk_jsonl_decodes_as_gbk(tmp_path: Path) -> None:
    extract = _run(
        tmp_path, rows=500, resources=["population.residents"], fmt="jsonl", encoding="gbk"
    )["population.residents", "public_security"]
    data = Path(extract.location.uri).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert data.decode("gbk").count("\n") == 500


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_hold_the_csv_rows(tmp_path: Path, catalog: Catalog, fmt: str) -> None:
    csvs = _run(tmp_path / "csv", rows=2000, defects=DEFECT_RATE)
    others = _run(tmp_path / fmt, rows=2000, defects=DEFECT_RATE, fmt=fmt)
    for key, extract in others.items():
        path = Path(extract.location.uri)
        assert path.suffix == f".{fmt}"
        columns = catalog.get(key[0]).supplied_items(key[1])
        if fmt == "parquet":
            table = pq.read_table(path)
        else:
            # Every value is a string (or null): no type inference.
            schema = pa.schema([(c, pa.string()) for c in columns])
            options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
            table = pajson.read_json(path, parse_options=options)
        assert table.column_names == columns
        assert all(str(t) == "string" for t in table.schema.types)
        assert table.to_pylist() == _read(csvs[key])
        assert table.num_rows == extract.rows


# -- API ---------------------------------------------------------------------------------------
def test_progress_adds_up_to_the_plan(tmp_path: Path, catalog: Catalog) -> None:
    seen: Counter[str] = Counter()
    generate(
        catalog,
        Location.parse(tmp_path),
        rows=1200,
        as_of=AS_OF,
        chunk_rows=500,
        on_progress=lambda label, done: seen.update({label: done}),
    )
    assert dict(seen) == gen.planned_rows(catalog, rows=1200)


def test_resources_selects_what_is_generated(tmp_path: Path, catalog: Catalog) -> None:
    extracts = generate(
        catalog, Location.parse(tmp_path), rows=10, as_of=AS_OF, resources=["credit.records"]
    )
    assert [(e.resource, e.provider, e.rows) for e in extracts] == [
        ("credit.records", "development_reform", 2)
    ]


@pytest.mark.parametrize(
    "bad",
    [{"rows": 0}, {"defects": 1.5}, {"fmt": "xlsx"}, {"encoding": "latin-1"}, {"chunk_rows": 0}],
)
def test_bad_arguments_are_refused(
    tmp_path: Path, catalog: Catalog, bad: dict[str, object]
) -> None:
    options: dict[str, object] = {"rows": 10, "as_of": AS_OF, **bad}
    with pytest.raises(GeneratorError):
        generate(catalog, Location.parse(tmp_path), **options)  # type: ignore[arg-type]
