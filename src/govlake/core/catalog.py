"""The information-resource catalogue (政务信息资源目录): one YAML file per resource.

Every table, rule, publication and report is derived from these entries. Loading enforces
the sharing rules of 国发〔2016〕51号 and the local measures (see `shared/domain.md`); each
broken rule raises its own `CatalogRuleError` subclass naming the file, item and rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from govlake.core.errors import GovlakeError

Sharing = Literal["unconditional", "conditional", "not_shared"]
Purpose = Literal[
    "administrative_basis", "work_reference", "data_verification", "business_collaboration"
]
UpdateCycle = Literal["realtime", "hourly", "daily", "weekly", "monthly", "quarterly", "yearly"]
Category = Literal["base", "thematic", "department"]
SharingMethod = Literal["system_interface", "front_end_exchange", "online_query", "batch_download"]
OpenAttribute = Literal["open", "conditional_open", "not_open"]
CheckName = Literal[
    "citizen_id", "credit_code", "division_code", "not_future", "china_longitude", "china_latitude"
]
SharingClass = Literal["unconditional", "conditional"]
Severity = Literal["error", "warn"]
#: How an item reaches the open variant (开放数据脱敏, 石景山 art. 23, 32): as it is, masked,
#: generalised (a date to its year, a division code to its prefecture), or not at all.
OpenRule = Literal["keep", "mask", "generalise", "drop"]
#: How important a resource is (石景山 art. 31: backups periodic or real-time by importance).
Importance = Literal["core", "important", "general"]
#: Days between two backups of a resource's tables, per importance level.
BACKUP_DAYS: dict[str, int] = {"core": 1, "important": 7, "general": 30}

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
_TYPE = re.compile(r"^(string|integer|bigint|double|boolean|date|timestamp|decimal\(\d+,\d+\))$")

#: How long a resource may go without a publication before it is late, per update cycle.
CYCLE_HOURS: dict[str, float] = {
    "realtime": 1,
    "hourly": 1,
    "daily": 24,
    "weekly": 24 * 7,
    "monthly": 24 * 31,
    "quarterly": 24 * 92,
    "yearly": 24 * 366,
}

# Sharing types ordered from most to least open.
_OPENNESS = {"unconditional": 0, "conditional": 1, "not_shared": 2}


class CatalogError(GovlakeError, ValueError):
    """A catalogue file cannot be read or does not describe a valid resource."""


class CatalogRuleError(CatalogError):
    """A catalogue entry breaks one of the sharing rules."""

    rule = "catalogue rule"

    def __init__(self, path: Path | str, resource: str, item: str | None, detail: str):
        self.path = str(path)
        self.resource = resource
        self.item = item
        self.detail = detail
        where = f"{resource}.{item}" if item else resource
        super().__init__(f"{self.path}: {where}: {self.rule}: {detail}")


class NotSharedWithoutLegalBasis(CatalogRuleError):
    rule = "not_shared needs a legal basis (51号 art. 10)"


class BaseItemNotUnconditional(CatalogRuleError):
    rule = "base items are shared unconditionally (51号 art. 10, 石景山 art. 2)"


class PiiUnconditional(CatalogRuleError):
    rule = "personal-privacy (pii) items are never unconditional (宝鸡 art. 15)"


class AuthorityError(CatalogRuleError):
    rule = "every item has exactly one authority that supplies it (一数一源, 51号 art. 5)"


class KeyError_(CatalogRuleError):
    rule = "a key exists, names declared items, and every key item is required"


class PiiOpenedRaw(CatalogRuleError):
    rule = "personal-privacy (pii) items are never opened raw (石景山 art. 23, 32)"


class OpenTermsError(CatalogRuleError):
    rule = "open data carries a usage notice, a licence and per-item de-identification rules"


class Steward(BaseModel):
    """The provider's named data steward: receives quality reports and verification requests."""

    model_config = ConfigDict(extra="forbid")
    name: str
    email: str
    phone: str | None = None


