"""Alembic environment: async engines, the models' metadata, batch mode for SQLite."""

import asyncio
import logging.config
from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import String, text
from sqlalchemy.engine import Connection
from sqlmodel.sql.sqltypes import AutoString

from backend.config import DatabaseSettings
from backend.models import metadata, schema_of
from backend.store.schema import migration_engine

# The advisory lock key that serialises migrations on PostgreSQL (any constant of our own).
MIGRATION_LOCK = 0x746F646F_6D696772  # "todomigr"

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    # SQLModel's AutoString is a plain VARCHAR: render it so, and keep
    # migrations free of SQLModel imports.
    if type_ == "type" and isinstance(obj, AutoString):
        return repr(String(length=obj.length)).replace("String(", "sa.String(")
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
        include_object=schema_of(connection.dialect.name),
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two `todo-api migrate` at once (a Job retried, an init container per replica)
            # take turns: the second waits here, then reads the head the first committed
            # (Alembic runs every step in this one transaction) and has nothing to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def run_async_migrations(raw_url: str) -> None:
    engine = migration_engine(raw_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    asyncio.run(
        run_async_migrations(config.attributes.get("database_url") or DatabaseSettings().database_url)
    )
