"""The catalogue loads, derives what the pipeline needs, and refuses entries that break the
sharing rules, each with its own error naming file, item and rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from govlake.core import catalog as cat
from govlake.core.catalog import Catalog, CatalogRuleError, load_resource
from govlake_app.cli import app

REPO = Path(__file__).resolve().parents[2]
RESIDENTS = REPO / "schemas" / "population" / "residents.yaml"


def test_every_theme_and_required_resource_is_catalogued(catalog: Catalog) -> None:
    assert catalog.themes == ["credit", "geospatial", "legal_entity", "population"]
    for name in (
        "population.residents",
        "legal_entity.enterprises",
        "geospatial.admin_divisions",
        "geospatial.registered_addresses",
        "credit.records",
    ):
        resource = catalog.get(name)
        assert resource.grain.startswith("one row per")
        assert resource.steward.email


def test_residents_sources_and_authorities(catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    assert residents.key == ["citizen_id"]
    assert {i.authority for i in residents.items} == {
        "public_security",
        "civil_affairs",
        "human_resources",
    }
    # civil affairs governs marital status and only cross-checks the name.
    assert residents.authoritative_items("civil_affairs") == ["marital_status"]
    assert residents.crosscheck_items("civil_affairs") == ["name"]
    assert "marital_status" not in residents.class_items("unconditional")
    assert "marital_status" in residents.class_items("conditional")
    assert residents.sharing_classes == ["unconditional", "conditional"]


def test_credit_records_key_is_compound(catalog: Catalog) -> None:
    records = catalog.get("credit.records")
    assert records.key == ["credit_code", "decision_number"]
    assert "issuing_department" in records.item_map


def _write_variant(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(RESIDENTS.read_text(encoding="utf-8"))
    change(raw)
    target = tmp_path / "population" / "residents.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return target


def _item(raw: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(i for i in raw["items"] if i["name"] == name)


def _set_not_shared(raw: dict) -> None:  # type: ignore[type-arg]
    raw["sharing"] = "not_shared"
    for item in raw["items"]:
        item["sharing"] = "not_shared"
        item["base_item"] = False


CASES = [
    ("not_shared without legal basis", _set_not_shared, cat.NotSharedWithoutLegalBasis, None),
    (
        "base item made conditional",
        lambda raw: _item(raw, "gender").update(sharing="conditional"),
        cat.BaseItemNotUnconditional,
        "gender",
    ),
    (
        "pii item made unconditional",
        lambda raw: _item(raw, "marital_status").update(sharing="unconditional"),
        cat.PiiUnconditional,
        "marital_status",
    ),
    (
        "authority that does not supply the item",
        lambda raw: _item(raw, "marital_status").update(authority="human_resources"),
        cat.AuthorityError,
        "marital_status",
    ),
    (
        "authority that is not a source",
        lambda raw: _item(raw, "name").update(authority="taxation"),
        cat.AuthorityError,
        "name",
    ),
    ("no key", lambda raw: raw.update(key=[]), cat.KeyError_, None),
    (
        "key item not required",
        lambda raw: _item(raw, "citizen_id").update(required=False),
        cat.KeyError_,
        "citizen_id",
    ),
    ("key names unknown item", lambda raw: raw.update(key=["passport"]), cat.KeyError_, "passport"),
]


@pytest.mark.parametrize(("label", "change", "error", "item"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_violation_has_its_own_error(  # type: ignore[no-untyped-def]
    tmp_path: Path, label: str, change, error: type[cat.CatalogRuleError], item: str | None
) -> None:
    path = _write_variant(tmp_path, change)
    with pytest.raises(error) as caught:
        load_resource(path)
    assert caught.value.item == item
    assert caught.value.resource == "population.residents"
    assert str(path) in str(caught.value)
    assert caught.value.rule in str(caught.value)


def test_not_shared_with_legal_basis_loads(tmp_path: Path) -> None:
    def change(raw: dict) -> None:  # type: ignore[type-arg]
        _set_not_shared(raw)
        raw["legal_basis"] = "《中华人民共和国保守国家秘密法》第二十八条"

    resource = load_resource(_write_variant(tmp_path, change))
    assert resource.sharing_classes == []


def test_two_authorities_for_one_item_are_refused(tmp_path: Path) -> None:
    path = _write_variant(
        tmp_path,
        lambda raw: _item(raw, "name").update(authority=["public_security", "civil_affairs"]),
    )
    with pytest.raises(cat.CatalogError, match="exactly one provider"):
        load_resource(path)


def test_grain_must_say_what_one_row_is(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda raw: raw.update(grain="residents"))
    with pytest.raises(cat.CatalogError, match="one row per"):
        load_resource(path)


def test_cli_catalog_commands(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "300"})
    listed = runner.invoke(app, ["catalog", "list"])
    assert listed.exit_code == 0, listed.output
    assert "population.residents" in listed.output
    shown = runner.invoke(app, ["catalog", "show", "credit.records"])
    assert shown.exit_code == 0, shown.output
    assert "decision_number" in shown.output and "development_reform" in shown.output
    valid = runner.invoke(app, ["catalog", "validate"])
    assert valid.exit_code == 0 and "5 resources" in valid.output
    bad = _write_variant(tmp_path, lambda raw: _item(raw, "gender").update(sharing="conditional"))
    invalid = runner.invoke(app, ["catalog", "validate", str(bad.parents[1])])
    assert invalid.exit_code == 2
    assert "base items are shared unconditionally" in invalid.output


def test_every_provider_is_a_registered_department_with_a_steward(
    catalog: Catalog, tmp_path: Path
) -> None:
    assert catalog.providers == sorted(catalog.departments)
    assert catalog.department("taxation").steward.email.endswith("@taxation.gov.example")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    listed = tmp_path / "schemas" / "departments.yaml"
    text = listed.read_text(encoding="utf-8")
    listed.write_text(text.split("taxation:")[0], encoding="utf-8")
    with pytest.raises(CatalogRuleError, match="provider taxation is not a registered department"):
        Catalog.load(tmp_path / "schemas")


@pytest.mark.parametrize(
    ("quality", "message"),
    [
        ({"freshness": {"item": "gender", "max_age_days": 7, "severity": "warn"}},
         "needs a date or timestamp item"),
        ({"freshness": {"item": "updated_on", "max_age_days": 7, "severity": "warn"}},
         "names an item that is not declared"),
        ({"completeness": {"mostly": 1.5, "severity": "error"}}, "less than or equal to 1"),
        ({"volume": {"tolerance": 0.2, "severity": "block"}}, "'error' or 'warn'"),
    ],
)  # fmt: skip
def test_quality_policy_is_checked(tmp_path: Path, quality: dict, message: str) -> None:  # type: ignore[type-arg]
    path = _write_variant(tmp_path, lambda raw: raw.update(quality=quality))
    with pytest.raises(cat.CatalogError, match=message):
        load_resource(path)
