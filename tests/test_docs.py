"""Swagger UI and ReDoc work offline: served by the app, from files of a pinned package,
under a content security policy that allows no other host."""

import re

import pytest
from httpx import AsyncClient

from tests.conftest import assert_problem, http_client, make_settings, running_app

pytestmark = pytest.mark.anyio

REFERENCE = re.compile(r"""(?:src|href|spec-url|data-openapi)="([^"]*)\"""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_refer_to_no_other_host(client: AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html
    assert "https://" not in html
    assert "<script>" not in html  # no inline script: the policy forbids them
    references = REFERENCE.findall(html)
    assert references
    for reference in references:
        assert reference.startswith("/"), reference
        assert not reference.startswith("//"), reference
        asset = await client.get(reference)
        assert asset.status_code == 200, reference
        assert asset.content
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert "connect-src 'self';" in policy


async def test_the_assets_are_the_real_bundles(client: AsyncClient) -> None:
    swagger = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in swagger.text
    assert swagger.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    redoc = await client.get("/docs/assets/redoc.standalone.js")
    assert len(redoc.content) > 500_000
    assert_problem(await client.get("/docs/assets/../../etc/passwd"), 404)
    assert_problem(await client.get("/docs/assets/nothing.js"), 404)


async def test_the_docs_follow_a_root_path(database_url: str) -> None:
    async with running_app(make_settings(database_url)) as app, http_client(app) as client:
        assert 'data-openapi="/openapi.json"' in (await client.get("/docs")).text
        app.root_path = "/todo"  # served behind a proxy at /todo
        html = (await client.get("/docs")).text
        assert 'data-openapi="/todo/openapi.json"' in html
        assert 'src="/todo/docs/assets/swagger-ui-bundle.js"' in html


async def test_turned_off_they_and_their_assets_are_gone(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, docs_enabled=False)) as app,
        http_client(app) as client,
    ):
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
            assert_problem(await client.get(path), 404)
