"""The database: URLs, the connection pool, and the connection each request gets.

Statements are written once, as SQLAlchemy Core (`Query`, built in `crud`), and
run two ways:

- PostgreSQL, the production database, through an asyncpg pool directly: each
  statement is compiled to SQL once per process and sent with its arguments.
  SQLAlchemy's async execution layer cost about four times the driver's own CPU
  per statement (`python -m bench.db_layer`), more than the rest of a request;
  asyncpg itself is the fastest PostgreSQL driver we measured.
- SQLite, the embedded default, through SQLAlchemy's engine: the statement as is,
  with SQLAlchemy's type handling (SQLite has no native timestamps or booleans).

Statements run in autocommit, each on a connection borrowed from the pool just
for it: every route is one statement, atomic on its own, but create on SQLite,
which runs its two in `transaction()` (SQLite cannot write in a WITH clause).
Nothing is held between statements, so a request never keeps a connection while
it waits on anything else.
"""

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

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


# Failures of the connection, not of the statement: the client may retry.
_POSTGRES_UNAVAILABLE = (
    OSError,  # refused, reset, unreachable, DNS
    TimeoutError,  # connecting, waiting for a pooled connection, or a statement
    asyncpg.InterfaceError,  # the connection closed under us
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections
)
_SQLITE_UNAVAILABLE = (OperationalError, SQLAlchemyInterfaceError, PoolTimeoutError)


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

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self._fixed[name] for name in self._names]


class Connection(ABC):
    """One pooled connection, in autocommit."""

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


class Database(ABC):
    """The pool a process shares. Connections are opened lazily, on first use."""

    writes_in_with: bool
    """Whether a statement may write in its WITH clause (PostgreSQL: yes; SQLite: no)."""
    in_transaction = False
    """Whether every statement joins one transaction already open (see `InTransaction`)."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self.statement_listeners: list[StatementListener] = []
        self.waiting = 0  # requests waiting for a connection, for the metrics

    @abstractmethod
    def connection(self) -> AbstractAsyncContextManager["Connection"]:
        """An async context manager giving a `Connection`; connectivity failures become
        `DatabaseUnavailableError`."""

    async def execute(self, query: Query, **params: Any) -> int:
        async with self.connection() as connection:
            return await connection.execute(query, **params)

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        async with self.connection() as connection:
            return await connection.fetch_one(query, **params)

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        async with self.connection() as connection:
            return await connection.fetch_all(query, **params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection whose statements commit together when the block ends, or not at all."""
        async with self.connection() as connection, connection.transaction():
            yield connection

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def pool_status(self) -> "PoolStatus": ...


class InTransaction(Database):
    """One connection inside an open transaction, as a `Database`: every statement, and
    every `transaction()`, joins that transaction. What lets a request key's answer be
    stored in the same transaction as the write it answers for."""

    in_transaction = True

    def __init__(self, outer: Database, connection: Connection) -> None:
        super().__init__(outer.timeout_seconds)
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        yield self._connection

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
        except asyncpg.CheckViolationError as error:
            raise CheckViolationError(error.constraint_name or "") from error
        # "DELETE 3", "UPDATE 1", "INSERT 0 1": the count is the last word.
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        self._sent(query.sql)
        try:
            record = await self._connection.fetchrow(query.sql, *query.arguments(params))
        except asyncpg.CheckViolationError as error:
            # Here, not only where a connection is given back: a statement inside a
            # transaction (`InTransaction`) must report it the same way.
            raise CheckViolationError(error.constraint_name or "") from error
        return None if record is None else dict(record)

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        self._sent(query.sql)
        return [dict(record) for record in await self._connection.fetch(query.sql, *query.arguments(params))]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._sent("BEGIN")
        try:
            async with self._connection.transaction():
                yield
        except BaseException:
            self._sent("ROLLBACK")
            raise
        self._sent("COMMIT")


