"""The RRULE subset and the next occurrence, as a pure function (backend/recurrence.py)."""

from datetime import UTC, datetime

import pytest

from backend.recurrence import InvalidRecurrenceError, next_occurrence, normalise_rule


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("FREQ=DAILY", "FREQ=DAILY"),
        ("RRULE:FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=WEEKLY;BYDAY=MO,WE"),
        ("rrule:FREQ=MONTHLY;BYMONTHDAY=-1", "FREQ=MONTHLY;BYMONTHDAY=-1"),
        ("FREQ=YEARLY;INTERVAL=2;COUNT=5", "FREQ=YEARLY;INTERVAL=2;COUNT=5"),
        ("FREQ=DAILY;UNTIL=20271231T235959Z", "FREQ=DAILY;UNTIL=20271231T235959Z"),
    ],
)
def test_accepted_rules_are_stored_as_sent_without_the_prefix(sent: str, stored: str) -> None:
    assert normalise_rule(sent) == stored


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("FREQ=HOURLY", "FREQ must be"),
        ("FREQ=DAILY;BYHOUR=9", "BYHOUR is not supported"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20271231T235959Z", "COUNT and UNTIL"),
        ("FREQ=DAILY;UNTIL=20271231", "UNTIL must be a UTC date-time"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be"),
        ("FREQ=DAILY;COUNT=x", "COUNT must be"),
        ("FREQ=WEEKLY;BYDAY=XX", "not a valid RRULE"),
        ("FREQ=DAILY;FREQ=WEEKLY", "given twice"),
        ("every day", "is not NAME=VALUE"),
        ("", "must be an RRULE"),
        ("RRULE:", "must be an RRULE"),
    ],
)
def test_anything_outside_the_subset_is_refused_saying_why(rule: str, reason: str) -> None:
    with pytest.raises(InvalidRecurrenceError, match=reason):
        normalise_rule(rule)


def test_daily_at_nine_stays_nine_local_across_the_spring_change_in_berlin() -> None:
    # Sunday 29 March 2026: Berlin goes from UTC+1 to UTC+2.
    due = utc("2026-03-28T09:00:00+01:00")
    following = next_occurrence("FREQ=DAILY", due, "Europe/Berlin")
    assert following == (utc("2026-03-29T09:00:00+02:00"), "FREQ=DAILY")
    assert following[0].isoformat() == "2026-03-29T07:00:00+00:00"


def test_daily_at_nine_stays_nine_local_across_the_autumn_change_in_new_york() -> None:
    # Sunday 1 November 2026: New York goes from UTC-4 to UTC-5.
    due = utc("2026-10-31T09:00:00-04:00")
    following = next_occurrence("FREQ=DAILY", due, "America/New_York")
    assert following is not None
    assert following[0] == utc("2026-11-01T09:00:00-05:00")


def test_in_utc_the_same_rule_keeps_the_utc_hour_instead() -> None:
    due = utc("2026-03-28T08:00:00Z")
    assert next_occurrence("FREQ=DAILY", due, "UTC") == (utc("2026-03-29T08:00:00Z"), "FREQ=DAILY")


def test_monthly_on_the_31st_skips_months_without_one() -> None:
    due = utc("2027-01-31T10:00:00Z")
    following = next_occurrence("FREQ=MONTHLY", due, "UTC")
    assert following is not None
    assert following[0] == utc("2027-03-31T10:00:00Z")  # February has no 31st (RFC 5545)


def test_the_last_day_of_each_month_with_a_negative_monthday() -> None:
    due = utc("2028-01-31T10:00:00Z")
    following = next_occurrence("FREQ=MONTHLY;BYMONTHDAY=-1", due, "UTC")
    assert following is not None
    assert following[0] == utc("2028-02-29T10:00:00Z")  # a leap year


def test_yearly_on_a_leap_day_comes_back_four_years_later() -> None:
    due = utc("2028-02-29T12:00:00Z")
    following = next_occurrence("FREQ=YEARLY", due, "UTC")
    assert following is not None
    assert following[0] == utc("2032-02-29T12:00:00Z")


def test_weekly_on_several_days_goes_to_the_next_of_them() -> None:
    monday = utc("2026-11-23T18:00:00Z")
    assert next_occurrence("FREQ=WEEKLY;BYDAY=MO,TH", monday, "UTC") == (
        utc("2026-11-26T18:00:00Z"),
        "FREQ=WEEKLY;BYDAY=MO,TH",
    )
    # Every other week: after Thursday, the Monday two weeks on.
    thursday = utc("2026-11-26T18:00:00Z")
    following = next_occurrence("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH", thursday, "UTC")
    assert following is not None
    assert following[0] == utc("2026-12-07T18:00:00Z")


def test_count_counts_the_occurrences_left() -> None:
    due = utc("2026-11-23T09:00:00Z")
    assert next_occurrence("FREQ=DAILY;COUNT=3", due, "UTC") == (
        utc("2026-11-24T09:00:00Z"),
        "FREQ=DAILY;COUNT=2",
    )
    assert next_occurrence("FREQ=DAILY;COUNT=2;INTERVAL=2", due, "UTC") == (
        utc("2026-11-25T09:00:00Z"),
        "FREQ=DAILY;COUNT=1;INTERVAL=2",
    )
    assert next_occurrence("FREQ=DAILY;COUNT=1", due, "UTC") is None


def test_nothing_comes_after_until() -> None:
    rule = "FREQ=DAILY;UNTIL=20261124T090000Z"
    assert next_occurrence(rule, utc("2026-11-23T09:00:00Z"), "UTC") == (utc("2026-11-24T09:00:00Z"), rule)
    assert next_occurrence(rule, utc("2026-11-24T09:00:00Z"), "UTC") is None
