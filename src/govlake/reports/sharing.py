"""The yearly sharing report per department (51号 art. 18; 宝鸡 art. 24) and the platform-wide
summary for the competent authority: what each department provided and what it used.

**Provided**, per resource the department is responsible for (`provider`) or supplies
(`sources`):

- *publications* (responsible role): a publication is one run of `jobs.publish` (one silver
  version published, one Delta version per sharing class); the report gives the runs and the
  table versions published in the year, the rows of the last one, the runs held back by the
  publication checks (`ops.quality_runs`, scope `publication`, outcome `held`), and the
  state at the period end as the timeliness monitor sees it.
- *on time*: a publication is on time when it came within the update cycle plus the grace
  period (`settings.timeliness_grace`) of the previous publication of the resource, whenever
  that was — `govlake.governance.timeliness.assess` at the moment of publishing says `on_time`
  or `due`. The first publication ever has nothing to be late against and is not measured.
  A delivery (source role) is on time when its extract passed the `as_of.timeliness` check,
  as in the department scorecard (rejected files count as late); quality is the share of the
  extract-scope expectations run on its extracts that passed. Both reuse the scorecard's
  queries (`scorecard.delivery_rows`) and pure builders.
- *who read its data* (responsible role): the reads of the resource by other departments,
  per consumer and purpose, and the refused attempts.
- *requests received*: access requests addressed to it (it is the responsible provider) and
  verification requests on items it is the authority for.

**Used**: its reads of other departments' data by resource and purpose, its refused
attempts, and the access and verification requests it filed.

What counts as a **read**: a journal entry (`audit_journal`) with action `share.query` (a
snapshot of a table, whole or by version or timestamp) or `share.changes` (a table's
changes between versions) and outcome `ok`, dated in the period, made by a registered
consumer. Listing, `share.version` and `share.metadata` calls return no data and are not
reads; `share.file` downloads fetch the files a query already listed (counting them would
count a read once per file). The *rows* of a read are those the server served (file
statistics: a read with a row limit counts the rows of the whole files it got). A *refused
read* is a call on one table (`share.version`, `share.metadata`, `share.query`,
`share.changes`) with outcome `refused` (no grant for conditional data, a suspended
department): the official client asks for the metadata first and stops when refused, so
most refusals are journaled as `share.metadata`. Calls that fail authentication cannot be
attributed and are left out, and so are `not_found` and `error` outcomes. The *purpose* is
the one the server journaled: the grant's purpose for conditional data, none for
unconditional data. A department reading a resource it is responsible for is not sharing:
such reads are shown as one figure (`own reads`) and left out of every other total. Reads
are attributed on the provided side to the resource's responsible provider only (谁主管，
谁提供), so that the platform's reads provided equal its reads used.

**Requests** count in the year they were filed; their state is as of the period end (a
decision after the end counts as not answered yet). An answer is on time when given on or
before its due date in China (`govlake.sharing.requests.overdue`); a request unanswered at
the period end and past its due date is overdue. The platform summary's overdue list takes
every request unanswered and overdue at the period end, whatever year it was filed in.

The period is the calendar year in UTC, up to `at` for the current year (as the scorecard).
Files go to `reports_dir/sharing/<year>/`: `sharing-<department>-<year>.html|csv` and
`sharing-platform-<year>.html|csv`. A department's CSV is long, one figure a row (`side`,
`section`, `resource`, `counterpart`, `purpose`, `measure`, `value`), counts only, so that
any share can be recomputed and the file pivots in a spreadsheet; the platform CSV has one
row per department and a `TOTAL` row that is their sum.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pyspark.sql import SparkSession
from sqlalchemy import and_, func, or_, select

from govlake.core.catalog import Catalog, Department, Resource, Steward
from govlake.core.figures import Summed
from govlake.core.runs import naive_utc
from govlake.core.settings import Settings
from govlake.governance.timeliness import assess
from govlake.lake.statements import sql_literal
from govlake.lake.tables import ops_tables, quality_tables
from govlake.platform.database import (
    AccessRequest,
    AuditEntry,
    Consumer,
    VerificationRequest,
    session,
)
from govlake.reports import Period, ReportError, fetch, render
from govlake.reports.scorecard import (
    OnTime,
    Provision,
    QualityPass,
    delivery_rows,
    on_time_of,
    provision_of,
    quality_of,
    year_period,
)
from govlake.sharing.access import shared_tables
from govlake.sharing.requests import overdue

#: The journal actions that read shared data (see the module docstring).
READ_ACTIONS = ("share.query", "share.changes")
#: The journal actions on one table: refused, each is a refused read.
TABLE_ACTIONS = ("share.version", "share.metadata", *READ_ACTIONS)
#: How many resources the platform summary ranks by reads.
TOP_RESOURCES = 10

Rows = Sequence[Mapping[str, Any]]
RequestKind = Literal["access", "verification"]


@dataclass(frozen=True)
class SharingRows:
    """What the sharing reports are built from.

    `consumers`: the codes of the registered consumers; `publications`: rows of
    `ops.publications` up to the period end (earlier ones too: the first publication of the
    year is on time or late against the one before); `publication_checks`: publication-scope
    rows of `ops.quality_runs` (`resource`, `silver_version`, `checked_at`, `outcome`);
    `extracts`, `quality`, `timeliness`: the scorecard's delivery rows of the period;
    `journal`: audit entries (`at`, `action`, `consumer`, `purpose`, `resource`, `table_name`,
    `version`, `rows`, `outcome`, and optionally `entries`, how many identical entries the row
    stands for; a refused read's `resource` filled in from its table); `access_requests` and
    `verifications`: rows of those tables (`filed_at` before the period end; earlier years are
    left out here).
    """

    consumers: Collection[str] = ()
    publications: Rows = ()
    publication_checks: Rows = ()
    extracts: Rows = ()
    quality: Rows = ()
    timeliness: Rows = ()
    journal: Rows = ()
    access_requests: Rows = ()
    verifications: Rows = ()


# -- provided ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicationRun:
    """One publication of a resource: a silver version published to every sharing class."""

    resource: str
    silver_version: int | None
    published_at: datetime
    rows: int
    tables: tuple[tuple[str, int], ...]  # (published table, Delta version)
    on_time: bool | None  # None: the first publication ever, nothing to be late against


@dataclass(frozen=True)
class TableVersions:
    table: str
    versions: tuple[int, ...]  # published in the period, ascending


@dataclass(frozen=True)
class ReadTally:
    """Successful reads of one resource by one counterpart for one purpose."""

    resource: str
    counterpart: str | None  # provided side: the consumer; used side: the provider
    purpose: str | None  # the grant's purpose; None for unconditional data
    reads: int
    rows: int
    versions: int  # distinct (table, version) read


@dataclass(frozen=True)
class RefusedTally:
    resource: str | None  # None: a table no catalogue entry publishes
    counterpart: str | None
    refused: int


@dataclass(frozen=True)
class ResourceProvision:
    """What a department provided of one resource in the period."""

    resource: str
    title: str
    update_cycle: str
    responsible: bool
    source: bool
    runs: tuple[PublicationRun, ...]  # responsible role only
    held: int  # publications held back by the publication checks (responsible role)
    state_at_end: str | None  # timeliness monitor at the period end (responsible role)
    provision: Provision  # its extracts of the resource (source role)
    delivery: OnTime
    quality: QualityPass

    @property
    def role(self) -> str:
        return " + ".join(
            name for name, held in (("responsible", self.responsible), ("source", self.source))
            if held
        )  # fmt: skip

    @property
    def publications(self) -> int:
        return len(self.runs)

    @property
    def tables(self) -> tuple[TableVersions, ...]:
        versions: dict[str, list[int]] = defaultdict(list)
        for run in self.runs:
            for table, version in run.tables:
                versions[table].append(version)
        return tuple(TableVersions(t, tuple(sorted(v))) for t, v in sorted(versions.items()))

    @property
    def versions_published(self) -> int:
        return sum(len(t.versions) for t in self.tables)

    @property
    def last_rows(self) -> int | None:
        return self.runs[-1].rows if self.runs else None

    @property
    def publications_measured(self) -> int:
        return sum(run.on_time is not None for run in self.runs)

    @property
    def publications_on_time(self) -> int:
        return sum(bool(run.on_time) for run in self.runs)

    @property
    def publication_on_time_share(self) -> float | None:
        measured = self.publications_measured
        return self.publications_on_time / measured if measured else None

    @property
    def quality_share(self) -> float | None:
        return self.quality.score if self.quality.expectations else None


# -- requests ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestLine:
    """One access or verification request as it stood at the period end."""

    kind: RequestKind
    id: int
    resource: str
    consumer: str
    provider: str
    subject: str  # access: the usage scope; verification: the doubted item
    filed_at: datetime
    due_on: date
    outcome: str  # access: approved|refused|pending; verification: confirmed|corrected|open
    answered_at: datetime | None  # None: not answered by the period end
    reason: str | None  # the refusal's reasons, or the verification's answer
    overdue: bool  # not answered by the period end and past its due date

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def on_time(self) -> bool | None:
        if self.answered_at is None:
            return None
        return not overdue(self.due_on, self.answered_at)


@dataclass(frozen=True)
class RequestTally:
    lines: tuple[RequestLine, ...] = ()

    @property
    def filed(self) -> int:
        return len(self.lines)

    def count(self, outcome: str) -> int:
        return sum(line.outcome == outcome for line in self.lines)

    answered = Summed("lines")

    @property
    def answered_on_time(self) -> int:
        return sum(bool(line.on_time) for line in self.lines)

    @property
    def waiting(self) -> int:
        return self.filed - self.answered

    overdue = Summed("lines")

    def of(self, resource: str) -> RequestTally:
        return RequestTally(tuple(line for line in self.lines if line.resource == resource))


ACCESS_OUTCOMES = ("approved", "refused", "pending")
VERIFICATION_OUTCOMES = ("confirmed", "corrected", "open")


# -- one department, the platform --------------------------------------------------------------
@dataclass(frozen=True)
class DepartmentReport:
    """One department's sharing in a year: what it provided and what it used."""

    year: int
    period: Period
    department: Department
    consumer: bool  # registered to read shared data
    resources: tuple[ResourceProvision, ...]
    readers: tuple[ReadTally, ...]  # others' reads of the resources it is responsible for
    refused_readers: tuple[RefusedTally, ...]
    access_received: RequestTally
    verification_received: RequestTally
    reads: tuple[ReadTally, ...]  # its reads of others' data
    refused: tuple[RefusedTally, ...]
    access_filed: RequestTally
    verification_filed: RequestTally
    own_reads: int

    @property
    def code(self) -> str:
        return self.department.code

    @property
    def file_stem(self) -> str:
        return f"sharing-{self.code}-{self.year}"

    # provided
    responsible_for = Summed("resources", "responsible")
    supplies = Summed("resources", "source")
    publications = Summed("resources")
    versions_published = Summed("resources")
    publications_on_time = Summed("resources")
    publications_measured = Summed("resources")
    publications_held = Summed("resources", "held")
    extracts = Summed("resources", "provision.extracts")
    extracts_on_time = Summed("resources", "delivery.on_time")
    expectations = Summed("resources", "quality.expectations")
    expectations_passed = Summed("resources", "quality.passed")
    reads_received = Summed("readers", "reads")
    rows_served = Summed("readers", "rows")
    refused_received = Summed("refused_readers", "refused")

    def readers_of(self, resource: str) -> tuple[ReadTally, ...]:
        return tuple(t for t in self.readers if t.resource == resource)

    def refused_of(self, resource: str) -> int:
        return sum(t.refused for t in self.refused_readers if t.resource == resource)

    # used
    reads_made = Summed("reads", "reads")
    rows_read = Summed("reads", "rows")
    refused_reads = Summed("refused", "refused")

    @property
    def has_activity(self) -> bool:
        return bool(
            self.publications or self.extracts or self.readers or self.refused_readers
            or self.access_received.filed or self.verification_received.filed or self.reads
            or self.refused or self.access_filed.filed or self.verification_filed.filed
            or self.own_reads
        )  # fmt: skip


@dataclass(frozen=True)
class ResourceReads:
    resource: str
    provider: str | None
    reads: int
    rows: int
    consumers: int


@dataclass(frozen=True)
class PlatformSummary:
    """Every department's report and what the competent authority looks at first."""

    year: int
    period: Period
    departments: tuple[DepartmentReport, ...]  # by code
    top_resources: tuple[ResourceReads, ...]  # most read first
    overdue: tuple[RequestLine, ...]  # unanswered and past due at the period end, oldest first

    @property
    def file_stem(self) -> str:
        return f"sharing-platform-{self.year}"

    def department(self, code: str) -> DepartmentReport:
        for report in self.departments:
            if report.code == code:
                return report
        raise ReportError(
            f"unknown department {code!r}; known: {', '.join(d.code for d in self.departments)}"
        )

    def total(self, name: str) -> int:
        """The sum over departments of a `PLATFORM_COLUMNS` figure."""
        return sum(platform_figures(d)[name] for d in self.departments)


# -- pure: rows → reports ----------------------------------------------------------------------
def known_departments(catalog: Catalog) -> list[str]:
    """Every department the catalogue names: those listed with a steward and the providers."""
    return sorted(set(catalog.departments) | set(catalog.providers))


def _department(catalog: Catalog, code: str) -> Department:
    if code in known_departments(catalog):
        return catalog.department(code)
    # A consumer or provider in the platform database the catalogue no longer lists: kept so
    # that nothing drops out of the platform totals.
    return Department(code=code, name=code, steward=Steward(name="–", email="–"))


def _in(period: Period, moment: datetime | None) -> bool:
    return moment is not None and period.start <= naive_utc(moment) < period.end


def _runs(
    resource: Resource, publications: Rows, *, period: Period, grace_fraction: float
) -> tuple[list[PublicationRun], datetime | None]:
    """The resource's publications in `period` and the time of its last one before the end."""
    name = resource.qualified_name
    grouped: dict[tuple[datetime, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for row in publications:
        at = naive_utc(row["published_at"])
        if row["resource"] == name and at < period.end:
            grouped[(at, row["silver_version"])].append(row)
    runs: list[PublicationRun] = []
    previous: datetime | None = None
    for (at, silver), rows in sorted(grouped.items(), key=lambda item: item[0][0]):
        if at >= period.start:
            on_time = None
            if previous is not None:
                state = assess(resource, previous, at=at, grace_fraction=grace_fraction).state
                on_time = state != "overdue"
            runs.append(
                PublicationRun(
                    resource=name,
                    silver_version=None if silver is None else int(silver),
                    published_at=at,
                    rows=max(int(r["rows"] or 0) for r in rows),
                    tables=tuple(sorted((r["table_name"], int(r["version"])) for r in rows)),
                    on_time=on_time,
                )
            )
        previous = at
    return runs, previous


def _resource_provision(
    resource: Resource,
    code: str,
    *,
    period: Period,
    grace_fraction: float,
    rows: SharingRows,
) -> ResourceProvision:
    name = resource.qualified_name
    responsible, source = resource.provider == code, code in resource.sources
    runs: list[PublicationRun] = []
    held, state = 0, None
    if responsible:
        runs, last = _runs(
            resource, rows.publications, period=period, grace_fraction=grace_fraction
        )
        held = len(
            {
                c["silver_version"]
                for c in rows.publication_checks
                if c["resource"] == name and c["outcome"] == "held" and _in(period, c["checked_at"])
            }
        )
        end = period.end
        state = assess(resource, last, at=end, grace_fraction=grace_fraction).state

    def mine(delivered: Rows) -> list[Mapping[str, Any]]:
        return [r for r in delivered if r["provider"] == code and r["resource"] == name]

    return ResourceProvision(
        resource=name,
        title=resource.title,
        update_cycle=resource.update_cycle,
        responsible=responsible,
        source=source,
        runs=tuple(runs),
        held=held,
        state_at_end=state,
        provision=provision_of((name,) if source else (), mine(rows.extracts)),
        delivery=on_time_of(mine(rows.timeliness)),
        quality=quality_of(mine(rows.quality)),
    )


@dataclass(frozen=True)
class _Read:
    """Journal entries of one kind, grouped (see `gather_sharing`)."""

    consumer: str
    resource: str | None
    provider: str | None
    purpose: str | None
    table: str | None
    version: int | None
    ok: bool
    entries: int
    rows: int


def _reads(catalog: Catalog, journal: Rows, period: Period) -> list[_Read]:
    """The reads and refused reads in `journal` made by a consumer in `period`."""
    found = []
    for row in journal:
        read = row["action"] in READ_ACTIONS and row["outcome"] == "ok"
        refused = row["action"] in TABLE_ACTIONS and row["outcome"] == "refused"
        if not (read or refused):
            continue
        if not row.get("consumer") or not _in(period, row["at"]):
            continue
        resource = row.get("resource")
        provider = catalog.resources[resource].provider if resource in catalog.resources else None
        found.append(
            _Read(
                consumer=row["consumer"],
                resource=resource,
                provider=provider,
                purpose=row.get("purpose"),
                table=row.get("table_name"),
                version=row.get("version"),
                ok=read,
                entries=int(row.get("entries", 1) or 0),
                rows=int(row.get("rows") or 0) if read else 0,
            )
        )
    return found


def _read_tallies(reads: Iterable[_Read], *, counterpart: str) -> tuple[ReadTally, ...]:
    grouped: dict[tuple[str, str | None, str | None], list[_Read]] = defaultdict(list)
    for read in reads:
        if read.ok and read.resource is not None:
            grouped[(read.resource, getattr(read, counterpart), read.purpose)].append(read)
    return tuple(
        ReadTally(
            resource=resource,
            counterpart=who,
            purpose=purpose,
            reads=sum(r.entries for r in group),
            rows=sum(r.rows for r in group),
            versions=len({(r.table, r.version) for r in group if r.version is not None}),
        )
        for (resource, who, purpose), group in sorted(
            grouped.items(), key=lambda item: tuple(part or "" for part in item[0])
        )
    )


def _refused_tallies(reads: Iterable[_Read], *, counterpart: str) -> tuple[RefusedTally, ...]:
    counts: dict[tuple[str | None, str | None], int] = defaultdict(int)
    for read in reads:
        if not read.ok:
            counts[(read.resource, getattr(read, counterpart))] += read.entries
    return tuple(
        RefusedTally(resource, who, n)
        for (resource, who), n in sorted(
            counts.items(), key=lambda i: (i[0][0] or "", i[0][1] or "")
        )
    )


def _request_lines(kind: RequestKind, rows: Rows, *, period: Period) -> list[RequestLine]:
    """Requests filed before the period end, as they stood at the period end."""
    answered_field = "decided_at" if kind == "access" else "answered_at"
    waiting = "pending" if kind == "access" else "open"
    lines = []
    for row in rows:
        filed_at = naive_utc(row["filed_at"])
        if filed_at >= period.end:
            continue
        answered_at = row.get(answered_field)
        if answered_at is not None and naive_utc(answered_at) >= period.end:
            answered_at = None  # answered after the period: not yet at its end
        if answered_at is None:
            outcome = waiting
        elif kind == "verification" and row["status"] == "fixed":
            outcome = "corrected"  # corrected, and the fix since published
        else:
            outcome = row["status"]
        lines.append(
            RequestLine(
                kind=kind,
                id=int(row["id"]),
                resource=row["resource"],
                consumer=row["consumer"],
                provider=row["provider"],
                subject=row["usage_scope"] if kind == "access" else row["item"],
                filed_at=filed_at,
                due_on=row["due_on"],
                outcome=outcome,
                answered_at=None if answered_at is None else naive_utc(answered_at),
                reason=(row.get("reason") if kind == "access" else row.get("answer"))
                if answered_at is not None
                else None,
                overdue=answered_at is None and overdue(row["due_on"], period.end),
            )
        )
    return sorted(lines, key=lambda line: (line.filed_at, line.kind, line.id))


def build_department_report(
    catalog: Catalog,
    code: str,
    *,
    year: int,
    period: Period,
    grace_fraction: float,
    rows: SharingRows = SharingRows(),
) -> DepartmentReport:
    """Pure: department `code`'s sharing in `period`, from `rows` (see `SharingRows`)."""
    resources = tuple(
        _resource_provision(
            resource,
            code,
            period=period,
            grace_fraction=grace_fraction,
            rows=rows,
        )
        for resource in sorted(catalog, key=lambda r: r.qualified_name)
        if resource.provider == code or code in resource.sources
    )
    reads = _reads(catalog, rows.journal, period)
    own = [r for r in reads if r.provider == r.consumer]
    shared = [r for r in reads if r.provider != r.consumer]
    received = [r for r in shared if r.provider == code]
    made = [r for r in shared if r.consumer == code]

    def filed_in_year(kind: RequestKind, requests: Rows, party: str) -> RequestTally:
        return RequestTally(
            tuple(
                line
                for line in _request_lines(kind, requests, period=period)
                if getattr(line, party) == code and line.filed_at >= period.start
            )
        )

    return DepartmentReport(
        year=year,
        period=period,
        department=_department(catalog, code),
        consumer=code in rows.consumers,
        resources=resources,
        readers=_read_tallies(received, counterpart="consumer"),
        refused_readers=_refused_tallies(received, counterpart="consumer"),
        access_received=filed_in_year("access", rows.access_requests, "provider"),
        verification_received=filed_in_year("verification", rows.verifications, "provider"),
        reads=_read_tallies(made, counterpart="provider"),
        refused=_refused_tallies(made, counterpart="provider"),
        access_filed=filed_in_year("access", rows.access_requests, "consumer"),
        verification_filed=filed_in_year("verification", rows.verifications, "consumer"),
        own_reads=sum(r.entries for r in own if r.ok and r.consumer == code),
    )


def build_sharing(
    catalog: Catalog,
    *,
    year: int,
    period: Period,
    grace_fraction: float,
    rows: SharingRows = SharingRows(),
) -> PlatformSummary:
    """Pure: every department's report (see `SharingRows` for the rows) and the platform
    summary: the most read resources and the requests overdue at the period end."""
    reads = [r for r in _reads(catalog, rows.journal, period) if r.provider != r.consumer]
    requests = (*rows.access_requests, *rows.verifications)
    codes = set(known_departments(catalog)) | set(rows.consumers)
    codes |= {r.consumer for r in reads}
    codes |= {row["consumer"] for row in requests}
    codes |= {row["provider"] for row in requests}
    departments = tuple(
        build_department_report(
            catalog, code, year=year, period=period, grace_fraction=grace_fraction, rows=rows
        )
        for code in sorted(codes)
    )
    by_resource: dict[str, list[_Read]] = defaultdict(list)
    for read in reads:
        if read.ok and read.resource is not None:
            by_resource[read.resource].append(read)
    top = sorted(
        (
            ResourceReads(
                resource=name,
                provider=group[0].provider,
                reads=sum(r.entries for r in group),
                rows=sum(r.rows for r in group),
                consumers=len({r.consumer for r in group}),
            )
            for name, group in by_resource.items()
        ),
        key=lambda r: (-r.reads, -r.rows, r.resource),
    )[:TOP_RESOURCES]
    late = [
        line
        for kind, filed in (("access", rows.access_requests), ("verification", rows.verifications))
        for line in _request_lines(kind, filed, period=period)  # type: ignore[arg-type]
        if line.overdue
    ]
    return PlatformSummary(
        year=year,
        period=period,
        departments=departments,
        top_resources=tuple(top),
        overdue=tuple(sorted(late, key=lambda line: (line.due_on, line.kind, line.id))),
    )


# -- queries -----------------------------------------------------------------------------------
def _journal_rows(
    s: Any, catalog: Catalog, settings: Settings, period: Period
) -> list[dict[str, Any]]:
    """Read entries of the period, grouped; a refused read's resource from the table it named
    (the server journals refusals before it knows the resource)."""
    tables = {t.full_name: t.resource.qualified_name for t in shared_tables(catalog, settings)}
    columns = (
        AuditEntry.action, AuditEntry.consumer, AuditEntry.purpose, AuditEntry.resource,
        AuditEntry.table_name, AuditEntry.version, AuditEntry.outcome,
    )  # fmt: skip
    query = (
        select(
            *columns,
            func.min(AuditEntry.at).label("at"),
            func.count().label("entries"),
            func.coalesce(func.sum(AuditEntry.rows), 0).label("rows"),
        )
        .where(
            AuditEntry.at >= period.start,
            AuditEntry.at < period.end,
            AuditEntry.consumer.is_not(None),
            or_(
                and_(AuditEntry.action.in_(READ_ACTIONS), AuditEntry.outcome == "ok"),
                and_(AuditEntry.action.in_(TABLE_ACTIONS), AuditEntry.outcome == "refused"),
            ),
        )
        .group_by(*columns)
    )
    rows = []
    for row in s.execute(query):
        values = dict(row._mapping)
        if values["resource"] is None:
            values["resource"] = tables.get(values["table_name"] or "")
        rows.append(values)
    return rows


_ACCESS_FIELDS = (
    "id", "resource", "provider", "consumer", "usage_scope", "status", "filed_at", "due_on",
    "decided_at", "reason",
)  # fmt: skip
_VERIFICATION_FIELDS = (
    "id", "resource", "provider", "consumer", "item", "status", "filed_at", "due_on",
    "answered_at", "answer",
)  # fmt: skip


def gather_sharing(
    spark: SparkSession, catalog: Catalog, settings: Settings, *, year: int, at: datetime
) -> PlatformSummary:
    """Query the lakehouse's ops tables and the platform database for `year` (up to `at`)."""
    period = year_period(year, at=at)
    deliveries = delivery_rows(spark, settings, period)
    _, publications_table = ops_tables(settings.warehouse_location)
    runs_table, _ = quality_tables(settings.warehouse_location)
    publications = fetch(
        spark,
        f"SELECT resource, sharing_class, table_name, version, published_at, rows, "
        f"silver_version FROM {publications_table.sql_name} "
        f"WHERE published_at < {sql_literal(period.end)}",
        publications_table,
    )
    checks = fetch(
        spark,
        f"SELECT resource, provider, silver_version, checked_at, outcome "
        f"FROM {runs_table.sql_name} WHERE scope = 'publication' "
        f"AND {period.where('checked_at')}",
        runs_table,
    )
    with session(settings) as s:
        journal = _journal_rows(s, catalog, settings, period)
        access_requests = [
            {name: getattr(r, name) for name in _ACCESS_FIELDS}
            for r in s.scalars(select(AccessRequest).where(AccessRequest.filed_at < period.end))
        ]
        verifications = [
            {name: getattr(r, name) for name in _VERIFICATION_FIELDS}
            for r in s.scalars(
                select(VerificationRequest).where(VerificationRequest.filed_at < period.end)
            )
        ]
        consumers = set(s.scalars(select(Consumer.code)))
    rows = SharingRows(
        consumers=consumers,
        publications=publications,
        publication_checks=checks,
        extracts=deliveries.extracts,
        quality=deliveries.quality,
        timeliness=deliveries.timeliness,
        journal=journal,
        access_requests=access_requests,
        verifications=verifications,
    )
    return build_sharing(
        catalog, year=year, period=period, grace_fraction=settings.timeliness_grace, rows=rows
    )


# -- output ------------------------------------------------------------------------------------
DEPARTMENT_CSV_COLUMNS = (
    "year", "department", "side", "section", "resource", "counterpart", "purpose", "measure",
    "value",
)  # fmt: skip


def _request_figures(tally: RequestTally, outcomes: Sequence[str]) -> list[tuple[str, int]]:
    return [
        ("filed", tally.filed),
        *((outcome, tally.count(outcome)) for outcome in outcomes),
        ("answered", tally.answered),
        ("answered_on_time", tally.answered_on_time),
        ("overdue", tally.overdue),
    ]


def _request_rows(
    side: str, section: str, tally: RequestTally, outcomes: Sequence[str], counterpart: str
) -> Iterable[tuple[Any, ...]]:
    groups: dict[tuple[str, str], list[RequestLine]] = defaultdict(list)
    for line in tally.lines:
        groups[(line.resource, getattr(line, counterpart))].append(line)
    for (resource, who), lines in sorted(groups.items()):
        for measure, value in _request_figures(RequestTally(tuple(lines)), outcomes):
            yield side, section, resource, who, "", measure, value


def department_csv(report: DepartmentReport) -> str:
    """One figure a row (`DEPARTMENT_CSV_COLUMNS`); counts only, a missing purpose is empty."""
    rows: list[tuple[Any, ...]] = []
    for r in report.resources:
        name = r.resource
        figures: list[tuple[str, int | None]] = []
        if r.responsible:
            figures += [
                ("publications", r.publications),
                ("versions_published", r.versions_published),
                ("last_rows", r.last_rows),
                ("publications_measured", r.publications_measured),
                ("publications_on_time", r.publications_on_time),
                ("publications_held", r.held),
            ]
        if r.source:
            figures += [
                ("extracts", r.provision.extracts),
                ("extracts_held", r.provision.held),
                ("extracts_rejected", r.provision.rejected),
                ("extracts_on_time", r.delivery.on_time),
                ("expectations", r.quality.expectations),
                ("expectations_passed", r.quality.passed),
            ]
        if r.responsible:
            figures += [
                ("reads", sum(t.reads for t in report.readers_of(name))),
                ("rows_read", sum(t.rows for t in report.readers_of(name))),
                ("refused_reads", report.refused_of(name)),
            ]
        rows += [("provided", "resource", name, "", "", m, v) for m, v in figures if v is not None]
        for table in r.tables:
            rows += [
                ("provided", "versions", name, table.table, "", "first_version", table.versions[0]),
                ("provided", "versions", name, table.table, "", "last_version", table.versions[-1]),
                ("provided", "versions", name, table.table, "", "versions", len(table.versions)),
            ]
    sides = (
        ("provided", report.readers, report.refused_readers, report.access_received,
         report.verification_received, "consumer"),
        ("used", report.reads, report.refused, report.access_filed, report.verification_filed,
         "provider"),
    )  # fmt: skip
    for side, reads, refused, access_tally, verification_tally, counterpart in sides:
        for t in reads:
            section = "readers" if side == "provided" else "reads"
            for measure, value in (("reads", t.reads), ("rows_read", t.rows),
                                   ("versions_read", t.versions)):  # fmt: skip
                rows.append((side, section, t.resource, t.counterpart or "", t.purpose or "",
                             measure, value))  # fmt: skip
        for f in refused:
            rows.append((side, "refused_reads", f.resource or "", f.counterpart or "", "",
                         "refused_reads", f.refused))  # fmt: skip
        rows += _request_rows(side, "access_requests", access_tally, ACCESS_OUTCOMES, counterpart)
        rows += _request_rows(side, "verification_requests", verification_tally,
                              VERIFICATION_OUTCOMES, counterpart)  # fmt: skip
    rows.append(("used", "own_reads", "", "", "", "own_reads", report.own_reads))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DEPARTMENT_CSV_COLUMNS)
    for row in rows:
        writer.writerow((report.year, report.code, *row))
    return buffer.getvalue()


PLATFORM_COLUMNS = (
    "resources_responsible", "resources_supplied", "publications", "versions_published",
    "publications_measured", "publications_on_time", "publications_held", "extracts",
    "extracts_on_time", "expectations", "expectations_passed", "reads_by_others",
    "rows_read_by_others", "refused_reads_by_others", "access_received",
    "access_received_answered", "access_received_on_time", "access_received_refused",
    "access_received_overdue", "verification_received", "verification_received_answered",
    "verification_received_on_time", "verification_received_overdue", "reads", "rows_read",
    "refused_reads", "access_filed", "access_filed_approved", "access_filed_refused",
    "verification_filed", "verification_filed_corrected", "own_reads",
)  # fmt: skip


def platform_figures(d: DepartmentReport) -> dict[str, int]:
    """A department's row of the platform summary: its provided and used totals."""
    return {
        "resources_responsible": d.responsible_for,
        "resources_supplied": d.supplies,
        "publications": d.publications,
        "versions_published": d.versions_published,
        "publications_measured": d.publications_measured,
        "publications_on_time": d.publications_on_time,
        "publications_held": d.publications_held,
        "extracts": d.extracts,
        "extracts_on_time": d.extracts_on_time,
        "expectations": d.expectations,
        "expectations_passed": d.expectations_passed,
        "reads_by_others": d.reads_received,
        "rows_read_by_others": d.rows_served,
        "refused_reads_by_others": d.refused_received,
        "access_received": d.access_received.filed,
        "access_received_answered": d.access_received.answered,
        "access_received_on_time": d.access_received.answered_on_time,
        "access_received_refused": d.access_received.count("refused"),
        "access_received_overdue": d.access_received.overdue,
        "verification_received": d.verification_received.filed,
        "verification_received_answered": d.verification_received.answered,
        "verification_received_on_time": d.verification_received.answered_on_time,
        "verification_received_overdue": d.verification_received.overdue,
        "reads": d.reads_made,
        "rows_read": d.rows_read,
        "refused_reads": d.refused_reads,
        "access_filed": d.access_filed.filed,
        "access_filed_approved": d.access_filed.count("approved"),
        "access_filed_refused": d.access_filed.count("refused"),
        "verification_filed": d.verification_filed.filed,
        "verification_filed_corrected": d.verification_filed.count("corrected"),
        "own_reads": d.own_reads,
    }


def platform_csv(summary: PlatformSummary) -> str:
    """One row per department, then `TOTAL`, the sum of the rows above."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("year", "department", "name", *PLATFORM_COLUMNS))
    for d in summary.departments:
        figures = platform_figures(d)
        writer.writerow((summary.year, d.code, d.department.name,
                         *(figures[c] for c in PLATFORM_COLUMNS)))  # fmt: skip
    writer.writerow((summary.year, "TOTAL", "",
                     *(summary.total(c) for c in PLATFORM_COLUMNS)))  # fmt: skip
    return buffer.getvalue()


def render_department(report: DepartmentReport) -> str:
    return render(
        "sharing.html.j2",
        report=report,
        read_actions=READ_ACTIONS,
        access_outcomes=ACCESS_OUTCOMES,
        verification_outcomes=VERIFICATION_OUTCOMES,
    )


def render_platform(summary: PlatformSummary) -> str:
    return render(
        "sharing_platform.html.j2",
        summary=summary,
        figures={d.code: platform_figures(d) for d in summary.departments},
        read_actions=READ_ACTIONS,
    )


@dataclass(frozen=True)
class SharingFiles:
    summary: PlatformSummary
    paths: tuple[Path, ...]  # HTML and CSV, platform first when written


def sharing_dir(settings: Settings, year: int) -> Path:
    return settings.reports_dir / "sharing" / str(year)


def check_department(catalog: Catalog, code: str) -> None:
    """Refuse a department the catalogue does not know (a `ReportError` naming the known)."""
    if code not in known_departments(catalog):
        raise ReportError(
            f"unknown department {code!r}; known: {', '.join(known_departments(catalog))}"
        )


def _write(folder: Path, stem: str, html: str, table: str) -> tuple[Path, Path]:
    html_path, csv_path = folder / f"{stem}.html", folder / f"{stem}.csv"
    html_path.write_text(html, encoding="utf-8")
    # utf-8-sig: spreadsheet programs then read the Chinese names correctly.
    csv_path.write_text(table, encoding="utf-8-sig")
    return html_path, csv_path


def write_sharing_reports(
    spark: SparkSession,
    catalog: Catalog,
    settings: Settings,
    *,
    year: int,
    at: datetime,
    department: str | None = None,
) -> SharingFiles:
    """Write `department`'s report of `year`, or without one the platform summary and every
    department's report, under `reports_dir/sharing/<year>/`."""
    if department is not None:
        check_department(catalog, department)
    summary = gather_sharing(spark, catalog, settings, year=year, at=at)
    folder = sharing_dir(settings, year)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if department is None:
        paths += _write(folder, summary.file_stem, render_platform(summary), platform_csv(summary))
        chosen = summary.departments
    else:
        chosen = (summary.department(department),)
    for report in chosen:
        paths += _write(folder, report.file_stem, render_department(report), department_csv(report))
    return SharingFiles(summary, tuple(paths))
