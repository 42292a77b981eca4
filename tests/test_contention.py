"""No request stalls a worker, on either database.

For every write to a task, twice DATABASE_POOL_SIZE concurrent requests on one task with a
stale If-Match all answer 412 within a second, while another user's list answers at once;
with the task's current tag exactly one succeeds. (Each loser used to hold a pooled
connection, on SQLite the write lock, while asking the pool for a second one to tell 412
from 404: they waited 5 s, answered 503, and so did everyone else on the worker.)
One user's requests use at most half the pool; beyond that they wait their turn, and one
that waited too long is a 429.
"""

import asyncio
import time
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from backend.app import READY
from backend.store.database import (
    CONFLICT_ATTEMPTS,
    DatabaseUnavailableError,
    Query,
    SecondConnectionError,
    TransientConflictError,
)
from tests.conftest import Caller, assert_problem, http_client, make_settings, running_app, sign_in

pytestmark = pytest.mark.anyio

POOL_SIZE = 15  # DATABASE_POOL_SIZE's default


def raw(sql: str) -> Query:
    """A statement of the test's own, through the database layer."""
    statement: Any = text(sql)
    return Query(statement)


BUMP = raw("UPDATE change_counters SET seq = seq + 1 WHERE user_id = :user")
CONCURRENT = 2 * POOL_SIZE

WRITES = [
    ("PUT", "", {"title": "replaced"}),
    ("PATCH", "", {"title": "patched"}),
    ("DELETE", "", None),
    ("PATCH", "/complete", None),
    ("PATCH", "/complete", {"completed": True}),
]


async def storm(
    alice: Caller, bob: Caller, method: str, path: str, body: Any, tag: str
) -> tuple[list[int], float, list[float]]:
    """CONCURRENT writes of alice's with `If-Match: tag`, and bob's list read five times meanwhile:
    the statuses, the seconds the storm took, and bob's read times."""
    bobs: list[float] = []

    async def bob_reads() -> None:
        for _ in range(5):
            started = time.perf_counter()
            response = await bob.request("GET")
            bobs.append(time.perf_counter() - started)
            assert response.status_code == 200
            await asyncio.sleep(0.01)

    started = time.perf_counter()
    writes = asyncio.gather(
        *(alice.request(method, path, json=body, headers={"If-Match": tag}) for _ in range(CONCURRENT))
    )
    responses, _ = await asyncio.gather(writes, bob_reads())
    return [response.status_code for response in responses], time.perf_counter() - started, bobs


