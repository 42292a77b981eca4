"""The database: URLs, the connection pool, and the connections requests borrow from it.

Statements are written once, as SQLAlchemy Core (`Query`, built by the stores), and
run two ways:

- PostgreSQL, the production database, through an asyncpg pool directly: each
  statement is compiled to SQL once per process and sent with its arguments.
  SQLAlchemy's async execution layer cost about four times the driver's own CPU
  per statement (`python -m bench.db_layer`), more than the rest of a request;
  asyncpg itself is the fastest PostgreSQL driver we measured.
- SQLite, the embedded default, through SQLAlchemy's engine: the statement as is,
  with SQLAlchemy's type handling (SQLite has no native timestamps or booleans).

A statement on its own runs in autocommit, on a connection borrowed just for it; several
that belong together run on one connection, in a transaction (`atomic`) or not (`using`).
Three rules keep any request from stalling a worker, and are enforced here rather than
remembered by every caller:

- A task never waits for a second pooled connection while it holds one: with 20 writers
  on one task each holding a connection (on SQLite, the write lock) while asking for a
  second, the pool ran dry and every request of the worker waited 5 s. Borrowing while
  holding raises `SecondConnectionError` at once, deterministically, rather than under
  contention only.
- One user cannot take the whole pool: a user's statements use at most half of it at
  once (`for_user`); the rest wait their turn, and a 429 answers one that waited longer
  than DATABASE_TIMEOUT_SECONDS.
- A deadlock or serialization failure on PostgreSQL is retried here (a few times, with
  jitter) and never reaches the client as a 500.
"""

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar

from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.sql import Delete, Insert, Select, Update
from sqlalchemy.sql.compiler import SQLCompiler

logger = logging.getLogger("backend.db")

Row = dict[str, Any]
T = TypeVar("T")
StatementListener = Callable[[str], None]
Dialect = Literal["postgresql", "sqlite"]

# Attempts at a statement or transaction that met a deadlock or serialization failure,
# and the first wait between two (doubled each time, with jitter).
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_SECONDS = 0.005


class DatabaseUnavailableError(Exception):
    """The database cannot be reached, or did not answer in time: a 503, not a 500."""


class CheckViolationError(Exception):
    """A write broke a CHECK constraint of the schema; `constraint` is its name."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


class TransientConflictError(Exception):
    """A deadlock or serialization failure: the work was rolled back and may be run again."""


class UserBusyError(Exception):
    """The user's share of the pool stayed taken for DATABASE_TIMEOUT_SECONDS: a 429."""

    def __init__(self, share: int) -> None:
        super().__init__(share)
        self.share = share


class SecondConnectionError(RuntimeError):
    """A bug: a task asked for a pooled connection while holding one. Run the statement on
    the connection it holds (`using`, `atomic`) instead."""


def raise_translated(error: Exception, translate: Callable[[BaseException], Exception | None]) -> NoReturn:
    """Raise `error` as an engine's one translation (`translate`) has it, or as it is (a bug)."""
    if (ours := translate(error)) is None:
        raise error
    raise ours from error


# The task holding a pooled connection in this context, if any: see SecondConnectionError.
HOLDER: ContextVar["asyncio.Task[Any] | None"] = ContextVar("database_connection_holder", default=None)


def claim_connection() -> Any:
    """Mark the current task as holding a connection; refuse if it already holds one."""
    task = asyncio.current_task()
    if task is not None and HOLDER.get() is task:
        raise SecondConnectionError(
            "this task already holds a pooled connection; waiting for a second one can stall the "
            "worker: run the statement on the connection it holds"
        )
    return HOLDER.set(task)


def release_claim(token: Any) -> None:
    """The current task holds no connection any more (`token`: what `claim_connection` gave)."""
    HOLDER.reset(token)


# Whose statements run in this task: set by `UserShare` around a user's work, read by an
# engine that reports committed writes (`Database.write_committed`).
WRITER: ContextVar[str | None] = ContextVar("todo_api_writer", default=None)


class Query:
    """A Core statement whose values are named `bindparam`s, compiled once per process for asyncpg."""

    _dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # `$1` placeholders, with casts

    def __init__(self, statement: Select[Any] | Insert | Update | Delete) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=self._dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self._names = tuple(compiled.positiontup or ())
        # Values fixed in the statement itself (a literal 0, say) travel as parameters too.
        binds = {name: compiled.binds[name] for name in self._names}
        self._fixed = {name: bind.value for name, bind in binds.items() if not bind.required}
        self.writes = isinstance(statement, Insert | Update | Delete)

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self._fixed[name] for name in self._names]