class Policy(BaseModel):
    """How strict one quality dimension is for a resource, and what a failure does:
    `error` holds the data back from publication, `warn` publishes and reports."""

    model_config = ConfigDict(extra="forbid")
    severity: Severity


class ShareRule(Policy):
    """A row-level dimension: at least `mostly` of the rows must keep the rule."""

    mostly: float = Field(ge=0, le=1)


class VolumePolicy(Policy):
    """Row count may differ from the previous one by at most `tolerance` (a share)."""

    tolerance: float = Field(ge=0)


class ConsistencyPolicy(Policy):
    """At most `max_share` of the rows may carry an open cross-check finding."""

    max_share: float = Field(ge=0, le=1)


class FreshnessPolicy(Policy):
    """The newest value of `item` (a record time) lies at most `max_age_days` before the
    extract's as-of date."""

    item: str
    max_age_days: int = Field(gt=0)


class QualityPolicy(BaseModel):
    """The quality expectations of a resource (51号 art. 13: completeness, accuracy,
    timeliness, usability, consistency). Every field has a platform default."""

    model_config = ConfigDict(extra="forbid")
    completeness: ShareRule = ShareRule(mostly=0.99, severity="error")
    validity: ShareRule = ShareRule(mostly=0.98, severity="error")
    uniqueness: ShareRule = ShareRule(mostly=0.99, severity="error")
    volume: VolumePolicy = VolumePolicy(tolerance=0.2, severity="warn")
    consistency: ConsistencyPolicy = ConsistencyPolicy(max_share=0.05, severity="warn")
    timeliness: Policy = Policy(severity="warn")
    freshness: FreshnessPolicy | None = None


class OpenTerms(BaseModel):
    """What the public is told about an open resource (石景山 ch. 6): the usage notice
    (开放数据使用须知) and the licence it is published under."""

    model_config = ConfigDict(extra="forbid")
    licence: str = Field(description="licence name, e.g. CC-BY-4.0")
    licence_url: str = Field(description="where the licence text is")
    notice: str = Field(description="usage notice (使用须知) shown with the open variant")
    keywords: list[str] = Field(default_factory=list)


class Operation(BaseModel):
    """How an increment marks what happened to each record: a column of the extract whose
    value says, for instance, `I` (inserted), `U` (updated) or `D` (removed)."""

    model_config = ConfigDict(extra="forbid")
    column: str = Field(description="the extract's column that carries the operation")
    removal: list[str] = Field(
        min_length=1, description="values of that column that remove the record (e.g. [D])"
    )


