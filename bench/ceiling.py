"""The ceilings: the same routes served the thinnest ways we know, to measure the API against.

asyncpg, SQL by hand, orjson, no ORM and no validation beyond the JWT check;
the same garbage-collector settings as the API. Not a product: no error bodies
worth the name, no limits, no logs. It serves the same task (the organising
fields and tags included) from the same SQL as the API, written out by hand, with
the headers the API sends on a success (nosniff, no-store, `Vary: Origin`, a
request id, the ETag).

Two front doors onto the same handlers: `app`, Starlette's routing, requests and
responses; and `raw_app`, a bare ASGI callable that splits the path and reads the
headers itself, which is as thin as Python serves HTTP under uvicorn.
Run by bench/run.py as `uvicorn bench.ceiling:app` (or `:raw_app`), with
DATABASE_URL and BETTER_AUTH_SECRET as the API gets them.
"""

import base64
import gc
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import asyncpg
import jwt
import orjson
from fractional_indexing import generate_key_between  # type: ignore[import-untyped]  # no types shipped
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Send

SECRET = os.environ["BETTER_AUTH_SECRET"]
PUBLIC = (
    "id, user_id, title, description, completed, created_at, updated_at, priority, due_at, remind_at, "
    "reminded_at, recurrence, time_zone, completed_at, next_occurrence_id, version, list_id, parent_id, "
    "position, subtask_count, open_subtask_count"
)
# A task's tags in its row, as the API reads them.
TAGS = (
    "(SELECT string_agg(tags.name, chr(31)) FROM task_tags JOIN tags ON tags.id = task_tags.tag_id "
    "WHERE task_tags.task_id = tasks.id) AS tags"
)
COLUMNS = f"{PUBLIC}, {TAGS}"
# Every write takes the owner's change counter first, as the API's do (store/sql.py).
COUNTER_LOCKED = (
    "(SELECT count(*) FROM (SELECT 1 FROM change_counters WHERE change_counters.user_id = $2 FOR UPDATE) "
    "AS locked_counter) >= 0"
)
PRIORITIES = ("none", "low", "medium", "high")
REBALANCE_AT = 48  # as store/positions.py
pool: asyncpg.Pool


class Query:
    """A query string's parameters, each name with all its values."""

    def __init__(self, raw: bytes) -> None:
        self.values: dict[str, list[str]] = {}
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            self.values.setdefault(name, []).append(value)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str, default: Any = None) -> Any:
        found = self.values.get(name)
        return found[-1] if found else default

    def __getitem__(self, name: str) -> str:
        return self.values[name][-1]

    def getlist(self, name: str) -> list[str]:
        return self.values.get(name, [])

    def names(self) -> set[str]:
        return set(self.values)


@dataclass
class Call:
    """A request as either front door hands it over: the path's parameters, the query, the
    headers read (names in lower case) and the body."""

    method: str
    params: dict[str, str]
    query: Query
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json(data: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(data))


def stamp(moment: datetime | None) -> str | None:
    # As the API writes a UTC time: "…Z", not "…+00:00".
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def task(row: asyncpg.Record) -> dict[str, Any]:
    tags = row["tags"]
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "title": row["title"],
        "description": row["description"],
        "completed": row["completed"],
        "created_at": stamp(row["created_at"]),
        "updated_at": stamp(row["updated_at"]),
        "priority": PRIORITIES[row["priority"]],
        "due_at": stamp(row["due_at"]),
        "remind_at": stamp(row["remind_at"]),
        "reminded_at": stamp(row["reminded_at"]),
        "tags": sorted(tags.split("\x1f"), key=str.casefold) if tags else [],
        "recurrence": row["recurrence"],
        "time_zone": row["time_zone"],
        "completed_at": stamp(row["completed_at"]),
        "next_occurrence_id": row["next_occurrence_id"],
        "version": row["version"],
        "list_id": row["list_id"],
        "parent_id": row["parent_id"],
        "position": row["position"],
        "subtask_count": row["subtask_count"],
        "open_subtask_count": row["open_subtask_count"],
    }


