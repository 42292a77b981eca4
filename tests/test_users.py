"""The users table: a row appears with a user's first write, filled from the token's claims."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.conftest import Caller, run_sql, sign_in

pytestmark = pytest.mark.anyio


async def users(app: FastAPI) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in sql(app, "SELECT id, email, name FROM users ORDER BY id")]


def sql(app: FastAPI, statement: str) -> list[Any]:
    return run_sql(app.state.settings.database_url, statement)


async def test_reading_creates_no_user(app: FastAPI, alice: Caller) -> None:
    await alice.request("GET")
    assert await users(app) == []


async def test_first_write_records_the_user_with_email_and_name(app: FastAPI, alice: Caller) -> None:
    await alice.create()
    await alice.create()
    assert await users(app) == [(alice.user_id, "alice@example.com", "Alice")]


async def test_a_token_without_email_or_name_records_just_the_id(app: FastAPI, bob: Caller) -> None:
    await bob.create()
    assert await users(app) == [(bob.user_id, None, None)]


async def test_a_newer_email_or_name_replaces_the_old_one(app: FastAPI, client: AsyncClient) -> None:
    await sign_in(client, "carol", email="carol@old.example", name="Carol").create()
    await sign_in(client, "carol", email="carol@new.example").create()
    assert await users(app) == [("carol", "carol@new.example", "Carol")]
    # A token that carries neither leaves what is known alone.
    await sign_in(client, "carol").create()
    assert await users(app) == [("carol", "carol@new.example", "Carol")]


async def test_tasks_reference_their_user(app: FastAPI, alice: Caller) -> None:
    await alice.create()
    orphans = sql(
        app, "SELECT count(*) FROM tasks LEFT JOIN users ON users.id = tasks.user_id WHERE users.id IS NULL"
    )
    assert orphans == [(0,)]


async def test_profile_claims_that_cannot_be_stored_are_dropped(app: FastAPI, client: AsyncClient) -> None:
    caller = sign_in(client, "dave", email="d" * 400 + "@example.com", name="Dave\x00")
    await caller.create()
    assert await users(app) == [("dave", None, None)]


async def test_task_counters_follow_every_write(app: FastAPI, alice: Caller, bob: Caller) -> None:
    """The users row counts tasks (and completed ones) through triggers, for X-Total-Count."""
    tasks = [await alice.create(title=f"t{i}", completed=i % 2 == 0) for i in range(6)]
    await bob.create()
    await alice.request("PATCH", f"/{tasks[1]['id']}/complete")  # pending -> completed
    await alice.request("PATCH", f"/{tasks[0]['id']}", json={"completed": False})  # completed -> pending
    await alice.request("PUT", f"/{tasks[2]['id']}", json={"title": "same state", "completed": True})
    await alice.request("DELETE", f"/{tasks[4]['id']}")  # a completed one
    await alice.request("DELETE", f"/{tasks[5]['id']}")  # a pending one

    counted = sql(app, "SELECT id, task_count, completed_count FROM users")
    counters = {row[0]: (row[1], row[2]) for row in counted}
    stored = sql(
        app,
        # Deleted tasks stay as tombstones (for sync) and count for nothing.
        "SELECT user_id, count(*), sum(CASE WHEN completed THEN 1 ELSE 0 END) FROM tasks "
        "WHERE deleted_at IS NULL GROUP BY user_id",
    )
    actual = {row[0]: (row[1], row[2]) for row in stored}
    assert counters == actual
    assert counters[alice.user_id] == (4, 2)
