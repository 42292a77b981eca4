"""Subtasks and the order people choose: `parent_id`, `position`, `sort=position` and
`POST …/tasks/{id}/move`; both databases (concurrent moves on PostgreSQL)."""

import asyncio
import json
from typing import Any
from unittest.mock import ANY

import pytest
from fastapi import FastAPI
from httpx import Response

from backend.api.event_stream import Rendering, render
from backend.models import MAX_SUBTASK_DEPTH
from backend.store.events import OwnedEvents
from tests.conftest import Caller, assert_problem, run_sql, sign_in
from tests.test_lists import make_list

pytestmark = pytest.mark.anyio


def refused(response: Response, field: str) -> dict[str, Any]:
    """A 422 that names the one field it refuses."""
    body = assert_problem(response, 422)
    assert [".".join(str(part) for part in error["loc"]) for error in body["errors"]] == [field], body
    return body


async def move(caller: Caller, task_id: int, expect: int = 200, **body: Any) -> dict[str, Any]:
    response = await caller.request("POST", f"/{task_id}/move", json=body)
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def titles(caller: Caller, **query: Any) -> list[str]:
    response = await caller.request("GET", params={"sort": "position", **query})
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]


async def get(caller: Caller, task_id: int) -> dict[str, Any]:
    response = await caller.request("GET", f"/{task_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# --- subtasks -----------------------------------------------------------------------------


async def test_a_subtask_goes_under_its_parent_in_the_parents_list(alice: Caller) -> None:
    groceries = await make_list(alice, "Groceries")
    trip = await alice.create(title="Shop", list_id=groceries["id"])
    milk = await alice.create(title="Milk", parent_id=trip["id"])
    assert (milk["parent_id"], milk["list_id"], milk["subtask_count"]) == (trip["id"], groceries["id"], 0)
    parent = await get(alice, trip["id"])
    assert (parent["subtask_count"], parent["open_subtask_count"], parent["parent_id"]) == (1, 1, None)
    listed = (await alice.request("GET", params={"parent_id": "none"})).json()
    assert [task["title"] for task in listed] == ["Shop"]
    children = (await alice.request("GET", params={"parent_id": trip["id"]})).json()
    assert [task["title"] for task in children] == ["Milk"]


async def test_subtasks_nest_four_levels_below_a_top_level_task_and_no_deeper(alice: Caller) -> None:
    parent = await alice.create(title="level 0")
    for level in range(1, MAX_SUBTASK_DEPTH + 1):
        parent = await alice.create(title=f"level {level}", parent_id=parent["id"])
    response = await alice.request("POST", json={"title": "too deep", "parent_id": parent["id"]})
    refused(response, "body.parent_id")
    assert "4 levels" in response.json()["errors"][0]["msg"]


async def test_another_persons_task_as_parent_is_answered_as_a_missing_one(
    alice: Caller, bob: Caller
) -> None:
    bobs = await bob.create(title="Bob's")
    foreign = await alice.request("POST", json={"title": "x", "parent_id": bobs["id"]})
    missing = await alice.request("POST", json={"title": "x", "parent_id": bobs["id"] + 10_000})
    refused(foreign, "body.parent_id")
    assert foreign.json() == missing.json()
    moved = await alice.create(title="mine")
    assert (await alice.request("POST", f"/{moved['id']}/move", json={"parent_id": bobs["id"]})).json() == (
        await alice.request("POST", f"/{moved['id']}/move", json={"parent_id": bobs["id"] + 10_000})
    ).json()
    # And Bob's task is not Alice's to move, nor to list children of.
    assert (await alice.request("POST", f"/{bobs['id']}/move", json={})).status_code == 404
    assert (await alice.request("GET", params={"parent_id": bobs["id"]})).json() == []


async def test_a_parent_in_another_list_than_list_id_is_refused(alice: Caller) -> None:
    work = await make_list(alice, "Work")
    parent = await alice.create(title="in the Inbox")
    response = await alice.request(
        "POST", json={"title": "x", "parent_id": parent["id"], "list_id": work["id"]}
    )
    refused(response, "body.parent_id")


async def test_a_subtask_has_no_recurrence_of_its_own(alice: Caller) -> None:
    parent = await alice.create(title="p")
    response = await alice.request(
        "POST",
        json={
            "title": "x",
            "parent_id": parent["id"],
            "recurrence": "FREQ=DAILY",
            "due_at": "2030-01-01T09:00:00Z",
        },
    )
    refused(response, "body.recurrence")
    child = await alice.create(title="c", parent_id=parent["id"])
    response = await alice.request(
        "PATCH", f"/{child['id']}", json={"recurrence": "FREQ=DAILY", "due_at": "2030-01-01T09:00:00Z"}
    )
    refused(response, "body.recurrence")
    assert (await get(alice, child["id"]))["recurrence"] is None
    recurring = await alice.create(title="r", recurrence="FREQ=DAILY", due_at="2030-01-01T09:00:00Z")
    refused(
        await alice.request("POST", f"/{recurring['id']}/move", json={"parent_id": parent["id"]}),
        "body.parent_id",
    )


async def test_completing_a_task_completes_its_open_subtasks_and_reopening_leaves_them(alice: Caller) -> None:
    parent = await alice.create(title="p")
    child = await alice.create(title="c", parent_id=parent["id"])
    grandchild = await alice.create(title="g", parent_id=child["id"])
    done = await alice.create(title="d", parent_id=parent["id"], completed=True)
    before = {task["id"]: (await get(alice, task["id"]))["version"] for task in (child, grandchild, done)}
    assert (await get(alice, parent["id"]))["open_subtask_count"] == 1
    response = await alice.request("PATCH", f"/{parent['id']}/complete", json={"completed": True})
    completed = response.json()
    assert (completed["completed"], completed["subtask_count"], completed["open_subtask_count"]) == (
        True,
        2,
        0,
    )
    # The answer is the task as it now is (its counts changed after the statement's own row).
    assert completed == await get(alice, parent["id"])
    assert response.headers["ETag"] == f'"{completed["version"]}"'
    # Each subtask completed (a change), `child` also recounted (its subtask done: another).
    assert (await get(alice, grandchild["id"]))["completed"]
    assert (await get(alice, grandchild["id"]))["version"] == before[grandchild["id"]] + 1
    assert (await get(alice, child["id"]))["completed"]
    assert (await get(alice, child["id"]))["version"] == before[child["id"]] + 2
    assert (await get(alice, done["id"]))["version"] == before[done["id"]]  # already done: untouched
    reopened = (await alice.request("PATCH", f"/{parent['id']}/complete")).json()
    assert reopened["completed"] is False
    assert reopened["open_subtask_count"] == 0
    assert (await get(alice, child["id"]))["completed"] is True


async def test_deleting_a_task_deletes_its_subtasks(alice: Caller) -> None:
    parent = await alice.create(title="p")
    child = await alice.create(title="c", parent_id=parent["id"])
    grandchild = await alice.create(title="g", parent_id=child["id"])
    other = await alice.create(title="other")
    assert (await alice.request("DELETE", f"/{parent['id']}")).status_code == 204
    for task in (child, grandchild):
        assert (await alice.request("GET", f"/{task['id']}")).status_code == 404
    assert [task["id"] for task in (await alice.request("GET")).json()] == [other["id"]]
    stats = (await alice.request("GET", "/stats")).json()
    assert stats["total"] == 1


async def test_clearing_completed_tasks_takes_their_subtasks(alice: Caller) -> None:
    parent = await alice.create(title="p", completed=True)
    await alice.create(title="c", parent_id=parent["id"])
    cleared = (await alice.request("DELETE", params={"status": "completed"})).json()
    assert cleared == {"deleted": 1}
    assert (await alice.request("GET")).json() == []


async def test_completing_a_recurring_occurrence_gives_its_successor_pending_copies_of_its_subtasks(
    alice: Caller,
) -> None:
    daily = await alice.create(title="Morning", recurrence="FREQ=DAILY", due_at="2030-01-01T07:00:00Z")
    after = await alice.create(title="after")
    stretch = await alice.create(title="Stretch", parent_id=daily["id"], tags=["health"])
    await alice.create(title="Neck", parent_id=stretch["id"])
    await alice.create(title="Water", parent_id=daily["id"])
    completed = (await alice.request("PATCH", f"/{daily['id']}/complete", json={"completed": True})).json()
    successor = await get(alice, completed["next_occurrence_id"])
    assert (successor["subtask_count"], successor["open_subtask_count"]) == (2, 2)
    copies = (await alice.request("GET", params={"parent_id": successor["id"], "sort": "position"})).json()
    assert [(task["title"], task["completed"], task["tags"]) for task in copies] == [
        ("Stretch", False, ["health"]),
        ("Water", False, []),
    ]
    assert [
        task["title"] for task in (await alice.request("GET", params={"parent_id": copies[0]["id"]})).json()
    ] == ["Neck"]
    # The next occurrence takes its predecessor's place, before the task that followed it.
    assert await titles(alice, parent_id="none") == ["Morning", "Morning", "after"]
    assert successor["position"] < after["position"]


# --- the order people choose ------------------------------------------------------------


async def test_new_tasks_go_last_and_sort_position_lists_in_the_chosen_order(alice: Caller) -> None:
    first, second, third = [await alice.create(title=title) for title in ("one", "two", "three")]
    assert first["position"] < second["position"] < third["position"]
    assert await titles(alice) == ["one", "two", "three"]
    assert await titles(alice, order="desc") == ["three", "two", "one"]
    # The default sort stays `created`, newest first, for existing clients.
    assert [task["title"] for task in (await alice.request("GET")).json()] == ["three", "two", "one"]


async def test_a_move_puts_a_task_after_a_sibling_or_first_and_writes_one_row(alice: Caller) -> None:
    one, two, three = [await alice.create(title=title) for title in ("one", "two", "three")]
    moved = await move(alice, three["id"], after_id=one["id"])
    assert moved["version"] == three["version"] + 1
    assert one["position"] < moved["position"] < two["position"]
    assert await titles(alice) == ["one", "three", "two"]
    await move(alice, two["id"])
    assert await titles(alice) == ["two", "one", "three"]
    # Only the moved task changed.
    assert (await get(alice, one["id"]))["version"] == one["version"]
    # A task created after moves still goes last.
    await alice.create(title="four")
    assert await titles(alice) == ["two", "one", "three", "four"]
    await move(alice, two["id"], after_id=(await titles_ids(alice))[-1])
    assert await titles(alice) == ["one", "three", "four", "two"]
    await alice.create(title="five")
    assert await titles(alice) == ["one", "three", "four", "two", "five"]


async def titles_ids(caller: Caller, **query: Any) -> list[int]:
    response = await caller.request("GET", params={"sort": "position", **query})
    return [task["id"] for task in response.json()]


async def test_a_move_across_lists_and_parents_takes_the_subtasks_along(alice: Caller) -> None:
    work = await make_list(alice, "Work")
    parent = await alice.create(title="p")
    child = await alice.create(title="c", parent_id=parent["id"])
    grandchild = await alice.create(title="g", parent_id=child["id"])
    moved = await move(alice, parent["id"], list_id=work["id"])
    assert moved["list_id"] == work["id"]
    for task in (child, grandchild):
        assert (await get(alice, task["id"]))["list_id"] == work["id"]
    # Out from under its parent, to the top of the Inbox.
    inbox_id = parent["list_id"]
    top = await move(alice, child["id"], list_id=inbox_id)
    assert (top["parent_id"], top["list_id"]) == (None, inbox_id)
    # Its old parent counts it no more (a change of the parent, whose JSON changed).
    left = await get(alice, parent["id"])
    assert (left["subtask_count"], left["open_subtask_count"]) == (0, 0)
    assert left["version"] > moved["version"]
    assert (await get(alice, grandchild["id"]))["list_id"] == inbox_id
    # Under another parent: into that parent's list, after a sibling.
    holder = await alice.create(title="holder", list_id=work["id"])
    first = await alice.create(title="first", parent_id=holder["id"])
    under = await move(alice, child["id"], parent_id=holder["id"], after_id=first["id"])
    assert (under["parent_id"], under["list_id"]) == (holder["id"], work["id"])
    assert await titles(alice, parent_id=holder["id"]) == ["first", "c"]


async def test_moves_that_would_break_the_tree_are_refused(alice: Caller) -> None:
    work = await make_list(alice, "Work")
    parent = await alice.create(title="p")
    child = await alice.create(title="c", parent_id=parent["id"])
    refused(
        await alice.request("POST", f"/{parent['id']}/move", json={"parent_id": parent["id"]}),
        "body.parent_id",
    )
    refused(
        await alice.request("POST", f"/{parent['id']}/move", json={"parent_id": child["id"]}),
        "body.parent_id",
    )
    refused(
        await alice.request(
            "POST", f"/{child['id']}/move", json={"parent_id": parent["id"], "list_id": work["id"]}
        ),
        "body.parent_id",
    )
    # A chain of three under `parent` would put `child`'s subtree one level too deep.
    deep = await alice.create(title="d0")
    for level in range(1, MAX_SUBTASK_DEPTH):
        deep = await alice.create(title=f"d{level}", parent_id=deep["id"])
    await alice.create(title="g", parent_id=child["id"])
    child = await get(alice, child["id"])  # a subtask of its own: a change of it
    refused(
        await alice.request("POST", f"/{parent['id']}/move", json={"parent_id": deep["id"]}),
        "body.parent_id",
    )
    other = await alice.create(title="elsewhere", list_id=work["id"])
    refused(
        await alice.request("POST", f"/{child['id']}/move", json={"after_id": other["id"]}),
        "body.after_id",
    )
    refused(
        await alice.request("POST", f"/{child['id']}/move", json={"after_id": child["id"]}),
        "body.after_id",
    )
    refused(await alice.request("POST", f"/{child['id']}/move", json={"list_id": 10**12}), "body.list_id")
    assert (await get(alice, child["id"]))["version"] == child["version"]


async def test_a_move_honours_if_match_and_idempotency_keys(alice: Caller) -> None:
    one, two = await alice.create(title="one"), await alice.create(title="two")
    stale = await alice.request("POST", f"/{two['id']}/move", json={}, headers={"If-Match": '"99"'})
    assert_problem(stale, 412)
    headers = {"Idempotency-Key": "move-two-first"}
    first = await alice.request("POST", f"/{two['id']}/move", json={}, headers=headers)
    again = await alice.request("POST", f"/{two['id']}/move", json={}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert first.headers["ETag"] == f'"{two["version"] + 1}"'
    assert await titles(alice) == ["two", "one"]
    assert one["id"]


async def test_many_moves_between_the_same_neighbours_rebalance_and_keep_the_order(alice: Caller) -> None:
    left, right = await alice.create(title="left"), await alice.create(title="right")
    a, b = await alice.create(title="a"), await alice.create(title="b")
    # Alternate a and b just after `left`: each key lands between `left` and the other one.
    for i in range(120):
        await move(alice, (a if i % 2 == 0 else b)["id"], after_id=left["id"])
    order = await titles(alice)
    assert order == ["left", "b", "a", "right"]
    positions = [
        task["position"] for task in (await alice.request("GET", params={"sort": "position"})).json()
    ]
    assert positions == sorted(positions)
    assert len(set(positions)) == 4
    assert max(len(position) for position in positions) <= 64
    assert right["id"]


async def test_position_paging_by_cursor_skips_and_repeats_nothing(alice: Caller) -> None:
    created = [await alice.create(title=f"t{i}") for i in range(7)]
    await move(alice, created[6]["id"])
    seen: list[int] = []
    params: dict[str, Any] = {"sort": "position", "limit": 3}
    while True:
        response = await alice.request("GET", params=params)
        seen += [task["id"] for task in response.json()]
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            break
        params = {"sort": "position", "limit": 3, "cursor": cursor}
    assert seen == [created[6]["id"]] + [task["id"] for task in created[:6]]


async def test_concurrent_moves_in_one_list_never_share_a_position(alice: Caller, app: FastAPI) -> None:
    """Twice the pool's size of moves to one place at once (on SQLite they take turns)."""
    anchor = await alice.create(title="anchor")
    tasks = [await alice.create(title=f"t{i}") for i in range(2 * app.state.settings.database_pool_size)]
    answers = await asyncio.gather(
        *(alice.request("POST", f"/{task['id']}/move", json={"after_id": anchor["id"]}) for task in tasks)
    )
    assert [answer.status_code for answer in answers] == [200] * len(tasks)
    listed = (await alice.request("GET", params={"sort": "position", "limit": 100})).json()
    positions = [task["position"] for task in listed]
    assert len(set(positions)) == len(positions) == len(tasks) + 1
    assert listed[0]["title"] == "anchor"


async def test_a_migrated_task_keeps_its_creation_order_and_new_ones_go_after(
    database_url: str, alice: Caller
) -> None:
    created = [await alice.create(title=f"t{i}") for i in range(3)]
    # Keys as the migration writes them: the rank in the list.
    for rank, task in enumerate(created, start=1):
        run_sql(database_url, f"UPDATE tasks SET position = 'r{rank:018d}' WHERE id = {task['id']}")
    newer = await alice.create(title="newer")
    assert await titles(alice) == ["t0", "t1", "t2", "newer"]
    assert newer["position"] > f"r{3:018d}"


async def test_bobs_path_is_403_for_alice_on_the_move_route(alice: Caller, bob: Caller) -> None:
    bobs = await bob.create(title="b")
    response = await alice.request("POST", f"/{bobs['id']}/move", json={}, user_id=bob.user_id)
    assert_problem(response, 403)
    stranger = sign_in(alice.client, "carol-1")
    assert (await stranger.request("GET", params={"parent_id": "none"})).json() == []


# --- through the MCP tools (and so the chat agent's) ---------------------------------------


async def test_an_agent_adds_subtasks_and_moves_tasks_through_the_same_rules(
    alice: Caller, bob: Caller
) -> None:
    await alice.tool("create_list", {"name": "Groceries"})
    trip = await alice.tool("add_task", {"title": "Shop", "list": "Groceries"})
    assert trip.result is not None
    milk = await alice.tool("add_task", {"title": "Milk", "parent_id": trip.result["id"]})
    assert milk.result is not None
    assert (milk.result["parent_id"], milk.result["list_id"]) == (trip.result["id"], trip.result["list_id"])
    eggs = await alice.tool("add_task", {"title": "Eggs", "parent_id": trip.result["id"]})
    assert eggs.result is not None
    moved = await alice.tool("move_task", {"task_id": eggs.result["id"], "parent_id": trip.result["id"]})
    assert moved.result is not None
    listed = await alice.tool("list_tasks", {"parent_id": trip.result["id"], "sort": "position"})
    assert listed.result is not None
    assert [task["title"] for task in listed.result["tasks"]] == ["Eggs", "Milk"]
    top = await alice.tool("list_tasks", {"parent_id": "none", "list": "Groceries"})
    assert top.result is not None
    assert [task["title"] for task in top.result["tasks"]] == ["Shop"]
    out = await alice.tool("move_task", {"task_id": milk.result["id"], "list": "Inbox"})
    assert out.result is not None
    assert out.result["parent_id"] is None
    # The same refusals as REST's, word for word where they name the task.
    cycle = await alice.tool("move_task", {"task_id": trip.result["id"], "parent_id": eggs.result["id"]})
    assert "under itself or under one of its own subtasks" in cycle.refused
    bobs = await bob.tool("add_task", {"title": "Bob's"})
    assert bobs.result is not None
    foreign = await alice.tool("add_task", {"title": "x", "parent_id": bobs.result["id"]})
    missing = await alice.tool("add_task", {"title": "x", "parent_id": bobs.result["id"] + 10_000})
    assert foreign.refused == missing.refused
    stale = await alice.tool("move_task", {"task_id": eggs.result["id"], "expected_version": 99})
    assert "version" in stale.refused


# --- sync and events -------------------------------------------------------------------------


async def changes(caller: Caller, since: str | None = None) -> dict[str, Any]:
    response = await caller.request("GET", "/changes", params={} if since is None else {"since": since})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_sync_carries_lists_their_tombstones_and_the_new_task_fields(alice: Caller) -> None:
    first = await changes(alice)
    assert (first["lists"], first["deleted_lists"]) == ([], [])
    work = await make_list(alice, "Work")
    parent = await alice.create(title="p", list_id=work["id"])
    child = await alice.create(title="c", parent_id=parent["id"])
    since = first["next_since"]
    page = await changes(alice, since)
    # The Inbox (made by the first list write) and Work; the tasks with their new fields.
    assert [item["name"] for item in page["lists"]] == ["Inbox", "Work"]
    synced = {task["id"]: task for task in page["tasks"]}
    assert synced[child["id"]]["parent_id"] == parent["id"]
    assert synced[parent["id"]]["position"] == parent["position"]
    # A rename, a move and a deletion: each list's latest state, then its tombstone.
    await alice.client.patch(
        f"/api/{alice.user_id}/lists/{work['id']}", json={"name": "Job"}, headers=alice.headers
    )
    later = await changes(alice, page["next_since"])
    assert [(item["id"], item["name"]) for item in later["lists"]] == [(work["id"], "Job")]
    await alice.client.delete(f"/api/{alice.user_id}/lists/{work['id']}", headers=alice.headers)
    gone = await changes(alice, later["next_since"])
    assert [item["id"] for item in gone["deleted_lists"]] == [work["id"]]
    assert sorted(item["id"] for item in gone["deleted"]) == sorted([parent["id"], child["id"]])
    # From scratch: the lists alive, no tombstones.
    scratch = await changes(alice)
    assert [item["name"] for item in scratch["lists"]] == ["Inbox"]
    assert scratch["deleted_lists"] == []


async def test_list_changes_and_moves_are_events(alice: Caller, app: FastAPI) -> None:
    work = await make_list(alice, "Work")
    task = await alice.create(title="t")
    await move(alice, task["id"], list_id=work["id"])
    await alice.client.patch(
        f"/api/{alice.user_id}/lists/{work['id']}", json={"name": "Job"}, headers=alice.headers
    )
    await alice.client.delete(f"/api/{alice.user_id}/lists/{work['id']}", headers=alice.headers)
    rows = await OwnedEvents(app.state.database, alice.user_id).after(0, 100)
    assert [row["event_type"] for row in rows] == [
        "list.created",  # the Inbox, by the first list write
        "list.created",
        "task.created",
        "task.updated",  # the move
        "list.updated",
        "task.deleted",  # with its list
        "list.deleted",
    ]
    rendering = Rendering(source="http://localhost", type_prefix="todo.")
    bodies = [json.loads(render(row, alice.user_id, rendering).body) for row in rows]
    assert (bodies[1]["subject"], bodies[1]["type"]) == (str(work["id"]), "todo.list.created")
    assert bodies[0]["data"]["inbox"] is True
    assert bodies[6]["data"] == {"id": work["id"], "deleted_at": ANY}
    # Read after the deletion, every event of the list carries its tombstone, as a task's does.
    assert bodies[4]["data"] == bodies[6]["data"]
