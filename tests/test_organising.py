"""Priorities, due dates, reminders, tags and recurrence on a task: what POST, PUT and PATCH
do with them, what a completed occurrence brings, and what every client that knows
nothing of them keeps getting."""

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Caller, assert_problem, run_sql

pytestmark = pytest.mark.anyio

ORGANISING = {
    "priority",
    "due_at",
    "remind_at",
    "tags",
    "recurrence",
    "time_zone",
    "completed_at",
    "next_occurrence_id",
}


async def test_a_title_alone_gets_every_default(alice: Caller) -> None:
    task = await alice.create(title="plain")
    assert {key: task[key] for key in ORGANISING} == {
        "priority": "none",
        "due_at": None,
        "remind_at": None,
        "tags": [],
        "recurrence": None,
        "time_zone": "UTC",
        "completed_at": None,
        "next_occurrence_id": None,
    }


async def test_every_field_on_create_round_trips(alice: Caller) -> None:
    task = await alice.create(
        title="Team meeting",
        priority="high",
        due_at="2026-11-30T09:00:00+01:00",
        remind_at="2026-11-30T08:45:00+01:00",
        tags=["work", " Weekly ", "WORK"],
        recurrence="RRULE:FREQ=WEEKLY;BYDAY=MO",
        time_zone="Europe/Berlin",
    )
    assert task["priority"] == "high"
    assert task["due_at"] == "2026-11-30T08:00:00Z"  # stored and returned in UTC
    assert task["remind_at"] == "2026-11-30T07:45:00Z"
    assert task["tags"] == ["Weekly", "work"]  # trimmed, duplicates collapsed, sorted case-insensitively
    assert task["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
    assert task["time_zone"] == "Europe/Berlin"
    assert (await alice.request("GET", f"/{task['id']}")).json() == task


async def test_a_tag_keeps_the_spelling_it_was_first_used_with(alice: Caller) -> None:
    await alice.create(title="one", tags=["Work"])
    second = await alice.create(title="two", tags=["work", "new"])
    assert second["tags"] == ["new", "Work"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"due_at": "2026-11-30T09:00:00"}, "body.due_at"),  # no offset: ambiguous
        ({"remind_at": "tomorrow"}, "body.remind_at"),
        ({"priority": "urgent"}, "body.priority"),
        ({"time_zone": "Mars/Olympus"}, "body.time_zone"),
        ({"recurrence": "FREQ=HOURLY", "due_at": "2026-11-30T09:00:00Z"}, "body.recurrence"),
        ({"recurrence": "FREQ=DAILY"}, "due_at"),  # a recurring task needs a due date
        ({"tags": [f"t{i}" for i in range(21)]}, "body.tags"),  # 21 distinct (duplicates collapse first)
        ({"tags": ["x" * 51]}, "body.tags"),
        ({"tags": ["tab\there"]}, "body.tags"),
        ({"tags": [""]}, "body.tags"),
        ({"tags": "work"}, "body.tags"),
        ({"completed_at": "2026-11-30T09:00:00Z"}, "body.completed_at"),  # read-only
        ({"next_occurrence_id": 3}, "body.next_occurrence_id"),
    ],
)
async def test_invalid_organising_fields_are_422_naming_the_field(
    alice: Caller, body: dict[str, Any], where: str
) -> None:
    problem = assert_problem(await alice.request("POST", json={"title": "t", **body}), 422)
    assert where in problem["detail"] or any(where in ".".join(map(str, e["loc"])) for e in problem["errors"])
    assert (await alice.request("GET")).json() == []


