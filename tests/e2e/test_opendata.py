"""The open variant (开放数据) and the DCAT-AP export: de-identification expressions on tiny
DataFrames; then a lakehouse whose catalogue opens `population.residents` with masking,
generalisation and drops, filled by the real pipeline on generated extracts and served by
the real sharing server, proving that no raw personal value reaches the public (read back
with delta-rs and through the public CSV route), that generalised values are right, that
open versions are recorded and audited, and that the DCAT export reads as ckanext-dcat reads
it and leads to the data."""

from __future__ import annotations

import datetime
import io
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import typer
import yaml
from deltalake import DeltaTable
from govlake_tools.generate import generate
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, RDFS, XSD
from sqlalchemy import select
from support import lake_settings
from typer.testing import CliRunner

from govlake.core.catalog import Catalog, PiiOpenedRaw
from govlake.core.net import free_port
from govlake.core.runs import Interval, StageCounts
from govlake.core.settings import Settings, get_settings
from govlake.governance import dcat
from govlake.lake.engine import get_spark
from govlake.lake.reads import read_delta
from govlake.lake.tables import TableSet, ops_tables
from govlake.platform import audit
from govlake.platform.database import AuditEntry, session
from govlake.sharing.server.app import create_app
from govlake.sharing.server.open_api import OPEN_ACTIONS
from govlake.transforms import opendata
from govlake_app import pipeline as ingest
from govlake_app.cli.catalog import catalog_export
from govlake_app.cli.serve import running
from jobs import publish

REPO = Path(__file__).resolve().parents[2]
DAY = datetime.date(2026, 11, 2)
END = datetime.datetime(2026, 11, 3, 2, tzinfo=datetime.UTC)
START = datetime.datetime(2026, 11, 4, 9)  # the server's clock
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
RESIDENTS, ENTERPRISES, CREDIT = (
    "population.residents",
    "legal_entity.enterprises",
    "credit.records",
)
#: The residents' rules in the test catalogue (the rest keep their defaults: gender and
#: ethnicity are kept, being unconditional and not pii).
RESIDENT_RULES = {
    "citizen_id": "mask",
    "name": "mask",
    "birth_date": "generalise",
    "household_division_code": "generalise",
    "residence_address": "mask",
    "marital_status": "drop",
    "social_insurance_status": "mask",
    "insured_since": "drop",
}
# rdflib's JSON-LD parser uses its own deprecated ConjunctiveGraph.
pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")
PII_OF_RESIDENTS = ("residence_address", "marital_status", "social_insurance_status",
                    "insured_since")  # fmt: skip


# -- reference masks, written independently of the engine expressions --------------------
def masked_text(value: str) -> str:
    masked = value[0] + "**" if len(value) >= 2 else "*"
    return masked + "*" if masked == value else masked


def masked_identifier(value: str) -> str:
    masked = value[:3] + "*" * (len(value) - 5) + value[-2:] if len(value) >= 12 else (
        "*" * max(len(value), 1)
    )  # fmt: skip
    return masked + "*" if masked == value else masked


# -- de-identification expressions on tiny DataFrames ---------------------------------------
VALUES = ["张三丰", "王芳", "李", "", None, "王**", "*", "欧阳娜娜", "ab"]
IDS = ["110101199003071234", "91110105MA01ABCD2X", "1234567890123", "12345678901", "110105",
       "", None, "110***********34"]  # fmt: skip


def _column(spark: SparkSession, values: list[str | None], expression: Any) -> list[Any]:
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string")
    return [row.out for row in df.select("i", expression.alias("out")).orderBy("i").collect()]


def test_text_mask_keeps_the_first_character_and_hides_the_length(
    shared_spark: SparkSession,
) -> None:
    out = _column(shared_spark, VALUES, opendata.mask(F.col("v")))
    assert out == [None if v is None else masked_text(v) for v in VALUES]
    assert out[:4] == ["张**", "王**", "*", "*"]
    assert out[VALUES.index("欧阳娜娜")] == "欧**"  # 4 characters, masked like 2
    for raw, masked in zip(VALUES, out, strict=True):
        assert raw is None or masked != raw  # an already masked value gets one more star


