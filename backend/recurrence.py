"""Recurring tasks: the RFC 5545 RRULE subset the API accepts, and the next occurrence.

Pure: no database, no web framework. Rules are parsed and expanded by
python-dateutil; this module only decides what subset is accepted, and expands
in the task's time zone, so that a daily 09:00 in Europe/Berlin stays 09:00
local across a change of daylight saving time.
"""

from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr

PREFIX = "RRULE:"
FREQUENCIES = frozenset({"DAILY", "WEEKLY", "MONTHLY", "YEARLY"})
PARTS = frozenset({"FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT", "UNTIL"})
MAX_RULE_LENGTH = 255


class InvalidRecurrenceError(ValueError):
    """The rule is outside the accepted subset, or not a rule at all; the message says why."""


def normalise_rule(value: str) -> str:
    """The rule as stored and returned: without a leading `RRULE:`, otherwise as sent.

    Raises `InvalidRecurrenceError` for anything outside FREQ=DAILY|WEEKLY|MONTHLY|YEARLY
    with INTERVAL, BYDAY, BYMONTHDAY, COUNT or UNTIL (in UTC), or what dateutil cannot parse.
    """
    rule = value.strip()
    if rule[: len(PREFIX)].upper() == PREFIX:
        rule = rule[len(PREFIX) :]
    if not rule or len(rule) > MAX_RULE_LENGTH:
        raise InvalidRecurrenceError(f"must be an RRULE of 1 to {MAX_RULE_LENGTH} characters")
    parts = _parts(rule)
    unknown = sorted(set(parts) - PARTS)
    if unknown:
        raise InvalidRecurrenceError(
            f"{', '.join(unknown)} is not supported; use FREQ, INTERVAL, BYDAY, BYMONTHDAY, COUNT, UNTIL"
        )
    if parts.get("FREQ") not in FREQUENCIES:
        raise InvalidRecurrenceError("FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY")
    if "COUNT" in parts and "UNTIL" in parts:
        raise InvalidRecurrenceError("COUNT and UNTIL cannot both be given (RFC 5545)")
    for name in ("INTERVAL", "COUNT"):
        if name in parts and not (parts[name].isdigit() and 1 <= int(parts[name]) <= 10_000):
            raise InvalidRecurrenceError(f"{name} must be a whole number from 1 to 10000")
    if "UNTIL" in parts and not parts["UNTIL"].endswith("Z"):
        raise InvalidRecurrenceError("UNTIL must be a UTC date-time, such as 20271231T235959Z")
    try:
        _parse(rule, datetime(2000, 1, 1, tzinfo=UTC))
    except (ValueError, TypeError) as error:
        raise InvalidRecurrenceError(f"is not a valid RRULE ({error})") from None
    return rule


def _parts(rule: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for part in rule.split(";"):
        name, equals, value = part.partition("=")
        if not equals or not value:
            raise InvalidRecurrenceError(f"{part!r} is not NAME=VALUE")
        if name.upper() in parts:
            raise InvalidRecurrenceError(f"{name} is given twice")
        parts[name.upper()] = value.upper()
    return parts


def _parse(rule: str, start: datetime) -> rrule:
    parsed = rrulestr(rule, dtstart=start)
    assert isinstance(parsed, rrule)  # one RRULE, never a set: rrulestr was given no RDATE or EXRULE
    return parsed


def valid_time_zone(name: str) -> str:
    """The IANA zone name, if Python's zone database knows it."""
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone, such as Europe/Berlin or UTC") from None
    return name


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def next_occurrence(rule: str, due_at: datetime, time_zone: str) -> tuple[datetime, str] | None:
    """The occurrence after `due_at` (in UTC) and the rule the next task carries, or None
    when the rule has none left: its COUNT is spent, or the next one is past its UNTIL.

    Expanded in `time_zone`, from `due_at` as the rule's start: a COUNT counts the
    occurrences left, this one included, so the next task carries one fewer.
    """
    parts = _parts(rule)
    count = int(parts["COUNT"]) if "COUNT" in parts else None
    if count is not None and count <= 1:
        return None
    local = due_at.astimezone(zone(time_zone))
    following = _parse(rule, local).after(local)
    if following is None:
        return None
    following_utc = following.astimezone(UTC)
    if count is None:
        return following_utc, rule
    return following_utc, _with_count(rule, count - 1)


def _with_count(rule: str, count: int) -> str:
    """The rule with its COUNT replaced, every other part as it was written."""
    return ";".join(
        f"{name}={count}" if name.upper() == "COUNT" else f"{name}={value}"
        for name, _, value in (part.partition("=") for part in rule.split(";"))
    )
