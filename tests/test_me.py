"""`me` in a path means the signed-in user, on every route; answers name the real id."""

from typing import Any

import pytest

from tests.conftest import Caller, assert_problem

pytestmark = pytest.mark.anyio


async def test_me_works_on_every_route(alice: Caller) -> None:
    created = await alice.request("POST", json={"title": "via me"}, user_id="me")
    assert created.status_code == 201
    task: dict[str, Any] = created.json()
    assert task["user_id"] == alice.user_id
    # Answers name the real id, so they stay right whoever follows them.
    assert created.headers["location"] == f"/api/{alice.user_id}/tasks/{task['id']}"

    one = f"/{task['id']}"
    assert (await alice.request("GET", one, user_id="me")).json() == task
    assert (await alice.request("PUT", one, json={"title": "replaced"}, user_id="me")).json()[
        "title"
    ] == "replaced"
    patched = await alice.request("PATCH", one, json={"description": "d"}, user_id="me")
    assert patched.json()["description"] == "d"
    assert (await alice.request("PATCH", f"{one}/complete", user_id="me")).json()["completed"] is True
    assert (await alice.request("HEAD", one, user_id="me")).status_code == 200

    await alice.request("POST", json={"title": "another"}, user_id="me")
    listed = await alice.request("GET", params={"limit": 1}, user_id="me")
    assert listed.headers["x-total-count"] == "2"
    assert listed.headers["link"] == f'</api/{alice.user_id}/tasks?limit=1&offset=1>; rel="next"'

    assert (await alice.request("DELETE", one, user_id="me")).status_code == 204
    assert_problem(await alice.request("GET", one), 404)


async def test_me_is_only_ever_the_caller(alice: Caller, bob: Caller) -> None:
    secret = await alice.create(title="alice's")
    assert_problem(await bob.request("GET", f"/{secret['id']}", user_id="me"), 404)
    assert (await bob.request("GET", user_id="me")).json() == []
    no_token = await alice.client.get("/api/me/tasks")
    assert_problem(no_token, 401)
