"""The RRULE subset and the next occurrence, as a pure function (backend/recurrence.py)."""

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backend.domain.recurrence import (
    RULE_PATTERN,
    InvalidRecurrenceError,
    has_occurrence_after,
    next_occurrence,
    normalise_rule,
)


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


# --- RFC 5545's ranges and combinations -------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("FREQ=DAILY;BYMONTHDAY=32", "BYMONTHDAY must list days from 1 to 31"),
        ("FREQ=DAILY;BYMONTHDAY=-32", "BYMONTHDAY must list days from 1 to 31"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY must list days from 1 to 31"),
        ("FREQ=MONTHLY;BYDAY=6MO", "BYDAY ordinals go from 1 to 5"),
        ("FREQ=MONTHLY;BYDAY=0MO", "BYDAY ordinals go from 1 to 5"),
        ("FREQ=YEARLY;BYDAY=54MO", "BYDAY ordinals go from 1 to 53"),
        ("FREQ=DAILY;BYDAY=1MO", "cannot number its weekdays with FREQ=DAILY"),
        ("FREQ=WEEKLY;BYDAY=-1FR", "cannot number its weekdays with FREQ=WEEKLY"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY cannot be used with FREQ=WEEKLY"),
        ("FREQ=DAILY;INTERVAL=\u00b2", "INTERVAL must be a whole number"),  # a superscript two
        ("FREQ=DAILY;COUNT=\uff11", "COUNT must be a whole number"),  # a fullwidth one
        ("FREQ=DAILY;INTERVAL=10001", "INTERVAL must be a whole number from 1 to 10000"),
        ("FREQ=WEEKLY;BYDAY=+MO", "is not a valid RRULE"),
        ("FREQ=DAILY;UNTIL=20270230T000000Z", "is not a valid RRULE"),  # no 30 February
    ],
)
def test_rules_outside_rfc_5545s_ranges_are_refused_saying_why(rule: str, reason: str) -> None:
    with pytest.raises(InvalidRecurrenceError, match=reason):
        normalise_rule(rule)


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=MONTHLY;BYDAY=-1FR",
        "FREQ=MONTHLY;BYDAY=5MO",
        "FREQ=YEARLY;BYDAY=53MO",
        "FREQ=YEARLY;BYDAY=-53SU",
        "FREQ=DAILY;BYDAY=MO,TU;BYMONTHDAY=1,-1",
        "interval=2;freq=weekly;byday=mo",  # any order, any case
    ],
)
def test_rules_within_the_ranges_are_accepted(rule: str) -> None:
    assert normalise_rule(rule) == rule


@settings(max_examples=300, deadline=None)
@given(rule=st.from_regex(RULE_PATTERN, fullmatch=True))
def test_every_rule_the_schemas_pattern_shows_is_accepted(rule: str) -> None:
    """The OpenAPI pattern (one order of the parts) never promises what the server refuses,
    but for what a pattern cannot express: an UNTIL on a date that does not exist."""
    until = rule.partition("UNTIL=")[2]
    if until:
        try:
            datetime.strptime(until, "%Y%m%dT%H%M%SZ")
        except ValueError:
            assume(False)
    assert normalise_rule(rule) == rule


# --- a series keeps its anchor, and catches up ----------------------------------------------


def test_a_daily_0230_in_berlin_is_0330_only_on_the_day_0230_does_not_exist() -> None:
    anchor = utc("2026-03-28T02:30:00+01:00")  # the series started on Saturday at 02:30
    sunday = next_occurrence("FREQ=DAILY", anchor, "Europe/Berlin", anchor=anchor)
    assert sunday is not None
    assert sunday.due_at == utc("2026-03-29T03:30:00+02:00")  # 02:30 is skipped that night
    monday = next_occurrence("FREQ=DAILY", sunday.due_at, "Europe/Berlin", anchor=anchor)
    assert monday is not None
    assert monday.due_at == utc("2026-03-30T02:30:00+02:00")  # and 02:30 again, for good


def test_the_day_of_the_month_comes_from_the_anchor() -> None:
    anchor = utc("2027-01-31T10:00:00Z")
    # An occurrence moved to the 28th: the series still falls on the 31st.
    following = next_occurrence("FREQ=MONTHLY", utc("2027-03-28T10:00:00Z"), "UTC", anchor=anchor)
    assert following is not None
    assert following.due_at == utc("2027-03-31T10:00:00Z")


