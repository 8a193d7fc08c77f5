"""Which expectations a resource has: derived from its catalogue entry, never written by hand.

An **extract suite** judges one provider's extract as delivered (raw strings, before any
record is dropped), so it measures the provider's own quality:
- completeness: every `required` item not blank, in at least `mostly` of the rows;
- validity: every other row rule of the item (type, check characters, division code in the
  reference table, coordinates inside China, dates not after the run, code lists, ranges);
- uniqueness: the key occurs once, in at least `mostly` of the rows;
- volume: row count within `tolerance` of the provider's previous extract;
- timeliness: the extract's as-of time within one update cycle of the run, and (where the
  catalogue names a record-time item) the newest record no older than `max_age_days`.

A **publication suite** judges the table about to be published:
- uniqueness: the key is unique;
- volume: row count within `tolerance` of the previous publication;
- consistency: at most `max_share` of the rows carry an open cross-check finding.

Each check carries the severity the catalogue gives its dimension (an item may override
completeness and validity): `error` holds the data back, `warn` lets it through and reports.
Row rules come from `govlake.transforms.rules.row_rules`, the same objects that quarantine records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from govlake.core.catalog import CYCLE_HOURS, Resource, Severity
from govlake.transforms.rules import RowRule, row_rules

Dimension = Literal["completeness", "validity", "uniqueness", "volume", "consistency", "timeliness"]
Scope = Literal["extract", "publication"]

#: Columns the runner adds to the data before a suite runs.
AS_OF_COLUMN = "_as_of"
RECORD_TIME_COLUMN = "_record_time"
DISPUTED_COLUMN = "_disputed"

_NAMED = {
    "citizen_id": "ExpectColumnValuesToBeValidCitizenId",
    "credit_code": "ExpectColumnValuesToBeValidCreditCode",
}


@dataclass(frozen=True)
class Check:
    """One expectation of a suite, with what the catalogue says about it."""

    expectation: str  # stable id within the suite, e.g. `citizen_id.citizen_id`, `key.unique`
    dimension: Dimension
    item: str | None
    severity: Severity
    kind: str  # the Great Expectations class
    kwargs: dict[str, Any]
    threshold: str  # what passing means, in words
    description: str
    rule: RowRule | None = field(default=None, compare=False)


def _share(mostly: float) -> str:
    return f"at least {mostly:.2%} of rows"


def _key_unique(resource: Resource, severity: Severity, mostly: float) -> Check:
    key = resource.key
    if len(key) == 1:
        kind, kwargs = "ExpectColumnValuesToBeUnique", {"column": key[0], "mostly": mostly}
    else:
        kind, kwargs = "ExpectCompoundColumnsToBeUnique", {"column_list": key, "mostly": mostly}
    return Check(
        "key.unique", "uniqueness", ",".join(key), severity, kind, kwargs,
        _share(mostly), f"the key ({', '.join(key)}) occurs once",
    )  # fmt: skip


def _volume(
    previous_rows: int | None, tolerance: float, severity: Severity, of: str
) -> list[Check]:
    if previous_rows is None:
        return []  # nothing to compare the first delivery with
    low = math.floor(previous_rows * (1 - tolerance))
    high = math.ceil(previous_rows * (1 + tolerance))
    return [
        Check(
            "volume", "volume", None, severity, "ExpectTableRowCountToBeBetween",
            {"min_value": max(low, 0), "max_value": high},
            f"between {max(low, 0):,} and {high:,} rows",
            f"row count within {tolerance:.0%} of the {of} ({previous_rows:,} rows)",
        )
    ]  # fmt: skip


def extract_suite(
    resource: Resource,
    provider: str,
    *,
    run_date: date,
    checked_at: datetime,
    previous_rows: int | None,
    grace: timedelta = timedelta(0),
) -> list[Check]:
    """The checks of one extract from `provider`, judged at `checked_at` (naive UTC). An
    extract is timely when it is at most one update cycle plus `grace` old (the timeliness
    monitor's grace, so an extract is late exactly when the monitor would call it overdue)."""
    policy = resource.quality
    checks: list[Check] = []
    key = f"{resource.qualified_name}|{provider}|{run_date.isoformat()}"
    for rule in row_rules(resource, provider, as_of=run_date):
        item = resource.item(rule.item)
        completeness = rule.rule == "required"
        dimension: Dimension = "completeness" if completeness else "validity"
        base = policy.completeness if completeness else policy.validity
        mostly = item.mostly if item.mostly is not None else base.mostly
        severity = item.severity or base.severity
        if rule.rule in _NAMED:
            kind, kwargs = _NAMED[rule.rule], {"column": rule.item, "mostly": mostly}
        else:
            kind = "ExpectColumnValuesToKeepRowRule"
            kwargs = {"column": rule.item, "rule_key": f"{key}|{rule.rule_id}", "mostly": mostly}
        checks.append(
            Check(
                rule.rule_id,
                dimension,
                rule.item,
                severity,
                kind,
                kwargs,
                _share(mostly),
                rule.description,
                rule,
            )
        )
    checks.append(_key_unique(resource, policy.uniqueness.severity, policy.uniqueness.mostly))
    checks += _volume(
        previous_rows, policy.volume.tolerance, policy.volume.severity, "previous extract"
    )
    cycle = timedelta(hours=CYCLE_HOURS[resource.update_cycle])
    oldest = checked_at - cycle - grace
    checks.append(
        Check(
            "as_of.timeliness",
            "timeliness",
            None,
            policy.timeliness.severity,
            "ExpectColumnMaxToBeBetween",
            {"column": AS_OF_COLUMN, "min_value": oldest, "max_value": checked_at},
            f"as of {oldest:%Y-%m-%d %H:%M} or later",
            f"the extract is at most one update cycle ({resource.update_cycle}) old, "
            f"plus {grace.total_seconds() / 3600:g} h grace",
        )
    )
    freshness = policy.freshness
    if freshness is not None and freshness.item in resource.supplied_items(provider):
        limit = checked_at - timedelta(days=freshness.max_age_days)
        checks.append(
            Check(
                f"{freshness.item}.freshness",
                "timeliness",
                freshness.item,
                freshness.severity,
                "ExpectColumnMaxToBeBetween",
                {"column": RECORD_TIME_COLUMN, "min_value": limit},
                f"newest on or after {limit:%Y-%m-%d}",
                f"the newest {freshness.item} is at most {freshness.max_age_days} days old",
            )
        )
    return checks


def publication_suite(
    resource: Resource, *, previous_rows: int | None, crosschecked: bool
) -> list[Check]:
    """The checks of a table about to be published. `crosschecked`: the resource has items
    that other providers cross-check, so the data carries `DISPUTED_COLUMN`."""
    policy = resource.quality
    checks = [_key_unique(resource, policy.uniqueness.severity, 1.0)]
    checks += _volume(
        previous_rows, policy.volume.tolerance, policy.volume.severity, "previous publication"
    )
    if crosschecked:
        mostly = 1 - policy.consistency.max_share
        checks.append(
            Check(
                "crosscheck.share",
                "consistency",
                None,
                policy.consistency.severity,
                "ExpectColumnValuesToBeInSet",
                {"column": DISPUTED_COLUMN, "value_set": [False], "mostly": mostly},
                f"at most {policy.consistency.max_share:.2%} of rows disputed",
                "rows with an open cross-check finding (another department holds a different "
                "value)",
            )
        )
    return checks
