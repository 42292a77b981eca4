"""The engine, and the database connection (in a transaction) each request gets."""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from backend.metrics import Metrics


def create_engine(url: URL, *, timeout_seconds: float = 5) -> AsyncEngine:
    """`timeout_seconds` bounds connecting and waiting for a pooled connection (or, on
    SQLite, for the write lock), so an unreachable database becomes a 503, not a hang."""
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": timeout_seconds})
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    return create_async_engine(
        url,
        # Neon suspends idle computes after five minutes and drops their
        # connections: check a connection before use and recycle it before then.
        pool_pre_ping=True,
        pool_recycle=240,
        pool_timeout=timeout_seconds,
        # libpq takes whole seconds; it also bounds the TCP handshake and TLS.
        connect_args={
            "connect_timeout": max(1, round(timeout_seconds)),
            # Names our connections in pg_stat_activity (and Neon's console).
            "application_name": "todo-api",
        },
    )


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # SQLite ignores foreign keys unless asked, per connection.
    cursor.execute("PRAGMA foreign_keys = ON")
    # WAL lets readers proceed while one request writes.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One transaction per request: committed when the handler returns, rolled back if it raises.

    Used with `scope="function"`, so the commit happens before the response is
    sent and a 2xx always means the change is stored. A Core connection, not an
    ORM session: the queries in `crud` need no identity map or unit of work.
    """
    engine: AsyncEngine = request.app.state.engine
    metrics: Metrics | None = request.app.state.metrics
    if metrics is not None:
        metrics.pool_waiting.inc()  # counts the requests queueing for a connection
    try:
        connection = await engine.connect()
    finally:
        if metrics is not None:
            metrics.pool_waiting.dec()
    try:
        transaction = await connection.begin()
        try:
            yield connection
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
    finally:
        await connection.close()
