"""The timeliness monitor: states at their boundaries, and over a real publication."""

from __future__ import annotations

import datetime

import pytest
from govlake_tools.generate import generate
from pyspark.sql import SparkSession

from govlake.core.catalog import Catalog
from govlake.core.runs import Interval
from govlake.core.settings import Settings
from govlake.governance.timeliness import assess, deliveries, monitor
from govlake_app import pipeline as ingest

T0 = datetime.datetime(2026, 11, 20, 2, 0)


@pytest.mark.parametrize(
    ("resource", "after", "state"),
    [
        ("population.residents", datetime.timedelta(hours=23, minutes=59), "on_time"),
        ("population.residents", datetime.timedelta(hours=24), "due"),
        # daily: grace 25 % of 24 h = 6 h
        ("population.residents", datetime.timedelta(hours=29, minutes=59), "due"),
        ("population.residents", datetime.timedelta(hours=30), "overdue"),
        ("geospatial.registered_addresses", datetime.timedelta(days=6, hours=23), "on_time"),
        ("geospatial.registered_addresses", datetime.timedelta(days=7, hours=1), "due"),
        ("geospatial.registered_addresses", datetime.timedelta(days=8, hours=18), "overdue"),
    ],
)
def test_states_at_the_boundaries(
    catalog: Catalog, resource: str, after: datetime.timedelta, state: str
) -> None:
    result = assess(catalog.get(resource), T0, at=T0 + after, grace_fraction=0.25)
    assert result.state == state
    assert result.next_due_at is not None
    expected_late = max(0.0, (T0 + after - result.next_due_at).total_seconds() / 3600)
    assert result.hours_late == pytest.approx(expected_late)


def test_never_published_is_overdue(catalog: Catalog) -> None:
    result = assess(catalog.get("credit.records"), None, at=T0, grace_fraction=0.25)
    assert result.state == "overdue" and result.last_published_at is None


@pytest.mark.slow
def test_monitor_reads_real_publications(
    spark: SparkSession, catalog: Catalog, settings: Settings
) -> None:
    generate(catalog, settings.landing_location, rows=300, seed=1, as_of=T0.date(),
             resources=["credit.records"])  # fmt: skip
    interval = Interval.ending(T0.replace(tzinfo=datetime.UTC))
    ingest.run(spark, resource=catalog.get("credit.records"), interval=interval, settings=settings)
    states = {
        t.resource: t.state
        for t in monitor(spark, catalog, settings, at=T0 + datetime.timedelta(hours=1))
    }
    assert states["credit.records"] == "on_time"
    assert states["population.residents"] == "overdue"  # never published here
    later = {
        t.resource: t
        for t in monitor(spark, catalog, settings, at=T0 + datetime.timedelta(hours=31))
    }
    assert later["credit.records"].state == "overdue"
    assert later["credit.records"].last_published_at == T0
    delivered = {
        (t.resource, t.provider): t
        for t in deliveries(spark, catalog, settings, at=T0 + datetime.timedelta(hours=1))
    }
    # the extract is as of midnight of its file-name date: 3 h old at T0 + 1 h
    credit = delivered[("credit.records", "development_reform")]
    assert credit.last_published_at == datetime.datetime.combine(T0.date(), datetime.time())
    assert credit.state == "on_time" and credit.subject == "delivery"
    assert delivered[("population.residents", "civil_affairs")].state == "overdue"


def test_delivery_state_per_provider(catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    delivered = assess(
        residents, T0, at=T0 + datetime.timedelta(hours=25), grace_fraction=0.25,
        provider="civil_affairs",
    )  # fmt: skip
    assert (delivered.provider, delivered.subject, delivered.state) == (
        "civil_affairs", "delivery", "due",
    )  # fmt: skip
    never = assess(residents, None, at=T0, grace_fraction=0.25, provider="human_resources")
    assert (never.provider, never.state) == ("human_resources", "overdue")
