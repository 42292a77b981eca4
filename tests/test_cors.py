"""Browsers may call the API only from CORS_ORIGINS."""

import pytest
from httpx import AsyncClient

pytestmark = pytest.mark.anyio

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


async def test_preflight_from_an_allowed_origin_is_accepted(client: AsyncClient) -> None:
    response = await client.options(
        "/api/alice/tasks", headers={"Origin": "http://localhost:3000", **PREFLIGHT}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_preflight_from_another_origin_is_refused(client: AsyncClient) -> None:
    response = await client.options(
        "/api/alice/tasks", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_responses_expose_the_paging_headers(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-total-count", "link", "location", "x-request-id"} <= exposed