class Delivery(BaseModel):
    """What one source's extracts are (全量 or 增量).

    - `increment` (the default): each extract carries the records that are new or changed;
      a record it does not carry stays as it is. With `operation`, a record whose operation
      value is one of `removal` is removed.
    - `full`: each extract is the source's whole current holding: a record that the last
      full extract no longer carries is removed.

    Only the resource's responsible provider removes records: it is the authority for their
    existence (another source only supplies items of records it holds)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["increment", "full"] = "increment"
    operation: Operation | None = None

    @property
    def removes(self) -> bool:
        return self.kind == "full" or self.operation is not None


class Department(BaseModel):
    """A provider department (提供部门), from `schemas/departments.yaml`."""

    model_config = ConfigDict(extra="forbid")
    code: str
    name: str = Field(description="the department's name")
    steward: Steward


class Item(BaseModel):
    """One data item (数据项): a column of the resource."""

    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    type: str = "string"
    required: bool = False
    pii: bool = Field(default=False, description="personal privacy (个人隐私)")
    base_item: bool = Field(default=False, description="基础信息项: shared unconditionally")
    sharing: Sharing | None = Field(
        default=None, description="default: unconditional for base items, else the resource's"
    )
    authority: str = Field(description="the one provider whose value is authoritative")
    check: CheckName | None = None
    values: list[str] | None = Field(default=None, description="allowed values (code list)")
    minimum: float | None = None
    maximum: float | None = None
    legal_basis: str | None = None
    description: str | None = None
    mostly: float | None = Field(
        default=None, ge=0, le=1, description="overrides the resource's completeness/validity share"
    )
    severity: Severity | None = Field(
        default=None, description="overrides the resource's completeness/validity severity"
    )
    open: OpenRule | None = Field(
        default=None,
        description="how the item reaches the open variant; default: keep for unconditional "
        "items that are not pii, drop for the rest",
    )

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"item name {value!r} is not a lower_snake_case identifier")
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        value = value.replace(" ", "")
        if not _TYPE.match(value):
            raise ValueError(f"unknown item type {value!r}")
        return value

    @field_validator("authority", mode="before")
    @classmethod
    def _one_authority(cls, value: object) -> object:
        if isinstance(value, list):
            raise ValueError(
                f"authority must name exactly one provider, got {len(value)}: {value} (一数一源)"
            )
        return value


class Resource(BaseModel):
    """One catalogued information resource (政务信息资源), e.g. `population.residents`."""

    model_config = ConfigDict(extra="forbid")
    theme: str
    name: str
    title: str = Field(description="English title with the Chinese name")
    category: Category
    classification: str = Field(description="catalogue classification (资源分类)")
    provider: str = Field(description="responsible provider department (提供部门)")
    steward: Steward
    update_cycle: UpdateCycle
    sharing: Sharing
    legal_basis: str | None = None
    purposes: list[Purpose]
    sharing_method: list[SharingMethod]
    usage_requirements: str
    open_attribute: OpenAttribute
    open: OpenTerms | None = Field(
        default=None, description="usage notice and licence; required when open_attribute is open"
    )
    importance: Importance = Field(
        default="general", description="sets how often its tables are backed up (BACKUP_DAYS)"
    )
    version: int = Field(
        default=1,
        ge=1,
        description="resource version: a breaking change of items or key publishes a new "
        "version, with its own tables",
    )
    format: str = "structured table"
    key: list[str]
    grain: str
    description: str | None = None
    reviewed_on: date | None = None
    sources: dict[str, list[str]] = Field(
        description="provider -> items its extract supplies (the key is always supplied)"
    )
    deliveries: dict[str, Delivery] = Field(
        default_factory=dict,
        description="source -> what its extracts are (full or increment, and how an "
        "increment marks a removed record); a source not listed delivers increments that "
        "remove nothing",
    )
    items: list[Item]
    quality: QualityPolicy = Field(default_factory=QualityPolicy)

    @field_validator("grain")
    @classmethod
    def _grain(cls, value: str) -> str:
        if not value.lower().startswith("one row per"):
            raise ValueError("grain must say what one row is: 'one row per …'")
        return value

    # -- derived ------------------------------------------------------------------------------
    @property
    def qualified_name(self) -> str:
        return f"{self.theme}.{self.name}"

    @property
    def table_base(self) -> str:
        """The name its tables start with: `name`, then `name_v2`, … for later versions."""
        return self.name if self.version == 1 else f"{self.name}_v{self.version}"

    @property
    def backup_days(self) -> int:
        return BACKUP_DAYS[self.importance]

    def open_rule(self, item: Item) -> OpenRule:
        """How `item` reaches the open variant: as declared, else kept when it is an
        unconditional item that is not pii, else dropped."""
        if item.open is not None:
            return item.open
        return "keep" if self.sharing_of(item) == "unconditional" and not item.pii else "drop"

    @property
    def is_open(self) -> bool:
        """Published to the public as an open variant (开放属性 open)."""
        return self.open_attribute == "open"

    def open_items(self) -> list[tuple[str, OpenRule]]:
        """The items of the open variant, in catalogue order, with their rules."""
        return [
            (item.name, rule) for item in self.items if (rule := self.open_rule(item)) != "drop"
        ]

    @cached_property
    def item_map(self) -> dict[str, Item]:
        return {item.name: item for item in self.items}

    def item(self, name: str) -> Item:
        return self.item_map[name]

    def sharing_of(self, item: Item) -> Sharing:
        """An item's sharing type: as declared, else unconditional for base items (they must
        be), else the resource's type."""
        if item.sharing is not None:
            return item.sharing
        return "unconditional" if item.base_item else self.sharing

    @property
    def providers(self) -> list[str]:
        return list(self.sources)

    def supplied_items(self, provider: str) -> list[str]:
        """The items in `provider`'s extract, key first."""
        listed = self.sources.get(provider, [])
        return [*self.key, *(name for name in listed if name not in self.key)]

    def delivery(self, provider: str) -> Delivery:
        """What `provider`'s extracts are: as catalogued, else increments removing nothing."""
        return self.deliveries.get(provider) or Delivery()

    def authoritative_items(self, provider: str) -> list[str]:
        """Non-key items whose authority is `provider`: only these update silver."""
        return [
            name
            for name in self.supplied_items(provider)
            if name not in self.key and self.item(name).authority == provider
        ]

    def crosscheck_items(self, provider: str) -> list[str]:
        """Items `provider` supplies but does not govern: used to cross-check, never to write."""
        return [
            name
            for name in self.supplied_items(provider)
            if name not in self.key and self.item(name).authority != provider
        ]

    def class_items(self, sharing_class: SharingClass) -> list[str]:
        """Items of a published table: the key plus the items that class may see."""
        allowed = {
            "unconditional": {"unconditional"},
            "conditional": {"unconditional", "conditional"},
        }
        chosen = [
            item.name
            for item in self.items
            if item.name not in self.key and self.sharing_of(item) in allowed[sharing_class]
        ]
        return [*self.key, *chosen]

    @property
    def sharing_classes(self) -> list[SharingClass]:
        """Published classes: unconditional if it has unconditional items, conditional if it
        has conditional items (otherwise it would repeat the unconditional table)."""
        if self.sharing == "not_shared":
            return []
        shares = {self.sharing_of(i) for i in self.items if i.name not in self.key}
        classes: list[SharingClass] = []
        if "unconditional" in shares:
            classes.append("unconditional")
        if "conditional" in shares:
            classes.append("conditional")
        return classes


