"""A TCP proxy that holds every chunk for a fixed delay in each direction: a database as far
away as a managed one (Neon from a nearby region: about 1-3 ms each way), for `make bench`.

    python -m bench.delay_proxy --port 6543 --to 127.0.0.1:5432 --delay-ms 2

Order is kept per direction (a queue per connection and direction, one timer for its head),
and nothing is buffered beyond what is in flight. It serves until it is stopped.
"""

import argparse
import asyncio
from collections import deque
from typing import Any

import uvloop


class Delayed(asyncio.Protocol):
    """One side of a proxied connection: what it receives goes to `peer` after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.peer: Delayed | None = None
        self.transport: Any = None  # uvloop's, which is no asyncio.Transport subclass
        self.queue: deque[tuple[float, bytes]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.queue.append((self.loop.time() + self.delay, data))
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self.forward)

    def forward(self) -> None:
        self.timer = None
        if self.peer is None or self.peer.transport is None:
            # The database's side is still connecting: hold on to it.
            self.timer = self.loop.call_later(0.0005, self.forward)
            return
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            self.peer.transport.write(self.queue.popleft()[1])
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.forward)
        elif self.closing and self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # The other side closes once what was in flight has arrived.
        self.closing = True
        if not self.queue and self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve(port: int, host: str, target_port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()

    async def accepted(client: Delayed) -> None:
        _, server_side = await loop.create_connection(lambda: Delayed(delay), host, target_port)
        client.peer, server_side.peer = server_side, client

    def client_protocol() -> Delayed:
        client = Delayed(delay)
        task = loop.create_task(accepted(client))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return client

    tasks: set[asyncio.Task[None]] = set()
    server = await loop.create_server(client_protocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--to", default="127.0.0.1:5432", help="host:port of the database")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="each way (default 2)")
    args = parser.parse_args()
    host, _, target_port = args.to.rpartition(":")
    uvloop.run(serve(args.port, host, int(target_port), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