async def test_patch_changes_exactly_the_fields_sent_and_null_clears(alice: Caller) -> None:
    task = await alice.create(
        title="t",
        priority="low",
        due_at="2026-12-01T10:00:00Z",
        remind_at="2026-12-01T09:00:00Z",
        tags=["a", "b"],
    )
    url = f"/{task['id']}"
    patched = (await alice.request("PATCH", url, json={"priority": "high"})).json()
    assert {k: patched[k] for k in ("priority", "due_at", "remind_at", "tags")} == {
        "priority": "high",
        "due_at": "2026-12-01T10:00:00Z",
        "remind_at": "2026-12-01T09:00:00Z",
        "tags": ["a", "b"],
    }
    cleared = (await alice.request("PATCH", url, json={"due_at": None, "remind_at": None, "tags": []})).json()
    assert (cleared["due_at"], cleared["remind_at"], cleared["tags"]) == (None, None, [])
    assert (await alice.request("GET", url)).json() == cleared
    for body in ({"priority": None}, {"tags": None}, {"time_zone": None}):
        assert_problem(await alice.request("PATCH", url, json=body), 422)


async def test_put_leaves_omitted_organising_fields_alone(alice: Caller) -> None:
    """A client that knows nothing of tags cannot wipe them."""
    task = await alice.create(
        title="t", description="d", priority="high", tags=["keep"], due_at="2026-12-01T10:00:00Z"
    )
    replaced = (await alice.request("PUT", f"/{task['id']}", json={"title": "new title"})).json()
    assert replaced["title"] == "new title"
    assert replaced["description"] is None  # as PUT always did
    assert (replaced["priority"], replaced["tags"], replaced["due_at"]) == (
        "high",
        ["keep"],
        "2026-12-01T10:00:00Z",
    )
    sent = (
        await alice.request("PUT", f"/{task['id']}", json={"title": "t", "tags": ["other"], "due_at": None})
    ).json()
    assert (sent["tags"], sent["due_at"]) == (["other"], None)


async def test_a_recurring_task_always_has_a_due_date(alice: Caller) -> None:
    task = await alice.create(title="t", due_at="2026-12-01T10:00:00Z", recurrence="FREQ=DAILY")
    refused = await alice.request("PATCH", f"/{task['id']}", json={"due_at": None})
    problem = assert_problem(refused, 422)
    assert problem["errors"][0]["loc"] == ["body", "due_at"]
    assert (await alice.request("GET", f"/{task['id']}")).json() == task  # nothing changed
    plain = await alice.create(title="no date")
    assert_problem(await alice.request("PATCH", f"/{plain['id']}", json={"recurrence": "FREQ=DAILY"}), 422)
    # Both at once is fine; and clearing both.
    both = await alice.request(
        "PATCH", f"/{plain['id']}", json={"recurrence": "FREQ=DAILY", "due_at": "2026-12-01T10:00:00Z"}
    )
    assert both.status_code == 200
    neither = await alice.request("PATCH", f"/{plain['id']}", json={"recurrence": None, "due_at": None})
    assert neither.json()["recurrence"] is None


async def test_completed_at_follows_completion(alice: Caller) -> None:
    task = await alice.create(title="t")
    done = (await alice.request("PATCH", f"/{task['id']}/complete")).json()
    stamped = datetime.fromisoformat(done["completed_at"])
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60
    again = (await alice.request("PATCH", f"/{task['id']}/complete", json={"completed": True})).json()
    assert again["completed_at"] == done["completed_at"]  # kept while it stays completed
    reopened = (await alice.request("PATCH", f"/{task['id']}", json={"completed": False})).json()
    assert reopened["completed_at"] is None
    created_done = await alice.create(title="done already", completed=True)
    assert created_done["completed_at"] is not None


# --- recurrence -----------------------------------------------------------------------


