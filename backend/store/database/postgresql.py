"""PostgreSQL, the production database: an asyncpg pool used directly, each statement compiled
once per process (see `common.Query`)."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy.engine import URL

from backend.store.database.common import (
    CheckViolationError,
    Connection,
    Database,
    DatabaseUnavailableError,
    Dialect,
    PoolStatus,
    Query,
    Row,
    StatementListener,
    T,
    TransientConflictError,
    Work,
    claim_connection,
    raise_translated,
    release_claim,
)
from backend.store.database.urls import asyncpg_dsn

logger = logging.getLogger("backend.db")


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


def _raise_ours(error: Exception) -> NoReturn:
    raise_translated(error, _from_postgres)


class PostgresConnection(Connection):
    def __init__(self, connection: "PoolConnectionProxy[Any]", listeners: list[StatementListener]) -> None:
        super().__init__(listeners)
        self._connection = connection

    async def execute(self, query: Query, **params: Any) -> int:
        self._sent(query.sql)
        try:
            status = await self._connection.execute(query.sql, *query.arguments(params))
        except Exception as error:
            _raise_ours(error)
        # "DELETE 3", "UPDATE 1", "INSERT 0 1": the count is the last word.
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        self._sent(query.sql)
        try:
            record = await self._connection.fetchrow(query.sql, *query.arguments(params))
        except Exception as error:
            _raise_ours(error)
        return None if record is None else dict(record)

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        self._sent(query.sql)
        try:
            records = await self._connection.fetch(query.sql, *query.arguments(params))
        except Exception as error:
            _raise_ours(error)
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
        holding = claim_connection()
        try:
            pool, connection = await self._acquire()
            try:
                yield PostgresConnection(connection, self.statement_listeners)
            finally:
                await self._release(pool, connection)
        finally:
            release_claim(holding)

    async def _once(self, work: "Work[T]") -> T:
        # The same as `connection()`, without a context-manager generator per statement:
        # a few percent of a task read's CPU.
        holding = claim_connection()
        try:
            pool, connection = await self._acquire()
            try:
                return await work(PostgresConnection(connection, self.statement_listeners))
            finally:
                await self._release(pool, connection)
        finally:
            release_claim(holding)

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
        except Exception as error:
            _raise_ours(error)

    async def _release(self, pool: asyncpg.Pool, connection: "PoolConnectionProxy[Any]") -> None:
        try:
            await pool.release(connection)
        except Exception as error:
            _raise_ours(error)
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
