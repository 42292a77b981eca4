"""How a process learns that a user's events have committed, whichever process wrote them.

PostgreSQL: the events trigger sends the owner's id with `pg_notify` (delivered at commit,
once per owner and transaction); each process LISTENs on one connection of its own, outside
the pool, and calls `wake(user_id)`. LISTEN needs a session that stays with us, which a
transaction-mode pooler (Neon's `-pooler` host, PgBouncer) cannot give: the connection uses
DATABASE_DIRECT_URL when it is set. A lost connection is opened again (1 s, then doubling to
30 s), and since notifications sent meanwhile are lost, `wake_all()` follows every
(re)connection: each woken reader reads by number, so a wake too many costs one query.

SQLite (one process): the database calls `wake(user_id)` itself after each of a user's
statements or transactions (`Database.after_user_work`).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from backend.store.events import CHANNEL

logger = logging.getLogger("backend.notifications")

FIRST_RETRY_SECONDS = 1.0
LAST_RETRY_SECONDS = 30.0
# How often the connection is checked: a connection the server closes is noticed at once,
# one cut without a word (a NAT's timeout, a stalled server) within this and the timeout.
CHECK_SECONDS = 15.0


class PostgresListener:
    """One LISTEN connection for the process, opened by `start()`, closed by `aclose()`."""

    def __init__(
        self, dsn: str, *, wake: Callable[[str], None], wake_all: Callable[[], None], timeout_seconds: float
    ) -> None:
        self.dsn = dsn
        self.wake = wake
        self.wake_all = wake_all
        self.timeout_seconds = timeout_seconds
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="todo-api event listener")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        self.wake(str(payload))

    async def _listen(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while True:
            try:
                connection = await asyncpg.connect(
                    self.dsn,
                    timeout=self.timeout_seconds,
                    server_settings={"application_name": "todo-api events"},
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as error:
                logger.warning(
                    "cannot listen for events; retrying in %g s", retry, extra={"error": type(error).__name__}
                )
                await asyncio.sleep(retry)
                retry = min(retry * 2, LAST_RETRY_SECONDS)
                continue
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
            try:
                await connection.add_listener(CHANNEL, self._notified)
                retry = FIRST_RETRY_SECONDS
                self.connected.set()
                self.wake_all()  # whatever committed while no one listened
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), CHECK_SECONDS)
                    if lost.is_set():
                        raise ConnectionResetError("closed by the server")
                    await connection.fetchval("SELECT 1", timeout=self.timeout_seconds)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                cause = type(error).__name__
                logger.warning("the event listener lost its connection", extra={"error": cause})
            finally:
                self.connected.clear()
                connection.terminate()  # no goodbye to a connection that may be stalled
