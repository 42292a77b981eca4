"""The database layer: `common` (what every engine shares: statements, connections, the
pool's rules, our errors), one module per engine (`postgresql`, `sqlite`, each with the one
translation of its errors into ours), and `urls` (DATABASE_URL as people paste it).

Import from here: `from backend.store.database import Database, Query`.
"""

from sqlalchemy.engine import URL

from backend.store.database.common import (
    CONFLICT_ATTEMPTS,
    CheckViolationError,
    Connection,
    Database,
    DatabaseUnavailableError,
    Dialect,
    InTransaction,
    PoolStatus,
    Query,
    Row,
    SecondConnectionError,
    TransientConflictError,
    UserBusyError,
    UserShare,
)
from backend.store.database.postgresql import PostgresDatabase
from backend.store.database.sqlite import SqliteDatabase
from backend.store.database.urls import asyncpg_dsn, database_url

__all__ = [
    "CONFLICT_ATTEMPTS",
    "CheckViolationError",
    "Connection",
    "Database",
    "DatabaseUnavailableError",
    "Dialect",
    "InTransaction",
    "PoolStatus",
    "PostgresDatabase",
    "Query",
    "Row",
    "SecondConnectionError",
    "SqliteDatabase",
    "TransientConflictError",
    "UserBusyError",
    "UserShare",
    "asyncpg_dsn",
    "create_database",
    "database_url",
]


def create_database(url: URL, *, timeout_seconds: float = 5, pool_size: int = 15) -> Database:
    """`timeout_seconds` bounds connecting, waiting for a pooled connection and each
    statement (on SQLite: waiting for the write lock), so an unreachable or stalled
    database becomes a 503, not a hang. `pool_size` bounds the connections (on SQLite too)."""
    if url.get_backend_name() == "sqlite":
        return SqliteDatabase(url, timeout_seconds=timeout_seconds, pool_size=pool_size)
    return PostgresDatabase(url, timeout_seconds=timeout_seconds, pool_size=pool_size)