class Connection(ABC):
    """One pooled connection, in autocommit unless inside `transaction()`."""

    def __init__(self, listeners: list[StatementListener]) -> None:
        self._listeners = listeners

    @abstractmethod
    async def execute(self, query: Query, **params: Any) -> int:
        """Run a statement; the number of rows it changed."""

    @abstractmethod
    async def fetch_one(self, query: Query, **params: Any) -> Row | None: ...

    @abstractmethod
    async def fetch_all(self, query: Query, **params: Any) -> list[Row]: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """An async context manager: its statements commit together, or not at all."""

    def _sent(self, sql: str) -> None:
        for listener in self._listeners:
            listener(sql)


Work = Callable[[Connection], Awaitable[T]]


class Database(ABC):
    """The pool a process shares. Connections are opened lazily, on first use."""

    dialect: Dialect
    writes_in_with: bool
    """Whether a statement may write in its WITH clause (PostgreSQL: yes; SQLite: no)."""
    in_transaction = False
    """Whether every statement joins one transaction already open (see `InTransaction`)."""
    after_user_write: Callable[[str], None] | None = None
    """Told the user id when a write of that user's (through `for_user`) has committed, on
    SQLite: how the event stream learns of a commit there (one process), where PostgreSQL
    tells every process with NOTIFY (`store/notifications.py`)."""

    def __init__(self, timeout_seconds: float, pool_size: int) -> None:
        self.timeout_seconds = timeout_seconds
        self.pool_size = pool_size
        # The most connections one user's statements hold at once.
        self.user_share = max(1, pool_size // 2)
        self.statement_listeners: list[StatementListener] = []
        self.waiting = 0  # requests waiting for a connection, for the metrics
        self.conflicts_retried = 0  # deadlocks and serialization failures run again
        self._shares: dict[str, _Share] = {}

    def user_wrote(self, user_id: str) -> None:
        """A write of the user's has committed."""
        if self.after_user_write is not None:
            self.after_user_write(user_id)

    def write_committed(self) -> None:
        """An engine's word that a write has committed: whose, `WRITER` says (None when the
        statement was not a user's, as the purge's)."""
        if self.after_user_write is not None and (user_id := WRITER.get()) is not None:
            self.after_user_write(user_id)

    @abstractmethod
    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """An async context manager giving a `Connection`; connectivity failures become
        `DatabaseUnavailableError`."""

    async def execute(self, query: Query, **params: Any) -> int:
        return await self.using(lambda connection: connection.execute(query, **params))

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        return await self.using(lambda connection: connection.fetch_one(query, **params))

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        return await self.using(lambda connection: connection.fetch_all(query, **params))

    async def using(self, work: "Work[T]") -> T:
        """`work` on one connection, its statements each in autocommit (a deadlock or
        serialization failure, which rolls back the statement that met it, runs it again)."""
        try:
            return await self._once(work)
        except TransientConflictError:
            return await _retried(self, lambda: self._once(work))

    async def atomic(self, work: "Work[T]") -> T:
        """`work` on one connection, in one transaction: it commits when `work` returns, and
        is rolled back if it raises. A deadlock or serialization failure runs it again."""

        async def in_transaction(connection: Connection) -> T:
            async with connection.transaction():
                return await work(connection)

        try:
            return await self._once(in_transaction)
        except TransientConflictError:
            return await _retried(self, lambda: self._once(in_transaction))

    async def _once(self, work: "Work[T]") -> T:
        async with self.connection() as connection:
            return await work(connection)

    def for_user(self, user_id: str) -> "Database":
        """This database as one user's requests use it: at most `user_share` connections at once."""
        return UserShare(self, user_id)

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def pool_status(self) -> "PoolStatus": ...

    # --- the per-user share ---------------------------------------------------------

    async def take_share(self, user_id: str) -> None:
        share = self._shares.get(user_id)
        if share is None:
            share = self._shares[user_id] = _Share()
        if share.in_use < self.user_share and not share.waiters:
            share.in_use += 1
            return
        turn = asyncio.get_running_loop().create_future()
        share.waiters.append(turn)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await turn
        except BaseException as error:
            if turn.done() and not turn.cancelled():
                self.give_share(user_id)  # handed over just as we stopped waiting: pass it on
            else:
                turn.cancel()
            if isinstance(error, TimeoutError):
                raise UserBusyError(self.user_share) from None
            raise

    def give_share(self, user_id: str) -> None:
        share = self._shares[user_id]
        while share.waiters:
            turn = share.waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot goes to the next in line, in_use unchanged
                return
        share.in_use -= 1
        if share.in_use == 0:
            del self._shares[user_id]


class _Share:
    __slots__ = ("in_use", "waiters")

    def __init__(self) -> None:
        self.in_use = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


async def _retried(database: Database, attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt` again after a first one met a conflict (tried first without this wrapper: a
    coroutine fewer on every statement), with growing, jittered waits."""
    for attempts in range(1, CONFLICT_ATTEMPTS):
        database.conflicts_retried += 1
        wait = CONFLICT_BACKOFF_SECONDS * 2 ** (attempts - 1)
        await asyncio.sleep(wait * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not a secret
        try:
            return await attempt()
        except TransientConflictError as error:
            if attempts == CONFLICT_ATTEMPTS - 1:
                logger.warning("conflict persisted after %d attempts: %s", CONFLICT_ATTEMPTS, error)
                raise DatabaseUnavailableError(str(error)) from error
    raise AssertionError("unreachable")


class UserShare(Database):
    """A `Database` for one user's requests: each connection it borrows first takes one of
    the user's `user_share` slots (waiting in line for one if need be)."""

    def __init__(self, inner: Database, user_id: str) -> None:
        self.inner = inner
        self.user_id = user_id
        self.dialect = inner.dialect
        self.writes_in_with = inner.writes_in_with
        self.timeout_seconds = inner.timeout_seconds
        self.pool_size = inner.pool_size
        self.user_share = inner.user_share
        self.statement_listeners = inner.statement_listeners

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        await self.inner.take_share(self.user_id)
        try:
            async with self.inner.connection() as connection:
                yield connection
        finally:
            self.inner.give_share(self.user_id)

    async def using(self, work: "Work[T]") -> T:
        await self.inner.take_share(self.user_id)
        writer = WRITER.set(self.user_id)
        try:
            return await self.inner.using(work)
        finally:
            WRITER.reset(writer)
            self.inner.give_share(self.user_id)

    async def atomic(self, work: "Work[T]") -> T:
        await self.inner.take_share(self.user_id)
        writer = WRITER.set(self.user_id)
        try:
            return await self.inner.atomic(work)
        finally:
            WRITER.reset(writer)
            self.inner.give_share(self.user_id)

    def for_user(self, user_id: str) -> Database:
        return self if user_id == self.user_id else self.inner.for_user(user_id)

    async def close(self) -> None:
        return None

    def pool_status(self) -> "PoolStatus":
        return self.inner.pool_status()


class InTransaction(Database):
    """One connection inside an open transaction, as a `Database`: every statement, and
    every `using` and `atomic`, joins that transaction. What lets a request key's answer be
    stored in the same transaction as the write it answers for."""

    in_transaction = True

    def __init__(self, outer: Database, connection: Connection) -> None:
        super().__init__(outer.timeout_seconds, outer.pool_size)
        self.dialect = outer.dialect
        self.writes_in_with = outer.writes_in_with
        self._connection = connection

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        yield self._connection

    async def execute(self, query: Query, **params: Any) -> int:
        return await self._connection.execute(query, **params)

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        return await self._connection.fetch_one(query, **params)

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        return await self._connection.fetch_all(query, **params)

    async def using(self, work: "Work[T]") -> T:
        return await work(self._connection)

    async def atomic(self, work: "Work[T]") -> T:
        # The outer transaction is the unit: it commits, rolls back and retries as one.
        return await work(self._connection)

    def for_user(self, user_id: str) -> Database:
        return self

    async def close(self) -> None:
        return None

    def pool_status(self) -> "PoolStatus":
        return PoolStatus(size=1, in_use=1, waiting=0)


@dataclass(frozen=True, slots=True)
class PoolStatus:
    size: int
    in_use: int
    waiting: int
