"""The ceiling: the same routes served the thinnest way we know, to measure the API against.

Raw Starlette, asyncpg, SQL by hand, orjson, no ORM and no validation beyond
the JWT check; the same garbage-collector settings as the API. Not a product:
no error bodies worth the name, no limits, no logs.
Run by bench/run.py as `uvicorn bench.ceiling:app`, with DATABASE_URL and
BETTER_AUTH_SECRET as the API gets them.
"""

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SECRET = os.environ["BETTER_AUTH_SECRET"]
COLUMNS = "id, user_id, title, description, completed, created_at, updated_at"
pool: asyncpg.Pool


def json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def task(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "title": row["title"],
        "description": row["description"],
        "completed": row["completed"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def owner(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    try:
        claims = jwt.decode(header.removeprefix("Bearer "), SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    user_id: str = request.path_params["user_id"]
    return user_id if claims.get("sub") == user_id else None


async def tasks(request: Request) -> Response:
    user_id = owner(request)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    if request.method == "POST":
        body = orjson.loads(await request.body())
        # The user's row and the task in one statement, as the API does on PostgreSQL.
        row = await pool.fetchrow(
            "WITH recorded_user AS (INSERT INTO users (id, created_at) VALUES ($1, $5) "
            "ON CONFLICT (id) DO NOTHING) "
            "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) "
            f"VALUES ($1, $2, $3, $4, $5, $5) RETURNING {COLUMNS}",
            user_id, body["title"], body.get("description"), body.get("completed", False), datetime.now(UTC),
        )  # fmt: skip
        assert row is not None  # INSERT … RETURNING returns the row
        return json(task(row), 201)
    limit = int(request.query_params.get("limit", 100))
    offset = int(request.query_params.get("offset", 0))
    rows = await pool.fetch(
        # The total from the user's counters, as the API reads it (a count(*) would
        # read every one of the user's tasks).
        f"SELECT {COLUMNS}, (SELECT task_count FROM users WHERE id = $1) AS total "
        "FROM tasks WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        user_id, limit, offset,
    )  # fmt: skip
    response = json([task(row) for row in rows])
    response.headers["X-Total-Count"] = str(rows[0]["total"] if rows else 0)
    return response


async def one_task(request: Request) -> Response:
    user_id = owner(request)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    task_id = int(request.path_params["task_id"])
    if request.method == "GET":
        row = await pool.fetchrow(
            f"SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2", task_id, user_id
        )
    elif request.method == "DELETE":
        row = await pool.fetchrow(
            "DELETE FROM tasks WHERE id = $1 AND user_id = $2 RETURNING id", task_id, user_id
        )
        return Response(status_code=204) if row else json({"detail": "not found"}, 404)
    else:
        body = orjson.loads(await request.body())
        row = await pool.fetchrow(
            "UPDATE tasks SET title = coalesce($3, title), completed = coalesce($4, completed), "
            f"updated_at = $5 WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}",
            task_id, user_id, body.get("title"), body.get("completed"), datetime.now(UTC),
        )  # fmt: skip
    return json(task(row)) if row else json({"detail": "not found"}, 404)


async def toggle(request: Request) -> Response:
    user_id = owner(request)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    row = await pool.fetchrow(
        "UPDATE tasks SET completed = NOT completed, updated_at = $3 "
        f"WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}",
        int(request.path_params["task_id"]), user_id, datetime.now(UTC),
    )  # fmt: skip
    return json(task(row)) if row else json({"detail": "not found"}, 404)


async def keep_session(_connection: asyncpg.Connection) -> None:
    return None


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    global pool
    url = os.environ["DATABASE_URL"]
    # As many connections as the API opens by default (DATABASE_POOL_SIZE, 15).
    # No RESET ALL on release, as in the API: neither keeps session state.
    pool = await asyncpg.create_pool(url, min_size=5, max_size=15, reset=keep_session)
    # The API's garbage-collector settings (backend/main.py): without them the
    # collector's pauses double this app's p99 under wrk's 32 connections (GET: 30-37 ms
    # against 14-17 ms), and the API would be measured against a tail it does not have.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    yield
    await pool.close()


app = Starlette(
    routes=[
        Route("/api/{user_id}/tasks", tasks, methods=["GET", "POST"]),
        Route("/api/{user_id}/tasks/{task_id:int}", one_task, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route("/api/{user_id}/tasks/{task_id:int}/complete", toggle, methods=["PATCH"]),
    ],
    lifespan=lifespan,
)
