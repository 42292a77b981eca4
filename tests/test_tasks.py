"""The happy path of every task route, and what a task looks like."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from tests.conftest import Caller, assert_problem, sign_in

pytestmark = pytest.mark.anyio

TASK_FIELDS = {
    "id",
    "user_id",
    "title",
    "description",
    "completed",
    "created_at",
    "updated_at",
    # The organising fields (test_organising.py covers them).
    "priority",
    "due_at",
    "remind_at",
    "reminded_at",
    "tags",
    "recurrence",
    "time_zone",
    "completed_at",
    "next_occurrence_id",
    "version",  # the ETag (test_sync.py covers it)
    "list_id",  # (test_lists.py)
    # Subtasks and order (test_subtasks.py).
    "parent_id",
    "position",
    "subtask_count",
    "open_subtask_count",
}


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), f"{value} is not UTC with an explicit offset"
    return moment


async def test_create_returns_the_task_and_its_location(alice: Caller) -> None:
    response = await alice.request("POST", json={"title": "  Buy milk  ", "description": "oat"})

    assert response.status_code == 201
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert task["title"] == "Buy milk"  # trimmed
    assert task["description"] == "oat"
    assert task["completed"] is False
    assert task["user_id"] == alice.user_id
    assert isinstance(task["id"], int)
    task_id = task["id"]
    # A path: resolved against the request's URL, it is the task's URL.
    assert response.headers["location"] == alice.url(f"/{task_id}")
    assert task["created_at"] == task["updated_at"]
    assert abs(parse_time(task["created_at"]) - datetime.now(UTC)) < timedelta(seconds=30)


async def test_behind_a_proxy_that_adds_a_path_prefix_the_location_keeps_it(app: FastAPI) -> None:
    # As served with `--root-path /todo` behind a proxy that forwards /todo/... .
    transport = ASGITransport(app=app, root_path="/todo")
    async with AsyncClient(transport=transport, base_url="http://testserver/todo") as client:
        alice = sign_in(client, "alice")
        response = await client.post("api/alice/tasks", headers=alice.headers, json={"title": "t"})
        assert response.status_code == 201
        location = response.headers["location"]
        assert location == f"/todo/api/alice/tasks/{response.json()['id']}"
        read = await client.get(str(response.url.join(location)), headers=alice.headers)
        assert read.json() == response.json()


async def test_create_accepts_completed_and_null_description(alice: Caller) -> None:
    task = await alice.create(title="Done already", description=None, completed=True)
    assert task["completed"] is True
    assert task["description"] is None


async def test_created_task_can_be_read_back(alice: Caller, alice_task: dict[str, Any]) -> None:
    response = await alice.request("GET", f"/{alice_task['id']}")
    assert response.status_code == 200
    assert response.json() == alice_task


async def test_list_returns_the_users_tasks(alice: Caller, bob: Caller) -> None:
    first = await alice.create(title="first")
    second = await alice.create(title="second")
    await bob.create(title="bob's")

    response = await alice.request("GET")

    assert response.status_code == 200
    assert response.json() == [second, first]  # newest first
    assert response.headers["x-total-count"] == "2"
    assert "link" not in response.headers


async def test_put_replaces_title_and_description(alice: Caller, alice_task: dict[str, Any]) -> None:
    response = await alice.request("PUT", f"/{alice_task['id']}", json={"title": "Buy bread"})

    assert response.status_code == 200
    task = response.json()
    assert task["title"] == "Buy bread"
    assert task["description"] is None  # omitted means cleared
    assert task["completed"] is False  # omitted means unchanged
    assert task["created_at"] == alice_task["created_at"]
    assert parse_time(task["updated_at"]) > parse_time(alice_task["updated_at"])


async def test_put_sets_completed_when_given(alice: Caller, alice_task: dict[str, Any]) -> None:
    response = await alice.request(
        "PUT", f"/{alice_task['id']}", json={"title": "x", "description": "y", "completed": True}
    )
    assert response.json()["completed"] is True
    again = await alice.request("PUT", f"/{alice_task['id']}", json={"title": "x"})
    assert again.json()["completed"] is True


async def test_patch_changes_only_what_is_sent(alice: Caller, alice_task: dict[str, Any]) -> None:
    response = await alice.request("PATCH", f"/{alice_task['id']}", json={"completed": True})

    assert response.status_code == 200
    task = response.json()
    assert task["completed"] is True
    assert task["title"] == alice_task["title"]
    assert task["description"] == alice_task["description"]
    assert parse_time(task["updated_at"]) > parse_time(alice_task["updated_at"])


async def test_patch_with_null_description_clears_it(alice: Caller, alice_task: dict[str, Any]) -> None:
    response = await alice.request("PATCH", f"/{alice_task['id']}", json={"description": None})
    assert response.status_code == 200
    assert response.json()["description"] is None
    assert response.json()["title"] == alice_task["title"]


async def test_patch_trims_the_title(alice: Caller, alice_task: dict[str, Any]) -> None:
    response = await alice.request("PATCH", f"/{alice_task['id']}", json={"title": "\tnew title \n"})
    assert response.json()["title"] == "new title"


async def test_delete_removes_the_task(alice: Caller, alice_task: dict[str, Any]) -> None:
    response = await alice.request("DELETE", f"/{alice_task['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await alice.request("GET", f"/{alice_task['id']}"), 404)
    assert_problem(await alice.request("DELETE", f"/{alice_task['id']}"), 404)


async def test_complete_without_body_toggles(alice: Caller, alice_task: dict[str, Any]) -> None:
    url = f"/{alice_task['id']}/complete"
    first = await alice.request("PATCH", url)
    second = await alice.request("PATCH", url)

    assert first.status_code == second.status_code == 200
    assert first.json()["completed"] is True
    assert second.json()["completed"] is False
    assert parse_time(second.json()["updated_at"]) > parse_time(first.json()["updated_at"])


async def test_complete_with_body_sets_idempotently(alice: Caller, alice_task: dict[str, Any]) -> None:
    url = f"/{alice_task['id']}/complete"
    for _ in range(2):
        response = await alice.request("PATCH", url, json={"completed": True})
        assert response.status_code == 200
        assert response.json()["completed"] is True
    response = await alice.request("PATCH", url, json={"completed": False})
    assert response.json()["completed"] is False


async def test_created_at_never_changes_and_updated_at_always_does(
    alice: Caller, alice_task: dict[str, Any]
) -> None:
    task_url = f"/{alice_task['id']}"
    changes = [
        ("PUT", task_url, {"title": "one"}),
        ("PATCH", task_url, {"title": "two"}),
        ("PATCH", f"{task_url}/complete", None),
        ("PATCH", f"{task_url}/complete", {"completed": False}),
    ]
    previous = parse_time(alice_task["updated_at"])
    for method, url, body in changes:
        await asyncio.sleep(0.002)
        task = (await alice.request(method, url, json=body)).json()
        assert task["created_at"] == alice_task["created_at"]
        assert parse_time(task["updated_at"]) > previous, (method, url)
        previous = parse_time(task["updated_at"])
