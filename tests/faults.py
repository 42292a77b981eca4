"""A fault-injecting TCP proxy for the tests: sits between the server and PostgreSQL on loopback.

It runs its own asyncio loop in a thread, so tests of any kind can cut, stall or
slow the database connection while the real server process keeps running.
"""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Mode = Literal["pass", "cut", "stall", "slow"]


class FaultProxy:
    """Forwards 127.0.0.1:<port> to the target, unless told to misbehave.

    - `cut()`: closes every open connection and refuses new ones (reset at once).
    - `stall()`: keeps connections open but forwards nothing, as a hung network does.
    - `slow(seconds)`: delays every chunk by `seconds`.
    - `restore()`: back to forwarding.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.port = 0
        self.connections_seen = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._resume = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=5)

    def close(self) -> None:
        self._call(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def cut(self) -> None:
        self._set("cut")
        self._call(self._close_all)

    def stall(self) -> None:
        self._set("stall")

    def slow(self, seconds: float) -> None:
        self.delay = seconds
        self._set("slow")

    def restore(self) -> None:
        self._set("pass")

    def _set(self, mode: Mode) -> None:
        def apply() -> None:
            self.mode = mode
            if mode == "stall":
                self._resume.clear()
            else:
                self._resume.set()

        self._call(apply)

    def _call(self, function: "object") -> None:
        async def run() -> None:
            function()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=5)

    async def _listen(self) -> None:
        self._resume.set()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        if self.mode == "cut":
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(
            self._pipe(client_reader, server_writer),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._resume.wait()  # a stall holds the data here
            if self.mode == "cut":
                return
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            writer.write(data)
            await writer.drain()


@contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