def test_completing_late_skips_to_the_first_occurrence_after_now() -> None:
    due = utc("2026-11-02T09:00:00Z")  # a Monday
    now = utc("2026-11-24T12:00:00Z")  # three weeks and a day late
    following = next_occurrence("FREQ=WEEKLY;COUNT=10", due, "UTC", now=now)
    # Not 9 November: the first Monday after now. The three skipped occurrences are used up.
    assert following == (utc("2026-11-30T09:00:00Z"), "FREQ=WEEKLY;COUNT=6")
    assert next_occurrence("FREQ=WEEKLY;COUNT=4", due, "UTC", now=now) is None  # all of them skipped
    assert next_occurrence("FREQ=WEEKLY;UNTIL=20261129T000000Z", due, "UTC", now=now) is None
    # Completed early, the next is the one after its own due date.
    early = next_occurrence("FREQ=WEEKLY", due, "UTC", now=utc("2026-10-30T00:00:00Z"))
    assert early is not None
    assert early.due_at == utc("2026-11-09T09:00:00Z")


def test_a_rule_that_never_comes_round_again_is_found_out_at_once() -> None:
    monday = utc("2026-11-30T09:00:00Z")
    assert not has_occurrence_after("FREQ=DAILY;INTERVAL=7;BYDAY=TU", monday, "UTC")
    assert not has_occurrence_after(
        "FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31", utc("2027-02-10T09:00:00Z"), "UTC"
    )
    assert next_occurrence("FREQ=DAILY;INTERVAL=7;BYDAY=TU", monday, "UTC") is None
    assert has_occurrence_after("FREQ=DAILY;INTERVAL=7;BYDAY=MO", monday, "UTC")
    # Rare but real: a 5th Monday in February (2044, then 2072).
    assert has_occurrence_after("FREQ=MONTHLY;INTERVAL=12;BYDAY=5MO", utc("2027-02-01T09:00:00Z"), "UTC")
    # At the end of time a series just ends: that is no reason to refuse it.
    assert has_occurrence_after("FREQ=YEARLY", utc("9999-06-01T00:00:00Z"), "UTC")


# --- the same occurrences as python-dateutil ----------------------------------------------------

WEEKDAY_NAMES = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def rules(draw: st.DrawFn) -> str:
    freq = draw(st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]))
    parts = [f"FREQ={freq}"]
    if draw(st.booleans()):
        parts.append(f"INTERVAL={draw(st.integers(1, 40))}")
    if draw(st.booleans()):
        # Ordinals (MONTHLY, YEARLY) or plain weekdays, not both: dateutil reads a mix as
        # days that are both, RFC 5545 as days that are either (as this API does).
        most = {"MONTHLY": 5, "YEARLY": 53}.get(freq, 0)
        ordinals = most and draw(st.booleans())
        days = draw(st.lists(st.sampled_from(WEEKDAY_NAMES), min_size=1, max_size=3))
        if ordinals:
            numbers = st.integers(1, most).map(lambda n: n * draw(st.sampled_from([1, -1])))
            parts.append("BYDAY=" + ",".join(f"{draw(numbers)}{day}" for day in days))
        else:
            parts.append("BYDAY=" + ",".join(days))
    if freq != "WEEKLY" and draw(st.booleans()):
        days = draw(
            st.lists(
                st.integers(1, 31).map(lambda n: n * draw(st.sampled_from([1, -1]))), min_size=1, max_size=3
            )
        )
        parts.append("BYMONTHDAY=" + ",".join(map(str, days)))
    return ";".join(parts)


@settings(max_examples=300, deadline=None)
@given(
    rule=rules(),
    start=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31)),
    zone_name=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
)
def test_the_occurrences_are_dateutils(rule: str, start: datetime, zone_name: str) -> None:
    """This module expands the subset itself, within a bounded search; where dateutil finds
    occurrences quickly, it finds the same ones."""
    zone = ZoneInfo(zone_name)
    start = start.replace(microsecond=0, tzinfo=zone)
    anchor = start.astimezone(UTC)
    ours: list[datetime] = []
    due = anchor
    for _ in range(12):
        following = next_occurrence(rule, due, zone_name, anchor=anchor)
        if following is None:
            break
        ours.append(following.due_at)
        due = following.due_at
    assume(len(ours) == 12)  # a frequent rule: dateutil will find them quickly too
    theirs = list(itertools.islice(rrulestr(rule, dtstart=start), 13))
    theirs_utc = [moment.astimezone(UTC) for moment in theirs if moment > start][:12]
    assert ours == theirs_utc
