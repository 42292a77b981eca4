"""The HTTP server: uvicorn with httptools, plus the limits at the edge that uvicorn lacks.

uvicorn's httptools protocol puts no bound on a request's head: a 16 MB header
was answered, a 200 MB one streamed in over a minute grew the worker by 250 MB,
and httptools joins a header's pieces as they arrive, so a 48 MB header sent in
64 KiB pieces cost 4 s of CPU. Nothing times out a request whose head never
ends, or a connection that never says anything, and nothing caps connections
short of the process's file limit. `EdgeProtocol` adds those three bounds to
the protocol itself, where they cost a comparison per read and a clock reading
per response:

- the request line and headers together may be `MAX_HEADER_BYTES`; past that the
  client gets `431` and the connection is closed, before httptools sees more;
- a request's head must be complete `HEADER_TIMEOUT_SECONDS` after the
  connection opened (or after the previous response), or the connection is
  closed (with `408` if part of a head had arrived), by a sweep over the
  worker's connections a few times per timeout;
- beyond `MAX_CONNECTIONS` open connections, a new one is answered `503` with
  `Retry-After` as soon as its request arrives (or closed after a second of
  silence), and the process keeps as many files again free for those, so the
  worker does not reach its file limit, where it would stop accepting at all.

WebSocket upgrades are not performed (the API has none): the request is answered
as plain HTTP, and the connection closed after it. uvicorn's own line for them,
which carried the raw path and query, is never written.

Measured against uvicorn with h11 and Granian before choosing: see "The edge" in
docs/operating.md.
"""

import asyncio
import os
import resource
from functools import cache
from http import HTTPStatus
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from backend.config import get_settings

# How long a connection beyond the cap may stay silent before it is closed.
OVER_CAPACITY_GRACE_SECONDS = 1.0


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools mid-read."""


# File descriptors kept for the listening socket, the database pool, logs and the like.
RESERVED_FILES = 256


def connection_cap(max_connections: int) -> int:
    """MAX_CONNECTIONS, or less if this process may not open enough files.

    Beyond the cap, a connection still takes a file until it is answered (a second
    at most), so as many again are kept free for those: a flood is answered 503
    rather than failing at the file limit, where the event loop stops accepting.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, (soft - RESERVED_FILES) // 2))


def allow_open_files(max_connections: int) -> int:
    """Raise this process's soft limit on open files (its workers inherit it) toward what
    MAX_CONNECTIONS needs, as far as the hard limit allows; the connection cap it gives."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )
    return connection_cap(max_connections)


@cache
def _limits() -> tuple[int, float, int]:
    settings = get_settings()
    return (
        settings.max_header_bytes,
        settings.header_timeout_seconds,
        connection_cap(settings.max_connections),
    )


def refusal(status: HTTPStatus, detail: str, *, retry_after: int | None = None) -> bytes:
    """A whole `Connection: close` response, problem+json, for a connection the app never sees.

    It carries what every response of the API carries (`nosniff`, `no-store`, a
    request id), so a client or a proxy cannot tell it came from another layer.
    """
    body = orjson.dumps({"type": "about:blank", "title": status.phrase, "status": status, "detail": detail})
    head = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "content-type: application/problem+json",
        f"content-length: {len(body)}",
        "connection: close",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
        f"x-request-id: {os.urandom(16).hex()}",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, a head timeout and a connection cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes, self.header_timeout, self.max_connections = _limits()
        # Bytes of the current request's head received so far; None once it is complete.
        self.head_bytes: int | None = 0
        # When the wait for the current head began: the connection's opening, or the
        # previous response. Checked by `_sweep`, not by a timer per request.
        self.head_since = 0.0
        self.over_capacity: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_since = self.loop.time()
        _start_sweeping(self.loop, self.connections, self.header_timeout)
        if len(self.connections) > self.max_connections:
            self.over_capacity = self.loop.call_later(OVER_CAPACITY_GRACE_SECONDS, self._refuse_over_capacity)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.over_capacity is not None:
            self.over_capacity.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but for the bound on the head, and every refusal in problem+json
        # (uvicorn answers a request it cannot parse in text/plain).
        if self.over_capacity is not None:
            self._refuse_over_capacity()
            return
        self._unset_keepalive_if_required()
        if self.head_bytes is not None:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # answered as plain HTTP: see on_headers_complete
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._refuse_large_head()
            else:
                self._refuse(HTTPStatus.BAD_REQUEST, "the request is not valid HTTP/1.1")
            return
        # Checked after parsing, since a read may carry the head's end and then a body:
        # a head still incomplete past the bound grows no further.
        if self.head_bytes is not None and self.head_bytes > self.max_header_bytes:
            self._refuse_large_head()

    def on_headers_complete(self) -> None:
        if (
            self.head_bytes is not None
            and self.head_bytes > self.max_header_bytes
            and self._head_size() > self.max_header_bytes
        ):
            raise _HeadTooLarge  # a whole large head in one read: stop the parser here
        self.head_bytes = None
        super().on_headers_complete()
        if self.parser.should_upgrade() and self.cycle is not None:
            # Not switched: answered as plain HTTP, then the connection closes, since
            # what the client sends next would be frames of a protocol we do not speak.
            self.cycle.keep_alive = False

    def _head_size(self) -> int:
        """The head's size as parsed: the target and every header line (the request line's
        other few bytes aside)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0  # whatever comes next is the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.head_since = self.loop.time()

    def head_overdue(self, now: float) -> bool:
        """Waiting for a head (not answering a request) for longer than the timeout."""
        return (
            self.head_bytes is not None
            and now - self.head_since > self.header_timeout
            and (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
            and not self.transport.is_closing()
        )

    def time_out_head(self) -> None:
        if self.head_bytes:
            self._refuse(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the request's headers did not arrive within {self.header_timeout:g} seconds",
            )
        else:
            self.transport.close()

    def _refuse_large_head(self) -> None:
        self._refuse(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"the request line and headers are larger than {self.max_header_bytes} bytes",
        )

    def _refuse_over_capacity(self) -> None:
        self._refuse(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "the server has too many open connections; retry shortly",
            retry_after=1,
        )

    def _refuse(self, status: HTTPStatus, detail: str, *, retry_after: int | None = None) -> None:
        if not self.transport.is_closing():
            self.transport.write(refusal(status, detail, retry_after=retry_after))
            self.transport.close()


# The event loops whose connections are being swept (one per worker process).
_swept: set[asyncio.AbstractEventLoop] = set()


def _start_sweeping(loop: asyncio.AbstractEventLoop, connections: set[Any], timeout: float) -> None:
    """Every so often, time out the connections whose head is overdue.

    One sweep over the worker's connections, a few times per timeout, rather than a
    timer armed and cancelled for every request (about 1% of a request's CPU each).
    """
    if loop in _swept:
        return
    _swept.add(loop)
    period = min(0.5, timeout / 4)

    def sweep() -> None:
        now = loop.time()
        for connection in list(connections):
            if isinstance(connection, EdgeProtocol) and connection.head_overdue(now):
                connection.time_out_head()
        loop.call_later(period, sweep)

    loop.call_later(period, sweep)
