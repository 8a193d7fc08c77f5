"""Working days on the official holiday calendar: National Day and Spring Festival 2026 with
their make-up working weekends, the Monday–Friday fallback for 2027 (not yet published), and
the authority's holiday file when it has the year."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from pathlib import Path

import chinese_calendar
import pytest

from govlake.platform.workdays import (
    CalendarError,
    add_working_days,
    china_date,
    is_working_day,
    load_holidays,
    working_days_between,
)

REPO = Path(__file__).resolve().parents[2]


def _oracle(start: date, n: int) -> date:
    """The n-th official working day after `start`, straight from chinese_calendar."""
    day, counted = start, 0
    while counted < n:
        day += timedelta(days=1)
        counted += chinese_calendar.is_workday(day)
    return day


def test_make_up_working_saturday_counts_and_holiday_week_does_not() -> None:
    assert is_working_day(date(2026, 10, 10))  # Saturday, worked in lieu of National Day
    assert not is_working_day(date(2026, 10, 11))  # an ordinary Sunday
    assert not is_working_day(date(2026, 10, 5))  # Monday inside the National Day holiday
    assert is_working_day(date(2026, 10, 8))
    # Filed on Friday 9 October: the first working day after it is that Saturday.
    assert add_working_days(date(2026, 10, 9), 1).due_on == date(2026, 10, 10)


def test_ten_working_days_across_national_day() -> None:
    due = add_working_days(date(2026, 9, 30), 10)
    # 1–7 October off; 8, 9, 10 (Saturday, worked), 12–16, 19, 20.
    assert due.due_on == date(2026, 10, 20)
    assert due.due_on == _oracle(date(2026, 9, 30), 10)
    assert "official calendar 2026" in due.basis and "chinese-calendar 1.11.0" in due.basis


def test_ten_working_days_across_spring_festival() -> None:
    due = add_working_days(date(2026, 2, 13), 10)
    # 14 Feb (Saturday, worked); 15–23 Feb off; 24–27; 28 Feb (Saturday, worked); 2–5 Mar.
    assert due.due_on == date(2026, 3, 5)
    assert add_working_days(date(2026, 2, 13), 1).due_on == date(2026, 2, 14)
    assert add_working_days(date(2026, 2, 14), 1).due_on == date(2026, 2, 24)


def test_every_filing_date_of_2026_matches_the_official_calendar() -> None:
    day = date(2026, 1, 1)
    while day <= date(2026, 12, 10):  # 10 working days later is still in 2026
        for n in (1, 5, 10):
            assert add_working_days(day, n).due_on == _oracle(day, n), (day, n)
        day += timedelta(days=1)


def test_filed_in_mid_december_2026_falls_back_to_weekdays_for_2027(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="govlake.platform.workdays"):
        due = add_working_days(date(2026, 12, 18), 10)
    # 21–25 and 28–31 December are nine working days; the tenth falls in 2027, for which
    # no official calendar exists yet: counted Monday to Friday.
    assert due.due_on == date(2027, 1, 1)
    assert "official calendar 2026" in due.basis
    assert "Monday–Friday for 2027" in due.basis and "may move" in due.basis
    assert any(
        "2027" in r.getMessage() and "Monday to Friday" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(NotImplementedError):  # the package indeed stops at 2026
        chinese_calendar.is_workday(date(2027, 1, 1))


def test_holiday_file_of_the_authority_is_used_for_2027(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Test data in the file's shape, not the real 2027 calendar.
    holidays = tmp_path / "holidays.yaml"
    holidays.write_text(
        "2027:\n  holidays: [2027-01-01, 2027-01-04]\n  workdays: [2027-01-09]\n", "utf-8"
    )
    with caplog.at_level(logging.WARNING, logger="govlake.platform.workdays"):
        due = add_working_days(date(2026, 12, 18), 10, holidays_file=holidays)
        later = add_working_days(date(2026, 12, 31), 5, holidays_file=holidays)
    assert due.due_on == date(2027, 1, 5)  # 1 and 4 January off
    assert "official calendar 2026" in due.basis
    assert "holiday file holidays.yaml for 2027" in due.basis
    assert "Monday–Friday" not in due.basis
    assert not caplog.records
    # 5, 6, 7, 8 and the make-up Saturday 9 January.
    assert later.due_on == date(2027, 1, 9)
    assert is_working_day(date(2027, 1, 9), holidays_file=holidays)
    assert not is_working_day(date(2027, 1, 9))


def test_the_package_decides_the_years_it_covers(tmp_path: Path) -> None:
    wrong = tmp_path / "holidays.yaml"
    wrong.write_text("2026:\n  holidays: [2026-10-12]\n", "utf-8")
    due = add_working_days(date(2026, 9, 30), 10, holidays_file=wrong)
    assert due.due_on == date(2026, 10, 20)
    assert "holiday file" not in due.basis


def test_the_repository_holiday_file_invents_no_year() -> None:
    assert load_holidays(REPO / "schemas" / "holidays.yaml") == {}
    assert load_holidays(REPO / "schemas" / "no-such-file.yaml") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2027:\n  holidays: []\n", "lists no holidays"),
        ("2027:\n  holidays: [2028-01-01]\n", "is not in 2027"),
        ("2027:\n  holidays: [2027-01-01]\n  workdays: [2027-01-01]\n", "holiday and workday"),
        ("2027:\n  holidays: [someday]\n", "'someday' is not a date"),
        ("next_year:\n  holidays: [2027-01-01]\n", "is not a year"),
        ("2027:\n  holiday: [2027-01-01]\n", "only `holidays` and `workdays`"),
    ],
)
def test_a_broken_holiday_file_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "holidays.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(CalendarError, match=problem):
        add_working_days(date(2026, 12, 18), 10, holidays_file=path)


def test_working_days_between_inverts_add_working_days(tmp_path: Path) -> None:
    for start in (date(2026, 9, 30), date(2026, 2, 13), date(2026, 12, 18)):
        due = add_working_days(start, 10)
        assert working_days_between(start, due.due_on) == 10
        assert working_days_between(due.due_on, start) == -10
    # Overdue by: due Tuesday 20 October, judged on Monday 26 October.
    assert working_days_between(date(2026, 10, 20), date(2026, 10, 26)) == 4


def test_china_date_of_a_utc_time() -> None:
    assert china_date(datetime(2026, 9, 30, 15, 59)) == date(2026, 9, 30)
    assert china_date(datetime(2026, 9, 30, 16, 0)) == date(2026, 10, 1)
