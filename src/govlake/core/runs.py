"""What a pipeline run is given (its interval) and what each stage reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def naive_utc(moment: datetime) -> datetime:
    """`moment` as a naive UTC timestamp, as the engine and the platform database store them
    (a naive `moment` is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Interval:
    """The data interval a run covers. Jobs take it as input and never read the clock, so a
    re-run of the same interval does the same thing."""

    start: datetime
    end: datetime

    @classmethod
    def ending(cls, end: datetime | None = None, *, hours: float = 24) -> Interval:
        end = (end or datetime.now(UTC)).astimezone(UTC)
        return cls(end - timedelta(hours=hours), end)

    @property
    def end_naive_utc(self) -> datetime:
        """The end as a naive UTC timestamp, as the engine stores it (session time zone UTC)."""
        return naive_utc(self.end)


@dataclass
class RejectedFile:
    file: str
    rule: str
    reason: str


@dataclass
class StageCounts:
    """Counts for one resource through one run of the pipeline."""

    resource: str
    extracts: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    rows_read: int = 0
    rows_malformed: int = 0
    rows_quarantined: int = 0
    rows_merged: int = 0
    rows_removed: int = 0  # records removed from silver (an increment's or a full extract's)
    crosscheck_findings: int = 0
    rows_published: int = 0
    silver_version: int | None = None
    published_versions: dict[str, int] = field(default_factory=dict)
    published: bool = False
    quality: dict[str, str] = field(default_factory=dict)  # suite run subject -> outcome
    held: list[str] = field(default_factory=list)  # what was held back, and why
