"""The open catalogue (开放数据目录, 石景山 ch. 6) as DCAT-AP JSON-LD, for data portals to harvest
(CKAN's ckanext-dcat RDF harvester reads it as `json-ld`).

One `dcat:Catalog` published by the competent authority (`Settings.publisher_*`), with one
`dcat:Dataset` per open resource (开放属性 open) and one CSV `dcat:Distribution` each: the
open variant served by the sharing server under `Settings.open_endpoint`. Resources that are
not open are not in it. What ckanext-dcat's DCAT-AP profile reads is all there: dataset IRI
(its harvest guid), title, description, keywords, identifier, publisher (`foaf:name`),
contact point (`vcard:fn`, `vcard:hasEmail`), frequency, language, theme, issued/modified;
per distribution title, description, download and access URL, format and media type,
licence and rights (the usage notice). Vocabularies are the EU authority tables DCAT-AP
names (frequency, language, file type, data theme, access right, country).

Publication times come from `ops.publications` (sharing class `open`), read with delta-rs so
that exporting needs no engine; without publications the dates are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deltalake import DeltaTable

from govlake.core.catalog import Catalog, Resource
from govlake.core.settings import Settings
from govlake.lake.reads import query_delta
from govlake.lake.tables import Table, TableSet, open_type, ops_tables

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
MEDIA_TYPE = "application/ld+json"

_EU = "http://publications.europa.eu/resource/authority"
#: Update cycle (更新周期) → EU frequency authority table.
FREQUENCY = {
    "realtime": f"{_EU}/frequency/UPDATE_CONT",
    "hourly": f"{_EU}/frequency/HOURLY",
    "daily": f"{_EU}/frequency/DAILY",
    "weekly": f"{_EU}/frequency/WEEKLY",
    "monthly": f"{_EU}/frequency/MONTHLY",
    "quarterly": f"{_EU}/frequency/QUARTERLY",
    "yearly": f"{_EU}/frequency/ANNUAL",
}
#: Theme database → EU data theme; others are government and public sector.
DATA_THEME = {
    "population": f"{_EU}/data-theme/SOCI",
    "legal_entity": f"{_EU}/data-theme/ECON",
    "geospatial": f"{_EU}/data-theme/REGI",
    "credit": f"{_EU}/data-theme/GOVE",
}
DEFAULT_DATA_THEME = f"{_EU}/data-theme/GOVE"
LANGUAGE = f"{_EU}/language/ZHO"
COUNTRY = f"{_EU}/country/CHN"
PUBLIC = f"{_EU}/access-right/PUBLIC"
CSV_FORMAT = f"{_EU}/file-type/CSV"
CSV_MEDIA_TYPE = "http://www.iana.org/assignments/media-types/text/csv"

#: How each de-identification rule is described to the public.
RULE_TEXT = {
    "keep": "as registered",
    "mask": "masked",
    "generalise": "generalised",
}


@dataclass(frozen=True)
class OpenLinks:
    """Where the public finds one open table, under the open endpoint."""

    table: Table
    endpoint: str

    @property
    def page(self) -> str:
        """The table's notice: usage notice, licence, columns and rules (JSON)."""
        return f"{self.endpoint}/{self.table.database}/{self.table.name}"

    @property
    def download(self) -> str:
        return f"{self.page}.csv"

    @property
    def schema(self) -> str:
        """The CSV's table schema (Frictionless Table Schema JSON)."""
        return f"{self.page}/schema.json"

    @property
    def dataset(self) -> str:
        return f"{self.page}#dataset"

    @property
    def distribution(self) -> str:
        return f"{self.page}#csv"

    @property
    def notice(self) -> str:
        return f"{self.page}#notice"


def links(resource: Resource, settings: Settings) -> OpenLinks:
    table = TableSet(resource, settings.warehouse_location).open
    return OpenLinks(table, settings.open_endpoint.rstrip("/"))


