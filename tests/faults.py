"""A fault-injecting TCP proxy for the tests: sits between the server and PostgreSQL on loopback.

It runs in a process of its own, so tests of any kind can cut, stall or slow the database
connection while the real server process keeps running. (In a thread of the test's process,
its forwarding took the test's interpreter lock often enough that a callback of the test's
own loop once measured 0.53 s and tripped the slow-callback guard.)
"""

import asyncio
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, Literal

Mode = Literal["pass", "cut", "stall", "slow"]
_TIMEOUT_SECONDS = 5


class FaultProxy:
    """Forwards 127.0.0.1:<port> to the target, unless told to misbehave.

    - `cut()`: closes every open connection and refuses new ones (reset at once).
    - `stall()`: keeps connections open but forwards nothing, as a hung network does.
    - `slow(seconds)`: delays every chunk by `seconds`.
    - `restore()`: back to forwarding.

    Each call returns once the proxy process has done it.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        # Forked, not spawned: a spawned interpreter takes its imports' time (0.5 s here) to
        # start, and a test that opens the proxy inside its own loop would hold that loop
        # meanwhile. The child runs nothing but its own asyncio loop, sockets and the pipe.
        context = multiprocessing.get_context("fork")
        self._commands, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, self.target), name="fault-proxy", daemon=True
        )

    def start(self) -> None:
        self._process.start()
        if not self._commands.poll(_TIMEOUT_SECONDS):
            raise RuntimeError("the fault proxy did not start")
        self.port = self._commands.recv()

    def close(self) -> None:
        try:
            self._call("close")
        finally:
            self._process.join(timeout=_TIMEOUT_SECONDS)
            if self._process.is_alive():
                self._process.kill()

    def cut(self) -> None:
        self._call("cut")

    def stall(self) -> None:
        self._call("stall")

    def slow(self, seconds: float) -> None:
        self._call("slow", seconds)

    def restore(self) -> None:
        self._call("pass")

    def _call(self, *command: Any) -> None:
        self._commands.send(command)
        if not self._commands.poll(_TIMEOUT_SECONDS):
            raise RuntimeError(f"the fault proxy did not answer {command[0]!r}")
        self._commands.recv()


def _serve(commands: Connection, target: tuple[str, int]) -> None:
    """The proxy process: forwards until told to close."""
    asyncio.run(_Proxy(target).serve(commands))


class _Proxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode: Mode = "pass"
        self.delay = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._resume = asyncio.Event()

    async def serve(self, commands: Connection) -> None:
        self._resume.set()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        commands.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[Any] = asyncio.Queue()
        loop.add_reader(commands.fileno(), lambda: received.put_nowait(commands.recv()))
        while True:
            name, *arguments = await received.get()
            if name == "close":
                self._close_all()
                server.close()
                commands.send("done")
                os._exit(0)  # at once: the connections' tasks need no orderly end
            if name == "slow":
                self.delay = arguments[0]
            self.mode = name
            if name == "stall":
                self._resume.clear()
            else:
                self._resume.set()
            if name == "cut":
                self._close_all()
            commands.send("done")

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
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
        # The end of one direction is passed on, as a real network does: PostgreSQL closes
        # after a client's Terminate, and asyncpg's close() waits to see that end.
        if self.mode != "cut" and writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()


@contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