def assert_served_meanwhile(seconds: list[float]) -> None:
    """Bob's reads during the storm: typically under 100 ms; the first, sent at the same instant
    as the storm's 30 requests, shares the loop's CPU with them (a stalled pool made every one
    of them wait the 5 s of DATABASE_TIMEOUT_SECONDS)."""
    assert sorted(seconds)[len(seconds) // 2] < 0.1, seconds
    assert max(seconds) < 0.5, seconds


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
async def test_stale_writes_on_one_task_are_prompt_412s_while_others_are_served(
    alice: Caller, bob: Caller, method: str, suffix: str, body: Any
) -> None:
    task = await alice.create(title="contended")
    await alice.request("PATCH", f"/{task['id']}", json={"description": "now at version 2"})
    await bob.create(title="bob's")

    statuses, seconds, bobs = await storm(alice, bob, method, f"/{task['id']}{suffix}", body, '"1"')

    assert statuses == [412] * CONCURRENT
    assert seconds < 1, seconds
    assert_served_meanwhile(bobs)
    assert (await alice.request("GET", f"/{task['id']}")).json()["version"] == 2  # nothing changed


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
async def test_with_the_current_tag_exactly_one_write_wins(
    alice: Caller, bob: Caller, method: str, suffix: str, body: Any
) -> None:
    task = await alice.create(title="contended")
    await bob.create(title="bob's")

    statuses, seconds, bobs = await storm(alice, bob, method, f"/{task['id']}{suffix}", body, '"1"')

    if method == "DELETE":
        # The losers find the task gone: 404, as a missing task always is (test_conditional).
        assert sorted(statuses) == [204] + [404] * (CONCURRENT - 1)
    else:
        assert sorted(statuses) == [200] + [412] * (CONCURRENT - 1)
    assert seconds < 1, seconds
    assert_served_meanwhile(bobs)


async def test_a_task_holding_a_connection_cannot_ask_for_a_second(app: FastAPI) -> None:
    """The mistake is refused where it is made, at once, rather than stalling under load."""
    database = app.state.database
    async with database.connection():
        with pytest.raises(SecondConnectionError):
            await database.fetch_one(READY)
    assert await database.fetch_one(READY) is not None  # and once given back, all is well


async def test_one_user_uses_half_the_pool_and_waits_for_it_then_429(database_url: str) -> None:
    settings = make_settings(database_url, database_pool_size=4, database_timeout_seconds=0.3)
    async with running_app(settings) as app, http_client(app) as http:
        alice, bob = sign_in(http, "alice"), sign_in(http, "bob")
        task = await alice.create(title="mine")
        database = app.state.database
        assert database.user_share == 2
        release = asyncio.Event()
        held = [asyncio.Event(), asyncio.Event()]

        async def hold(holding: asyncio.Event) -> None:
            async with database.for_user(alice.user_id).connection():
                holding.set()
                await release.wait()

        holders = [asyncio.create_task(hold(holding)) for holding in held]
        for holding in held:
            await holding.wait()

        started = time.perf_counter()
        waited = await alice.request("GET", f"/{task['id']}")
        seconds = time.perf_counter() - started
        problem = assert_problem(waited, 429)
        assert "DATABASE_POOL_SIZE" in problem["detail"]
        assert waited.headers["retry-after"] == "1"
        assert 0.3 <= seconds < 1
        # Another user is not held up by alice's share.
        assert (await bob.request("GET")).status_code == 200

        release.set()
        await asyncio.gather(*holders)
        assert (await alice.request("GET", f"/{task['id']}")).status_code == 200


async def test_a_users_requests_beyond_the_share_wait_their_turn_and_succeed(database_url: str) -> None:
    settings = make_settings(database_url, database_pool_size=4)
    async with running_app(settings) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        task = await alice.create(title="mine")
        responses = await asyncio.gather(*(alice.request("GET", f"/{task['id']}") for _ in range(40)))
        assert [response.status_code for response in responses] == [200] * 40
        assert app.state.database.pool_status().in_use == 0


async def test_a_deadlock_is_retried_and_both_transactions_commit(postgres_url: str) -> None:
    """Two transactions taking two rows in opposite orders: PostgreSQL kills one (a deadlock),
    the database layer runs it again, and both commit; no client sees a 500."""
    async with running_app(make_settings(postgres_url)) as app:
        database = app.state.database
        await database.execute(raw("INSERT INTO change_counters (user_id, seq) VALUES ('a', 0), ('b', 0)"))
        first_locked, second_locked = asyncio.Event(), asyncio.Event()

        def transaction(mine: str, theirs: str, locked: asyncio.Event, other: asyncio.Event) -> Any:
            attempts = 0

            async def work(connection: Any) -> int:
                nonlocal attempts
                attempts += 1
                await connection.execute(BUMP, user=mine)
                locked.set()
                if attempts == 1:
                    await other.wait()  # both hold one row, each now asks for the other's
                await connection.execute(BUMP, user=theirs)
                return attempts

            return database.atomic(work)

        attempts = await asyncio.gather(
            transaction("a", "b", first_locked, second_locked),
            transaction("b", "a", second_locked, first_locked),
        )
        assert sorted(attempts) == [1, 2]  # one of them ran again
        assert database.conflicts_retried == 1
        counters = await database.fetch_all(raw("SELECT user_id, seq FROM change_counters ORDER BY user_id"))
        assert [(row["user_id"], row["seq"]) for row in counters] == [("a", 2), ("b", 2)]


async def test_a_conflict_that_persists_is_a_503_not_a_500(database_url: str) -> None:
    async with running_app(make_settings(database_url)) as app:
        database = app.state.database

        async def always_conflicting(connection: Any) -> None:
            raise TransientConflictError("DeadlockDetectedError")

        with pytest.raises(DatabaseUnavailableError):
            await database.atomic(always_conflicting)
        assert database.conflicts_retried == CONFLICT_ATTEMPTS - 1