@dataclass(frozen=True)
class OpenPublication:
    """The open versions of one resource in `ops.publications`."""

    first: datetime  # naive UTC
    last: datetime  # naive UTC
    version: int  # the latest open version
    rows: int  # rows of the latest open version


def open_publications(settings: Settings) -> dict[str, OpenPublication]:
    """Per resource, its first and latest open publication (empty before any)."""
    _, publications = ops_tables(settings.warehouse_location)
    location = publications.location
    if not location.is_delta_table():
        return {}
    table = DeltaTable(location.uri, storage_options=location.storage_options())
    rows = query_delta(
        table,
        "SELECT resource, version, published_at, rows FROM publications "
        "WHERE sharing_class = 'open'",
        name="publications",
    ).to_pylist()
    found: dict[str, OpenPublication] = {}
    for row in sorted(rows, key=lambda r: (r["published_at"], r["version"])):
        at = _naive_utc(row["published_at"])
        earlier = found.get(row["resource"])
        found[row["resource"]] = OpenPublication(
            first=earlier.first if earlier else at,
            last=at,
            version=int(row["version"]),
            rows=int(row["rows"]),
        )
    return found


def _naive_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _when(moment: datetime) -> dict[str, str]:
    return {"@value": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "@type": "xsd:dateTime"}


def _iri(value: str) -> dict[str, str]:
    return {"@id": value}


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values if v and v.strip()))


#: What the public is told of `record_id`.
RECORD_TEXT = (
    "a pseudonym of the record, the same in every version; it cannot be computed from the "
    "record's key without the platform's secret, nor a key found from it"
)


def columns(resource: Resource) -> list[dict[str, str]]:
    """The open variant's columns: name, title, type and how each was de-identified."""
    found = [{"name": "record_id", "title": "Record pseudonym (记录假名)", "type": "string",
              "rule": "pseudonym", "description": RECORD_TEXT}]  # fmt: skip
    for name, rule in resource.open_items():
        item = resource.item(name)
        if rule == "generalise":
            how = "generalised to the year" if item.type in ("date", "timestamp") else (
                "generalised to the prefecture-level division code"
            )  # fmt: skip
        else:
            how = RULE_TEXT[rule]
        found.append({"name": name, "title": item.title, "type": open_type(item.type, rule),
                      "rule": rule, "description": how})  # fmt: skip
    return found


def _description(resource: Resource) -> str:
    parts = [resource.description or resource.title, f"Grain: {resource.grain}."]
    published = ", ".join(f"{c['name']} ({c['description']})" for c in columns(resource))
    parts.append(f"Open items: {published}.")
    return " ".join(" ".join(p.split()) for p in parts)


def _agent(iri: str, name: str, **more: Any) -> dict[str, Any]:
    return {"@id": iri, "@type": ["foaf:Agent", "foaf:Organization"], "foaf:name": name, **more}


