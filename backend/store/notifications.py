"""How a process learns that a user's events have committed, whichever process wrote them.

PostgreSQL: the events trigger sends the owner's id with `pg_notify` (delivered at commit,
once per owner and transaction), for people with an open stream somewhere
(`ListenerRegistry`: NOTIFY for every change cost a third of PostgreSQL's write throughput);
each process LISTENs on one connection of its own, outside the pool, and calls
`wake(user_id)`. LISTEN needs a session that stays with us, which a
transaction-mode pooler (Neon's `-pooler` host, PgBouncer) cannot give: the connection uses
DATABASE_DIRECT_URL when it is set. A lost connection is opened again (1 s, then doubling to
30 s), and since notifications sent meanwhile are lost, `wake_all()` follows every
(re)connection: each woken reader reads by number, so a wake too many costs one query.

SQLite (one process): the database calls `wake(user_id)` itself when a write of the user's
has committed (`Database.after_user_write`).
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import DateTime, String, Table, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert

from backend.models import metadata, utc_now
from backend.store.database import Connection, Database, DatabaseUnavailableError, Query
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


LISTENERS: Table = metadata.tables["event_listeners"]
PROCESSES: Table = metadata.tables["event_listener_processes"]
# A process not seen for this long is gone (killed): its people are no longer notified.
GONE_AFTER = timedelta(minutes=5)

_PROCESS = bindparam("process", type_=String)
_PERSON = bindparam("person", type_=String)
_NOW = bindparam("now", type_=DateTime(timezone=True))
_BEFORE = bindparam("before", type_=DateTime(timezone=True))
# postgresql.insert: this registry is PostgreSQL's alone (SQLite is told in-process).
_ALIVE = Query(
    insert(PROCESSES)
    .values(process_id=_PROCESS, seen_at=_NOW)
    .on_conflict_do_update(index_elements=["process_id"], set_={"seen_at": _NOW})
)
_ADD = Query(insert(LISTENERS).values(user_id=_PERSON, process_id=_PROCESS).on_conflict_do_nothing())
_REMOVE = Query(delete(LISTENERS).where(LISTENERS.c.user_id == _PERSON, LISTENERS.c.process_id == _PROCESS))
_REMOVE_ALL = Query(delete(LISTENERS).where(LISTENERS.c.process_id == _PROCESS))
_GONE = Query(delete(PROCESSES).where(PROCESSES.c.seen_at < _BEFORE))
_ORPHANS = Query(delete(LISTENERS).where(LISTENERS.c.process_id.not_in(select(PROCESSES.c.process_id))))


class ListenerRegistry:
    """Who this process holds streams of, in the database, so that the events trigger NOTIFYs
    only their changes. A write that commits while a person's first stream here registers
    may go unannounced: the registration wakes the feed once more a second later, and every
    heartbeat does anyway, so such an event is late, never lost."""

    def __init__(self, database: Database, wake: Callable[[str], None]) -> None:
        self.database = database
        self.wake = wake
        self.process_id = uuid.uuid4().hex
        self.registered_any = False  # nothing to clear at shutdown until then
        self._lock = asyncio.Lock()  # one change at a time, in the order they were asked

    async def add(self, user_id: str, still_wanted: Callable[[], bool]) -> None:
        async with self._lock:
            if not still_wanted():
                return
            self.registered_any = True
            try:
                await self.database.atomic(lambda connection: self._add(connection, user_id))
            except DatabaseUnavailableError as error:
                logger.warning("cannot register an event stream (%s); it is woken by its heartbeat", error)
                return
        self.wake(user_id)
        await asyncio.sleep(1)  # a write whose trigger ran just before the registration committed
        self.wake(user_id)

    async def _add(self, connection: Connection, user_id: str) -> None:
        await connection.execute(_ALIVE, process=self.process_id, now=utc_now())
        await connection.execute(_ADD, person=user_id, process=self.process_id)

    async def remove(self, user_id: str, still_unwanted: Callable[[], bool]) -> None:
        async with self._lock:
            if still_unwanted():
                with contextlib.suppress(DatabaseUnavailableError):  # forgotten when this process is
                    await self.database.execute(_REMOVE, person=user_id, process=self.process_id)

    async def alive(self) -> None:
        """This process is still here (every heartbeat)."""
        with contextlib.suppress(DatabaseUnavailableError):
            await self.database.execute(_ALIVE, process=self.process_id, now=utc_now())

    async def clear(self) -> None:
        """Nobody is listened for here any more (shutdown)."""
        if not self.registered_any:
            return
        with contextlib.suppress(DatabaseUnavailableError):
            await self.database.execute(_REMOVE_ALL, process=self.process_id)


async def forget_gone_listeners(db: Database, now: datetime) -> int:
    """Processes not seen for GONE_AFTER, and their people, forgotten (housekeeping); how many
    registrations went."""
    await db.execute(_GONE, before=now - GONE_AFTER)
    return await db.execute(_ORPHANS)
