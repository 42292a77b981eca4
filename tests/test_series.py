"""Recurring series through the API, on both databases: a series keeps its anchor's time of day
across daylight saving time; completing late skips to the first occurrence after now; a rule
that would never come round again is refused (and one stored before that ends its series);
setting the due date starts the series anew."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from tests.conftest import Caller, assert_problem, run_sql

pytestmark = pytest.mark.anyio


async def complete(alice: Caller, task: dict[str, Any]) -> dict[str, Any]:
    response = await alice.request("PATCH", f"/{task['id']}/complete")
    assert response.status_code == 200, response.text
    done: dict[str, Any] = response.json()
    assert done["next_occurrence_id"] is not None
    following: dict[str, Any] = (await alice.request("GET", f"/{done['next_occurrence_id']}")).json()
    return following


async def test_a_daily_0230_in_berlin_comes_back_to_0230_after_the_spring_change(alice: Caller) -> None:
    # Berlin skips 02:00-03:00 on Sunday 30 March 2092 (far ahead: never completed late).
    saturday = await alice.create(
        title="meds", due_at="2092-03-29T02:30:00+01:00", recurrence="FREQ=DAILY", time_zone="Europe/Berlin"
    )
    sunday = await complete(alice, saturday)
    assert sunday["due_at"] == "2092-03-30T01:30:00Z"  # 03:30 local: 02:30 does not exist that night
    monday = await complete(alice, sunday)
    assert monday["due_at"] == "2092-03-31T00:30:00Z"  # 02:30 local again, not 03:30 for good
    tuesday = await complete(alice, monday)
    assert tuesday["due_at"] == "2092-04-01T00:30:00Z"


async def test_completing_three_weeks_late_gives_next_weeks_occurrence(alice: Caller) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    due = now - timedelta(days=21, hours=1)
    task = await alice.create(
        title="bins",
        due_at=due.isoformat(),
        remind_at=(due - timedelta(hours=2)).isoformat(),
        recurrence="FREQ=WEEKLY;COUNT=10",
    )
    following = await complete(alice, task)
    # due+1w, +2w and +3w are past (skipped and used up); +4w is the first after now.
    assert datetime.fromisoformat(following["due_at"]) == due + timedelta(weeks=4)
    assert datetime.fromisoformat(following["remind_at"]) == due + timedelta(weeks=4, hours=-2)
    assert following["recurrence"] == "FREQ=WEEKLY;COUNT=6"
    assert following["completed"] is False


async def test_a_rule_that_would_never_come_round_again_is_refused(alice: Caller) -> None:
    monday = "2090-12-04T09:00:00Z"  # a Monday
    never = "FREQ=DAILY;INTERVAL=7;BYDAY=TU"  # every 7 days from a Monday is never a Tuesday
    problem = assert_problem(
        await alice.request("POST", json={"title": "t", "due_at": monday, "recurrence": never}), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "recurrence"]
    assert "never" in problem["errors"][0]["msg"]
    # Through PATCH too, whichever field makes it so, and nothing changes.
    task = await alice.create(title="t", due_at=monday)
    assert_problem(await alice.request("PATCH", f"/{task['id']}", json={"recurrence": never}), 422)
    tuesday = await alice.create(title="u", due_at="2090-12-05T09:00:00Z", recurrence=never)
    assert_problem(await alice.request("PATCH", f"/{tuesday['id']}", json={"due_at": monday}), 422)
    assert (await alice.request("GET", f"/{task['id']}")).json() == task
    assert (await alice.request("GET", f"/{tuesday['id']}")).json() == tuesday
    # The MCP tools refuse it alike.
    refused = (await alice.tool("add_task", {"title": "t", "due_at": monday, "recurrence": never})).refused
    assert "recurrence" in refused


@pytest.mark.parametrize(
    "rule", ["FREQ=DAILY;BYMONTHDAY=32", "FREQ=MONTHLY;BYDAY=6MO", "FREQ=DAILY;BYDAY=1MO"]
)
async def test_rules_outside_rfc_5545s_ranges_are_422(alice: Caller, rule: str) -> None:
    response = await alice.request(
        "POST", json={"title": "t", "due_at": "2090-12-04T09:00:00Z", "recurrence": rule}
    )
    assert assert_problem(response, 422)["errors"][0]["loc"] == ["body", "recurrence"]


async def test_a_stored_rule_that_is_no_longer_valid_ends_its_series_when_completed(
    app: FastAPI, alice: Caller
) -> None:
    """Written before the ranges were checked (it froze the worker when completed): now the
    completion is prompt, and creates nothing."""
    task = await alice.create(title="legacy", due_at="2090-12-04T09:00:00Z", recurrence="FREQ=DAILY")
    run_sql(
        app.state.settings.database_url,
        f"UPDATE tasks SET recurrence = 'FREQ=DAILY;BYMONTHDAY=32' WHERE id = {task['id']}",
    )
    done = await alice.request("PATCH", f"/{task['id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["next_occurrence_id"] is None


async def test_setting_the_due_date_starts_the_series_anew(alice: Caller) -> None:
    task = await alice.create(title="standup", due_at="2090-12-04T09:00:00Z", recurrence="FREQ=DAILY")
    moved = await alice.request("PATCH", f"/{task['id']}", json={"due_at": "2090-12-04T10:15:00Z"})
    assert moved.status_code == 200
    assert (await complete(alice, moved.json()))["due_at"] == "2090-12-05T10:15:00Z"
    # Writing the same due date again (a PUT of the whole task) keeps the series as it is.
    anchored = await alice.create(
        title="meds", due_at="2092-03-29T02:30:00+01:00", recurrence="FREQ=DAILY", time_zone="Europe/Berlin"
    )
    sunday = await complete(alice, anchored)
    put = await alice.request(
        "PUT",
        f"/{sunday['id']}",
        json={"title": "meds", "due_at": sunday["due_at"], "recurrence": "FREQ=DAILY"},
    )
    assert put.status_code == 200
    assert (await complete(alice, put.json()))["due_at"] == "2092-03-31T00:30:00Z"
