"""SQLite, the embedded default: SQLAlchemy's engine over aiosqlite, writers queued in-process."""

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy import event
from sqlalchemy.engine import URL, RowMapping
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
    claim_connection,
    raise_translated,
    release_claim,
)

_SQLITE_UNAVAILABLE = (OperationalError, SQLAlchemyInterfaceError, PoolTimeoutError)


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


def _raise_ours(error: Exception) -> NoReturn:
    raise_translated(error, _from_sqlite)


class SqliteConnection(Connection):
    def __init__(
        self,
        connection: AsyncConnection,
        listeners: list[StatementListener],
        writing: asyncio.Lock,
        write_committed: Callable[[], None],
    ) -> None:
        super().__init__(listeners)
        self._connection = connection
        self._writing = writing
        self._write_committed = write_committed
        self._in_transaction = False
        self._wrote = False  # in the open transaction

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
                    result = await self._connection.execute(query.statement, params)
                self._write_committed()
                return result
            self._wrote = self._wrote or query.writes
            return await self._connection.execute(query.statement, params)
        except Exception as error:
            _raise_ours(error)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers wait for each
        # other instead of failing when a read lock cannot be upgraded.
        async with self._writing:
            try:
                await self._connection.exec_driver_sql("BEGIN IMMEDIATE")
            except Exception as error:
                _raise_ours(error)
            self._in_transaction = True
            self._wrote = False
            try:
                yield
            except BaseException:
                await self._connection.exec_driver_sql("ROLLBACK")
                raise
            finally:
                self._in_transaction = False
            try:
                await self._connection.exec_driver_sql("COMMIT")
            except Exception as error:
                _raise_ours(error)
        if self._wrote:
            self._write_committed()


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
        holding = claim_connection()
        try:
            self.waiting += 1
            try:
                connection = await self.engine.connect()
            except Exception as error:
                _raise_ours(error)
            finally:
                self.waiting -= 1
            try:
                yield SqliteConnection(
                    connection, self.statement_listeners, self._writing, self.write_committed
                )
            finally:
                await connection.close()
        finally:
            release_claim(holding)

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