def test_identifier_mask_keeps_a_short_prefix_and_suffix(shared_spark: SparkSession) -> None:
    out = _column(shared_spark, IDS, opendata.mask(F.col("v"), "identifier"))
    assert out == [None if v is None else masked_identifier(v) for v in IDS]
    assert out[0] == "110*************34"
    assert out[3] == "*" * 11 and out[4] == "******"  # short codes: all stars
    assert out[-1] == "110***********34*"  # equal to its mask: one more star
    for raw, masked in zip(IDS, out, strict=True):
        assert raw is None or (masked != raw and len(masked) >= len(raw))


def test_generalise_dates_to_the_year_and_divisions_to_the_prefecture(
    shared_spark: SparkSession,
) -> None:
    codes = ["110105", "110100", "110000", "652901", " 440305", "4403", "44030A", None]
    assert _column(shared_spark, codes, opendata.prefecture(F.col("v"))) == [
        "110100", "110100", "110000", "652900", "440300", None, None, None,
    ]  # fmt: skip
    df = shared_spark.createDataFrame(
        [("1990-03-07",), ("2000-12-31",), (None,)], "v string"
    ).selectExpr("cast(v as date) as d", "cast(v as timestamp) as t")
    years = df.select(
        opendata.year_of(F.col("d")).alias("y"), opendata.year_of(F.col("t")).alias("yt")
    )
    assert dict(years.dtypes) == {"y": "int", "yt": "int"}
    assert [tuple(r) for r in years.collect()] == [(1990, 1990), (2000, 2000), (None, None)]


def test_open_variant_applies_each_items_rule(shared_spark: SparkSession, catalog: Catalog) -> None:
    resource = catalog.get(ENTERPRISES)
    silver = shared_spark.createDataFrame(
        [("91370305609249607X", "淄博昌信贸易有限公司", "刘琪悦", "230109198009093904", "60.00",
          "370305", "operating", "2003-09-02", "百货销售", "normal"),
         ("91511529563864603K", "宜宾兴通建筑工程有限公司", None, None, None, None, "revoked",
          None, None, None)],
        "credit_code string, name string, legal_representative string, "
        "legal_representative_id string, registered_capital string, division_code string, "
        "status string, established_on string, business_scope string, tax_status string",
    ).selectExpr("*", "cast(registered_capital as decimal(18,2)) as capital",
                 "cast(established_on as date) as established")  # fmt: skip
    silver = silver.drop("registered_capital", "established_on").withColumnsRenamed(
        {"capital": "registered_capital", "established": "established_on"}
    )
    opened = opendata.open_variant(silver, resource)
    assert opened.columns == [name for name, _ in resource.open_items()]
    assert "legal_representative_id" not in opened.columns and "tax_status" not in opened.columns
    assert dict(opened.dtypes)["established_on"] == "int"
    rows = [r.asDict() for r in opened.orderBy("credit_code").collect()]
    assert rows[0]["legal_representative"] == "刘**"
    assert (rows[0]["division_code"], rows[0]["established_on"]) == ("370300", 2003)
    assert rows[0]["business_scope"] == "百货销售" and rows[0]["name"] == "淄博昌信贸易有限公司"
    assert rows[1]["legal_representative"] is None  # nulls stay null
    assert (rows[1]["division_code"], rows[1]["established_on"]) == (None, None)
    with pytest.raises(ValueError, match="not open"):
        opendata.open_variant(silver, catalog.get(RESIDENTS))


