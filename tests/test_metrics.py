"""Prometheus metrics at /metrics: off by default, optionally token-protected, labelled by route template."""

import re
from collections.abc import AsyncIterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from httpx import AsyncClient

from tests.conftest import assert_problem, http_client, make_settings, running_app, sign_in

pytestmark = pytest.mark.anyio


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if found == labels:
                return float(match.group(2))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


@pytest.fixture
async def metered(database_url: str) -> AsyncIterator[AsyncClient]:
    settings = make_settings(database_url, metrics_enabled=True)
    async with running_app(settings) as app, http_client(app) as client:
        yield client


async def test_metrics_are_off_by_default(client: AsyncClient) -> None:
    assert_problem(await client.get("/metrics"), 404)


async def test_requests_are_counted_by_route_template_method_and_status(metered: AsyncClient) -> None:
    alice = sign_in(metered, "alice")
    task = await alice.create(title="x")
    for _ in range(3):
        await alice.request("GET", f"/{task['id']}")
    await alice.request("GET", "/999999")
    await metered.get("/health")

    text = (await metered.get("/metrics")).text
    one_task = "/api/{user_id}/tasks/{task_id}"
    assert sample(text, "todo_api_requests_total", route=one_task, method="GET", status="200") == 3
    assert sample(text, "todo_api_requests_total", route=one_task, method="GET", status="404") == 1
    assert (
        sample(text, "todo_api_requests_total", route="/api/{user_id}/tasks", method="POST", status="201")
        == 1
    )
    assert sample(text, "todo_api_request_duration_seconds_count", route=one_task, method="GET") == 4
    assert (
        sample(text, "todo_api_request_duration_seconds_bucket", route=one_task, method="GET", le="+Inf") == 4
    )
    assert "alice" not in text  # paths carry user ids; labels never do


async def test_the_pool_is_reported(metered: AsyncClient) -> None:
    await sign_in(metered, "alice").request("GET")
    text = (await metered.get("/metrics")).text
    assert sample(text, "todo_api_db_pool_in_use") == 0
    assert sample(text, "todo_api_db_pool_size") >= 1
    assert sample(text, "todo_api_db_pool_waiting") == 0


async def test_a_metrics_token_protects_the_endpoint(database_url: str) -> None:
    settings = make_settings(database_url, metrics_enabled=True, metrics_token="scrape-me-0123456789")
    async with running_app(settings) as app, http_client(app) as client:
        assert_problem(await client.get("/metrics"), 401)
        assert_problem(await client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
        response = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-0123456789"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")


async def test_jwks_fetches_are_counted_by_outcome(database_url: str) -> None:
    settings = make_settings(
        database_url, metrics_enabled=True, better_auth_url="http://127.0.0.1:1", jwks_timeout_seconds=1
    )
    token = jwt.encode(
        {"sub": "alice", "exp": 4102444800},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )
    async with running_app(settings) as app, http_client(app) as client:
        response = await client.get("/api/alice/tasks", headers={"Authorization": f"Bearer {token}"})
        assert_problem(response, 503)  # no key could be had at all
        text = (await client.get("/metrics")).text
    assert sample(text, "todo_api_jwks_fetches_total", outcome="failure") == 1
    assert sample(text, "todo_api_jwks_fetches_total", outcome="success") == 0
