"""Lists: every person's Inbox, the lists they make, the tasks in them; both databases."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import Response

from backend.store.housekeeping import purge
from backend.store.lists import MAX_LISTS
from tests.conftest import Caller, assert_problem, http_client, make_settings, run_sql, running_app, sign_in

pytestmark = pytest.mark.anyio


def lists_url(caller: Caller, suffix: str = "", *, user_id: str | None = None) -> str:
    return f"/api/{user_id or caller.user_id}/lists{suffix}"


async def lists_request(caller: Caller, method: str, suffix: str = "", **kwargs: Any) -> Response:
    headers = {**caller.headers, **kwargs.pop("headers", {})}
    user_id = kwargs.pop("user_id", None)
    return await caller.client.request(
        method, lists_url(caller, suffix, user_id=user_id), headers=headers, **kwargs
    )


async def make_list(caller: Caller, name: str) -> dict[str, Any]:
    response = await lists_request(caller, "POST", json={"name": name})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def all_lists(caller: Caller) -> list[dict[str, Any]]:
    response = await lists_request(caller, "GET")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def inbox_of(caller: Caller) -> dict[str, Any]:
    (inbox,) = [item for item in await all_lists(caller) if item["inbox"]]
    return inbox


# --- the Inbox --------------------------------------------------------------------------


async def test_every_person_has_an_inbox_where_tasks_go_by_default(alice: Caller) -> None:
    (inbox,) = await all_lists(alice)
    assert (inbox["name"], inbox["inbox"], inbox["task_count"], inbox["pending_count"]) == (
        "Inbox",
        True,
        0,
        0,
    )
    task = await alice.create(title="Buy milk")
    assert task["list_id"] == inbox["id"]
    await alice.request("PATCH", f"/{task['id']}/complete")
    await alice.create(title="Call mum")
    (counted,) = await all_lists(alice)
    assert (counted["task_count"], counted["pending_count"]) == (2, 1)


async def test_a_first_write_makes_the_inbox_once_even_at_once(alice: Caller) -> None:
    created = await asyncio.gather(*(alice.create(title=f"t{n}") for n in range(10)))
    (inbox,) = await all_lists(alice)
    assert {task["list_id"] for task in created} == {inbox["id"]}
    assert inbox["task_count"] == 10


async def test_the_inbox_can_be_renamed_but_not_deleted(alice: Caller) -> None:
    inbox = await inbox_of(alice)
    renamed = await lists_request(alice, "PATCH", f"/{inbox['id']}", json={"name": "Home"})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["inbox"]) == ("Home", True)
    body = assert_problem(await lists_request(alice, "DELETE", f"/{inbox['id']}"), 409)
    assert "Inbox cannot be deleted" in body["detail"]
    # Renamed away, its old name is free for another list.
    assert (await make_list(alice, "inbox"))["inbox"] is False


# --- lists ------------------------------------------------------------------------------


async def test_lists_are_created_at_the_end_and_listed_in_their_order(alice: Caller) -> None:
    work = await make_list(alice, "Work")
    home = await make_list(alice, "Home")
    names = [item["name"] for item in await all_lists(alice)]
    assert names == ["Inbox", "Work", "Home"]
    positions = [item["position"] for item in await all_lists(alice)]
    assert positions == sorted(positions)
    assert work["position"] < home["position"]
    assert (work["task_count"], work["version"]) == (0, 1)


async def test_a_name_is_unique_per_person_case_insensitively(alice: Caller, bob: Caller) -> None:
    await make_list(alice, "Groceries")
    body = assert_problem(await lists_request(alice, "POST", json={"name": "GROCERIES"}), 409)
    assert "Groceries" not in body["detail"] or "already has a list named" in body["detail"]
    other = await make_list(alice, "Errands")
    clash = await lists_request(alice, "PATCH", f"/{other['id']}", json={"name": "groceries"})
    assert_problem(clash, 409)
    # Its own name in another case is a rename, not a clash; Bob's names are his own.
    assert (
        await lists_request(alice, "PATCH", f"/{other['id']}", json={"name": "ERRANDS"})
    ).status_code == 200
    await make_list(bob, "Groceries")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({}, "name"),
        ({"name": "a\x00"}, "name"),
        ({"name": "ok", "inbox": True}, "inbox"),
        ({"name": 5}, "name"),
    ],
)
async def test_a_bad_list_body_is_422_naming_the_field(
    alice: Caller, body: dict[str, Any], named: str
) -> None:
    problem = assert_problem(await lists_request(alice, "POST", json=body), 422)
    assert named in {str(part) for issue in problem["errors"] for part in issue["loc"]}


async def test_a_tasks_list_is_given_at_create_filtered_and_counted(alice: Caller) -> None:
    work = await make_list(alice, "Work")
    report = await alice.create(title="Report", list_id=work["id"], priority="high")
    await alice.create(title="Milk")
    assert report["list_id"] == work["id"]
    listed = await alice.request("GET", params={"list_id": work["id"]})
    assert [task["title"] for task in listed.json()] == ["Report"]
    assert listed.headers["X-Total-Count"] == "1"
    stats = (await alice.request("GET", "/stats", params={"list_id": work["id"]})).json()
    assert (stats["total"], stats["by_priority"]["high"]) == (1, 1)
    assert (await alice.request("GET", "/stats")).json()["total"] == 2
    (got,) = [item for item in await all_lists(alice) if item["id"] == work["id"]]
    assert got["task_count"] == 1


async def test_another_persons_list_is_the_same_answer_as_a_missing_one(alice: Caller, bob: Caller) -> None:
    bobs = await make_list(bob, "Bob's")
    missing = bobs["id"] + 1000
    for method, json in (("GET", None), ("PATCH", {"name": "mine"}), ("DELETE", None)):
        theirs = await lists_request(alice, method, f"/{bobs['id']}", json=json)
        nobodys = await lists_request(alice, method, f"/{missing}", json=json)
        assert assert_problem(theirs, 404) == assert_problem(nobodys, 404)
    into_theirs = await alice.request("POST", json={"title": "t", "list_id": bobs["id"]})
    into_nothing = await alice.request("POST", json={"title": "t", "list_id": missing})
    assert assert_problem(into_theirs, 422) == assert_problem(into_nothing, 422)
    assert assert_problem(into_theirs, 422)["errors"][0]["loc"] == ["body", "list_id"]
    # Filtering by another person's list shows nothing of theirs.
    await bob.create(title="secret", list_id=bobs["id"])
    assert (await alice.request("GET", params={"list_id": bobs["id"]})).json() == []
    assert [item["name"] for item in await all_lists(bob)] == ["Inbox", "Bob's"]


async def test_another_persons_path_is_403_on_every_list_route(alice: Caller, bob: Caller) -> None:
    for method, suffix, json in (
        ("GET", "", None),
        ("POST", "", {"name": "x"}),
        ("GET", "/1", None),
        ("PATCH", "/1", {"name": "x"}),
        ("DELETE", "/1", None),
    ):
        assert_problem(await lists_request(bob, method, suffix, json=json, user_id=alice.user_id), 403)


async def test_a_list_has_an_etag_and_writes_take_if_match(alice: Caller) -> None:
    work = await make_list(alice, "Work")
    read = await lists_request(alice, "GET", f"/{work['id']}")
    assert read.headers["ETag"] == '"1"'
    unchanged = await lists_request(alice, "GET", f"/{work['id']}", headers={"If-None-Match": '"1"'})
    assert unchanged.status_code == 304
    renamed = await lists_request(
        alice, "PATCH", f"/{work['id']}", json={"name": "Job"}, headers={"If-Match": '"1"'}
    )
    assert renamed.headers["ETag"] == '"2"'
    stale = await lists_request(
        alice, "PATCH", f"/{work['id']}", json={"name": "Old"}, headers={"If-Match": '"1"'}
    )
    assert "version 2" in assert_problem(stale, 412)["detail"]
    gone = await lists_request(alice, "DELETE", f"/{work['id']}", headers={"If-Match": '"1"'})
    assert_problem(gone, 412)
    assert (await lists_request(alice, "GET", f"/{work['id']}")).json()["name"] == "Job"


async def test_an_idempotent_list_create_is_made_once(alice: Caller) -> None:
    key = {"Idempotency-Key": "list-1"}
    first = await lists_request(alice, "POST", json={"name": "Once"}, headers=key)
    again = await lists_request(alice, "POST", json={"name": "Once"}, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert [item["name"] for item in await all_lists(alice)].count("Once") == 1


# --- deleting ---------------------------------------------------------------------------


async def test_deleting_a_list_deletes_its_tasks(app: FastAPI, alice: Caller) -> None:
    work = await make_list(alice, "Work")
    report = await alice.create(title="Report", list_id=work["id"])
    kept = await alice.create(title="Milk")
    synced = (await alice.request("GET", "/changes")).json()["next_since"]
    assert (await lists_request(alice, "DELETE", f"/{work['id']}")).status_code == 204
    assert_problem(await lists_request(alice, "GET", f"/{work['id']}"), 404)
    assert_problem(await alice.request("GET", f"/{report['id']}"), 404)
    assert [task["id"] for task in (await alice.request("GET")).json()] == [kept["id"]]
    # A tombstone for sync, with its event.
    changes = (await alice.request("GET", "/changes", params={"since": synced})).json()
    assert report["id"] in [gone["id"] for gone in changes["deleted"]]
    types = run_sql(
        app.state.settings.database_url, f"SELECT type FROM events WHERE task_id = {report['id']}"
    )
    assert [row[0] for row in types][-1] == "task.deleted"
    # Its name is free again.
    await make_list(alice, "Work")


async def test_deleting_a_list_can_move_its_tasks_first(alice: Caller) -> None:
    work = await make_list(alice, "Work")
    inbox = await inbox_of(alice)
    report = await alice.create(title="Report", list_id=work["id"])
    moved = await lists_request(alice, "DELETE", f"/{work['id']}", params={"move_tasks_to": inbox["id"]})
    assert moved.status_code == 204
    task = (await alice.request("GET", f"/{report['id']}")).json()
    assert (task["list_id"], task["version"]) == (inbox["id"], report["version"] + 1)
    assert (await inbox_of(alice))["task_count"] == 1


async def test_moving_tasks_to_a_list_not_the_persons_is_422_and_changes_nothing(
    alice: Caller, bob: Caller
) -> None:
    work = await make_list(alice, "Work")
    report = await alice.create(title="Report", list_id=work["id"])
    bobs = await make_list(bob, "Bob's")
    for target in (bobs["id"], work["id"], 10**12):
        refused = await lists_request(alice, "DELETE", f"/{work['id']}", params={"move_tasks_to": target})
        assert assert_problem(refused, 422)["errors"][0]["loc"] == ["query", "move_tasks_to"]
    assert (await alice.request("GET", f"/{report['id']}")).json()["list_id"] == work["id"]
    assert (await lists_request(alice, "GET", f"/{work['id']}")).status_code == 200


async def test_a_person_keeps_at_most_a_thousand_lists(app: FastAPI, alice: Caller) -> None:
    inbox = await inbox_of(alice)
    url = app.state.settings.database_url
    # The lists up to the cap written directly (a thousand requests would only be slower).
    run_sql(
        url,
        "INSERT INTO task_lists "
        "(user_id, name, name_folded, position, inbox, created_at, updated_at, version) "
        f"SELECT '{alice.user_id}', 'l' || n, 'l' || n, 'b' || n, false, '2026-12-03', '2026-12-03', 1 "
        f"FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < "
        f"{MAX_LISTS - 1}) SELECT {inbox['id']} + value AS n FROM s) AS numbered",
    )
    body = assert_problem(await lists_request(alice, "POST", json={"name": "one too many"}), 409)
    assert str(MAX_LISTS) in body["detail"]
    one = (await all_lists(alice))[-1]
    assert (await lists_request(alice, "DELETE", f"/{one['id']}")).status_code == 204
    await make_list(alice, "now it fits")


# --- through the MCP tools (and so the chat agent's) ---------------------------------------


async def test_an_agent_lists_makes_and_fills_lists_by_name_or_id(alice: Caller) -> None:
    made = await alice.tool("create_list", {"name": "Groceries"})
    assert made.result is not None
    groceries = made.result["id"]
    added = await alice.tool("add_task", {"title": "Milk", "list": "groceries"})
    assert added.result is not None
    assert added.result["list_id"] == groceries
    by_id = await alice.tool("add_task", {"title": "Eggs", "list_id": groceries})
    assert by_id.result is not None
    await alice.tool("add_task", {"title": "Call mum"})
    listed = await alice.tool("list_tasks", {"list": "GROCERIES", "sort": "title", "order": "asc"})
    assert listed.result is not None
    assert [task["title"] for task in listed.result["tasks"]] == ["Eggs", "Milk"]
    lists = await alice.tool("list_lists", {})
    assert lists.result is not None
    assert [(item["name"], item["task_count"]) for item in lists.result["lists"]] == [
        ("Inbox", 1),
        ("Groceries", 2),
    ]
    assert (
        "no list named 'Hardware'"
        in (await alice.tool("add_task", {"title": "x", "list": "Hardware"})).refused
    )
    both = await alice.tool("add_task", {"title": "x", "list": "Groceries", "list_id": groceries})
    assert "not both" in both.refused
    assert "already has a list named" in (await alice.tool("create_list", {"name": "groceries"})).refused
    stats = await alice.tool("get_stats", {"list_id": groceries})
    assert stats.result is not None
    assert stats.result["total"] == 2


async def test_an_agent_cannot_use_another_persons_list(alice: Caller, bob: Caller) -> None:
    bobs = await make_list(bob, "Bob's")
    refused = (await alice.tool("add_task", {"title": "x", "list_id": bobs["id"]})).refused
    assert "list_id" in refused
    assert "no list named" in (await alice.tool("list_tasks", {"list": "Bob's"})).refused


async def test_a_deleted_list_is_purged_after_its_tombstones(app: FastAPI, alice: Caller) -> None:
    work = await make_list(alice, "Work")
    await alice.create(title="Report", list_id=work["id"])
    await lists_request(alice, "DELETE", f"/{work['id']}")
    url = app.state.settings.database_url
    purged = await purge(app.state.database, app.state.settings)
    assert (purged.tombstones, purged.lists) == (0, 0)  # not yet: sync may still need them
    for table in ("tasks", "task_lists"):
        run_sql(url, f"UPDATE {table} SET deleted_at = '2020-01-01 00:00:00' WHERE deleted_at IS NOT NULL")
    purged = await purge(app.state.database, app.state.settings)
    assert (purged.tombstones, purged.lists) == (1, 1)
    assert run_sql(url, f"SELECT count(*) FROM task_lists WHERE id = {work['id']}") == [(0,)]
    assert [item["name"] for item in await all_lists(alice)] == ["Inbox"]


@pytest.mark.postgresql_only
async def test_creates_racing_a_lists_deletion_never_leave_a_task_in_it(app: FastAPI, alice: Caller) -> None:
    """Twice the pool's size of creates into a list while it is deleted: each lands before the
    deletion (and is deleted with it) or finds the list gone (422); none is left in it alive."""
    racers = 2 * app.state.settings.database_pool_size
    url = app.state.settings.database_url
    for round_ in range(3):
        doomed = await make_list(alice, f"Doomed {round_}")
        deletion, *creates = await asyncio.gather(
            lists_request(alice, "DELETE", f"/{doomed['id']}"),
            *(alice.request("POST", json={"title": f"t{n}", "list_id": doomed["id"]}) for n in range(racers)),
        )
        assert deletion.status_code == 204
        assert {response.status_code for response in creates} <= {201, 422}
        orphans = run_sql(
            url,
            "SELECT count(*) FROM tasks JOIN task_lists ON task_lists.id = tasks.list_id "
            "WHERE task_lists.deleted_at IS NOT NULL AND tasks.deleted_at IS NULL",
        )
        assert orphans == [(0,)]


# --- moving lists -----------------------------------------------------------------------


async def move_list(caller: Caller, list_id: int, after_id: int | None, **kwargs: Any) -> Response:
    return await lists_request(caller, "POST", f"/{list_id}/move", json={"after_id": after_id}, **kwargs)


async def test_a_list_moves_after_another_or_first_writing_one_row(app: FastAPI, alice: Caller) -> None:
    inbox = await inbox_of(alice)
    work, home, shop = [await make_list(alice, name) for name in ("Work", "Home", "Shop")]
    before = {item["id"]: item["version"] for item in await all_lists(alice)}
    moved = await move_list(alice, shop["id"], inbox["id"])
    assert moved.status_code == 200, moved.text
    assert moved.json()["version"] == shop["version"] + 1
    assert [item["name"] for item in await all_lists(alice)] == ["Inbox", "Shop", "Work", "Home"]
    after = {item["id"]: item["version"] for item in await all_lists(alice)}
    assert {key for key in after if after[key] != before[key]} == {shop["id"]}  # one row written
    assert (await move_list(alice, home["id"], None)).status_code == 200
    assert [item["name"] for item in await all_lists(alice)] == ["Home", "Inbox", "Shop", "Work"]
    assert (await move_list(alice, home["id"], work["id"])).status_code == 200
    assert [item["name"] for item in await all_lists(alice)] == ["Inbox", "Shop", "Work", "Home"]


async def test_a_list_cannot_follow_itself_another_persons_or_a_missing_one(
    alice: Caller, bob: Caller
) -> None:
    work = await make_list(alice, "Work")
    bobs = await make_list(bob, "Bob's")
    for after_id in (work["id"], bobs["id"], 10**12):
        refused = await move_list(alice, work["id"], after_id)
        assert assert_problem(refused, 422)["errors"][0]["loc"] == ["body", "after_id"]
    assert_problem(await move_list(alice, bobs["id"], None), 404)
    assert_problem(await move_list(bob, work["id"], None, user_id=alice.user_id), 403)
    stale = await move_list(alice, work["id"], None, headers={"If-Match": '"9"'})
    assert_problem(stale, 412)


async def test_many_moves_between_two_neighbours_keep_short_distinct_keys(alice: Caller) -> None:
    """Each move halves the gap between the same two lists: keys grow, until the person's
    lists are given fresh ones (a bounded rebalance), and the order holds throughout."""
    first = await make_list(alice, "First")
    await make_list(alice, "Second")
    movers = [await make_list(alice, f"m{n}") for n in range(2)]
    for n in range(400):
        mover = movers[n % 2]
        assert (await move_list(alice, mover["id"], first["id"])).status_code == 200
    lists = await all_lists(alice)
    positions = [item["position"] for item in lists]
    assert len(set(positions)) == len(positions)
    assert positions == sorted(positions)
    assert max(len(position) for position in positions) <= 64
    assert [item["name"] for item in lists][:2] == ["Inbox", "First"]
    assert [item["name"] for item in lists][-1] == "Second"


async def test_concurrent_moves_never_give_two_lists_one_place(alice: Caller, app: FastAPI) -> None:
    inbox = await inbox_of(alice)
    made = [await make_list(alice, f"l{n}") for n in range(2 * app.state.settings.database_pool_size)]
    answers = await asyncio.gather(*(move_list(alice, item["id"], inbox["id"]) for item in made))
    assert {answer.status_code for answer in answers} == {200}
    positions = [item["position"] for item in await all_lists(alice)]
    assert len(set(positions)) == len(positions)


async def test_a_task_written_without_a_list_by_an_older_server_lands_in_the_inbox(postgres_url: str) -> None:
    """A server of the version before lists (during a rolling deploy), or any insert that names
    no list, puts the task in its owner's Inbox, made if need be: PostgreSQL's trigger. (SQLite
    serves one process, whose version is its migrations'.)"""
    async with running_app(make_settings(postgres_url)) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        run_sql(postgres_url, "INSERT INTO users (id, created_at) VALUES ('alice', now())")
        run_sql(
            postgres_url,
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) "
            "VALUES ('alice', 'from an older server', false, now(), now())",
        )
        (task,) = (await alice.request("GET")).json()
        inbox = await inbox_of(alice)
        assert (task["title"], task["list_id"]) == ("from an older server", inbox["id"])
        assert inbox["task_count"] == 1