# -- the catalogue rule ---------------------------------------------------------------------
def _open_residents(schemas: Path, rules: dict[str, str]) -> Path:
    """Make population.residents open in the catalogue copy `schemas`, with `rules`."""
    path = schemas / "population" / "residents.yaml"
    entry = yaml.safe_load(path.read_text(encoding="utf-8"))
    entry["open_attribute"] = "open"
    entry["open"] = {
        "licence": "CC-BY-4.0",
        "licence_url": "https://creativecommons.org/licenses/by/4.0/",
        "notice": "Resident statistics for research (人口统计开放数据): names and identity numbers "
        "are masked, birth dates given as years, household registration at prefecture level. "
        "Do not attempt to re-identify persons.",
        "keywords": ["人口", "population"],
    }
    for item in entry["items"]:
        if item["name"] in rules:
            item["open"] = rules[item["name"]]
    path.write_text(yaml.safe_dump(entry, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_a_pii_item_opened_raw_is_refused(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    path = _open_residents(schemas, {**RESIDENT_RULES, "residence_address": "keep"})
    with pytest.raises(PiiOpenedRaw) as refused:
        Catalog.load(schemas)
    assert (refused.value.path, refused.value.item) == (str(path), "residence_address")
    message = str(refused.value)
    assert str(path) in message and "population.residents.residence_address" in message
    assert "never opened raw" in message


# -- a lakehouse with an open residents resource, and the server ----------------------------
@dataclass
class Lake:
    settings: Settings
    catalog: Catalog
    spark: SparkSession
    base: str  # http://127.0.0.1:port
    reopened: StageCounts  # credit.records' run after it was opened

    def table(self, resource: str) -> TableSet:
        return TableSet(self.catalog.get(resource), self.settings.warehouse_location)

    def delta(self, resource: str, kind: str = "open") -> DeltaTable:
        tables = self.table(resource)
        table = tables.open if kind == "open" else tables.silver if kind == "silver" else (
            tables.published(kind)  # type: ignore[arg-type]
        )  # fmt: skip
        return DeltaTable(table.location.uri)

    def entries(self, action: str) -> list[AuditEntry]:
        with session(self.settings) as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                  .order_by(AuditEntry.seq)))  # fmt: skip


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    root = tmp_path_factory.mktemp("open")
    schemas = root / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    _open_residents(schemas, RESIDENT_RULES)
    port = free_port()
    settings = lake_settings(
        root, catalog_dir=schemas, open_endpoint=f"http://127.0.0.1:{port}/open"
    )
    catalog = Catalog.load(schemas)
    assert OPEN_ACTIONS <= audit.ACTIONS  # the public routes' actions are journaled
    spark = get_spark(settings, catalog, fresh=True)
    generate(catalog, settings.landing_location, rows=300, seed=11, as_of=DAY,
             resources=[RESIDENTS, ENTERPRISES, CREDIT])  # fmt: skip
    for name in (RESIDENTS, ENTERPRISES):
        ingest.run(spark, resource=catalog.get(name), interval=Interval.ending(END),
                   settings=settings)  # fmt: skip
    # credit.records is published while its catalogue entry is not open yet, then opened.
    closed = root / "schemas_closed"
    shutil.copytree(schemas, closed)
    entry = closed / "credit" / "records.yaml"
    entry.write_text(entry.read_text(encoding="utf-8").replace(
        "open_attribute: open", "open_attribute: not_open"), encoding="utf-8")  # fmt: skip
    ingest.run(spark, resource=Catalog.load(closed).get(CREDIT),
               interval=Interval.ending(END),
               settings=settings.model_copy(update={"catalog_dir": closed}))  # fmt: skip
    assert not TableSet(catalog.get(CREDIT), settings.warehouse_location).open.location.exists()
    reopened = ingest.run(spark, resource=catalog.get(CREDIT), interval=Interval.ending(END),
                          settings=settings)  # fmt: skip
    app = create_app(settings, catalog, clock=lambda: START)
    with running(settings, port=port, app=app):
        yield Lake(settings, catalog, spark, f"http://127.0.0.1:{port}", reopened)


def _csv(lake: Lake, path: str) -> pd.DataFrame:
    reply = httpx.get(f"{lake.base}{path}")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/csv")
    return pd.read_csv(io.StringIO(reply.text), dtype=str, keep_default_na=False)


def _cells(rows: list[dict[str, Any]] | pd.DataFrame) -> list[str]:
    if isinstance(rows, pd.DataFrame):
        return [str(v) for v in rows.to_numpy().ravel() if v != ""]
    return [str(v) for row in rows for v in row.values() if v is not None]


@pytest.mark.slow
def test_no_raw_personal_value_reaches_the_open_variant(lake: Lake) -> None:
    silver = read_delta(lake.delta(RESIDENTS, "silver")).to_pylist()
    raw = {
        str(row[name]) for row in silver for name in (*PII_OF_RESIDENTS, "citizen_id", "name")
        if row[name] is not None
    }  # fmt: skip
    assert sum(row["residence_address"] is not None for row in silver) > 100
    assert any(row["marital_status"] is not None for row in silver)
    opened = read_delta(lake.delta(RESIDENTS)).to_pylist()
    downloaded = _csv(lake, "/open/population/residents_open.csv")
    assert len(opened) == len(downloaded) > 100
    # A pseudonym of each record first, then the de-identified items.
    assert list(downloaded.columns) == [
        "record_id",
        *(name for name, _ in lake.catalog.get(RESIDENTS).open_items()),
    ]
    assert "marital_status" not in downloaded.columns and "insured_since" not in downloaded.columns
    for cells in (_cells(opened), _cells(downloaded)):
        assert not raw & set(cells), sorted(raw & set(cells))[:5]
        everything = "\x00".join(cells)
        leaked = [value for value in raw if len(value) >= 6 and value in everything]
        assert not leaked, leaked[:5]


@pytest.mark.slow
def test_generalised_and_masked_values_are_right(lake: Lake) -> None:
    # The published table is what the open variant is made from: compare as multisets (the
    # open variant has no key to join on, by design).
    published = read_delta(lake.delta(RESIDENTS, "conditional")).to_pylist()
    expected = Counter(
        (masked_identifier(r["citizen_id"]), masked_text(r["name"]), r["gender"], r["ethnicity"],
         r["birth_date"].year, r["household_division_code"][:4] + "00",
         None if r["residence_address"] is None else masked_text(r["residence_address"]),
         None if r["social_insurance_status"] is None
         else masked_text(r["social_insurance_status"]))
        for r in published
    )  # fmt: skip
    opened = read_delta(lake.delta(RESIDENTS)).to_pylist()
    got = Counter(
        (r["citizen_id"], r["name"], r["gender"], r["ethnicity"], r["birth_date"],
         r["household_division_code"], r["residence_address"], r["social_insurance_status"])
        for r in opened
    )  # fmt: skip
    assert len(opened) == len(published) > 100
    assert got == expected
    assert {type(r["birth_date"]) for r in opened} == {int}
    enterprises = read_delta(lake.delta(ENTERPRISES)).to_pylist()
    assert len(enterprises) == read_delta(lake.delta(ENTERPRISES, "unconditional")).num_rows
    assert all(r["legal_representative"].endswith("**") for r in enterprises)
    assert all(r["division_code"].endswith("00") for r in enterprises)


@pytest.mark.slow
def test_the_open_version_is_recorded_carries_its_terms_and_a_rerun_adds_none(lake: Lake) -> None:
    table = lake.table(RESIDENTS).open
    delta = lake.delta(RESIDENTS)
    _, publications = ops_tables(lake.settings.warehouse_location)
    rows = read_delta(DeltaTable(publications.location.uri)).to_pylist()
    opened = [r for r in rows if r["sharing_class"] == "open" and r["resource"] == RESIDENTS]
    assert len(opened) == 1
    record = opened[0]
    assert (record["table_name"], record["version"]) == (table.qualified_name, delta.version())
    # Created with its terms, then written once: no metadata-only version in between.
    assert len(delta.history()) == 2
    assert record["rows"] == read_delta(delta).num_rows
    conditional = [r for r in rows if r["sharing_class"] == "conditional"
                   and r["resource"] == RESIDENTS]  # fmt: skip
    assert record["silver_version"] == conditional[0]["silver_version"]
    journal = [e for e in lake.entries("pipeline.publish") if e.table_name == table.qualified_name]
    assert len(journal) == 1
    assert (journal[0].version, journal[0].rows) == (delta.version(), record["rows"])
    assert json.loads(journal[0].detail)["sharing_class"] == "open"
    metadata = delta.metadata()
    terms = lake.catalog.get(RESIDENTS).open
    assert terms is not None
    assert metadata.configuration[opendata.LICENCE_PROPERTY] == "CC-BY-4.0"
    assert metadata.configuration[opendata.LICENCE_URL_PROPERTY] == terms.licence_url
    assert metadata.configuration[opendata.NOTICE_PROPERTY] == " ".join(terms.notice.split())
    assert "citizen_id=mask" in metadata.configuration[opendata.RULES_PROPERTY]
    assert metadata.description is not None and "CC-BY-4.0" in metadata.description
    assert "Do not attempt to re-identify persons." in metadata.description
    # The same interval again: nothing new to publish, no new open version.
    before = delta.version()
    counts = ingest.run(lake.spark, resource=lake.catalog.get(RESIDENTS),
                        interval=Interval.ending(END), settings=lake.settings)  # fmt: skip
    assert counts.published_versions["open"] == before == lake.delta(RESIDENTS).version()


@pytest.mark.slow
def test_a_resource_opened_after_its_publication_gets_its_open_variant(lake: Lake) -> None:
    _, publications = ops_tables(lake.settings.warehouse_location)
    rows = read_delta(DeltaTable(publications.location.uri)).to_pylist()
    by_class = {r["sharing_class"]: r for r in rows if r["resource"] == CREDIT}
    assert sorted(by_class) == ["conditional", "open", "unconditional"]
    assert {r["version"] for r in by_class.values()} == {1}  # the others made no new version
    assert by_class["open"]["silver_version"] == by_class["unconditional"]["silver_version"]
    opened = read_delta(lake.delta(CREDIT))
    assert by_class["open"]["rows"] == opened.num_rows == (
        read_delta(lake.delta(CREDIT, "unconditional")).num_rows
    )  # fmt: skip
    assert opened.column_names == [
        "record_id",
        *(name for name, _ in lake.catalog.get(CREDIT).open_items()),
    ]
    assert lake.reopened.published_versions["open"] == 1 and not lake.reopened.published
    table_name = lake.table(CREDIT).open.qualified_name
    assert [e.version for e in lake.entries("pipeline.publish") if e.table_name == table_name] == [
        1
    ]


@pytest.mark.slow
def test_public_routes_need_no_token_serve_only_open_tables_and_are_audited(lake: Lake) -> None:
    before = len(lake.entries("open.download"))
    downloaded = _csv(lake, "/open/legal_entity/enterprises_open.csv")
    reply = httpx.get(f"{lake.base}/open/legal_entity/enterprises_open.csv")
    assert reply.headers["delta-table-version"] == str(lake.delta(ENTERPRISES).version())
    assert "creativecommons.org/licenses/by/4.0" in reply.headers["link"]
    entries = lake.entries("open.download")[before:]
    assert [(e.actor, e.outcome, e.table_name, e.rows) for e in entries] == [
        ("public", "ok", "legal_entity.enterprises_open", len(downloaded))
    ] * 2
    assert entries[0].version == lake.delta(ENTERPRISES).version()
    for path in ("population/residents_unconditional", "population/residents",
                 "legal_entity/enterprises_conditional", "ops/publications",
                 "geospatial/admin_divisions_open"):  # fmt: skip
        refused = httpx.get(f"{lake.base}/open/{path}.csv")
        assert refused.status_code == 404, path
        assert refused.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"
    assert "not been published" in refused.json()["message"]  # open, but nothing published yet
    refusals = lake.entries("open.download")[before + 2 :]
    assert [(e.actor, e.outcome) for e in refusals] == [("public", "not_found")] * 5
    unpublished = httpx.get(f"{lake.base}/open/geospatial/admin_divisions_open")
    assert unpublished.status_code == 200 and "version" not in unpublished.json()
    assert httpx.get(f"{lake.base}/open/population/residents_unconditional").status_code == 404
    notice = httpx.get(f"{lake.base}/open/population/residents_open").json()
    assert notice["licence"] == "CC-BY-4.0" and "re-identify" in notice["notice"]
    assert notice["version"] == lake.delta(RESIDENTS).version()
    assert {c["name"]: c["rule"] for c in notice["columns"]}["birth_date"] == "generalise"
    schema = httpx.get(f"{lake.base}/open/population/residents_open/schema.json").json()
    assert {f["name"]: f["type"] for f in schema["fields"]}["birth_date"] == "integer"
    assert [(e.actor, e.outcome) for e in lake.entries("open.notice")][-4:] == [
        ("public", "ok"), ("public", "not_found"), ("public", "ok"), ("public", "ok"),
    ]  # fmt: skip


# -- DCAT-AP --------------------------------------------------------------------------------
def _graph(text: str) -> Graph:
    graph = Graph()
    graph.parse(data=text, format="json-ld")
    return graph


def _one(graph: Graph, subject: Any, predicate: URIRef) -> Any:
    values = list(graph.objects(subject, predicate))
    assert len(values) == 1, (subject, predicate, values)
    return values[0]


@pytest.mark.slow
def test_the_dcat_export_reads_as_ckanext_dcat_reads_it(lake: Lake) -> None:
    reply = httpx.get(f"{lake.base}/open/catalog.jsonld")
    assert reply.status_code == 200 and reply.headers["content-type"] == dcat.MEDIA_TYPE
    graph = _graph(reply.text)
    catalogs = list(graph.subjects(RDF.type, DCAT.Catalog))
    assert len(catalogs) == 1
    publisher = _one(graph, catalogs[0], DCTERMS.publisher)
    assert str(_one(graph, publisher, FOAF.name)) == lake.settings.publisher_name
    datasets = {str(_one(graph, d, DCTERMS.identifier)): d
                for d in graph.subjects(RDF.type, DCAT.Dataset)}  # fmt: skip
    opened = sorted(r.qualified_name for r in lake.catalog if r.is_open)
    assert sorted(datasets) == opened
    assert RESIDENTS in datasets and "geospatial.registered_addresses" not in datasets
    assert set(graph.objects(catalogs[0], DCAT.dataset)) == set(datasets.values())
    publications = dcat.open_publications(lake.settings)
    for name, node in datasets.items():
        resource = lake.catalog.get(name)
        terms = resource.open
        assert terms is not None and isinstance(node, URIRef)  # the harvest guid is the IRI
        assert str(_one(graph, node, DCTERMS.title)) == resource.title
        assert str(_one(graph, node, DCTERMS.description))
        keywords = {str(k) for k in graph.objects(node, DCAT.keyword)}
        assert set(terms.keywords) | {resource.theme} <= keywords
        agent = _one(graph, node, DCTERMS.publisher)
        department = lake.catalog.department(resource.provider)
        assert str(_one(graph, agent, FOAF.name)) == department.name
        contact = _one(graph, node, DCAT.contactPoint)
        assert str(_one(graph, contact, VCARD.hasEmail)) == f"mailto:{resource.steward.email}"
        assert str(_one(graph, contact, VCARD.fn)).startswith(resource.steward.name)
        assert _one(graph, node, DCTERMS.accrualPeriodicity) == URIRef(
            dcat.FREQUENCY[resource.update_cycle]
        )
        modified = list(graph.objects(node, DCTERMS.modified))
        if name in publications:
            stamp = publications[name].last.strftime("%Y-%m-%dT%H:%M:%SZ")
            assert modified == [Literal(stamp, datatype=XSD.dateTime)]
        else:
            assert modified == []
        distribution = _one(graph, node, DCAT.distribution)
        link = dcat.links(resource, lake.settings)
        assert _one(graph, distribution, DCAT.downloadURL) == URIRef(link.download)
        assert _one(graph, distribution, DCAT.accessURL) == URIRef(link.page)
        licence = _one(graph, distribution, DCTERMS.license)
        assert licence == URIRef(terms.licence_url)
        assert str(_one(graph, licence, DCTERMS.title)) == terms.licence
        rights = _one(graph, distribution, DCTERMS.rights)
        assert str(_one(graph, rights, RDFS.label)) == " ".join(terms.notice.split())
        assert _one(graph, distribution, DCAT.mediaType) == URIRef(dcat.CSV_MEDIA_TYPE)
        assert str(_one(graph, distribution, DCTERMS.title))
    assert publications[RESIDENTS].last == END.replace(tzinfo=None)
    assert [e.actor for e in lake.entries("open.catalog")][-1] == "public"


@pytest.mark.slow
def test_the_exported_download_url_serves_the_open_variant(lake: Lake) -> None:
    graph = _graph(json.dumps(dcat.catalog_document(lake.catalog, lake.settings)))
    node = next(d for d in graph.subjects(RDF.type, DCAT.Dataset)
                if str(_one(graph, d, DCTERMS.identifier)) == RESIDENTS)  # fmt: skip
    url = str(_one(graph, _one(graph, node, DCAT.distribution), DCAT.downloadURL))
    assert url.startswith(lake.base)
    downloaded = _csv(lake, url.removeprefix(lake.base))
    expected = read_delta(lake.delta(RESIDENTS)).to_pandas().astype(str).replace({"None": ""})
    expected = expected.sort_values(list(expected.columns)).reset_index(drop=True)
    downloaded = downloaded.sort_values(list(downloaded.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(downloaded, expected, check_dtype=False)


def _cli() -> typer.Typer:
    app, catalog_app = typer.Typer(), typer.Typer()
    app.add_typer(catalog_app, name="catalog")
    catalog_app.command("export")(catalog_export)
    catalog_app.command("list")(lambda: None)  # a group of one command would swallow its name
    return app


@pytest.fixture
def cli_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.slow
def test_the_cli_exports_dcat_with_and_without_a_lakehouse(
    lake: Lake, cli_settings: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli_settings.setenv("GOVLAKE_WAREHOUSE", lake.settings.warehouse)
    cli_settings.setenv("GOVLAKE_CATALOG_DIR", str(lake.settings.catalog_dir))
    cli_settings.setenv("GOVLAKE_OPEN_ENDPOINT", lake.settings.open_endpoint)
    out = tmp_path / "catalog.jsonld"
    result = CliRunner().invoke(
        _cli(), ["catalog", "export", "--format", "dcat", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text(encoding="utf-8")) == dcat.catalog_document(
        lake.catalog, lake.settings
    )
    # A fresh checkout: the repository catalogue (residents not open), nothing published.
    get_settings.cache_clear()
    cli_settings.setenv("GOVLAKE_WAREHOUSE", str(tmp_path / "empty"))
    cli_settings.setenv("GOVLAKE_CATALOG_DIR", str(REPO / "schemas"))
    result = CliRunner().invoke(_cli(), ["catalog", "export"])
    assert result.exit_code == 0, result.output
    graph = _graph(result.stdout)
    names = {
        str(_one(graph, d, DCTERMS.identifier)) for d in graph.subjects(RDF.type, DCAT.Dataset)
    }
    assert names == {r.qualified_name for r in Catalog.load(REPO / "schemas") if r.is_open}
    assert RESIDENTS not in names
    assert not list(graph.subject_objects(DCTERMS.modified))
    refused = CliRunner().invoke(_cli(), ["catalog", "export", "--format", "rdfxml"])
    assert refused.exit_code == 2
    assert "unknown export format 'rdfxml'" in refused.output and "dcat" in refused.output


@pytest.mark.slow
def test_changed_terms_are_written_to_the_table_before_its_next_version(lake: Lake) -> None:
    resource = lake.catalog.get(ENTERPRISES)
    table = lake.table(ENTERPRISES).open
    terms = resource.open
    assert terms is not None
    changed = resource.model_copy(update={"open": terms.model_copy(update={
        "licence": "CC-BY-SA-4.0", "licence_url": "https://creativecommons.org/licenses/by-sa/4.0/",
        "notice": "A new usage notice (新的使用须知).",
    })})  # fmt: skip
    before = lake.delta(ENTERPRISES)
    publish._apply_open_terms(changed, table)
    after = lake.delta(ENTERPRISES)
    assert after.version() > before.version()
    configuration = after.metadata().configuration
    assert configuration[opendata.NOTICE_PROPERTY] == "A new usage notice (新的使用须知)."
    assert configuration[opendata.LICENCE_PROPERTY] == "CC-BY-SA-4.0"
    assert "by-sa/4.0" in (after.metadata().description or "")
    rows = [sorted(read_delta(t).to_pylist(), key=repr) for t in (after, before)]
    assert rows[0] == rows[1]  # the data is untouched
    publish._apply_open_terms(changed, table)  # already there: no new version
    assert lake.delta(ENTERPRISES).version() == after.version()
    old = DeltaTable(table.location.uri, version=before.version()).metadata().configuration
    assert old[opendata.NOTICE_PROPERTY] == " ".join(terms.notice.split())
