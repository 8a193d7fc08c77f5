"""Working days (工作日) on the official holiday calendar, for the deadlines of the sharing
rules: an access request is answered within 10 working days (51号 art. 12).

Where the calendar comes from, year by year:

1. the official calendar as packaged by `chinese-calendar` (2004–2026 in 1.11.0), with the
   State Council's holidays and make-up working weekends (调休, e.g. Saturday 2026-10-10);
2. for a year the package does not cover, the holiday file the competent authority keeps
   (`schemas/holidays.yaml`: per year its holidays and its make-up working days);
3. else Monday to Friday, with a warning logged and the basis saying so: such a date may
   move once the State Council publishes that year's calendar.

Convention: the count starts the working day after the filing date, whatever the filing
day is; the n-th working day after it is the last day to answer (answering on it is on
time). Dates are calendar dates in China (UTC+8): use `china_date` for a UTC time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import chinese_calendar
import yaml

from govlake.core.errors import GovlakeError

log = logging.getLogger(__name__)

#: The authority's holiday file, relative to the catalogue folder.
HOLIDAYS_FILE = "holidays.yaml"

#: China Standard Time; China has kept no daylight saving time since 1991.
CHINA = timezone(timedelta(hours=8), "CST")

# No deadline of the rules is longer than a few dozen working days; this bounds a search
# through a calendar that would otherwise never reach its n-th working day.
_MAX_DAYS = 3660


class CalendarError(GovlakeError, ValueError):
    """The holiday file cannot be read or does not describe a year's calendar."""


@dataclass(frozen=True)
class Due:
    """A deadline in working days and the calendar(s) it was counted on."""

    due_on: date
    basis: str


@dataclass(frozen=True)
class YearCalendar:
    """One year of the authority's holiday file: days off and make-up working days."""

    year: int
    holidays: frozenset[date]
    workdays: frozenset[date] = field(default_factory=frozenset)


def default_holidays_file(catalog_dir: Path) -> Path:
    """Where the authority keeps its holiday file: next to the catalogue entries."""
    return catalog_dir / HOLIDAYS_FILE


