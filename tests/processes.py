"""Real server processes: `todo-api migrate`, `todo-api token` and `todo-api serve`, as a user runs them."""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from backend.auth.tokens import issue_token
from tests.conftest import SECRET, fresh_database, slow_callbacks

# The entry point installed beside this interpreter, as `make` installs it.
TODO_API = str(Path(sys.executable).parent / "todo-api")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_env(database_url: str, **settings: str) -> dict[str, str]:
    """The server's environment; as in `make_settings`, without the per-user rate limit
    unless a test sets RATE_LIMIT_PER_SECOND: load tests send a user's requests back to back."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("BETTER_AUTH_", "JWT_", "JWKS_"))}
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "RATE_LIMIT_PER_SECOND": "0",
        "CHAT_REQUESTS_PER_MINUTE": "0",
        # asyncio's debug mode: every callback holding the loop over 0.1 s is logged, and one
        # over SLOW_CALLBACK_SECONDS fails the test (`running_server`).
        "PYTHONASYNCIODEBUG": "1",
        **settings,
    }


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [TODO_API, *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    process: "subprocess.Popen[str]"
    log_path: Path

    def token(self, user_id: str, *extra: str) -> str:
        return cli(self.env, "token", "--user-id", user_id, *extra)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def stop(self, timeout: float = 15) -> bool:
        """SIGTERM, then wait; True if the server shut down cleanly.

        uvicorn re-raises the signal once its graceful shutdown is done, so a
        clean exit is status -SIGTERM (or 0) after "Application shutdown complete".
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shut_down = any(line.get("message") == "Application shutdown complete." for line in self.log_lines())
        return shut_down and self.process.returncode in (0, -signal.SIGTERM)


@contextmanager
def running_server(env: dict[str, str], log_path: Path, *args: str) -> Iterator[Server]:
    """`todo-api serve` on a free port, ready to answer; stopped with SIGTERM afterwards."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [TODO_API, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=log_path.parent,
        )
    server = Server(f"http://127.0.0.1:{port}", env, process, log_path)
    try:
        wait_until_ready(server)
        yield server
    finally:
        server.stop()
    slow = slow_callbacks([line["message"] for line in server.log_lines() if line.get("logger") == "asyncio"])
    assert not slow, f"a callback held the server's event loop: {slow}"


@contextmanager
def fresh_server(backend: str, directory: Path, **settings: str) -> Iterator[Server]:
    """`todo-api serve` on a database of its own, migrated with `todo-api migrate`."""
    with fresh_database(backend, directory) as database_url:
        env = server_env(database_url, **settings)
        cli(env, "migrate")
        with running_server(env, directory / "server.log") as server:
            yield server


def bearer(user: str, lifetime: timedelta = timedelta(minutes=15)) -> dict[str, str]:
    """The Authorization header of a token for `user` (HS256, the tests' SECRET)."""
    return {"Authorization": f"Bearer {issue_token(SECRET, user, lifetime=lifetime)}"}


T = TypeVar("T")


async def blocking(function: Callable[..., T], *args: Any) -> T:
    """A blocking call from an async test, in a thread: the test's event loop runs in debug
    mode, watched for callbacks that hold it (conftest's `no_slow_callbacks`)."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args))


@asynccontextmanager
async def serving(env: dict[str, str], log_path: Path, *args: str) -> AsyncIterator[Server]:
    """`running_server` for async tests: started and stopped in a thread."""
    manager = running_server(env, log_path, *args)
    server = await blocking(manager.__enter__)
    try:
        yield server
    finally:
        await blocking(manager.__exit__, None, None, None)


@asynccontextmanager
async def fresh(backend: str, directory: Path) -> AsyncIterator[str]:
    """conftest's `fresh_database` for async tests: created and dropped in a thread."""
    manager = fresh_database(backend, directory)
    url = await blocking(manager.__enter__)
    try:
        yield url
    finally:
        await blocking(manager.__exit__, None, None, None)


def wait_until_ready(server: Server, timeout: float = 30) -> None:
    wait_until_answering(server.process, f"{server.base_url}/ready", server.log_path, timeout)


def wait_until_answering(
    process: "subprocess.Popen[str]", url: str, log_path: Path, timeout: float = 30
) -> None:
    """Until `url` answers 200; a failure with the process's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not become ready:\n{log_path.read_text()}")
