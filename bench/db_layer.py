"""What one single-task read costs in each database layer, sequentially, in microseconds.

    uv run python -m bench.db_layer postgresql://postgres@127.0.0.1:5432/DB

Needs a migrated database with task 1 owned by "alice" (`todo-api migrate`, then
create one task). Raw drivers against SQLAlchemy ORM and Core, in a transaction
or in autocommit: the figures behind the choices in backend/store/tasks.py.
"""

import sys
import time
from collections.abc import Awaitable, Callable

import psycopg
import uvloop
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import col

from backend.auth.tokens import TokenClaims
from backend.models import Task
from backend.store.database import create_database, database_url
from backend.store.tasks import OwnedTasks

ROUNDS = 2000
TASKS = Task.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation


async def timed(name: str, query: Callable[[], Awaitable[object]]) -> None:
    for _ in range(100):
        await query()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        await query()
    print(f"{name:55s} {(time.perf_counter() - started) / ROUNDS * 1e6:8.0f} us")


async def main(url: str) -> None:
    connection = await psycopg.AsyncConnection.connect(url)

    async def raw() -> None:
        await (
            await connection.execute("SELECT * FROM tasks WHERE id = %s AND user_id = %s", (1, "alice"))
        ).fetchone()
        await connection.commit()

    await timed("psycopg, raw, BEGIN + query + COMMIT", raw)
    await through_our_database(url)
    for driver in ("psycopg", "asyncpg"):
        for isolation in ("READ COMMITTED", "AUTOCOMMIT"):
            await through_sqlalchemy(url.replace("postgresql://", f"postgresql+{driver}://"), isolation)
    await connection.close()


async def through_our_database(url: str) -> None:
    """What the API does: a statement compiled once, sent through an asyncpg pool."""
    database = create_database(database_url(url))

    alice = OwnedTasks(database, TokenClaims("alice"))

    async def ours() -> None:
        await alice.get(1)

    await timed("the API's path: asyncpg pool, compiled once, autocommit", ours)
    await database.close()


async def through_sqlalchemy(url: str, isolation: str) -> None:
    engine = create_async_engine(url, pool_pre_ping=True, isolation_level=isolation)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    core_query = select(TASKS).where(TASKS.c.id == 1, TASKS.c.user_id == "alice")

    async def orm() -> None:
        async with sessions() as session:
            await session.scalar(select(Task).where(col(Task.id) == 1, col(Task.user_id) == "alice"))
            await session.commit()

    async def core() -> None:
        async with sessions() as session:
            (await session.execute(core_query)).first()
            await session.commit()

    driver = url.split("+", 1)[1].split(":", 1)[0]
    await timed(f"SQLAlchemy ORM,  {driver}, pre-ping, {isolation}", orm)
    await timed(f"SQLAlchemy Core, {driver}, pre-ping, {isolation}", core)
    await engine.dispose()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