def dataset(
    resource: Resource,
    catalog: Catalog,
    settings: Settings,
    publication: OpenPublication | None = None,
) -> dict[str, Any]:
    """The `dcat:Dataset` node of one open resource, with its CSV distribution."""
    terms = resource.open
    if not resource.is_open or terms is None:
        raise ValueError(f"{resource.qualified_name} is not open: it is not in the open catalogue")
    at = links(resource, settings)
    department = catalog.department(resource.provider)
    notice = " ".join(terms.notice.split())
    keywords = _unique(
        [*terms.keywords, resource.theme, resource.name, *resource.classification.split("/")]
    )
    distribution: dict[str, Any] = {
        "@id": at.distribution,
        "@type": "dcat:Distribution",
        "dct:title": f"{resource.title}: open variant (CSV)",
        "dct:description": (
            f"De-identified open variant, UTF-8 CSV with a header row, the latest published "
            f"version. {resource.grain[0].upper()}{resource.grain[1:]}."
        ),
        "dcat:accessURL": _iri(at.page),
        "dcat:downloadURL": _iri(at.download),
        "dct:format": _iri(CSV_FORMAT),
        "dcat:mediaType": _iri(CSV_MEDIA_TYPE),
        "dct:license": {
            "@id": terms.licence_url,
            "@type": "dct:LicenseDocument",
            "dct:title": terms.licence,
        },
        "dct:rights": {"@id": at.notice, "@type": "dct:RightsStatement", "rdfs:label": notice},
        "dct:conformsTo": {
            "@id": at.schema,
            "@type": "dct:Standard",
            "dct:title": f"Table schema of {at.table.qualified_name}",
        },
        "dct:language": _iri(LANGUAGE),
    }
    node: dict[str, Any] = {
        "@id": at.dataset,
        "@type": "dcat:Dataset",
        "dct:identifier": resource.qualified_name,
        "dct:title": resource.title,
        "dct:description": _description(resource),
        "dcat:keyword": keywords,
        "dcat:theme": _iri(DATA_THEME.get(resource.theme, DEFAULT_DATA_THEME)),
        "dct:publisher": _agent(
            f"{settings.publisher_url.rstrip('/')}/departments/{department.code}",
            department.name,
            **{"dct:identifier": department.code},
        ),
        "dcat:contactPoint": {
            "@type": ["vcard:Kind", "vcard:Individual"],
            "vcard:fn": f"{resource.steward.name} ({department.name})",
            "vcard:hasEmail": _iri(f"mailto:{resource.steward.email}"),
        },
        "dct:accrualPeriodicity": _iri(FREQUENCY[resource.update_cycle]),
        "dct:language": _iri(LANGUAGE),
        "dct:spatial": _iri(COUNTRY),
        "dct:accessRights": _iri(PUBLIC),
        "dcat:landingPage": {"@id": at.page, "@type": "foaf:Document"},
        "owl:versionInfo": str(resource.version),
        "dcat:distribution": [distribution],
    }
    if resource.steward.phone:
        node["dcat:contactPoint"]["vcard:hasTelephone"] = _iri(f"tel:{resource.steward.phone}")
    if publication is not None:
        node["dct:issued"] = distribution["dct:issued"] = _when(publication.first)
        node["dct:modified"] = distribution["dct:modified"] = _when(publication.last)
    return node


def catalog_document(
    catalog: Catalog,
    settings: Settings,
    *,
    publications: Mapping[str, OpenPublication] | None = None,
) -> dict[str, Any]:
    """The open catalogue as a DCAT-AP JSON-LD document (a `dcat:Catalog` with its datasets).

    `publications` defaults to what `ops.publications` holds."""
    if publications is None:
        publications = open_publications(settings)
    opened = sorted((r for r in catalog if r.is_open), key=lambda r: r.qualified_name)
    home = settings.publisher_url.rstrip("/")
    document: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": f"{settings.open_endpoint.rstrip('/')}/catalog.jsonld",
        "@type": "dcat:Catalog",
        "dct:title": f"Open data catalogue (政务数据开放目录) of {settings.publisher_name}",
        "dct:description": (
            "Government information resources opened to the public (开放数据), de-identified "
            "(脱敏) per data item and published as CSV with a usage notice and a licence."
        ),
        "dct:publisher": _agent(
            f"{home}#publisher", settings.publisher_name, **{"foaf:homepage": _iri(home)}
        ),
        "foaf:homepage": {"@id": home, "@type": "foaf:Document"},
        "dct:language": _iri(LANGUAGE),
        "dct:spatial": _iri(COUNTRY),
        "dcat:themeTaxonomy": _iri(f"{_EU}/data-theme"),
        "dcat:dataset": [
            dataset(r, catalog, settings, publications.get(r.qualified_name)) for r in opened
        ],
    }
    times = [publications[r.qualified_name] for r in opened if r.qualified_name in publications]
    if times:
        document["dct:issued"] = _when(min(p.first for p in times))
        document["dct:modified"] = _when(max(p.last for p in times))
    return document
