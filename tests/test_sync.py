"""Incremental sync: GET /tasks/changes gives every task created or changed after a
position, as it is now, and every task deleted after it, with no gaps even when writes
race the reader; a position older than SYNC_RETENTION_DAYS is 410."""

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from backend.domain.cursors import SyncPosition
from backend.models import utc_now
from backend.store.housekeeping import purge
from tests.conftest import Caller, assert_problem, http_client, make_settings, run_sql, running_app, sign_in

pytestmark = pytest.mark.anyio


async def changes(caller: Caller, since: str | None = None, limit: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if since is not None:
        params["since"] = since
    if limit is not None:
        params["limit"] = limit
    response = await caller.request("GET", "/changes", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_full_sync_then_only_what_changed(alice: Caller, bob: Caller) -> None:
    first = await alice.create(title="one")
    second = await alice.create(title="two")
    await bob.create(title="not alice's")
    full = await changes(alice)
    assert [task["id"] for task in full["tasks"]] == [first["id"], second["id"]]
    assert full["deleted"] == []
    assert full["has_more"] is False

    nothing = await changes(alice, full["next_since"])
    assert (nothing["tasks"], nothing["deleted"], nothing["has_more"]) == ([], [], False)
    # The same position, read again now (the token carries its read time in whole seconds,
    # so comparing the two texts failed whenever the calls straddled a second).
    before, again = (SyncPosition.decode(answer["next_since"], utc_now()) for answer in (full, nothing))
    assert again.seq == before.seq
    assert again.at >= before.at
    edited = (await alice.request("PATCH", f"/{first['id']}", json={"title": "one, edited"})).json()
    await alice.request("DELETE", f"/{second['id']}")
    third = await alice.create(title="three")
    later = await changes(alice, full["next_since"])
    assert later["tasks"] == [edited, third]
    assert [item["id"] for item in later["deleted"]] == [second["id"]]
    assert datetime.fromisoformat(later["deleted"][0]["deleted_at"]) <= datetime.now(UTC)


async def test_a_task_changed_twice_comes_once_as_it_is_now(alice: Caller) -> None:
    task = await alice.create(title="t")
    start = (await changes(alice))["next_since"]
    await alice.request("PATCH", f"/{task['id']}", json={"title": "t2"})
    await alice.request("PATCH", f"/{task['id']}/complete")
    later = await changes(alice, start)
    assert [(t["title"], t["completed"], t["version"]) for t in later["tasks"]] == [("t2", True, 3)]


async def test_paging_with_next_since_while_has_more(alice: Caller) -> None:
    created = [await alice.create(title=f"t{i}") for i in range(7)]
    seen: list[int] = []
    since = None
    for _ in range(10):
        page = await changes(alice, since, limit=3)
        seen += [task["id"] for task in page["tasks"]]
        since = page["next_since"]
        if not page["has_more"]:
            break
    assert seen == [task["id"] for task in created]


async def test_a_position_older_than_the_retention_is_410(alice: Caller) -> None:
    old = SyncPosition(seq=0, at=datetime.now(UTC) - timedelta(days=31)).encode()
    problem = assert_problem(await alice.request("GET", "/changes", params={"since": old}), 410)
    assert "full sync" in problem["detail"]
    recent = SyncPosition(seq=0, at=datetime.now(UTC) - timedelta(days=29)).encode()
    assert (await alice.request("GET", "/changes", params={"since": recent})).status_code == 200


@pytest.mark.parametrize("since", ["not-a-token", "e30", "W10"])
async def test_a_since_that_is_not_ours_is_422(alice: Caller, since: str) -> None:
    problem = assert_problem(await alice.request("GET", "/changes", params={"since": since}), 422)
    assert "query.since" in problem["detail"]


async def test_bulk_clearing_leaves_tombstones(alice: Caller) -> None:
    done = [await alice.create(title=f"d{i}", completed=True) for i in range(3)]
    start = (await changes(alice))["next_since"]
    await alice.request("DELETE", params={"status": "completed"})
    later = await changes(alice, start)
    assert sorted(item["id"] for item in later["deleted"]) == [task["id"] for task in done]


async def test_tombstones_are_purged_after_the_retention(app: FastAPI, alice: Caller) -> None:
    task = await alice.create(title="t")
    start = (await changes(alice))["next_since"]
    await alice.request("DELETE", f"/{task['id']}")
    url = app.state.settings.database_url
    older = (
        "deleted_at - interval '31 days'"
        if url.startswith("postgres")
        else "datetime(deleted_at, '-31 days')"
    )
    run_sql(url, f"UPDATE tasks SET deleted_at = {older}")
    assert (await purge(app.state.database, app.state.settings)).tombstones == 1
    assert (await changes(alice, start))["deleted"] == []


async def test_ids_are_never_reused(alice: Caller, app: FastAPI) -> None:
    first = await alice.create(title="t")
    await alice.request("DELETE", f"/{first['id']}")
    await purge(app.state.database, app.state.settings)
    url = app.state.settings.database_url
    run_sql(url, f"DELETE FROM tasks WHERE id = {first['id']}")  # even once the tombstone is gone
    second = await alice.create(title="u")
    assert second["id"] > first["id"]


async def test_tag_renames_reach_sync(alice: Caller) -> None:
    task = await alice.create(title="t", tags=["old"])
    start = (await changes(alice))["next_since"]
    tag = (await alice.client.get(f"/api/{alice.user_id}/tags", headers=alice.headers)).json()[0]
    await alice.client.patch(
        f"/api/{alice.user_id}/tags/{tag['id']}", json={"name": "new"}, headers=alice.headers
    )
    later = await changes(alice, start)
    assert [(t["id"], t["tags"]) for t in later["tasks"]] == [(task["id"], ["new"])]
    assert later["tasks"][0]["version"] == task["version"] + 1


async def test_replaying_the_changes_of_racing_writers_gives_the_servers_state(postgres_url: str) -> None:
    """Writers create, edit, complete and delete for a few seconds while a reader syncs with
    `since` and applies what it reads to a copy: the copy ends exactly as the server."""
    async with running_app(make_settings(postgres_url)) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        copy: dict[int, dict[str, Any]] = {}
        stop = asyncio.Event()

        def apply(answer: dict[str, Any]) -> None:
            for task in answer["tasks"]:
                copy[task["id"]] = task
            for item in answer["deleted"]:
                copy.pop(item["id"], None)

        async def writer(seed: int) -> None:
            rng = random.Random(seed)
            mine: list[int] = []
            while not stop.is_set():
                roll = rng.random()
                if roll < 0.4 or not mine:
                    mine.append((await alice.create(title=f"w{seed}", tags=[f"t{rng.randint(0, 3)}"]))["id"])
                elif roll < 0.7:
                    await alice.request(
                        "PATCH", f"/{rng.choice(mine)}", json={"description": str(rng.random())}
                    )
                elif roll < 0.85:
                    await alice.request("PATCH", f"/{rng.choice(mine)}/complete")
                else:
                    await alice.request("DELETE", f"/{mine.pop(rng.randrange(len(mine)))}")

        async def reader() -> str:
            answer = await changes(alice)
            apply(answer)
            since = answer["next_since"]
            while not stop.is_set():
                answer = await changes(alice, since, limit=7)
                apply(answer)
                since = answer["next_since"]
            return since

        async def clock() -> None:
            await asyncio.sleep(3)
            stop.set()

        results = await asyncio.gather(clock(), reader(), *(writer(seed) for seed in range(6)))
        since: str = results[1]
        while True:  # catch up with what committed after the last read
            answer = await changes(alice, since, limit=50)
            apply(answer)
            since = answer["next_since"]
            if not answer["has_more"]:
                break
        server: dict[int, dict[str, Any]] = {}
        params = {"limit": "500"}
        while True:  # every page: the writers may write more tasks than one page holds
            page = await alice.request("GET", params=params)
            server.update((task["id"], task) for task in page.json())
            if "X-Next-Cursor" not in page.headers:
                break
            params["cursor"] = page.headers["X-Next-Cursor"]
        assert len(server) > 20  # the writers did write
        assert copy == server


async def test_a_full_syncs_last_position_asked_at_once_returns_nothing(alice: Caller) -> None:
    """Not the tombstones of tasks created and deleted before the full sync, which the client
    never saw: the last position of a full sync is the owner's counter as of its read."""
    kept = await alice.create(title="kept")
    for title in ("gone", "gone too"):
        await alice.request("DELETE", f"/{(await alice.create(title=title))['id']}")
    for limit in (None, 1):
        since = None
        seen: list[int] = []
        while True:
            page = await changes(alice, since, limit=limit)
            seen += [task["id"] for task in page["tasks"]]
            since = page["next_since"]
            if not page["has_more"]:
                break
        assert seen == [kept["id"]]
        assert await changes(alice, since) == {
            "tasks": [],
            "deleted": [],
            "lists": [],
            "deleted_lists": [],
            "next_since": since,
            "has_more": False,
        }


async def test_a_client_pausing_mid_paging_past_the_retention_gets_410_not_a_gap(database_url: str) -> None:
    """While `has_more`, a position keeps the time its paging started from: a client that
    pauses longer than the retention (here 5 s) must start over, since a task it saw may have
    been deleted and its tombstone purged meanwhile. (A position's time is in whole seconds,
    rounded down: it only ever looks older.)"""
    settings = make_settings(database_url, sync_retention_days=5 / 86_400)
    async with running_app(settings) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        tasks = [await alice.create(title=f"t{i}") for i in range(6)]
        first = await changes(alice, limit=2)  # the client now holds t0 and t1
        assert first["has_more"]
        await asyncio.sleep(1)
        await alice.request("DELETE", f"/{tasks[0]['id']}")  # deleted on another device
        await asyncio.sleep(2)
        second = await changes(alice, first["next_since"], limit=2)  # read slowly, 3 s in
        assert second["has_more"]
        await asyncio.sleep(2.5)
        purged = (await purge(app.state.database, app.state.settings)).tombstones
        assert purged == 0  # the tombstone is 4.5 s old: not yet past the retention...
        await asyncio.sleep(0.7)
        purged = (await purge(app.state.database, app.state.settings)).tombstones
        assert purged == 1  # ...now it is: t0's deletion is lost to a client paging from before it
        problem = assert_problem(
            await alice.request("GET", "/changes", params={"since": second["next_since"], "limit": 2}), 410
        )
        assert "full sync" in problem["detail"]


async def test_a_position_ahead_of_the_users_changes_is_422(alice: Caller, bob: Caller) -> None:
    for _ in range(3):
        await bob.create(title="bob's")
    bobs = (await changes(bob))["next_since"]
    # Bob's position is ahead of alice's changes: never one the server issued to her.
    problem = assert_problem(await alice.request("GET", "/changes", params={"since": bobs}), 422)
    assert "query.since" in problem["detail"]