def check_rules(resource: Resource, path: Path | str = "<memory>") -> None:
    """Raise the first broken sharing rule of `resource` as its own error type."""
    name = resource.qualified_name
    if not resource.key:
        raise KeyError_(path, name, None, "no key declared")
    for key in resource.key:
        if key not in resource.item_map:
            raise KeyError_(path, name, key, "key names an item that is not declared")
        if not resource.item(key).required:
            raise KeyError_(path, name, key, "key item must be required: true")
    if resource.sharing == "not_shared" and not resource.legal_basis:
        raise NotSharedWithoutLegalBasis(
            path, name, None, "sharing is not_shared but legal_basis is empty"
        )
    for provider, listed in resource.sources.items():
        for item_name in listed:
            if item_name not in resource.item_map:
                raise AuthorityError(
                    path, name, item_name, f"source {provider} supplies an undeclared item"
                )
    _check_deliveries(resource, path)
    freshness = resource.quality.freshness
    if freshness is not None:
        if freshness.item not in resource.item_map:
            raise CatalogRuleError(
                path, name, freshness.item, "quality.freshness names an item that is not declared"
            )
        if resource.item(freshness.item).type not in ("date", "timestamp"):
            raise CatalogRuleError(
                path, name, freshness.item, "quality.freshness needs a date or timestamp item"
            )
    for item in resource.items:
        sharing = resource.sharing_of(item)
        if sharing == "not_shared" and not (item.legal_basis or resource.legal_basis):
            raise NotSharedWithoutLegalBasis(
                path, name, item.name, "item is not_shared but has no legal_basis"
            )
        if _OPENNESS[sharing] < _OPENNESS[resource.sharing] and resource.sharing == "not_shared":
            raise NotSharedWithoutLegalBasis(
                path, name, item.name, "a not_shared resource cannot share an item"
            )
        if item.base_item and sharing != "unconditional":
            raise BaseItemNotUnconditional(
                path, name, item.name, f"base_item: true but sharing is {sharing}"
            )
        if item.pii and sharing == "unconditional":
            raise PiiUnconditional(path, name, item.name, "pii: true but sharing is unconditional")
        _check_open_rule(resource, item, path)
        if not item.authority:
            raise AuthorityError(path, name, item.name, "no authority named")
        if item.authority not in resource.sources:
            raise AuthorityError(
                path, name, item.name, f"authority {item.authority} is not among the sources"
            )
        if item.name not in resource.supplied_items(item.authority):
            raise AuthorityError(
                path, name, item.name, f"authority {item.authority} does not supply this item"
            )


