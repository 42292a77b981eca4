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


async def test_an_allowed_origin_is_echoed_on_a_simple_request(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert response.headers["vary"] == "Origin"


async def test_another_origin_gets_no_allow_origin_on_a_simple_request(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"


@pytest.mark.parametrize("path", ["/health", "/api/alice/tasks"])
async def test_a_call_without_an_origin_gets_no_cors_headers_but_varies_on_origin(
    client: AsyncClient, path: str
) -> None:
    response = await client.get(path)  # a server or a script: no Origin header
    assert response.headers.get_list("vary") == ["Origin"]
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
