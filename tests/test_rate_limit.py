"""Per-user rate limiting: on by default (20 a second, bursts of 60); a token bucket per user,
in-process or shared through Redis."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from backend.auth.tokens import issue_token
from backend.config import Settings
from tests.conftest import (
    IN_CI,
    SECRET,
    assert_problem,
    fresh_postgres_database,
    http_client,
    make_settings,
    migrate,
    running_app,
    sign_in,
)
from tests.processes import running_server, server_env

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        message = f"Redis is not reachable at TEST_REDIS_URL ({REDIS_URL}): {error}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true requires it)", pytrace=False)
        pytest.skip(message)


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with 5 requests/s per user and bursts of 5, in-process."""
    settings = make_settings(database_url, rate_limit_per_second=5, rate_limit_burst=5)
    async with running_app(settings) as app, http_client(app) as client:
        yield client


async def test_it_is_on_by_default_and_lets_a_burst_of_60_through(database_url: str) -> None:
    settings = Settings(_env_file=None, database_url=database_url, better_auth_secret=SECRET)  # type: ignore[call-arg]
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (20, None)
    async with running_app(settings) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        statuses = [(await alice.request("GET")).status_code for _ in range(90)]
    # The burst passes whole; then, refilled at 20 a second, the bucket runs dry.
    assert set(statuses[:60]) == {200}
    assert 429 in statuses[60:]


async def test_zero_turns_it_off(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, rate_limit_per_second=0)) as app,
        http_client(app) as client,
    ):
        alice = sign_in(client, "alice")
        statuses = {(await alice.request("GET")).status_code for _ in range(100)}
    assert statuses == {200}


async def test_a_burst_beyond_the_limit_is_429_with_retry_after(limited: httpx.AsyncClient) -> None:
    alice, bob = sign_in(limited, "alice"), sign_in(limited, "bob")
    statuses = [(await alice.request("GET")).status_code for _ in range(5)]
    assert statuses == [200] * 5

    refused = await alice.request("GET")
    problem = assert_problem(refused, 429)
    assert refused.headers["retry-after"] == "1"
    assert "rate limit" in problem["detail"]
    # Each user has a bucket of their own.
    assert (await bob.request("GET")).status_code == 200

    await asyncio.sleep(0.25)  # 5 per second: a token every 0.2 s
    assert (await alice.request("GET")).status_code == 200
    assert (await alice.request("GET")).status_code == 429


async def test_refused_requests_change_nothing(limited: httpx.AsyncClient) -> None:
    alice = sign_in(limited, "alice")
    statuses = [(await alice.request("POST", json={"title": f"t{i}"})).status_code for i in range(8)]
    assert statuses == [201] * 5 + [429] * 3
    await asyncio.sleep(0.25)
    assert (await alice.request("GET")).headers["x-total-count"] == "5"


def test_the_limit_is_shared_by_processes_through_redis(tmp_path: Path) -> None:
    require_redis()
    user = f"shared-{uuid.uuid4().hex[:8]}"  # a bucket no other run shares
    auth = {"Authorization": f"Bearer {issue_token(SECRET, user)}"}
    with fresh_postgres_database() as database_url:
        migrate(database_url)
        env = server_env(
            database_url, RATE_LIMIT_PER_SECOND="0.5", RATE_LIMIT_BURST="10", REDIS_URL=REDIS_URL
        )
        with (
            running_server(env, tmp_path / "a.log") as first,
            running_server(env, tmp_path / "b.log") as second,
            httpx.Client(headers=auth) as http,
        ):
            urls = [f"{server.base_url}/api/{user}/tasks" for server in (first, second)] * 6
            statuses = [http.get(url).status_code for url in urls]
    # One bucket of 10 for both processes; each alone would have allowed all 12.
    assert statuses == [200] * 10 + [429] * 2


async def test_an_unreachable_redis_lets_requests_through(database_url: str) -> None:
    settings = make_settings(
        database_url, rate_limit_per_second=1, rate_limit_burst=1, redis_url="redis://127.0.0.1:1/0"
    )
    async with running_app(settings) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        statuses: list[Any] = [(await alice.request("GET")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