def _check_deliveries(resource: Resource, path: Path | str) -> None:
    name = resource.qualified_name
    for provider, delivery in resource.deliveries.items():
        if provider not in resource.sources:
            raise AuthorityError(path, name, None, f"deliveries names {provider}, not a source")
        if delivery.removes and provider != resource.provider:
            raise AuthorityError(
                path,
                name,
                None,
                f"deliveries: {provider} is not the responsible provider "
                f"({resource.provider}), so its extracts cannot remove records "
                "(kind: full or an operation column)",
            )
        column = delivery.operation.column if delivery.operation else None
        if column is not None and (column in resource.item_map or not _IDENTIFIER.match(column)):
            raise CatalogRuleError(
                path,
                name,
                column,
                f"deliveries: {provider}'s operation column must be a lower-case name "
                "that is not an item",
            )


def _check_open_rule(resource: Resource, item: Item, path: Path | str) -> None:
    name = resource.qualified_name
    if item.pii and item.open == "keep":
        raise PiiOpenedRaw(path, name, item.name, "pii: true but open: keep")
    if item.open == "generalise" and not (
        item.type in ("date", "timestamp") or item.check == "division_code"
    ):
        raise OpenTermsError(
            path, name, item.name,
            "open: generalise applies to dates (to the year) and division codes (to the "
            f"prefecture), not to a {item.type} item",
        )  # fmt: skip
    if item.open == "mask" and item.type != "string":
        raise OpenTermsError(
            path, name, item.name, f"open: mask applies to strings, not {item.type}"
        )


def check_open(resource: Resource, path: Path | str = "<memory>") -> None:
    """An open resource has its usage notice and licence, and publishes at least its key."""
    name = resource.qualified_name
    if resource.open_attribute == "open" and resource.open is None:
        raise OpenTermsError(path, name, None, "open_attribute is open but `open:` is missing")
    if resource.is_open and not resource.open_items():
        raise OpenTermsError(path, name, None, "every item is dropped from the open variant")


def validation_problems(exc: ValidationError) -> str:
    """`field.path: message; …` for each problem pydantic found."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


def _yaml_mapping(path: Path, *, what: str, not_a_mapping: str) -> dict[str, Any]:
    """The mapping in the YAML file `path`; a CatalogError saying it cannot read `what`, or
    `not_a_mapping` when the file holds something else."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: {not_a_mapping}")
    return raw


def load_resource(path: Path, *, theme: str | None = None) -> Resource:
    """Load and check one catalogue file `schemas/<theme>/<resource>.yaml`."""
    raw = _yaml_mapping(
        path, what="catalogue entry", not_a_mapping="a catalogue entry must be a mapping"
    )
    raw.setdefault("theme", theme or path.parent.name)
    raw.setdefault("name", path.stem)
    if raw["theme"] != (theme or path.parent.name) or raw["name"] != path.stem:
        raise CatalogError(
            f"{path}: declares {raw['theme']}.{raw['name']} but lives at "
            f"{path.parent.name}/{path.name}"
        )
    try:
        resource = Resource.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise CatalogError(f"{path}: {problems}") from exc
    check_rules(resource, path)
    check_open(resource, path)
    return resource


