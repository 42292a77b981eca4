"""Concurrent requests: the toggle is atomic, writes never mix, creates never collide (both databases)."""

import asyncio
from typing import Any

import pytest

from tests.conftest import Caller

pytestmark = pytest.mark.anyio


async def test_fifty_concurrent_toggles_keep_the_parity(alice: Caller, alice_task: dict[str, Any]) -> None:
    url = f"/{alice_task['id']}/complete"
    responses = await asyncio.gather(*(alice.request("PATCH", url) for _ in range(50)))

    assert [response.status_code for response in responses] == [200] * 50
    # Each toggle saw the result of the one before it: exactly half report each state.
    assert sorted(response.json()["completed"] for response in responses) == [False] * 25 + [True] * 25
    final = (await alice.request("GET", f"/{alice_task['id']}")).json()
    assert final["completed"] is False  # an even number of flips


async def test_concurrent_creates_all_persist_with_distinct_ids(alice: Caller) -> None:
    responses = await asyncio.gather(*(alice.request("POST", json={"title": f"t{i}"}) for i in range(100)))

    assert [response.status_code for response in responses] == [201] * 100
    ids = {response.json()["id"] for response in responses}
    assert len(ids) == 100
    listed = await alice.request("GET", params={"limit": 500})
    assert {task["id"] for task in listed.json()} == ids


async def test_concurrent_replaces_leave_one_whole_version(alice: Caller, alice_task: dict[str, Any]) -> None:
    versions = [
        {"title": f"title {i}", "description": f"description {i}", "completed": i % 2 == 0} for i in range(30)
    ]
    responses = await asyncio.gather(
        *(alice.request("PUT", f"/{alice_task['id']}", json=v) for v in versions)
    )

    assert all(response.status_code == 200 for response in responses)
    final = (await alice.request("GET", f"/{alice_task['id']}")).json()
    assert {key: final[key] for key in ("title", "description", "completed")} in versions