def china_date(moment: datetime) -> date:
    """The calendar date in China of a time (naive times are UTC, as everywhere in govlake)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA).date()


def _package_label() -> str:
    try:
        return f"chinese-calendar {package_version('chinese_calendar')}"
    except PackageNotFoundError:  # pragma: no cover - imported above, so it is installed
        return "chinese-calendar"


def _dates(path: Path, year: int, key: str, raw: object) -> frozenset[date]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise CalendarError(f"{path}: {year}.{key} must be a list of dates (YYYY-MM-DD)")
    found = set()
    for value in raw:
        if isinstance(value, datetime) or not isinstance(value, date):
            try:
                value = date.fromisoformat(str(value))
            except ValueError as exc:
                raise CalendarError(f"{path}: {year}.{key}: {value!r} is not a date") from exc
        if value.year != year:
            raise CalendarError(f"{path}: {year}.{key}: {value} is not in {year}")
        found.add(value)
    return frozenset(found)


def load_holidays(path: Path) -> dict[int, YearCalendar]:
    """The years of the authority's holiday file (nothing when the file does not exist).

    Each year lists its holidays (days off, including weekdays off) and its make-up working
    days (weekend days worked). A year without holidays is refused: the file would then
    silently claim a year with no public holidays; leave the year out until it is known.
    """
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CalendarError(f"{path}: cannot read the holiday file: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CalendarError(f"{path}: the holiday file must map years to their calendar")
    years = {}
    for year, entry in raw.items():
        if not isinstance(year, int) or isinstance(year, bool):
            raise CalendarError(f"{path}: {year!r} is not a year")
        if not isinstance(entry, dict) or set(entry) - {"holidays", "workdays"}:
            raise CalendarError(f"{path}: {year} must have only `holidays` and `workdays` lists")
        holidays = _dates(path, year, "holidays", entry.get("holidays"))
        workdays = _dates(path, year, "workdays", entry.get("workdays"))
        if not holidays:
            raise CalendarError(
                f"{path}: {year} lists no holidays; leave the year out until the State "
                "Council publishes its calendar"
            )
        both = sorted(holidays & workdays)
        if both:
            raise CalendarError(
                f"{path}: {year}: {', '.join(map(str, both))} listed as holiday and workday"
            )
        years[year] = YearCalendar(year, holidays, workdays)
    return years


class _Calendar:
    """Decides day by day and remembers which source decided each year."""

    def __init__(self, holidays_file: Path | None):
        self.file = holidays_file
        self.years = load_holidays(holidays_file) if holidays_file is not None else {}
        self.official: set[int] = set()
        self.from_file: set[int] = set()
        self.weekdays_only: set[int] = set()

    def is_working_day(self, day: date) -> bool:
        try:
            working = bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            pass  # a year the package does not cover
        else:
            self.official.add(day.year)
            return working
        known = self.years.get(day.year)
        if known is not None:
            self.from_file.add(day.year)
            return day in known.workdays or (day.weekday() < 5 and day not in known.holidays)
        if day.year not in self.weekdays_only:
            log.warning(
                "no official holiday calendar for %s (%s covers %s, %s has no %s): counting "
                "Monday to Friday; the date may move once the State Council publishes it",
                day.year,
                _package_label(),
                _covered(),
                self.file or "no holiday file",
                day.year,
            )
            self.weekdays_only.add(day.year)
        return day.weekday() < 5

    def basis(self) -> str:
        parts = []
        if self.official:
            parts.append(f"official calendar {_years(self.official)} ({_package_label()})")
        if self.from_file:
            name = self.file.name if self.file is not None else HOLIDAYS_FILE
            parts.append(f"authority's holiday file {name} for {_years(self.from_file)}")
        if self.weekdays_only:
            parts.append(
                f"Monday–Friday for {_years(self.weekdays_only)}: no holiday calendar yet, "
                "may move once published"
            )
        return "; ".join(parts)


def _covered() -> str:
    years = [day.year for day in chinese_calendar.holidays]
    return f"{min(years)}–{max(years)}"


def _years(years: Iterable[int]) -> str:
    ordered = sorted(years)
    return str(ordered[0]) if len(ordered) == 1 else f"{ordered[0]}–{ordered[-1]}"


def is_working_day(day: date, *, holidays_file: Path | None = None) -> bool:
    """Whether `day` is a working day (make-up working weekends included)."""
    return _Calendar(holidays_file).is_working_day(day)


def add_working_days(start: date, n: int, *, holidays_file: Path | None = None) -> Due:
    """The n-th working day after `start` (the filing date; it never counts itself), and
    the calendar used. `n = 0` is `start` itself."""
    if n < 0:
        raise ValueError(f"a deadline counts forward: n must be at least 0, got {n}")
    calendar = _Calendar(holidays_file)
    day, counted = start, 0
    while counted < n:
        day += timedelta(days=1)
        if (day - start).days > _MAX_DAYS:
            raise CalendarError(f"no {n} working days within {_MAX_DAYS} days after {start}")
        if calendar.is_working_day(day):
            counted += 1
    return Due(day, calendar.basis() or f"{n} working days: the filing date itself")


def working_days_between(a: date, b: date, *, holidays_file: Path | None = None) -> int:
    """Working days after `a` up to and including `b` (negative when `b` is before `a`), so
    that `working_days_between(d, add_working_days(d, n).due_on) == n`."""
    if b < a:
        return -working_days_between(b, a, holidays_file=holidays_file)
    calendar = _Calendar(holidays_file)
    return sum(
        1 for offset in range(1, (b - a).days + 1) if calendar.is_working_day(a + timedelta(offset))
    )
