"""Tag writes racing each other and task writes: no 5xx, nothing lost, one tag per name.

On PostgreSQL, renames of several tags onto one name raced into unique violations (500s,
and tasks left without the tag), and a rename racing tagged creates deadlocked (500s, and
the person's new task lost). Every write of a user now takes the user's change counter
first, so they run one at a time in one lock order; a rename onto a name another rename is
creating at the same moment becomes the documented merge. Both databases.
"""

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from tests.conftest import Caller, http_client, make_settings, running_app, sign_in

pytestmark = pytest.mark.anyio


async def tags_of(caller: Caller) -> list[dict[str, Any]]:
    response = await caller.client.get(f"/api/{caller.user_id}/tags", headers=caller.headers)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


async def every_task(caller: Caller) -> list[dict[str, Any]]:
    response = await caller.request("GET", params={"limit": 500})
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()
    return tasks


def assert_one_tag_per_name(tags: list[dict[str, Any]]) -> None:
    folded = Counter(tag["name"].casefold() for tag in tags)
    assert all(count == 1 for count in folded.values()), folded


async def test_rounds_of_renames_onto_one_name_merge_them(database_url: str) -> None:
    async with running_app(make_settings(database_url)) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        for round_ in range(4):
            names = [f"r{round_}-{i}" for i in range(6)]
            tasks = [await alice.create(title=f"{name} task", tags=[name]) for name in names]
            both = await alice.create(title="two of them", tags=names[:2])
            ids = {tag["name"]: tag["id"] for tag in await tags_of(alice)}
            renames = [
                alice.client.patch(
                    f"/api/me/tags/{ids[name]}",
                    json={"name": f"Merged{round_}" if i % 2 else f"merged{round_}"},
                    headers=alice.headers,
                )
                for i, name in enumerate(names)
            ]
            responses = await asyncio.gather(*renames)
            assert [response.status_code for response in responses] == [200] * len(names), [
                response.text for response in responses
            ]
            tags = await tags_of(alice)
            assert_one_tag_per_name(tags)
            merged = [tag for tag in tags if tag["name"].casefold() == f"merged{round_}"]
            assert len(merged) == 1
            assert merged[0]["task_count"] == len(tasks) + 1  # every task that had any of them
            for task in [*tasks, both]:
                carried = (await alice.request("GET", f"/{task['id']}")).json()["tags"]
                assert [name.casefold() for name in carried] == [f"merged{round_}"], carried


async def test_a_rename_racing_tagged_creates_and_tag_updates_loses_nothing(database_url: str) -> None:
    async with running_app(make_settings(database_url)) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        rng = random.Random(7)
        for round_ in range(4):
            old, new = f"old{round_}", f"new{round_}"
            existing = [await alice.create(title=f"e{i}", tags=[old if i % 2 else new]) for i in range(6)]
            ids = {tag["name"]: tag["id"] for tag in await tags_of(alice)}

            creates = [
                alice.request(
                    "POST", json={"title": f"c{round_}-{i}", "tags": [rng.choice([old, new, new.upper()])]}
                )
                for i in range(12)
            ]
            updates = [
                alice.request("PATCH", f"/{task['id']}", json={"tags": [old, f"x{round_}"]})
                for task in existing[:4]
            ]
            rename = alice.client.patch(f"/api/me/tags/{ids[old]}", json={"name": new}, headers=alice.headers)
            responses = await asyncio.gather(rename, *creates, *updates)
            statuses = [response.status_code for response in responses]
            assert statuses == [200] + [201] * len(creates) + [200] * len(updates), [
                response.text for response in responses if response.status_code >= 300
            ]

            tasks = {task["id"]: task for task in await every_task(alice)}
            for response in responses[1 : 1 + len(creates)]:
                created = response.json()
                assert created["id"] in tasks  # every create kept
                # Its tag: the one it was given, or, created before the rename, the survivor.
                assert [name.casefold() for name in tasks[created["id"]]["tags"]] in (
                    [old.casefold()],
                    [new.casefold()],
                )
            tags = await tags_of(alice)
            assert_one_tag_per_name(tags)
            counted = Counter(name.casefold() for task in tasks.values() for name in task["tags"])
            assert {tag["name"].casefold(): tag["task_count"] for tag in tags} == dict(counted)
