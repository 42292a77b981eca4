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
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Delete, Insert, Select, Update
from sqlalchemy.sql.compiler import SQLCompiler

logger = logging.getLogger("backend.db")

Row = dict[str, Any]
T = TypeVar("T")
StatementListener = Callable[[str], None]
Dialect = Literal["postgresql", "sqlite"]

# Every spelling a user may paste, mapped to the driver we ship.
_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

# libpq parameters asyncpg does not know. It would send them to the server as
# settings, which refuses them: `channel_binding` (Neon's URLs carry it; asyncpg
# authenticates with SCRAM-SHA-256 over TLS without channel binding) and
# `connect_timeout` (DATABASE_TIMEOUT_SECONDS bounds connecting instead).
_LIBPQ_ONLY = ("channel_binding", "connect_timeout")

# Attempts at a statement or transaction that met a deadlock or serialization failure,
# and the first wait between two (doubled each time, with jitter).
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_SECONDS = 0.005


def database_url(raw: str) -> URL:
    """Normalise a pasted DATABASE_URL (Neon, Heroku, plain SQLite) for the driver we ship."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError("is not a database URL (expected postgresql://… or sqlite:///…)") from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"scheme {url.drivername!r} is not supported; use postgresql:// or sqlite:///")
    if driver.startswith("postgresql"):
        url = url.difference_update_query(_LIBPQ_ONLY)
    return url.set(drivername=driver)


def asyncpg_dsn(url: URL) -> str:
    """The URL as asyncpg reads it: a libpq URI (it understands `sslmode` and friends)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


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


# Failures of the connection, not of the statement: the client may retry.
_POSTGRES_UNAVAILABLE = (
    OSError,  # refused, reset, unreachable, DNS
    TimeoutError,  # connecting, waiting for a pooled connection, or a statement
    asyncpg.InterfaceError,  # the connection closed under us
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections
)
_POSTGRES_TRANSIENT = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
_SQLITE_UNAVAILABLE = (OperationalError, SQLAlchemyInterfaceError, PoolTimeoutError)


def _from_postgres(error: BaseException) -> Exception | None:
    """The one translation of PostgreSQL's errors into ours, for every statement; None to let
    the error go up as it is (a bug)."""
    if isinstance(error, asyncpg.CheckViolationError):
        return CheckViolationError(error.constraint_name or "")
    if isinstance(error, _POSTGRES_TRANSIENT):
        return TransientConflictError(type(error).__name__)
    if isinstance(error, _POSTGRES_UNAVAILABLE):
        return DatabaseUnavailableError(type(error).__name__)
    return None


def _from_sqlite(error: BaseException) -> Exception | None:
    """The one translation of SQLite's errors into ours, for every statement."""
    if isinstance(error, IntegrityError):
        # "CHECK constraint failed: ck_tasks_recurrence_has_due_at"
        message = str(error.orig)
        if message.startswith("CHECK constraint failed: "):
            return CheckViolationError(message.removeprefix("CHECK constraint failed: "))
        return None
    if isinstance(error, _SQLITE_UNAVAILABLE):
        return DatabaseUnavailableError(type(error).__name__)
    return None


# The task holding a pooled connection in this context, if any: see SecondConnectionError.
_HOLDER: ContextVar["asyncio.Task[Any] | None"] = ContextVar("database_connection_holder", default=None)