DEPARTMENTS_FILE = "departments.yaml"


def load_departments(path: Path) -> dict[str, Department]:
    """The provider departments and their stewards (`schemas/departments.yaml`)."""
    raw = _yaml_mapping(
        path,
        what="the department list",
        not_a_mapping="the department list must map codes to departments",
    )
    departments = {}
    for code, entry in raw.items():
        try:
            departments[code] = Department.model_validate({"code": code, **(entry or {})})
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise CatalogError(f"{path}: {code}: {problems}") from exc
    return departments


class Catalog:
    """All catalogued resources, keyed by `theme.resource`, and the provider departments."""

    def __init__(self, resources: list[Resource], departments: dict[str, Department] | None = None):
        self.resources = {r.qualified_name: r for r in resources}
        self.departments = departments or {}

    @classmethod
    def load(cls, directory: Path) -> Catalog:
        files = sorted(directory.glob("*/*.yaml"))
        if not files:
            raise CatalogError(f"{directory}: no catalogue entries (expected <theme>/<name>.yaml)")
        resources = [load_resource(f) for f in files]
        departments_file = directory / DEPARTMENTS_FILE
        departments = load_departments(departments_file) if departments_file.exists() else {}
        if departments:
            for resource in resources:
                for provider in resource.providers:
                    if provider not in departments:
                        raise CatalogRuleError(
                            departments_file,
                            resource.qualified_name,
                            None,
                            f"provider {provider} is not a registered department "
                            f"(every provider names a steward)",
                        )
        return cls(resources, departments)

    @property
    def providers(self) -> list[str]:
        """Every provider department named by a catalogue entry, sorted."""
        return sorted({p for r in self for p in r.providers})

    def department(self, code: str) -> Department:
        """The department `code`; without a department list, the steward of a resource it is
        responsible for stands in."""
        if code in self.departments:
            return self.departments[code]
        for resource in self:
            if resource.provider == code:
                return Department(code=code, name=code, steward=resource.steward)
        raise CatalogError(f"unknown provider department {code!r}; known: {self.providers}")

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.resources.values())

    def __len__(self) -> int:
        return len(self.resources)

    @property
    def themes(self) -> list[str]:
        return sorted({r.theme for r in self})

    def get(self, name: str) -> Resource:
        try:
            return self.resources[name]
        except KeyError:
            known = ", ".join(sorted(self.resources))
            raise CatalogError(f"unknown resource {name!r}; catalogued: {known}") from None

    def select(self, name: str | None) -> list[Resource]:
        return list(self) if name is None else [self.get(name)]


def grace(resource: Resource, fraction: float) -> timedelta:
    """How long after its due time a publication still counts as `due`, not `overdue`:
    a share of the cycle, at least one hour."""
    return timedelta(hours=max(1.0, CYCLE_HOURS[resource.update_cycle] * fraction))


_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
_INTEGERS = {"integer": 10, "bigint": 19}  # decimal digits each holds


def widens(old: str, new: str) -> bool:
    """Whether every value of type `old` is a value of type `new` (Delta's type widening:
    integer → bigint, integers → double or a wide enough decimal, decimal → wider decimal,
    date → timestamp)."""
    if old == new:
        return True
    if old == "integer" and new in ("bigint", "double"):
        return True
    if old == "date" and new == "timestamp":
        return True
    target = _DECIMAL.match(new)
    if old in _INTEGERS and target:
        precision, scale = int(target[1]), int(target[2])
        return precision - scale >= _INTEGERS[old]
    source = _DECIMAL.match(old)
    if source and target:
        p1, s1, p2, s2 = int(source[1]), int(source[2]), int(target[1]), int(target[2])
        return s2 >= s1 and p2 - s2 >= p1 - s1
    return False
