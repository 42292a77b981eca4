"""Swagger UI at /docs and ReDoc at /redoc, served by the app itself.

FastAPI's own pages load their scripts from a CDN, with no integrity check:
blank without internet access, and trusting a third party with a page that
holds a user's token. Here the scripts come from the `fastapi-offline` package
(Swagger UI 5 and ReDoc 2, pinned in uv.lock), and the pages carry a content
security policy that lets them load nothing from anywhere else.
"""

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from backend.errors import NotFound

# The package's static files: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png.
_VENDORED = Path(str(files("fastapi_offline") / "static"))
_OURS = Path(__file__).with_name("docs_assets")
_ASSETS = {
    "swagger-ui-bundle.js": _VENDORED / "swagger-ui-bundle.js",
    "swagger-ui.css": _VENDORED / "swagger-ui.css",
    "redoc.standalone.js": _VENDORED / "redoc.standalone.js",
    "favicon.png": _VENDORED / "favicon.png",
    "swagger-init.js": _OURS / "swagger-init.js",
}
ASSETS_PATH = "/docs/assets"

# Scripts and styles from this origin only (the UIs inject <style> elements, and ReDoc
# runs its search in a worker made from a blob: URL); requests to this API only.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
_PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer"}


def _swagger_ui(title: str, root: str, openapi_url: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{root}{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" href="{root}{ASSETS_PATH}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi="{root}{openapi_url}"></div>
<script src="{root}{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="{root}{ASSETS_PATH}/swagger-init.js"></script>
</body>
</html>
"""


def _redoc(title: str, root: str, openapi_url: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" href="{root}{ASSETS_PATH}/favicon.png">
</head>
<body>
<noscript>ReDoc needs JavaScript; the schema itself is at {root}{openapi_url}.</noscript>
<redoc spec-url="{root}{openapi_url}"></redoc>
<script src="{root}{ASSETS_PATH}/redoc.standalone.js"></script>
</body>
</html>
"""


def docs_routes(app: FastAPI, openapi_url: str) -> list[Route]:
    """The routes of both pages and of their assets (GET and HEAD; not in the schema)."""
    title = app.title

    async def swagger_ui(request: Request) -> Response:
        html = _swagger_ui(title, request.scope.get("root_path", ""), openapi_url)
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    async def redoc(request: Request) -> Response:
        html = _redoc(title, request.scope.get("root_path", ""), openapi_url)
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        path = _ASSETS.get(request.path_params["name"])
        if path is None:
            raise NotFound("no such file among the docs' assets")
        # The files change only with the package's version: a day in the browser's cache.
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    return [
        Route("/docs", swagger_ui, methods=["GET"], include_in_schema=False),
        Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
        Route(f"{ASSETS_PATH}/{{name}}", asset, methods=["GET"], include_in_schema=False),
    ]