def _claim() -> Any:
    """Mark the current task as holding a connection; refuse if it already holds one."""
    task = asyncio.current_task()
    if task is not None and _HOLDER.get() is task:
        raise SecondConnectionError(
            "this task already holds a pooled connection; waiting for a second one can stall the "
            "worker: run the statement on the connection it holds"
        )
    return _HOLDER.set(task)


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

    def __init__(self, timeout_seconds: float, pool_size: int) -> None:
        self.timeout_seconds = timeout_seconds
        self.pool_size = pool_size
        # The most connections one user's statements hold at once.
        self.user_share = max(1, pool_size // 2)
        self.statement_listeners: list[StatementListener] = []
        self.waiting = 0  # requests waiting for a connection, for the metrics
        self.conflicts_retried = 0  # deadlocks and serialization failures run again
        self._shares: dict[str, _Share] = {}

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
        try:
            return await self.inner.using(work)
        finally:
            self.inner.give_share(self.user_id)

    async def atomic(self, work: "Work[T]") -> T:
        await self.inner.take_share(self.user_id)
        try:
            return await self.inner.atomic(work)
        finally:
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


class PostgresConnection(Connection):
    def __init__(self, connection: "PoolConnectionProxy[Any]", listeners: list[StatementListener]) -> None:
        super().__init__(listeners)
        self._connection = connection

    async def execute(self, query: Query, **params: Any) -> int:
        self._sent(query.sql)
        try:
            status = await self._connection.execute(query.sql, *query.arguments(params))
        except Exception as error:
            if (ours := _from_postgres(error)) is None:
                raise
            raise ours from error
        # "DELETE 3", "UPDATE 1", "INSERT 0 1": the count is the last word.
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        self._sent(query.sql)
        try:
            record = await self._connection.fetchrow(query.sql, *query.arguments(params))
        except Exception as error:
            if (ours := _from_postgres(error)) is None:
                raise
            raise ours from error
        return None if record is None else dict(record)

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        self._sent(query.sql)
        try:
            records = await self._connection.fetch(query.sql, *query.arguments(params))
        except Exception as error:
            if (ours := _from_postgres(error)) is None:
                raise
            raise ours from error
        return [dict(record) for record in records]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._sent("BEGIN")
        try:
            async with self._connection.transaction():
                yield
        except BaseException as error:
            self._sent("ROLLBACK")
            # COMMIT itself can meet a serialization failure or lose the connection.
            if isinstance(error, Exception) and (ours := _from_postgres(error)) is not None:
                raise ours from error
            raise
        self._sent("COMMIT")


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"
    writes_in_with = True

    def __init__(self, url: URL, *, timeout_seconds: float, pool_size: int) -> None:
        super().__init__(timeout_seconds, pool_size)
        self._dsn = asyncpg_dsn(url)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # Connections borrowed or being borrowed: the pool has no other user.
        self._claimed = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        holding = _claim()
        try:
            pool, connection = await self._acquire()
            try:
                yield PostgresConnection(connection, self.statement_listeners)
            finally:
                await self._release(pool, connection)
        finally:
            _HOLDER.reset(holding)

    async def _once(self, work: "Work[T]") -> T:
        # The same as `connection()`, without a context-manager generator per statement:
        # a few percent of a task read's CPU.
        holding = _claim()
        try:
            pool, connection = await self._acquire()
            try:
                return await work(PostgresConnection(connection, self.statement_listeners))
            finally:
                await self._release(pool, connection)
        finally:
            _HOLDER.reset(holding)

    async def _acquire(self) -> "tuple[asyncpg.Pool, PoolConnectionProxy[Any]]":
        try:
            pool = self._pool or await self._open_pool()
            # While fewer than pool-size connections are claimed, one is free and asyncpg
            # hands it over at once (connecting it first, if need be, under the connect
            # timeout): there is no wait to bound. Skipping the timeout spares a timer on
            # borrowing and another on returning, 2.5% of a task read's CPU instructions
            # (callgrind). Only a full pool makes a request wait, and time out.
            free = self._claimed < self.pool_size
            self._claimed += 1
            try:
                if free:
                    return pool, await pool.acquire()
                self.waiting += 1
                try:
                    return pool, await pool.acquire(timeout=self.timeout_seconds)
                finally:
                    self.waiting -= 1
            except BaseException:
                self._claimed -= 1
                raise
        except _POSTGRES_UNAVAILABLE as error:
            raise DatabaseUnavailableError(type(error).__name__) from error

    async def _release(self, pool: asyncpg.Pool, connection: "PoolConnectionProxy[Any]") -> None:
        try:
            await pool.release(connection)
        except _POSTGRES_UNAVAILABLE as error:
            raise DatabaseUnavailableError(type(error).__name__) from error
        finally:
            self._claimed -= 1

    async def _open_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    # Neon suspends an idle compute after five minutes and drops its
                    # connections: close idle ones before that happens.
                    max_inactive_connection_lifetime=240,
                    # We keep no session state (no SET, LISTEN or cursors; advisory locks
                    # are transaction-scoped), so returning a connection needs no RESET ALL
                    # round trip; asyncpg still rolls back a transaction left open.
                    reset=_keep_session,
                    timeout=self.timeout_seconds,  # connecting, TLS included
                    command_timeout=self.timeout_seconds,  # each statement
                    # Names our connections in pg_stat_activity (and Neon's console).
                    server_settings={"application_name": "todo-api"},
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            # Graceful: waits for connections in use, then says goodbye to the server.
            await asyncio.wait_for(pool.close(), self.timeout_seconds)
        except _POSTGRES_UNAVAILABLE as error:
            # A stalled or vanished server must not hold up shutdown: asyncpg has
            # already dropped the connections (Pool.terminate).
            logger.warning("database connections dropped at shutdown: %s", type(error).__name__)

    def pool_status(self) -> PoolStatus:
        if self._pool is None:
            return PoolStatus(size=0, in_use=0, waiting=self.waiting)
        in_use = self._claimed - self.waiting  # borrowed, or being handed over
        return PoolStatus(size=self._pool.get_size(), in_use=in_use, waiting=self.waiting)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    return None


class SqliteConnection(Connection):
    def __init__(
        self, connection: AsyncConnection, listeners: list[StatementListener], writing: asyncio.Lock
    ) -> None:
        super().__init__(listeners)
        self._connection = connection
        self._writing = writing
        self._in_transaction = False

    async def execute(self, query: Query, **params: Any) -> int:
        result = await self._run(query, params)
        return int(result.rowcount)

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        row = (await self._run(query, params)).mappings().first()
        return None if row is None else _in_utc(row)

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        return [_in_utc(row) for row in (await self._run(query, params)).mappings()]

    async def _run(self, query: Query, params: Mapping[str, Any]) -> Any:
        try:
            if query.writes and not self._in_transaction:
                async with self._writing:
                    return await self._connection.execute(query.statement, params)
            return await self._connection.execute(query.statement, params)
        except Exception as error:
            if (ours := _from_sqlite(error)) is None:
                raise
            raise ours from error

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers wait for each
        # other instead of failing when a read lock cannot be upgraded.
        async with self._writing:
            try:
                await self._connection.exec_driver_sql("BEGIN IMMEDIATE")
            except _SQLITE_UNAVAILABLE as error:
                raise DatabaseUnavailableError(type(error).__name__) from error
            self._in_transaction = True
            try:
                yield
            except BaseException:
                await self._connection.exec_driver_sql("ROLLBACK")
                raise
            finally:
                self._in_transaction = False
            try:
                await self._connection.exec_driver_sql("COMMIT")
            except _SQLITE_UNAVAILABLE as error:
                raise DatabaseUnavailableError(type(error).__name__) from error


def _in_utc(row: RowMapping) -> Row:
    """SQLite keeps no time zone, so timestamps come back naive: they were stored in UTC."""
    return {
        key: value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for key, value in row.items()
    }


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"
    writes_in_with = False

    def __init__(self, url: URL, *, timeout_seconds: float, pool_size: int) -> None:
        super().__init__(timeout_seconds, pool_size)
        # The sqlite3 module's own transaction handling is off (autocommit):
        # `transaction()` says BEGIN and COMMIT itself.
        self.engine: AsyncEngine = create_async_engine(
            url,
            connect_args={"timeout": timeout_seconds},
            isolation_level="AUTOCOMMIT",
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeout_seconds,
        )
        event.listen(self.engine.sync_engine, "connect", _configure_sqlite)
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._notify)
        # SQLite writes one at a time. Its own wait for the write lock polls, sleeping up to
        # 100 ms between tries: 30 writers on one task took 1.1 s. In this process they queue
        # here instead, in order, and SQLite's wait is left for other processes' writers.
        self._writing = asyncio.Lock()

    def _notify(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        for listener in self.statement_listeners:
            listener(statement)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        holding = _claim()
        try:
            self.waiting += 1
            try:
                connection = await self.engine.connect()
            except _SQLITE_UNAVAILABLE as error:
                raise DatabaseUnavailableError(type(error).__name__) from error
            finally:
                self.waiting -= 1
            try:
                yield SqliteConnection(connection, self.statement_listeners, self._writing)
            finally:
                await connection.close()
        finally:
            _HOLDER.reset(holding)

    async def close(self) -> None:
        await self.engine.dispose()

    def pool_status(self) -> PoolStatus:
        pool: Any = self.engine.sync_engine.pool
        return PoolStatus(size=pool.size(), in_use=pool.checkedout(), waiting=self.waiting)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # SQLite ignores foreign keys unless asked, per connection.
    cursor.execute("PRAGMA foreign_keys = ON")
    # WAL lets readers proceed while one request writes.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def create_database(url: URL, *, timeout_seconds: float = 5, pool_size: int = 15) -> Database:
    """`timeout_seconds` bounds connecting, waiting for a pooled connection and each
    statement (on SQLite: waiting for the write lock), so an unreachable or stalled
    database becomes a 503, not a hang. `pool_size` bounds the connections (on SQLite too)."""
    if url.get_backend_name() == "sqlite":
        return SqliteDatabase(url, timeout_seconds=timeout_seconds, pool_size=pool_size)
    return PostgresDatabase(url, timeout_seconds=timeout_seconds, pool_size=pool_size)
