"""Hostile and malformed requests get a 4xx problem, never a 500, and change nothing."""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import AsyncClient

from tests.conftest import Caller, assert_problem, http_client, make_settings, running_app

pytestmark = pytest.mark.anyio

LIMIT = 64 * 1024


async def stored_titles(caller: Caller) -> list[str]:
    return [task["title"] for task in (await caller.request("GET")).json()]


async def test_a_body_over_the_limit_is_413_before_it_is_read(alice: Caller) -> None:
    body = json.dumps({"title": "x", "description": "d" * LIMIT}).encode()
    response = await alice.request("POST", content=body, headers={"Content-Type": "application/json"})
    assert_problem(response, 413)
    assert await stored_titles(alice) == []


async def test_a_chunked_body_over_the_limit_is_413(alice: Caller) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 64 x 8 KiB = 512 KiB, with no Content-Length
            sent += 1
            yield b" " * 8192

    response = await alice.request("POST", content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(response, 413)
    assert sent < 64, "the whole body was read before refusing it"


async def test_the_limit_is_configurable(database_url: str, alice: Caller) -> None:
    async with (
        running_app(make_settings(database_url, max_body_bytes=2048)) as app,
        http_client(app) as client,
    ):
        alice.client = client
        ok = await alice.request("POST", json={"title": "x", "description": "d" * 1000})
        assert ok.status_code == 201
        too_big = await alice.request(
            "POST", content=b"{" + b" " * 3000 + b"}", headers={"Content-Type": "application/json"}
        )
        assert_problem(too_big, 413)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "application/json"),  # deep nesting
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "application/json"),
        (json.dumps({f"k{i}": i for i in range(5000)}).encode(), "application/json"),  # many unknown keys
        (b'{"title": "\xff\xfe bad utf-8"}', "application/json"),
        (b'{"title": "ok"}', "text/plain"),
        (b"title=ok", "application/x-www-form-urlencoded"),
        (b'{"title": "ok"}', "application/xml"),
        (b"\x00\x01\x02", "application/octet-stream"),
        (b'{"title": "\\u0000"}', "application/json"),
        (b'{"title": "\\ud800"}', "application/json"),  # a lone surrogate
    ],
)
async def test_malformed_bodies_are_a_4xx_problem(alice: Caller, content: bytes, content_type: str) -> None:
    response = await alice.request("POST", content=content, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)
    assert await stored_titles(alice) == []


async def test_api_responses_are_not_cached_or_sniffed(alice: Caller, alice_task: dict[str, Any]) -> None:
    for response in (await alice.request("GET"), await alice.request("GET", f"/{alice_task['id']}")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
    unauthenticated = await alice.client.get(alice.url())
    assert unauthenticated.headers["cache-control"] == "no-store"
    health = await alice.client.get("/health")
    assert health.headers["x-content-type-options"] == "nosniff"


async def test_docs_can_be_turned_off(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, docs_enabled=False)) as app,
        http_client(app) as client,
    ):
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert_problem(await client.get(path), 404)
        assert (await client.get("/health")).status_code == 200


async def test_docs_are_on_by_default(client: AsyncClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await client.get(path)).status_code == 200


async def test_a_huge_token_is_refused_quickly(client: AsyncClient) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9." + "A" * 100_000 + ".sig"
    started = time.perf_counter()
    response = await client.get("/api/alice/tasks", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "raw", [b"Bearer \xff\xfe\xfd", b"Bearer a\x00b.c.d", "Bearer ü.ö.ä".encode("latin-1")]
)
async def test_non_ascii_and_nul_in_the_authorization_header_are_401(client: AsyncClient, raw: bytes) -> None:
    response = await client.get("/api/alice/tasks", headers=[(b"authorization", raw)])
    assert_problem(response, 401)
