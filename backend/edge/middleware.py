"""The edge: one pure-ASGI layer between the server and the app, for everything every answer
shares. The request id and the access line (with its metrics), the security headers and CORS
(`cors` holds the policy), the allowed hosts, the body limit, the deadline no request may
outlive, and a problem+json 500 for a bug.

One layer, not one each: every layer that rewrote the answer's head wrapped `send` and
copied the headers again, and a task read went through fifteen ASGI layers, six of them
wrapping `send` (py-spy, issue 25). Here a request without `Origin` (servers, scripts, the
bench) passes two wrappers: the outer, which adds the shared headers once, and the
deadline's, which knows whether the answer has started and drops anything sent after its
503. A browser's request also goes through Starlette's CORS, inside the outer wrapper, so
that every answer (the app's, a refusal here, the deadline's, a bug's) carries the CORS
headers, the security headers and the request id.
"""

import asyncio
import logging
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.edge.access_log import log_request, request_id_of
from backend.edge.cors import CORSMiddleware
from backend.errors import ServiceUnavailable, log_unexpected_error, problem_response

if TYPE_CHECKING:
    from backend.edge.metrics import Metrics

logger = logging.getLogger("backend.middleware")

_NOSNIFF = (b"x-content-type-options", b"nosniff")
# The API's answers are one user's data: no cache keeps them.
_NO_STORE = (b"cache-control", b"no-store")
# CORS has nothing else to tell a request without `Origin`, but a cache must know the
# answer would differ for one with it.
_VARY_ORIGIN = (b"vary", b"Origin")


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        cors_origins: list[str] | None = None,
        allowed_hosts: Iterable[str] = (),
        max_body_bytes: int = 1024 * 1024,
        deadline_seconds: float = 30.0,
        metrics: "Metrics | None" = None,
    ) -> None:
        self.app = app
        self.deadline = DeadlineMiddleware(app, deadline_seconds)
        self.hosts = AllowedHosts(allowed_hosts) if allowed_hosts else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.cors = CORSMiddleware(self.guarded, origins=cors_origins or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id, origin = request_id_of(scope)
        shared = [_NOSNIFF, (b"x-request-id", request_id.encode())]
        if scope["path"].startswith("/api/"):
            shared.append(_NO_STORE)
        if not origin:
            shared.append(_VARY_ORIGIN)
        # The status the client received: set once the server has taken the response's
        # head. 0 if none was: the server dropped the connection instead.
        status = 0

        async def send_with_edge_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *shared]
                await send(message)
                status = message["status"]
                return
            await send(message)

        try:
            if origin:
                await self.cors(scope, receive, send_with_edge_headers)
            else:
                await self.guarded(scope, receive, send_with_edge_headers)
        finally:
            seconds = time.perf_counter() - started
            route = log_request(scope, status, seconds, request_id)
            if self.metrics is not None:
                self.metrics.observe(route, scope["method"], status, seconds)

    async def guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, behind the host check and the body limit, within the deadline, and with a
        500 for a bug: all inside CORS, so that their answers carry its headers too."""
        if self.hosts is not None and not self.hosts.allows(Headers(scope=scope).get("host", "")):
            refusal = problem_response(
                HTTPStatus.BAD_REQUEST, "the Host header names a host this API does not serve"
            )
            await refusal(scope, receive, send)
            return
        receive_within_limit = self._limited(scope, receive)
        if receive_within_limit is None:
            refusal = problem_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self._too_large)
            await refusal(scope, receive, send)
            return
        try:
            await self.deadline(scope, receive_within_limit, send)
        except Exception as error:
            # A bug: logged with its traceback, answered 500 without it. If half the answer
            # is out already, the server can only drop the connection.
            log_unexpected_error(error)
            if scope.get(_STARTED):
                raise
            failure = problem_response(HTTPStatus.INTERNAL_SERVER_ERROR, "an unexpected error occurred")
            await failure(scope, receive, send)

    @property
    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes} bytes"

    def _limited(self, scope: Scope, receive: Receive) -> Receive | None:
        """`receive`, or one that counts a chunked body as it arrives; None for a declared
        Content-Length over the limit, refused before anything is read (the server never
        delivers more than it declares). The HTTPException raised from `receive` reaches
        the app's error handler (FastAPI re-raises HTTPExceptions met while reading a body)."""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return None
            if name == b"transfer-encoding":
                chunked = True
        if not chunked:
            return receive  # no body, or one the server holds to its (allowed) Content-Length
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self._too_large)
            return message

        return counting_receive


class DeadlineMiddleware:
    """Answers 503 when a request is not done in `seconds`, whatever it waits on.

    Timeouts on connect, pool checkout and statements cover a database that is
    down or stalls; this covers everything else. On time, the 503 is sent from
    a task of its own, so it goes out even if cleaning up after a stalled
    connection hangs; the request is cancelled and whatever it sends later is
    dropped. Until then a request costs one timer, not an extra task (that was
    about 10% of a request's CPU under `make bench`). Its `send` wrapper is the
    edge's second, the one that knows whether the answer has started.
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
                scope[_STARTED] = True
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


class AllowedHosts:
    """ALLOWED_HOSTS: a `Host` not in it is a 400 problem (`*.example.com` allows its subdomains).

    The API builds no URL from Host, but a proxy that passes any Host on lets anyone
    aim the API's name at another site's, and logs and caches see the lie.
    """

    def __init__(self, hosts: Iterable[str]) -> None:
        hosts = list(hosts)
        self.exact = frozenset(host for host in hosts if not host.startswith("*."))
        self.suffixes = tuple(host[1:] for host in hosts if host.startswith("*."))

    def allows(self, host: str) -> bool:
        # Without the port: `[::1]:8000` keeps its brackets, `example.com:8000` loses `:8000`.
        name = host.lower()
        name = name[: name.find("]") + 1] if name.startswith("[") else name.partition(":")[0]
        return name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))


async def _nothing() -> None:
    return None


_DEADLINE = "todo_api.deadline"
_STARTED = "todo_api.answer_started"


def lift_deadline(scope: Scope) -> None:
    """No deadline for this request from now on: an event stream, which has limits of its
    own (its token's expiry, the per-user cap), once it has been admitted."""
    deadline = scope.get(_DEADLINE)
    if isinstance(deadline, asyncio.TimerHandle):
        deadline.cancel()
