"""CORS: which browser origins may call the API (CORS_ORIGINS), with which methods and headers,
and which response headers their scripts may read."""

from http import HTTPStatus

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware import cors
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

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


def configure_cors(app: FastAPI, origins: list[str]) -> None:
    """Answer preflights and add the CORS headers for `origins` (none: same-origin only)."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
    )


class CORSMiddleware(cors.CORSMiddleware):
    """Starlette's CORS, with a short way through for requests that carry no `Origin`
    (servers, scripts, curl): CORS has nothing to tell them but `Vary: Origin`,
    which Starlette adds by searching and rewriting the headers, 3% of a task
    read's CPU instructions (callgrind)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"vary", b"Origin")]
            await send(message)

        await self.app(scope, receive, send_with_vary)

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
