"""Every answer goes out through the same edge: the app's, and those of the layers around it
(a body too large, the deadline, a bug, a refused preflight or Host, the rate limit)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.conftest import Caller, assert_problem, http_client, make_settings, running_app, sign_in

pytestmark = pytest.mark.anyio

ORIGIN = "http://localhost:3000"


@pytest.fixture
async def edge_app(database_url: str) -> AsyncIterator[FastAPI]:
    """The app with small limits, and two routes that fail as only a bug or a hang would."""
    settings = make_settings(
        database_url,
        max_body_bytes=1024,
        request_timeout_seconds=0.3,
        rate_limit_per_second=1,
        rate_limit_burst=2,
        max_tasks_per_user=1,
        allowed_hosts="testserver,*.example.com",
    )
    async with running_app(settings) as app:

        async def broken() -> None:
            raise RuntimeError("secret internals")

        async def stuck() -> None:
            await asyncio.sleep(10)

        app.add_api_route("/test/broken", broken)
        app.add_api_route("/test/stuck", stuck)
        yield app


@pytest.fixture
async def edge_client(edge_app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with http_client(edge_app) as client:
        client.headers["Origin"] = ORIGIN
        yield client


def assert_through_the_edge(response: Any) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff", response
    assert len(headers["x-request-id"]) == 32, response
    assert headers["access-control-allow-origin"] == ORIGIN, response
    exposed = {name.strip().lower() for name in headers["access-control-expose-headers"].split(",")}
    assert {"www-authenticate", "retry-after", "x-request-id"} <= exposed


async def test_every_error_status_carries_the_edge_headers(edge_client: AsyncClient) -> None:
    # A user per request: the bucket allows each of them two.
    def user(name: str) -> Caller:
        return sign_in(edge_client, name)

    full = user("full")
    assert (await full.request("POST", json={"title": "the only one allowed"})).status_code == 201
    limited = user("limited")
    for _ in range(2):
        assert (await limited.request("GET")).status_code == 200
    responses = {
        400: await user("u400").request(
            "POST", content=b'{"title": "\xff"}', headers={"Content-Type": "application/json"}
        ),
        401: await edge_client.get("/api/alice/tasks"),
        403: await user("u403").request("GET", user_id="alice"),
        404: await user("u404").request("GET", "/999"),
        405: await edge_client.delete("/health"),
        409: await full.request("POST", json={"title": "one too many"}),
        413: await user("u413").request("POST", content=json.dumps({"title": "x" * 2000}).encode()),
        422: await user("u422").request("POST", json={"title": ""}),
        429: await limited.request("GET"),
        500: await edge_client.get("/test/broken"),
        503: await edge_client.get("/test/stuck"),
    }
    for status, response in responses.items():
        assert_problem(response, status)
        assert_through_the_edge(response)
    assert "secret internals" not in responses[500].text
    assert responses[503].headers["retry-after"]
    assert responses[429].headers["retry-after"]
    assert responses[401].headers["www-authenticate"] == "Bearer"


async def test_the_cap_on_tasks_names_the_limit_and_stores_nothing(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, max_tasks_per_user=2)) as app,
        http_client(app) as client,
    ):
        carol = sign_in(client, "carol")
        for title in ("first", "second"):
            assert (await carol.request("POST", json={"title": title})).status_code == 201
        refused = await carol.request("POST", json={"title": "third"})
        problem = assert_problem(refused, 409)
        assert problem["detail"].startswith("this user already has 2 tasks")
        assert "MAX_TASKS_PER_USER" in problem["detail"]
        listed = await carol.request("GET")
        assert [task["title"] for task in listed.json()] == ["second", "first"]
        # Room again once one is gone; and other users have caps of their own.
        assert (await carol.request("DELETE", f"/{listed.json()[0]['id']}")).status_code == 204
        assert (await carol.request("POST", json={"title": "third"})).status_code == 201
        assert (await sign_in(client, "dave").request("POST", json={"title": "d"})).status_code == 201


async def test_a_refused_preflight_is_a_problem(edge_client: AsyncClient) -> None:
    response = await edge_client.options(
        "/api/alice/tasks",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    problem = assert_problem(response, 400)
    assert "origin" in problem["detail"]
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_host_outside_allowed_hosts_is_a_400_problem(edge_client: AsyncClient) -> None:
    for host in ("evil.example", "example.com.evil.example", "testserver.evil"):
        response = await edge_client.get("/health", headers={"Host": host})
        problem = assert_problem(response, 400)
        assert "Host" in problem["detail"]
        assert_through_the_edge(response)
    for host in ("testserver", "testserver:8000", "api.example.com", "API.Example.com:443"):
        assert (await edge_client.get("/health", headers={"Host": host})).status_code == 200, host


async def test_no_redirect_on_a_trailing_slash(client: AsyncClient, alice: Caller) -> None:
    response = await alice.client.get(alice.url("/"), headers=alice.headers)
    assert_problem(response, 404)
    assert "location" not in response.headers


async def test_a_bug_is_logged_once_with_its_traceback(
    edge_client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await edge_client.get("/test/broken")
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].name == "backend.errors"
    assert errors[0].exc_info is not None
