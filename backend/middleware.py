"""ASGI middleware: security headers, and a deadline no request may outlive."""

import asyncio
import contextlib
import logging
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import ServiceUnavailable, problem_response

logger = logging.getLogger("backend.middleware")


class SecurityHeadersMiddleware:
    """`nosniff` everywhere; `no-store` on the API, whose answers are one user's data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
                if private:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """413 problem for a body over `max_bytes`, without reading more of it than the limit.

    A declared Content-Length is refused before anything is read; a chunked body
    is counted as it arrives, and the HTTPException raised from `receive` reaches
    our error handler (FastAPI re-raises HTTPExceptions met while reading a body).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is larger than {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = problem_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail)
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail)
            return message

        await self.app(scope, counting_receive, send)


class DeadlineMiddleware:
    """Answers 503 when a request is not done in `seconds`, whatever it waits on.

    Timeouts on connect and pool checkout cover a database that is down; this
    covers one that stalls mid-query. The request runs as its own task, so the
    503 goes out on time even if cleaning up after a stalled connection hangs.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        timed_out = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # we already answered for it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.seconds)
        if done:
            task.result()  # re-raise what the app raised
            return
        timed_out = True
        task.cancel()
        task.add_done_callback(_log_late_failure)
        logger.warning("request deadline exceeded", extra={"deadline_seconds": self.seconds})
        if not started:
            response = problem_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the request did not complete within {self.seconds:g} seconds; retry shortly",
                headers=ServiceUnavailable.headers,
            )
            await response(scope, receive, send)


def _log_late_failure(task: "asyncio.Future[None]") -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if (error := task.exception()) is not None:
            logger.info("a timed-out request ended with %s", type(error).__name__)