class PostgresDatabase(Database):
    writes_in_with = True

    def __init__(self, url: URL, *, timeout_seconds: float, pool_size: int) -> None:
        super().__init__(timeout_seconds)
        self._dsn = asyncpg_dsn(url)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # Connections borrowed or being borrowed: the pool has no other user.
        self._claimed = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        try:
            pool, connection = await self._acquire()
            try:
                yield PostgresConnection(connection, self.statement_listeners)
            finally:
                await self._release(pool, connection)
        except _POSTGRES_UNAVAILABLE as error:
            raise DatabaseUnavailableError(type(error).__name__) from error
        except asyncpg.CheckViolationError as error:
            raise CheckViolationError(error.constraint_name or "") from error

    # The three statement methods borrow a connection directly rather than through
    # `connection()`: no context-manager generator per statement, a few percent of
    # a task read's CPU.
    async def execute(self, query: Query, **params: Any) -> int:
        return await self._borrowed(lambda connection: connection.execute(query, **params))

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        return await self._borrowed(lambda connection: connection.fetch_one(query, **params))

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        return await self._borrowed(lambda connection: connection.fetch_all(query, **params))

    async def _borrowed(self, use: Callable[[Connection], Awaitable[T]]) -> T:
        try:
            pool, connection = await self._acquire()
            try:
                return await use(PostgresConnection(connection, self.statement_listeners))
            finally:
                await self._release(pool, connection)
        except _POSTGRES_UNAVAILABLE as error:
            raise DatabaseUnavailableError(type(error).__name__) from error
        except asyncpg.CheckViolationError as error:
            raise CheckViolationError(error.constraint_name or "") from error

    async def _acquire(self) -> "tuple[asyncpg.Pool, PoolConnectionProxy[Any]]":
        pool = self._pool or await self._open_pool()
        # While fewer than pool-size connections are claimed, one is free and asyncpg
        # hands it over at once (connecting it first, if need be, under the connect
        # timeout): there is no wait to bound. Skipping the timeout spares a timer on
        # borrowing and another on returning, 2.5% of a task read's CPU instructions
        # (callgrind). Only a full pool makes a request wait, and time out.
        free = self._claimed < self._pool_size
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

    async def _release(self, pool: asyncpg.Pool, connection: "PoolConnectionProxy[Any]") -> None:
        try:
            await pool.release(connection)
        finally:
            self._claimed -= 1

    async def _open_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    # Neon suspends an idle compute after five minutes and drops its
                    # connections: close idle ones before that happens.
                    max_inactive_connection_lifetime=240,
                    # We keep no session state (no SET, LISTEN, advisory locks or
                    # cursors), so returning a connection needs no RESET ALL round
                    # trip; asyncpg still rolls back a transaction left open.
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
    def __init__(self, connection: AsyncConnection, listeners: list[StatementListener]) -> None:
        super().__init__(listeners)
        self._connection = connection

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
            return await self._connection.execute(query.statement, params)
        except IntegrityError as error:
            # "CHECK constraint failed: ck_tasks_recurrence_has_due_at"
            message = str(error.orig)
            if message.startswith("CHECK constraint failed: "):
                raise CheckViolationError(message.removeprefix("CHECK constraint failed: ")) from error
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers wait for each
        # other instead of failing when a read lock cannot be upgraded.
        await self._connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self._connection.exec_driver_sql("ROLLBACK")
            raise
        await self._connection.exec_driver_sql("COMMIT")


def _in_utc(row: RowMapping) -> Row:
    """SQLite keeps no time zone, so timestamps come back naive: they were stored in UTC."""
    return {
        key: value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for key, value in row.items()
    }


class SqliteDatabase(Database):
    writes_in_with = False

    def __init__(self, url: URL, *, timeout_seconds: float) -> None:
        super().__init__(timeout_seconds)
        # The sqlite3 module's own transaction handling is off (autocommit):
        # `transaction()` says BEGIN and COMMIT itself.
        self.engine: AsyncEngine = create_async_engine(
            url, connect_args={"timeout": timeout_seconds}, isolation_level="AUTOCOMMIT"
        )
        event.listen(self.engine.sync_engine, "connect", _configure_sqlite)
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._notify)

    def _notify(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        for listener in self.statement_listeners:
            listener(statement)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        try:
            self.waiting += 1
            try:
                connection = await self.engine.connect()
            finally:
                self.waiting -= 1
            try:
                yield SqliteConnection(connection, self.statement_listeners)
            finally:
                await connection.close()
        except _SQLITE_UNAVAILABLE as error:
            raise DatabaseUnavailableError(type(error).__name__) from error

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
    database becomes a 503, not a hang."""
    if url.get_backend_name() == "sqlite":
        return SqliteDatabase(url, timeout_seconds=timeout_seconds)
    return PostgresDatabase(url, timeout_seconds=timeout_seconds, pool_size=pool_size)