def owner(call: Call) -> str | None:
    header = call.headers.get("authorization", "")
    try:
        claims = jwt.decode(header.removeprefix("Bearer "), SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    user_id = call.params["user_id"]
    return user_id if claims.get("sub") == user_id else None


async def tasks(call: Call) -> Reply:
    user_id = owner(call)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    if call.method == "POST":
        return await create(user_id, call.body, call.headers.get("idempotency-key"))
    query = call.query
    limit = int(query.get("limit", 100))
    offset = int(query.get("offset", 0))
    if query.names() <= {"limit", "offset"}:
        rows = await pool.fetch(
            # The total from the user's counters, as the API reads it (a count(*) would
            # read every one of the user's tasks); the page first, then its tasks' tags.
            f"SELECT tasks.*, {TAGS} FROM (SELECT {PUBLIC}, "
            "(SELECT task_count FROM users WHERE id = $1) AS total FROM tasks "
            "WHERE user_id = $1 AND deleted_at IS NULL "
            "ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3) AS tasks "
            "ORDER BY created_at DESC, id DESC",
            user_id, limit, offset,
        )  # fmt: skip
        response = json([task(row) for row in rows])
        total = rows[0]["total"] if rows else 0
        response.headers["x-total-count"] = str(total)
        paged(response, user_id, query, total, limit, offset)
        return response
    return await filtered(user_id, query, limit, offset)


async def create(user_id: str, raw: bytes, key: str | None) -> Reply:
    """The user's row and the task in one statement, as the API does on PostgreSQL; with
    tags, then the tags through the same trigger, in one transaction."""
    body: dict[str, Any] = orjson.loads(raw)
    tags: list[str] = body.get("tags", [])
    title = body["title"]
    description = body.get("description")
    arguments = [
        user_id, title, description, body.get("completed", False), datetime.now(UTC),
        PRIORITIES.index(body.get("priority", "none")), title.casefold(),
        None if description is None else description.casefold(), [tag.casefold() for tag in tags],
    ]  # fmt: skip
    # Into the user's Inbox, made on their first write, as the API does.
    statement = (
        "WITH recorded_user AS (INSERT INTO users (id, created_at) VALUES ($1, $5) "
        "ON CONFLICT (id) DO NOTHING), "
        "new_inbox AS (INSERT INTO task_lists "
        "(user_id, name, name_folded, position, inbox, created_at, updated_at, version) "
        "SELECT $1, 'Inbox', 'inbox', 'a0', true, $5, $5, 1 "
        "WHERE NOT EXISTS (SELECT 1 FROM task_lists WHERE user_id = $1 AND inbox) "
        "ON CONFLICT (user_id) WHERE inbox DO NOTHING RETURNING id) "
        "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at, priority, "
        "title_folded, description_folded, list_id) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, "
        "coalesce((SELECT id FROM new_inbox), (SELECT id FROM task_lists WHERE user_id = $1 AND inbox))) "
        f"RETURNING {PUBLIC}, (SELECT string_agg(name, chr(31)) FROM tags "
        "WHERE user_id = $1 AND name_folded = ANY($9::text[])) AS tags"
    )
    if not tags and key is None:
        row = await pool.fetchrow(statement, *arguments)
        assert row is not None  # INSERT … RETURNING returns the row
        return created_reply(row, orjson.dumps(task(row)))
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(statement, *arguments)
        assert row is not None
        if tags:
            await connection.execute(
                "INSERT INTO task_tag_sets (task_id, user_id, names) VALUES ($1, $2, $3)",
                row["id"], user_id, orjson.dumps([[tag, tag.casefold()] for tag in tags]).decode(),
            )  # fmt: skip
        stored = {name.casefold(): name for name in (row["tags"] or "").split("\x1f") if name}
        created = task(row)
        created["tags"] = sorted((stored.get(tag.casefold(), tag) for tag in tags), key=str.casefold)
        body_bytes = orjson.dumps(created)
        if key is not None:
            # The answer kept with the effect, under the key's advisory lock, as the API does
            # (the bench never repeats a key: no replay path here).
            kept = await connection.fetchval(
                "INSERT INTO idempotency_keys "
                "(user_id, key, fingerprint, status, location, etag, body, created_at) "
                "SELECT $1::text, $2::text, $3, 201, $4, $5, $6, now() "
                "WHERE pg_try_advisory_xact_lock(hashtextextended($1::text || chr(31) || $2::text, 0)) "
                "ON CONFLICT (user_id, key) DO NOTHING RETURNING key",
                user_id, key, hashlib.sha256(raw).hexdigest(), f"/api/{user_id}/tasks/{row['id']}",
                f'"{row["version"]}"', body_bytes.decode(),
            )  # fmt: skip
            if kept is None:
                raise RuntimeError("the ceiling does not replay")
    return created_reply(row, body_bytes)


def created_reply(row: asyncpg.Record, body: bytes) -> Reply:
    # Its Location and ETag, as the API answers a create.
    return Reply(
        201, body, {"location": f"/api/{row['user_id']}/tasks/{row['id']}", "etag": f'"{row["version"]}"'}
    )


async def filtered(user_id: str, query: Query, limit: int, offset: int) -> Reply:
    """The filtered list: the page, then the count of matching tasks, as the API sends them."""
    conditions, arguments = ["user_id = $1", "deleted_at IS NULL"], [user_id]

    def argument(value: Any) -> str:
        arguments.append(value)
        return f"${len(arguments)}"

    if query.get("status") in ("pending", "completed"):
        conditions.append(f"completed = {argument(query['status'] == 'completed')}")
    if priorities := query.getlist("priority"):
        conditions.append(
            f"priority = ANY({argument([PRIORITIES.index(p) for p in priorities])}::smallint[])"
        )
    for tag in query.getlist("tag"):
        conditions.append(
            "EXISTS (SELECT 1 FROM task_tags JOIN tags ON tags.id = task_tags.tag_id "
            "WHERE task_tags.task_id = tasks.id AND tags.user_id = $1 "
            f"AND tags.name_folded = {argument(tag.casefold())})"
        )
    if "list_id" in query:
        conditions.append(f"list_id = {argument(int(query['list_id']))}")
    if query.get("parent_id") == "none":
        conditions.append("parent_id IS NULL")
    elif "parent_id" in query:
        conditions.append(f"parent_id = {argument(int(query['parent_id']))}")
    for word in query.get("q", "").split():
        pattern = argument(f"%{word.casefold()}%")
        conditions.append(f"(title_folded LIKE {pattern} OR description_folded LIKE {pattern})")
    where = " AND ".join(conditions)
    ordering = {"due": "due_at ASC NULLS LAST, id", "position": "position, id"}.get(
        query.get("sort", ""), "created_at DESC, id DESC"
    )
    rows = await pool.fetch(
        f"SELECT tasks.*, {TAGS} FROM (SELECT {PUBLIC} FROM tasks WHERE {where} "
        f"ORDER BY {ordering} LIMIT {argument(limit)} OFFSET {argument(offset)}) AS tasks "
        f"ORDER BY {ordering}",
        *arguments,
    )
    total = await pool.fetchval(f"SELECT count(*) FROM tasks WHERE {where}", *arguments[:-2])
    response = json([task(row) for row in rows])
    response.headers["x-total-count"] = str(total)
    paged(response, user_id, query, total, limit, offset)
    return response


def paged(response: Reply, user_id: str, query: Query, total: int, limit: int, offset: int) -> None:
    """The `next` and `prev` links, as the API sends them."""
    kept = [
        (name, value)
        for name in query.values
        if name not in ("limit", "offset")
        for value in query.getlist(name)
    ]
    path = f"/api/{quote(user_id, safe='')}/tasks"
    links = []
    if offset + limit < total:
        links.append(
            f'<{path}?{urlencode([*kept, ("limit", limit), ("offset", offset + limit)])}>; rel="next"'
        )
    if offset > 0:
        at = min(max(offset - limit, 0), max(total - limit, 0))
        links.append(f'<{path}?{urlencode([*kept, ("limit", limit), ("offset", at)])}>; rel="prev"')
    if links:
        response.headers["link"] = ", ".join(links)


async def one_task(call: Call) -> Reply:
    user_id = owner(call)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    task_id = int(call.params["task_id"])
    if call.method == "GET":
        row = await pool.fetchrow(
            f"SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            task_id, user_id,
        )  # fmt: skip
    elif call.method == "DELETE":
        # A tombstone, as the API leaves.
        row = await pool.fetchrow(
            "UPDATE tasks SET deleted_at = $3, updated_at = $3, version = version + 1 "
            f"WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL AND {COUNTER_LOCKED} RETURNING id",
            task_id, user_id, datetime.now(UTC),
        )  # fmt: skip
        return Reply(204) if row else json({"detail": "not found"}, 404)
    else:
        body = orjson.loads(call.body)
        # If-Match: one strong tag, checked in the write, as the API does.
        match = call.headers.get("if-match", "").strip('"')
        version = int(match) if match.isdigit() else None
        row = await pool.fetchrow(
            "UPDATE tasks SET title = coalesce($3, title), completed = coalesce($4, completed), "
            "title_folded = coalesce(lower($3), title_folded), updated_at = $5, version = version + 1 "
            "WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL AND ($6::int IS NULL OR version = $6) "
            f"AND {COUNTER_LOCKED} RETURNING {COLUMNS}",
            task_id, user_id, body.get("title"), body.get("completed"), datetime.now(UTC), version,
        )  # fmt: skip
    if row is None:
        return json({"detail": "not found"}, 404)
    return with_etag(row)


def with_etag(row: asyncpg.Record) -> Reply:
    response = json(task(row))
    response.headers["etag"] = f'"{row["version"]}"'
    return response


async def changes(call: Call) -> Reply:
    """A full sync's page: the live tasks in change order, as the API reads them."""
    user_id = owner(call)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    limit = int(call.query.get("limit", 100))
    # The page and the owner's change counter from one read, as the API reads them.
    rows = await pool.fetch(
        "SELECT counter.seq AS counter_seq, page.* FROM (SELECT $1::text AS user_id) AS owner "
        "LEFT JOIN change_counters AS counter ON counter.user_id = owner.user_id "
        f"LEFT JOIN (SELECT {COLUMNS}, change_seq FROM tasks WHERE user_id = $1 AND deleted_at IS NULL "
        "AND change_seq > 0 ORDER BY change_seq LIMIT $2) AS page ON true ORDER BY page.change_seq",
        user_id, limit + 1,
    )  # fmt: skip
    counter = (rows[0]["counter_seq"] if rows else None) or 0
    rows = [row for row in rows if row["id"] is not None]
    page = rows[:limit]
    last = (
        page[-1]["change_seq"] if len(rows) > limit else max(counter, page[-1]["change_seq"] if page else 0)
    )
    since = base64.urlsafe_b64encode(orjson.dumps({"n": last, "t": int(time.time())})).decode().rstrip("=")
    # The lists changed up to where the page ends, in a second read, as the API reads them.
    lists = await pool.fetch(
        "SELECT id, name, position, inbox, created_at, updated_at, version, "
        "(SELECT count(*) FROM tasks WHERE tasks.list_id = task_lists.id AND tasks.deleted_at IS NULL) "
        "AS task_count, (SELECT count(*) FROM tasks WHERE tasks.list_id = task_lists.id "
        "AND tasks.deleted_at IS NULL AND NOT tasks.completed) AS pending_count "
        "FROM task_lists WHERE user_id = $1 AND change_seq > -1 AND change_seq <= $2 AND deleted_at IS NULL "
        "ORDER BY change_seq",
        user_id, last,
    )  # fmt: skip
    return json(
        {
            "tasks": [task(row) for row in page],
            "deleted": [],
            "lists": [
                {**dict(row), "created_at": stamp(row["created_at"]), "updated_at": stamp(row["updated_at"])}
                for row in lists
            ],
            "deleted_lists": [],
            "next_since": since,
            "has_more": len(rows) > limit,
        }
    )


async def toggle(call: Call) -> Reply:
    user_id = owner(call)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    row = await pool.fetchrow(
        # $3's type said once: PostgreSQL deduces text from the CASE otherwise, and
        # refuses to prepare the statement.
        "UPDATE tasks SET completed = NOT completed, updated_at = $3::timestamptz, version = version + 1, "
        "completed_at = CASE WHEN completed THEN NULL ELSE $3 END "
        f"WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL AND {COUNTER_LOCKED} "
        f"RETURNING {COLUMNS}",
        int(call.params["task_id"]), user_id, datetime.now(UTC),
    )  # fmt: skip
    return with_etag(row) if row else json({"detail": "not found"}, 404)


async def move(call: Call) -> Reply:
    """A move after a sibling, as the API makes one: the counter locked, the task and its new
    neighbours read, a key between them (the same package), one row written; in one transaction."""
    user_id = owner(call)
    if user_id is None:
        return json({"detail": "unauthorised"}, 401)
    task_id = int(call.params["task_id"])
    after_id = orjson.loads(call.body).get("after_id")
    async with pool.acquire() as connection, connection.transaction():
        seq = await connection.fetchval(
            "SELECT seq FROM change_counters WHERE user_id = $1 FOR UPDATE", user_id
        )
        moved = await connection.fetchrow(
            "SELECT list_id, parent_id, version, recurrence, position FROM tasks "
            "WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            task_id, user_id,
        )  # fmt: skip
        if moved is None or seq is None:
            return json({"detail": "not found"}, 404)
        siblings = "list_id = $1 AND parent_id IS NULL AND user_id = $2 AND deleted_at IS NULL AND id <> $3"
        lower = await connection.fetchval(
            f"SELECT position FROM tasks WHERE {siblings} AND id = $4",
            moved["list_id"], user_id, task_id, after_id,
        )  # fmt: skip
        if lower is None:
            return json({"detail": "after_id is not a sibling"}, 422)
        upper = await connection.fetchval(
            f"SELECT min(position) FROM tasks WHERE {siblings} AND position > $4",
            moved["list_id"], user_id, task_id, lower,
        )  # fmt: skip
        position = f"r{seq + 1:018d}" if upper is None else generate_key_between(lower, upper)
        if len(position) > REBALANCE_AT:
            return json({"detail": "the ceiling does not rebalance"}, 500)
        row = await connection.fetchrow(
            "UPDATE tasks SET list_id = $3, parent_id = NULL, position = $4, updated_at = $5, "
            "version = version + 1 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL "
            f"RETURNING {COLUMNS}",
            task_id, user_id, moved["list_id"], position, datetime.now(UTC),
        )  # fmt: skip
    assert row is not None  # the counter is held: nothing deleted it since it was read
    return with_etag(row)


async def keep_session(_connection: asyncpg.Connection) -> None:
    return None


@asynccontextmanager
async def lifespan(_app: Starlette | None) -> AsyncIterator[None]:
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


def headers_sent(reply: Reply) -> dict[str, str]:
    """What the API sends with every answer besides the route's own headers."""
    return {
        **reply.headers,
        "x-content-type-options": "nosniff",
        "cache-control": "no-store",
        "vary": "Origin",
        "x-request-id": os.urandom(16).hex(),
    }


Handler = Callable[[Call], Awaitable[Reply]]


def starlette_route(path: str, handler: Handler, methods: list[str]) -> Route:
    async def endpoint(request: Request) -> Response:
        call = Call(
            request.method,
            {name: str(value) for name, value in request.path_params.items()},
            Query(request.scope["query_string"]),
            request.headers,
            await request.body(),
        )
        reply = await handler(call)
        return Response(
            reply.body,
            status_code=reply.status,
            headers=headers_sent(reply),
            media_type="application/json" if reply.body else None,
        )

    return Route(path, endpoint, methods=methods)


app = Starlette(
    routes=[
        starlette_route("/api/{user_id}/tasks", tasks, ["GET", "POST"]),
        starlette_route("/api/{user_id}/tasks/changes", changes, ["GET"]),
        starlette_route("/api/{user_id}/tasks/{task_id:int}", one_task, ["GET", "PUT", "PATCH", "DELETE"]),
        starlette_route("/api/{user_id}/tasks/{task_id:int}/complete", toggle, ["PATCH"]),
        starlette_route("/api/{user_id}/tasks/{task_id:int}/move", move, ["POST"]),
    ],
    lifespan=lifespan,
)


async def raw_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The same routes as `app`, with nothing between the server and the handlers: the path
    split by hand, the headers read from the scope, the answer sent as two messages."""
    if scope["type"] == "lifespan":
        await raw_lifespan(receive, send)
        return
    parts = scope["path"].split("/")
    handler = route(parts[4:]) if len(parts) >= 4 and parts[1] == "api" and parts[3] == "tasks" else None
    if handler is None:
        await answer(send, Reply(404, b'{"detail":"not found"}'))
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    params = {"user_id": parts[2]}
    if len(parts) > 4:
        params["task_id"] = parts[4]
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    call = Call(scope["method"], params, Query(scope["query_string"]), headers, body)
    await answer(send, await handler(call))


def route(rest: list[str]) -> Handler | None:
    if not rest:
        return tasks
    if rest == ["changes"]:
        return changes
    if not rest[0].isdigit():
        return None
    return {1: one_task}.get(len(rest)) or {"complete": toggle, "move": move}.get(
        rest[1] if len(rest) == 2 else ""
    )


async def answer(send: Send, reply: Reply) -> None:
    headers = [(name.encode(), value.encode()) for name, value in headers_sent(reply).items()]
    if reply.body:
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def raw_lifespan(receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    async with lifespan(None):
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
    await send({"type": "lifespan.shutdown.complete"})
