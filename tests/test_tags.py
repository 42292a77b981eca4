"""A user's tags: listed with counts, renamed, merged by renaming onto another, deleted; and
another user's tags do not exist for you."""

import asyncio
from typing import Any

import pytest

from tests.conftest import Caller, assert_problem, http_client, make_settings, running_app, sign_in

pytestmark = pytest.mark.anyio


async def tags_of(caller: Caller) -> list[dict[str, Any]]:
    response = await caller.client.get(f"/api/{caller.user_id}/tags", headers=caller.headers)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


async def tag_request(caller: Caller, method: str, tag_id: int, **kwargs: Any) -> Any:
    return await caller.client.request(
        method, f"/api/{caller.user_id}/tags/{tag_id}", headers=caller.headers, **kwargs
    )


def by_name(tags: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {tag["name"]: tag for tag in tags}


async def test_the_list_counts_tasks_and_pending_ones_sorted_case_insensitively(alice: Caller) -> None:
    await alice.create(title="a", tags=["work", "Errands"])
    await alice.create(title="b", tags=["WORK"], completed=True)
    await alice.create(title="c", tags=["banana"])
    tags = await tags_of(alice)
    assert [(t["name"], t["task_count"], t["pending_count"]) for t in tags] == [
        ("banana", 1, 1),
        ("Errands", 1, 1),
        ("work", 2, 1),
    ]
    assert all(isinstance(t["id"], int) for t in tags)


async def test_a_tag_on_no_task_disappears(alice: Caller) -> None:
    task = await alice.create(title="a", tags=["gone", "kept"])
    await alice.create(title="b", tags=["kept"])
    await alice.request("PATCH", f"/{task['id']}", json={"tags": ["kept"]})
    assert [t["name"] for t in await tags_of(alice)] == ["kept"]
    await alice.request("DELETE", f"/{task['id']}")
    assert [(t["name"], t["task_count"]) for t in await tags_of(alice)] == [("kept", 1)]


async def test_renaming_changes_the_name_everywhere(alice: Caller) -> None:
    task = await alice.create(title="a", tags=["wrok"])
    tag = (await tags_of(alice))[0]
    renamed = await tag_request(alice, "PATCH", tag["id"], json={"name": " work "})
    assert renamed.status_code == 200
    assert renamed.json() == {"id": tag["id"], "name": "work", "task_count": 1, "pending_count": 1}
    assert (await alice.request("GET", f"/{task['id']}")).json()["tags"] == ["work"]
    # A change of case alone is a rename too.
    assert (await tag_request(alice, "PATCH", tag["id"], json={"name": "Work"})).json()["name"] == "Work"


async def test_renaming_onto_another_tag_merges_them_each_task_keeping_it_once(alice: Caller) -> None:
    both = await alice.create(title="both", tags=["job", "work"])
    only_job = await alice.create(title="only job", tags=["job"], completed=True)
    only_work = await alice.create(title="only work", tags=["work"])
    tags = by_name(await tags_of(alice))
    merged = await tag_request(alice, "PATCH", tags["job"]["id"], json={"name": "WORK"})
    assert merged.status_code == 200
    # The surviving tag is the one renamed onto, with the new spelling and every task.
    assert merged.json() == {"id": tags["work"]["id"], "name": "WORK", "task_count": 3, "pending_count": 2}
    assert [(t["name"], t["task_count"]) for t in await tags_of(alice)] == [("WORK", 3)]
    for task in (both, only_job, only_work):
        assert (await alice.request("GET", f"/{task['id']}")).json()["tags"] == ["WORK"]
    assert_problem(await tag_request(alice, "PATCH", tags["job"]["id"], json={"name": "x"}), 404)


async def test_deleting_a_tag_takes_it_off_every_task_and_keeps_the_tasks(alice: Caller) -> None:
    first = await alice.create(title="a", tags=["drop", "keep"])
    second = await alice.create(title="b", tags=["drop"])
    tag = by_name(await tags_of(alice))["drop"]
    deleted = await tag_request(alice, "DELETE", tag["id"])
    assert deleted.status_code == 204
    assert (await alice.request("GET", f"/{first['id']}")).json()["tags"] == ["keep"]
    assert (await alice.request("GET", f"/{second['id']}")).json()["tags"] == []
    assert_problem(await tag_request(alice, "DELETE", tag["id"]), 404)
    # Used again, it is a new tag.
    again = await alice.create(title="c", tags=["Drop"])
    assert again["tags"] == ["Drop"]


async def test_another_users_tags_do_not_exist_for_you(alice: Caller, bob: Caller) -> None:
    await alice.create(title="a", tags=["secret"])
    tag = (await tags_of(alice))[0]
    assert await tags_of(bob) == []
    assert_problem(await tag_request(bob, "PATCH", tag["id"], json={"name": "mine"}), 404)
    assert_problem(await tag_request(bob, "DELETE", tag["id"]), 404)
    assert [t["name"] for t in await tags_of(alice)] == ["secret"]
    # Same names are different tags for different users.
    bobs = await bob.create(title="b", tags=["SECRET"])
    assert bobs["tags"] == ["SECRET"]
    assert [t["name"] for t in await tags_of(alice)] == ["secret"]
    forbidden = await bob.client.get(f"/api/{alice.user_id}/tags", headers=bob.headers)
    assert_problem(forbidden, 403)


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "x" * 51}, {"name": "a\nb"}, {}, {"name": 3}])
async def test_an_invalid_name_is_422(alice: Caller, body: dict[str, Any]) -> None:
    await alice.create(title="a", tags=["t"])
    tag = (await tags_of(alice))[0]
    assert_problem(await tag_request(alice, "PATCH", tag["id"], json=body), 422)
    assert (await tags_of(alice))[0]["name"] == "t"


async def test_me_works_for_tags_too(alice: Caller) -> None:
    await alice.create(title="a", tags=["t"])
    response = await alice.client.get("/api/me/tags", headers=alice.headers)
    assert [t["name"] for t in response.json()] == ["t"]


async def test_twenty_concurrent_creates_introducing_one_tag_make_one_tag(postgres_url: str) -> None:
    async with running_app(make_settings(postgres_url)) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        responses = await asyncio.gather(
            *(
                alice.request("POST", json={"title": f"t{i}", "tags": ["Fresh", "also new"]})
                for i in range(20)
            )
        )
        assert [response.status_code for response in responses] == [201] * 20, [r.text for r in responses]
        assert {tuple(response.json()["tags"]) for response in responses} == {("also new", "Fresh")}
        tags = await tags_of(alice)
        assert [(t["name"], t["task_count"]) for t in tags] == [("also new", 20), ("Fresh", 20)]


async def test_concurrent_edits_introducing_one_tag_make_one_tag(postgres_url: str) -> None:
    async with running_app(make_settings(postgres_url)) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        tasks = [await alice.create(title=f"t{i}") for i in range(20)]
        responses = await asyncio.gather(
            *(alice.request("PATCH", f"/{task['id']}", json={"tags": ["together"]}) for task in tasks)
        )
        assert [response.status_code for response in responses] == [200] * 20
        assert [(t["name"], t["task_count"]) for t in await tags_of(alice)] == [("together", 20)]
