"""The schema this code expects and whether a database has it: the Alembic migrations ship
inside the package (`backend/migrations`), so `todo-api migrate` works from an installed
wheel or an image as it does from a checkout."""

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from backend.store.database.urls import asyncpg_dsn, database_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(raw_url: str) -> Config:
    """Alembic's configuration in code: the packaged migrations, this database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = raw_url
    return config


def migration_engine(raw_url: str) -> AsyncEngine:
    """A one-connection engine for migrating or inspecting the schema, outside the API's pool."""
    url = database_url(raw_url)
    if url.get_backend_name() == "postgresql":
        # asyncpg reads the URL itself, as the API's own pool does: `sslmode` and all.
        dsn = asyncpg_dsn(url)
        return create_async_engine(
            "postgresql+asyncpg://",
            poolclass=NullPool,
            async_creator=lambda: asyncpg.connect(dsn),
        )
    return create_async_engine(url, poolclass=NullPool)


@dataclass(frozen=True)
class SchemaCheck:
    """Where a database's schema stands against this code's migrations."""

    current: frozenset[str]  # the revisions recorded in the database (empty: never migrated)
    expected: frozenset[str]  # this code's head revisions
    behind: bool  # the code needs migrations the database does not have
    unknown: frozenset[str]  # revisions this code does not know: a newer release migrated it

    def problem(self) -> str | None:
        """The one line `todo-api serve` refuses to start with, or None."""
        if not self.behind:
            return None
        if not self.current:
            return "error: the database has no schema yet; run `todo-api migrate` first"
        return (
            f"error: the database schema is behind this version (at {', '.join(sorted(self.current))}, "
            f"needs {', '.join(sorted(self.expected))}); run `todo-api migrate` first"
        )


def compare(current: frozenset[str]) -> SchemaCheck:
    script = ScriptDirectory(str(MIGRATIONS))
    expected = frozenset(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    unknown = frozenset(current - known)
    # Behind: some head of ours is not at or below what the database records. A database
    # a newer release migrated (unknown revisions) is not behind: expand-then-contract
    # migrations keep it working for the release before, as a rolling deploy needs.
    reached: set[str] = set()
    for revision in current & known:
        reached.update(r.revision for r in script.iterate_revisions(revision, "base"))
    behind = not unknown and not expected <= reached
    return SchemaCheck(current=current, expected=expected, behind=behind, unknown=unknown)


async def check_schema(raw_url: str, *, timeout_seconds: float) -> SchemaCheck:
    """Read the database's revisions (raises OSError, TimeoutError or a driver error when it
    does not answer within `timeout_seconds`)."""
    url = database_url(raw_url)
    if url.get_backend_name() != "postgresql":
        return compare(await _sqlite_revisions(raw_url))
    # asyncpg directly: its close() takes a timeout (a peer that never ends the connection
    # cannot hold the start), where SQLAlchemy's pool would wait for the end unbounded.
    async with asyncio.timeout(timeout_seconds):
        connection = await asyncpg.connect(asyncpg_dsn(url), timeout=timeout_seconds)
    try:
        async with asyncio.timeout(timeout_seconds):
            # Alembic's own table; missing in a database never migrated.
            exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
            rows = await connection.fetch("SELECT version_num FROM alembic_version") if exists else []
    finally:
        try:
            await connection.close(timeout=timeout_seconds)
        except (TimeoutError, OSError):
            connection.terminate()  # what was read stands; only the goodbye failed
    return compare(frozenset(row["version_num"] for row in rows))


async def _sqlite_revisions(raw_url: str) -> frozenset[str]:
    def heads(connection: Connection) -> frozenset[str]:
        return frozenset(MigrationContext.configure(connection).get_current_heads())

    engine = migration_engine(raw_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(heads)
    finally:
        await engine.dispose()
