"""Open-loop load: requests sent at a constant rate whatever the answers, each one's latency
timed from the moment it was due, not from when a connection was free to send it.

wrk is closed-loop: each connection waits for its answer before sending again, so a server
that stalls is simply sent less, and the stall hides from the percentiles (coordinated
omission). Here a request that cannot be sent on time waits in a queue, and the wait counts.
`run_open_loop` is what `make bench` calls; it sends prepared raw HTTP/1.1 requests round
robin over up to `connections` keep-alive connections, parses answers with httptools (the
parser uvicorn uses), and returns the latency percentiles and the failures.
"""

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

import httptools


@dataclass
class OpenLoopResult:
    rate: float  # requests per second offered
    sent: int
    completed: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    non_2xx: int
    errors: int  # connections lost, answers not complete by the end


class _Connection(asyncio.Protocol):
    def __init__(self, pool: "_Load") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due = 0.0
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are their own classes
        self.ready.set_result(None)

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.pool.failed(self)

    def on_message_complete(self) -> None:
        self.pool.answered(self, self.parser.get_status_code())
        self.parser = httptools.HttpResponseParser(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.failed(self)


class _Load:
    def __init__(self, host: str, port: int, requests: list[bytes], connections: int) -> None:
        self.host, self.port = host, port
        self.requests = requests
        self.limit = connections
        self.idle: deque[_Connection] = deque()
        self.busy: set[_Connection] = set()
        self.opening = 0
        self.waiting: deque[tuple[bytes, float]] = deque()
        self.latencies: list[float] = []
        self.non_2xx = 0
        self.errors = 0
        self.expected = 0  # set once every request is sent
        self.done = asyncio.Event()

    def _settled(self) -> None:
        if self.expected and len(self.latencies) + self.errors >= self.expected:
            self.done.set()

    def submit(self, request: bytes, due: float) -> None:
        if self.idle:
            connection = self.idle.popleft()
            self.busy.add(connection)
            connection.send(request, due)
            return
        self.waiting.append((request, due))
        if len(self.busy) + self.opening < self.limit:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.errors += 1
            return
        finally:
            self.opening -= 1
        self._next(connection)

    def _next(self, connection: _Connection) -> None:
        if self.waiting:
            request, due = self.waiting.popleft()
            self.busy.add(connection)
            connection.send(request, due)
        else:
            self.busy.discard(connection)
            self.idle.append(connection)

    def answered(self, connection: _Connection, status: int) -> None:
        self.latencies.append(time.perf_counter() - connection.due)
        if not 200 <= status < 300:
            self.non_2xx += 1
        self._next(connection)
        self._settled()

    def failed(self, connection: _Connection) -> None:
        if connection in self.busy:
            self.errors += 1
            self.busy.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if self.waiting and len(self.busy) + self.opening < self.limit:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open())
        self._settled()

    def close(self) -> None:
        for connection in [*self.idle, *self.busy]:
            if connection.transport is not None:
                connection.transport.close()


async def run_open_loop(
    host: str, port: int, requests: list[bytes], *, rate: float, seconds: float, connections: int = 256
) -> OpenLoopResult:
    """Send `requests` (cycled) at `rate` per second for `seconds`, then wait up to ten seconds
    for the last answers; anything still unanswered counts as an error."""
    load = _Load(host, port, requests, connections)
    total = int(rate * seconds)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due_count = min(total, int((now - start) * rate) + 1)
        while sent < due_count:
            load.submit(requests[sent % len(requests)], start + sent / rate)
            sent += 1
        # Wake again for the next request due (timers are coarse: several may be due then).
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    load.expected = total
    load._settled()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(load.done.wait(), 10)
    unanswered = total - len(load.latencies) - load.errors
    load.close()
    latencies = sorted(load.latencies)

    def percentile(share: float) -> float:
        if not latencies:
            return float("nan")
        return round(latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000, 2)

    return OpenLoopResult(
        rate=rate,
        sent=sent,
        completed=len(latencies),
        p50_ms=percentile(0.50),
        p99_ms=percentile(0.99),
        p999_ms=percentile(0.999),
        non_2xx=load.non_2xx,
        errors=load.errors + unanswered,
    )
