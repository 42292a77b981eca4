"""ASGI middleware: security headers, allowed hosts, a problem+json 500 for a bug, a deadline
no request may outlive, and the body limit (CORS is `cors`', the access log `access_log`').

`app` stacks them, the access log outermost, so that every answer, the app's or one of
these layers' own, goes out through the security headers, CORS and the request id.
"""

import asyncio
import logging
from collections.abc import Iterable
from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import ServiceUnavailable, log_unexpected_error, problem_response

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


class AllowedHostsMiddleware:
    """400 problem for a `Host` not in ALLOWED_HOSTS (`*.example.com` allows its subdomains).

    The API builds no URL from Host, but a proxy that passes any Host on lets
    anyone aim the API's name at another site's, and logs and caches see the lie.
    """

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.exact = frozenset(host for host in hosts if not host.startswith("*."))
        self.suffixes = tuple(host[1:] for host in hosts if host.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allows(Headers(scope=scope).get("host", "")):
            response = problem_response(
                HTTPStatus.BAD_REQUEST, "the Host header names a host this API does not serve"
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def allows(self, host: str) -> bool:
        # Without the port: `[::1]:8000` keeps its brackets, `example.com:8000` loses `:8000`.
        name = host.lower()
        name = name[: name.find("]") + 1] if name.startswith("[") else name.partition(":")[0]
        return name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))


class BodyLimitMiddleware:
    """413 problem for a body over `max_bytes`, without reading more of it than the limit.

    A declared Content-Length is refused before anything is read (the server
    never delivers more than it declares); a chunked body is counted as it
    arrives, and the HTTPException raised from `receive` reaches our error
    handler (FastAPI re-raises HTTPExceptions met while reading a body).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is larger than {self.max_bytes} bytes"
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = problem_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail)
                await response(scope, receive, send)
                return
            if name == b"transfer-encoding":
                chunked = True
        if not chunked:
            # No body, or one the server holds to its (allowed) Content-Length.
            await self.app(scope, receive, send)
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


class UnexpectedErrorMiddleware:
    """A problem+json 500 when the app raised (a bug), logged with its traceback.

    Answered here rather than by Starlette's outermost error layer, so that it too
    goes out through the security headers, CORS and the request id. If half a
    response is already out, the server can only drop the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            log_unexpected_error(error)
            if started:
                raise
            response = problem_response(HTTPStatus.INTERNAL_SERVER_ERROR, "an unexpected error occurred")
            await response(scope, receive, send)


class DeadlineMiddleware:
    """Answers 503 when a request is not done in `seconds`, whatever it waits on.

    Timeouts on connect, pool checkout and statements cover a database that is
    down or stalls; this covers everything else. On time, the 503 is sent from
    a task of its own, so it goes out even if cleaning up after a stalled
    connection hangs; the request is cancelled and whatever it sends later is
    dropped. Until then a request costs one timer, not an extra task (that was
    about 10% of a request's CPU under `make bench`).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = asyncio.current_task()
        assert request is not None
        started = False
        answer: asyncio.Future[None] | None = None

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answer is not None:
                return  # we already answered for it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def answer_unavailable() -> None:
            response = problem_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the request did not complete within {self.seconds:g} seconds; retry shortly",
                headers=ServiceUnavailable.headers,
            )
            await response(scope, receive, send)

        def on_deadline() -> None:
            nonlocal answer
            logger.warning("request deadline exceeded", extra={"deadline_seconds": self.seconds})
            # Once the response has started, a 503 can no longer be sent: just stop.
            answer = asyncio.ensure_future(_nothing() if started else answer_unavailable())
            request.cancel()

        deadline = asyncio.get_running_loop().call_later(self.seconds, on_deadline)
        scope[_DEADLINE] = deadline
        try:
            await self.app(scope, receive, guarded_send)
        except BaseException as error:
            if answer is None:
                raise
            # Our own cancellation, or whatever the request's cleanup raised instead.
            if isinstance(error, asyncio.CancelledError):
                request.uncancel()
            else:
                logger.info("a timed-out request ended with %s", type(error).__name__)
        finally:
            deadline.cancel()
        if answer is not None:
            await answer


async def _nothing() -> None:
    return None


_DEADLINE = "todo_api.deadline"


def lift_deadline(scope: Scope) -> None:
    """No deadline for this request from now on: an event stream, which has limits of its
    own (its token's expiry, the per-user cap), once it has been admitted."""
    deadline = scope.get(_DEADLINE)
    if isinstance(deadline, asyncio.TimerHandle):
        deadline.cancel()
