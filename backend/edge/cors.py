"""CORS: which browser origins may call the API (CORS_ORIGINS), with which methods and headers,
and which response headers their scripts may read."""

from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.middleware import cors
from starlette.responses import Response
from starlette.types import ASGIApp

from backend.errors import problem_response

ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-Request-ID",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
    # A browser MCP client's.
    "Mcp-Session-Id",
    "Mcp-Protocol-Version",
    "Last-Event-ID",
]
EXPOSED_HEADERS = [
    "Location",
    "Link",
    "X-Total-Count",
    "X-Next-Cursor",
    "X-Request-ID",
    "WWW-Authenticate",
    "Retry-After",
    "ETag",
    "Idempotent-Replayed",
    "Mcp-Session-Id",
]


class CORSMiddleware(cors.CORSMiddleware):
    """Starlette's CORS for `origins` (none: same-origin only), with our methods and headers; a
    refused preflight is a problem+json naming what was refused. `EdgeMiddleware` sends only
    requests with an `Origin` through it: for the others it adds `Vary: Origin` itself, where
    Starlette searched and rewrote the headers (3% of a task read's CPU instructions,
    callgrind)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        """Starlette's answer, but a refusal is a problem+json naming what was refused."""
        response = super().preflight_response(request_headers)
        if response.status_code == HTTPStatus.OK:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        kept = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        return problem_response(
            HTTPStatus.BAD_REQUEST,
            f"CORS preflight refused: this {refused} is not allowed (CORS_ORIGINS names the allowed origins)",
            headers=kept,
        )