async def recurring(alice: Caller, **fields: Any) -> dict[str, Any]:
    return await alice.create(
        title="Water plants",
        description="the big ones",
        priority="medium",
        tags=["home", "Weekly"],
        # Far ahead, so that completing it is never late (a late one skips to after now):
        # Berlin goes from UTC+1 to UTC+2 on Sunday 30 March 2092.
        due_at="2092-03-29T09:00:00+01:00",
        remind_at="2092-03-29T08:30:00+01:00",
        recurrence="FREQ=DAILY;COUNT=3",
        time_zone="Europe/Berlin",
        **fields,
    )


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PATCH", "/complete", None),
        ("PATCH", "/complete", {"completed": True}),
        ("PATCH", "", {"completed": True}),
        ("PUT", "", {"title": "Water plants", "description": "the big ones", "completed": True}),
    ],
)
async def test_completing_an_occurrence_creates_the_next(
    alice: Caller, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    first = await recurring(alice)
    response = await alice.request(method, f"/{first['id']}{suffix}", json=body)
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["completed"] is True
    assert done["next_occurrence_id"] is not None
    following = (await alice.request("GET", f"/{done['next_occurrence_id']}")).json()
    assert following["completed"] is False
    assert following["completed_at"] is None
    assert (following["title"], following["description"], following["priority"], following["tags"]) == (
        "Water plants",
        "the big ones",
        "medium",
        ["home", "Weekly"],
    )
    # 09:00 in Berlin on both sides of the change to summer time (30 March 2092).
    assert following["due_at"] == "2092-03-30T07:00:00Z"
    assert following["remind_at"] == "2092-03-30T06:30:00Z"  # the same half hour before
    assert following["recurrence"] == "FREQ=DAILY;COUNT=2"
    assert following["time_zone"] == "Europe/Berlin"
    assert following["next_occurrence_id"] is None
    assert (await alice.request("GET", f"/{first['id']}")).json() == done


async def test_completing_again_never_creates_a_second_successor(alice: Caller) -> None:
    first = await recurring(alice)
    url = f"/{first['id']}/complete"
    done = (await alice.request("PATCH", url, json={"completed": True})).json()
    for body in ({"completed": True}, None, None, {"completed": True}):  # retry, reopen, complete again
        await alice.request("PATCH", url, json=body)
    assert (await alice.request("GET", f"/{first['id']}")).json()["next_occurrence_id"] == done[
        "next_occurrence_id"
    ]
    listed = (await alice.request("GET")).json()
    assert len(listed) == 2


async def test_the_count_runs_out(alice: Caller) -> None:
    task = await recurring(alice)
    chain = [task["id"]]
    for _ in range(2):
        done = (await alice.request("PATCH", f"/{chain[-1]}/complete")).json()
        chain.append(done["next_occurrence_id"])
    last = (await alice.request("PATCH", f"/{chain[-1]}/complete")).json()
    assert last["recurrence"] == "FREQ=DAILY;COUNT=1"
    assert last["next_occurrence_id"] is None  # none left
    assert len((await alice.request("GET")).json()) == 3


async def test_nothing_is_created_past_until(alice: Caller) -> None:
    task = await alice.create(
        title="t", due_at="2026-12-01T10:00:00Z", recurrence="FREQ=DAILY;UNTIL=20261201T235959Z"
    )
    done = (await alice.request("PATCH", f"/{task['id']}/complete")).json()
    assert done["next_occurrence_id"] is None


async def test_a_reminder_that_was_null_stays_null(alice: Caller) -> None:
    task = await alice.create(title="t", due_at="2090-12-01T10:00:00Z", recurrence="FREQ=WEEKLY")
    done = (await alice.request("PATCH", f"/{task['id']}/complete")).json()
    following = (await alice.request("GET", f"/{done['next_occurrence_id']}")).json()
    assert (following["due_at"], following["remind_at"]) == ("2090-12-08T10:00:00Z", None)


async def test_completing_with_new_tags_gives_the_next_occurrence_those_tags(alice: Caller) -> None:
    task = await recurring(alice)
    done = (
        await alice.request("PATCH", f"/{task['id']}", json={"completed": True, "tags": ["changed"]})
    ).json()
    assert done["tags"] == ["changed"]
    assert (await alice.request("GET", f"/{done['next_occurrence_id']}")).json()["tags"] == ["changed"]


async def test_another_users_recurring_task_cannot_be_completed(alice: Caller, bob: Caller) -> None:
    task = await recurring(alice)
    assert_problem(await bob.request("PATCH", f"/{task['id']}/complete", user_id=bob.user_id), 404)
    assert (await alice.request("GET", f"/{task['id']}")).json() == task


# --- stats and clearing ---------------------------------------------------------------


async def test_stats_count_the_users_tasks(alice: Caller, bob: Caller) -> None:
    end_of_today = datetime.now(UTC).replace(hour=23, minute=59, second=59, microsecond=0)
    await alice.create(title="overdue", priority="high", due_at="2020-01-01T00:00:00Z")
    await alice.create(title="today", priority="low", due_at=end_of_today.isoformat())
    await alice.create(title="done", completed=True, priority="high", due_at="2020-01-01T00:00:00Z")
    await alice.create(title="someday")
    await bob.create(title="not alice's", due_at="2020-01-01T00:00:00Z")
    stats = (await alice.client.get(f"/api/{alice.user_id}/tasks/stats", headers=alice.headers)).json()
    assert stats == {
        "total": 4,
        "completed": 1,
        "pending": 3,
        "overdue": 1,
        "due_today": 1,
        "by_priority": {"none": 1, "low": 1, "medium": 0, "high": 1},
    }


async def test_due_today_is_today_in_the_given_zone(alice: Caller) -> None:
    # 23:30 UTC is already tomorrow in Tokyo and still today in Los Angeles.
    now = datetime.now(UTC)
    late = now.replace(hour=23, minute=30, second=0, microsecond=0)
    await alice.create(title="late today, UTC", due_at=late.isoformat())
    url = f"/api/{alice.user_id}/tasks/stats"
    in_utc = (await alice.client.get(url, headers=alice.headers)).json()
    in_tokyo = (await alice.client.get(url, params={"tz": "Asia/Tokyo"}, headers=alice.headers)).json()
    assert in_utc["due_today"] == 1
    tokyo_today = now.astimezone(ZoneInfo("Asia/Tokyo")).date()
    late_in_tokyo = late.astimezone(ZoneInfo("Asia/Tokyo")).date()
    assert in_tokyo["due_today"] == (1 if late_in_tokyo == tokyo_today else 0)
    assert_problem(await alice.client.get(url, params={"tz": "Nowhere/City"}, headers=alice.headers), 422)


async def test_clearing_completed_tasks_deletes_exactly_those(alice: Caller, bob: Caller) -> None:
    keep = await alice.create(title="pending", tags=["x"])
    for i in range(3):
        await alice.create(title=f"done {i}", completed=True, tags=["x"])
    bobs = await bob.create(title="bob's, done", completed=True)
    response = await alice.request("DELETE", params={"status": "completed"})
    assert response.status_code == 200
    assert response.json() == {"deleted": 3}
    assert [t["id"] for t in (await alice.request("GET")).json()] == [keep["id"]]
    assert (await bob.request("GET", f"/{bobs['id']}")).status_code == 200
    tags = (await alice.client.get(f"/api/{alice.user_id}/tags", headers=alice.headers)).json()
    assert [(t["name"], t["task_count"]) for t in tags] == [("x", 1)]


@pytest.mark.parametrize("params", [{}, {"status": "all"}, {"status": "pending"}])
async def test_clearing_needs_status_completed(alice: Caller, params: dict[str, str]) -> None:
    await alice.create(title="safe", completed=True)
    assert_problem(await alice.request("DELETE", params=params), 422)
    assert len((await alice.request("GET")).json()) == 1


async def test_stored_rows_hold_tags_in_their_own_tables(app: Any, alice: Caller) -> None:
    task = await alice.create(title="t", tags=["Work", "home"])
    url = app.state.settings.database_url
    rows = run_sql(
        url,
        "SELECT tags.name FROM task_tags JOIN tags ON tags.id = task_tags.tag_id "
        f"WHERE task_id = {task['id']} ORDER BY tags.name",
    )
    assert [row[0] for row in rows] == ["Work", "home"]
    assert json.dumps(task["tags"]) == '["home", "Work"]'


async def test_tag_names_that_collapse_to_twenty_or_fewer_are_accepted(alice: Caller) -> None:
    task = await alice.create(title="t", tags=["a"] * 21 + ["A", " a "])
    assert task["tags"] == ["a"]
    many = await alice.create(title="u", tags=[f"t{i}" for i in range(20)] + [f"T{i}" for i in range(20)])
    assert len(many["tags"]) == 20
