"""Concurrent requests: the toggle is atomic, writes never mix, creates never collide (both
databases); a full PostgreSQL pool makes requests wait, within the database timeout."""

import asyncio
import time
from typing import Any

import pytest

from backend.store.database import PoolStatus
from tests.conftest import Caller, assert_problem, http_client, make_settings, running_app, sign_in

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


async def test_a_full_pool_makes_a_request_wait_then_answer_503(postgres_url: str) -> None:
    settings = make_settings(postgres_url, database_pool_size=1, database_timeout_seconds=0.5)
    async with running_app(settings) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        task = await alice.create(title="waits")
        database = app.state.database

        async def timed_read() -> tuple[Any, float]:
            started = time.perf_counter()
            response = await alice.request("GET", f"/{task['id']}")
            return response, time.perf_counter() - started

        async with database.connection():  # the pool's only connection, held
            read = asyncio.create_task(timed_read())
            await asyncio.sleep(0.2)
            assert database.pool_status() == PoolStatus(size=1, in_use=1, waiting=1)
            response, seconds = await read

        problem = assert_problem(response, 503)
        assert "database" in problem["detail"]
        assert 0.5 <= seconds < 2
        # Every claim on the pool was given back, the timed-out one included.
        assert database.pool_status() == PoolStatus(size=1, in_use=0, waiting=0)
        assert (await alice.request("GET", f"/{task['id']}")).status_code == 200


async def test_requests_beyond_the_pool_size_queue_and_all_succeed(postgres_url: str) -> None:
    settings = make_settings(postgres_url, database_pool_size=2)
    async with running_app(settings) as app, http_client(app) as http:
        # Two users: one user's requests use at most half the pool at once (see test_contention).
        callers = [sign_in(http, "alice"), sign_in(http, "bob")]
        tasks = [await caller.create(title="shared") for caller in callers]
        pairs = list(zip(callers, tasks, strict=True)) * 20
        responses = await asyncio.gather(*(caller.request("GET", f"/{task['id']}") for caller, task in pairs))

        assert [response.status_code for response in responses] == [200] * 40
        assert app.state.database.pool_status() == PoolStatus(size=2, in_use=0, waiting=0)
