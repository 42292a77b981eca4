"""`make bench`: the API and the ceiling app, back to back under wrk, on a PostgreSQL database of their own.

Prints one table (req/s, p50, p99, non-2xx, and our req/s and p99 divided by
the ceiling's; each the median of alternating rounds) and writes the same, with
every run, as JSON under bench/results/. Every wrk run is
bounded by --duration and stops by itself; traffic goes to loopback only.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psycopg
import uvloop
from psycopg import sql

from backend.auth.tokens import issue_token
from backend.edge.access_log import logging_config
from backend.store import task_tree
from backend.store.database import Query
from backend.store.positions import FIRST_POSITION, between
from backend.store.task_filters import WALK_SHARE, TaskFilters, list_query, total_query
from bench.open_loop import run_open_loop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret-" + uuid.uuid4().hex  # only ever used by this run
USERS = 100
TASKS_PER_USER = 100
BIG_USER_TASKS = 100_000
DELETE_POOL = 60_000
WRK_THREADS = 2
WARM_UP_SECONDS = 3
OPERATIONS = [
    "LIST",
    "GET",
    "CREATE",
    "PATCH",
    "TOGGLE",
    "DELETE",
    "MIXED",
    "LIST_FILTERED",
    "CREATE_TAGS",
    "CREATE_KEYED",
    "PATCH_IF_MATCH",
    "SYNC_100",
    "MOVE",
    "LIST_IN_LIST",
]

# What each operation's requests look like, in wrk's Lua. `pick()` chooses a
# seeded user and one of their seeded tasks; the prelude defines it.
REQUESTS = {
    "LIST": 'local u = pick() return wrk.format("GET", base(u), auth(u))',
    "GET": 'local u, t = pick() return wrk.format("GET", base(u) .. "/" .. t, auth(u))',
    "CREATE": 'local u = pick() return wrk.format("POST", base(u), auth(u), \'{"title":"benchmark task"}\')',
    "PATCH": 'local u, t = pick() return wrk.format("PATCH", base(u) .. "/" .. t, auth(u), \'{"title":"patched"}\')',
    "TOGGLE": 'local u, t = pick() return wrk.format("PATCH", base(u) .. "/" .. t .. "/complete", auth(u))',
    "DELETE": 'local u, t = next_doomed() return wrk.format("DELETE", base(u) .. "/" .. t, auth(u))',
    "MIXED": """local u, t = pick() local r = math.random(100)
        if r <= 40 then return wrk.format("GET", base(u) .. "/" .. t, auth(u)) end
        if r <= 60 then return wrk.format("GET", base(u) .. "?limit=20", auth(u)) end
        if r <= 80 then return wrk.format("PATCH", base(u) .. "/" .. t, auth(u), '{"title":"mixed"}') end
        if r <= 90 then return wrk.format("POST", base(u), auth(u), '{"title":"mixed"}') end
        return wrk.format("PATCH", base(u) .. "/" .. t .. "/complete", auth(u))""",
    # Pending, high or medium priority, tagged `work`, a word searched, soonest due first.
    "LIST_FILTERED": 'local u = pick() return wrk.format("GET", base(u) .. '
    '"?status=pending&priority=high&priority=medium&tag=work&q=task&sort=due&limit=20", auth(u))',
    "CREATE_TAGS": 'local u = pick() return wrk.format("POST", base(u), auth(u), '
    '\'{"title":"benchmark task","tags":["work","errands","Home"]}\')',
    # A key of its own for every request (the run's start time, the thread, a counter).
    "CREATE_KEYED": "local u = pick() keyed = keyed + 1 "
    'return wrk.format("POST", base(u), with_key(auth(u), run_id .. "-" .. thread_index .. "-" .. keyed), '
    '\'{"title":"benchmark task"}\')',
    # Each a fresh task (version 1), patched once with its ETag.
    "PATCH_IF_MATCH": 'local u, t = next_doomed() return wrk.format("PATCH", base(u) .. "/" .. t, '
    'with_match(auth(u), \'"1"\'), \'{"title":"patched"}\')',
    # A full sync's first page: a user's 100 tasks.
    "SYNC_100": 'local u = pick() return wrk.format("GET", base(u) .. "/changes?limit=100", auth(u))',
    # A task put after another of its user's (both in their Inbox's top level).
    "MOVE": """local u, t = pick() local a = t
        while a == t do a = first_task + (u - 1) * per_user + math.random(0, per_user - 1) end
        return wrk.format("POST", base(u) .. "/" .. t .. "/move", auth(u), '{"after_id":' .. a .. '}')""",
    # A list of 10,000 tasks in the order people choose, its top level's first page.
    "LIST_IN_LIST": 'return wrk.format("GET", "/api/bench-big/tasks?list_id=" .. big_list .. '
    '"&parent_id=none&sort=position&limit=100", big_auth)',
    "LIST_100K": 'return wrk.format("GET", "/api/bench-big/tasks", big_auth)',
    "LIST_100K_OFFSET": 'return wrk.format("GET", "/api/bench-big/tasks?offset=10000", big_auth)',
    "GET_100K": 'return wrk.format("GET", "/api/bench-big/tasks/" .. (big_first + math.random(0, 99999)), big_auth)',
}

LUA_PRELUDE = """
local users, tokens = {users}, {tokens}
local first_task, per_user = {first_task}, {per_user}
local doomed_first, doomed_count = {doomed_first}, {doomed_count}
big_first, big_auth = {big_first}, {{["Authorization"] = "Bearer {big_token}"}}
big_list = {big_list}
local thread_count, started = {threads}, 0
function setup(thread)
  thread:set("thread_index", started)
  started = started + 1
end
function init(args)
  math.randomseed(os.time() + thread_index * 7919)
  doomed_next = thread_index
end
function base(u) return "/api/" .. users[u] .. "/tasks" end
keyed, run_id = 0, tostring(os.time()) .. tostring(math.random(1000000))
function with_key(headers, key) headers["Idempotency-Key"] = key return headers end
function with_match(headers, tag) headers["If-Match"] = tag return headers end
function auth(u)
  return {{["Authorization"] = "Bearer " .. tokens[u], ["Content-Type"] = "application/json"}}
end
function pick()
  local u = math.random(#users)
  return u, first_task + (u - 1) * per_user + math.random(0, per_user - 1)
end
function next_doomed()
  local k = doomed_next
  doomed_next = doomed_next + thread_count
  return (k % #users) + 1, doomed_first + k
end
function request() {request} end
function done(summary, latency, requests)
  io.write(string.format('RESULT {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non_2xx": %d, "socket_errors": %d}}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
"""


@dataclass
class Measurement:
    app: str
    operation: str
    workers: int
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


@dataclass
class Seed:
    users: list[str]
    first_task: int
    big_first: int
    big_list: int = 0
    doomed_first: int = 0


def admin_url() -> str:
    return os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    name = f"todo_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin_url().rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def seed(url: str) -> Seed:
    users = [f"bench-user-{i:03d}" for i in range(USERS)]
    with psycopg.connect(url, autocommit=True) as connection:
        # Bulk loading: per-row counter triggers off, counters set once at the end.
        connection.execute("SET session_replication_role = replica")
        connection.execute(
            "INSERT INTO users (id, created_at) SELECT unnest(%s::text[]), now()", ([*users, "bench-big"],)
        )
        first = connection.execute("SELECT coalesce(max(id), 0) + 1 FROM tasks").fetchone()[0]  # type: ignore[index]
        # Contiguous ids per user: user i owns first + i*100 ... first + i*100 + 99.
        # Every task has a priority, most a due date, and every third the tag `work`.
        connection.execute(
            "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at, priority, "
            "due_at, title_folded, description_folded) "
            "SELECT u, 'task ' || n, 'seeded', mod(n, 3) = 0, now() - make_interval(secs => n), now(), mod(n, 4), "
            "CASE WHEN mod(n, 5) = 0 THEN NULL ELSE now() + make_interval(hours => n) END, 'task ' || n, 'seeded' "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS users(u, i), generate_series(1, %s) AS n "
            "ORDER BY i, n",
            (users, TASKS_PER_USER),
        )
        big_first = connection.execute("SELECT max(id) + 1 FROM tasks").fetchone()[0]  # type: ignore[index]
        # One task in 10,000 mentions a zebrafish: what a selective search finds.
        connection.execute(
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at, priority, due_at, "
            "title_folded) "
            "SELECT 'bench-big', CASE WHEN mod(n, 10000) = 0 THEN 'zebrafish ' ELSE 'big task ' END || n, "
            "mod(n, 2) = 0, now() - make_interval(secs => n), now(), mod(n, 4), "
            "CASE WHEN mod(n, 5) = 0 THEN NULL ELSE now() + make_interval(mins => n) END, "
            "CASE WHEN mod(n, 10000) = 0 THEN 'zebrafish ' ELSE 'big task ' END || n "
            "FROM generate_series(1, %s) AS n ORDER BY n",
            (BIG_USER_TASKS,),
        )
        connection.execute(
            "INSERT INTO tags (user_id, name, name_folded) SELECT u, t, lower(t) "
            "FROM unnest(%s::text[]) AS u, unnest(ARRAY['work', 'errands', 'Home']) AS t",
            ([*users, "bench-big"],),
        )
        connection.execute(
            "INSERT INTO task_tags (task_id, tag_id) SELECT tasks.id, tags.id FROM tasks "
            "JOIN tags ON tags.user_id = tasks.user_id AND tags.name = 'work' WHERE mod(tasks.id, 3) = 0"
        )
        into_inboxes(connection, [*users, "bench-big"])
        recount(connection)
        # Numbered for sync, as the migration numbers existing tasks (the triggers are off here).
        connection.execute(
            "UPDATE tasks SET change_seq = numbered.n FROM (SELECT id, row_number() OVER "
            "(PARTITION BY user_id ORDER BY id) AS n FROM tasks) AS numbered WHERE tasks.id = numbered.id"
        )
        connection.execute(
            "INSERT INTO change_counters (user_id, seq) SELECT user_id, max(change_seq) FROM tasks "
            "GROUP BY user_id ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq"
        )
        # Each task last as it was made (the key of its change number, as the trigger gives it).
        connection.execute("UPDATE tasks SET position = 'r' || lpad(change_seq::text, 18, '0')")
        # The big user's list of 10,000 tasks, the first of them with nine subtasks.
        big_list = connection.execute(
            "INSERT INTO task_lists (user_id, name, name_folded, position, created_at, updated_at) "
            "VALUES ('bench-big', 'Big list', 'big list', 'a1', now(), now()) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        connection.execute(
            "UPDATE tasks SET list_id = %s WHERE id >= %s AND id < %s",
            (big_list, big_first, big_first + 10_000),
        )
        connection.execute(
            "UPDATE tasks SET parent_id = %s WHERE id > %s AND id < %s",
            (big_first, big_first, big_first + 10),
        )
        connection.execute("VACUUM ANALYZE tasks")
        connection.execute("VACUUM ANALYZE tags")
        connection.execute("VACUUM ANALYZE task_tags")
    return Seed(users, first, big_first, big_list)


def into_inboxes(connection: psycopg.Connection[tuple[object, ...]], users: list[str]) -> None:
    """Each user's Inbox (as their first write makes it), and every task without a list in it."""
    connection.execute(
        "INSERT INTO task_lists (user_id, name, name_folded, position, inbox, created_at, updated_at, version) "
        "SELECT unnest(%s::text[]), 'Inbox', 'inbox', %s, true, now(), now(), 1 "
        "ON CONFLICT (user_id) WHERE inbox DO NOTHING",
        (users, FIRST_POSITION),
    )
    connection.execute(
        "UPDATE tasks SET list_id = task_lists.id FROM task_lists "
        "WHERE task_lists.user_id = tasks.user_id AND task_lists.inbox AND tasks.list_id IS NULL"
    )


def recount(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    connection.execute(
        "UPDATE users SET task_count = c.n, completed_count = c.done FROM "
        "(SELECT user_id, count(*) AS n, count(*) FILTER (WHERE completed) AS done FROM tasks GROUP BY user_id) c "
        "WHERE users.id = c.user_id"
    )


def seed_doomed(url: str, state: Seed) -> None:
    """Fresh tasks (version 1) for DELETE to remove and PATCH_IF_MATCH to patch once: task
    doomed_first + k belongs to user k mod USERS. Ids are read back from the insert, not
    guessed from max(id): a rolled-back insert leaves the sequence ahead."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET session_replication_role = replica")
        ids = connection.execute(
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) "
            "SELECT (%s::text[])[mod(k, %s) + 1], 'doomed', false, now(), now() "
            "FROM generate_series(0, %s) AS k ORDER BY k RETURNING id",
            (state.users, USERS, DELETE_POOL - 1),
        ).fetchall()
        into_inboxes(connection, state.users)
        # First in their Inbox's order (a key below every numbered one), never in a move's way.
        connection.execute(
            "UPDATE tasks SET position = 'q' || lpad(id::text, 17, '0') WHERE position IS NULL"
        )
        state.doomed_first = min(row[0] for row in ids)
        assert max(row[0] for row in ids) == state.doomed_first + DELETE_POOL - 1  # contiguous
        recount(connection)


def explain_big_list(url: str) -> str:
    """EXPLAIN (ANALYZE) of the API's own list statements for the 100,000-task user: the
    first page and one at offset 10,000; then a selective search, a tag filter and sort=due,
    each page with the count that gives its X-Total-Count."""
    now = datetime.now(UTC)
    variants: list[tuple[str, TaskFilters, Any, Any]] = [
        ("the first page", TaskFilters(), "created", "desc"),
        ("a selective search (q=zebrafish)", TaskFilters(words=("zebrafish",)), "created", "desc"),
        ("a tag filter (tag=work)", TaskFilters(tags=("work",)), "created", "desc"),
        ("sort=due", TaskFilters(), "due", "asc"),
        (
            "sort=due, pending, priority high",
            TaskFilters(status="pending", priorities=frozenset({"high"})),
            "due",
            "asc",
        ),
    ]

    async def explain() -> list[str]:
        connection = await asyncpg.connect(url)
        try:
            plans = []
            for name, filters, sort, order in variants:
                shape = filters.shape()
                parameters = {"owner_id": "bench-big", "limit": 100, **filters.parameters(now)}
                if filters.tags:  # as the API reads it: the count first, which decides the page's plan
                    counted = await connection.fetchrow(
                        total_query(shape).sql, *total_query(shape).arguments(parameters)
                    )
                    assert counted is not None
                    shape = replace(shape, walk=counted["total"] >= WALK_SHARE * counted["owned"])
                statements = [(list_query(filters.status, sort, order, shape), {**parameters, "offset": 0})]
                if name == "the first page":
                    statements.append((statements[0][0], {**parameters, "offset": 10_000}))
                elif not filters.only_status:
                    statements.append((total_query(filters.shape()), parameters))
                total_ms = 0.0
                for query, values in statements:
                    # The very SQL the API sends, with the same parameters.
                    rows = await connection.fetch(
                        f"EXPLAIN (ANALYZE, BUFFERS) {query.sql}", *query.arguments(values)
                    )
                    lines = [row[0] for row in rows]
                    total_ms += float(lines[-1].split(":")[1].split()[0])
                    plans.append(
                        f"-- {name}"
                        + (" (offset 10,000)" if values.get("offset") else "")
                        + "\n"
                        + "\n".join(lines)
                    )
                if len(statements) == 2 and name != "the first page":
                    plans.append(f"-- {name}: page and count together {total_ms:.2f} ms")
            return plans
        finally:
            await connection.close()

    plans = asyncio.run(explain())
    return "\n".join(plans)


def explain_tree(url: str, state: Seed) -> str:
    """EXPLAIN (ANALYZE) of the tree's statements for the big user: their list of 10,000 tasks in
    position order (its top level, and the count), one task's subtasks, and every statement of a
    move (in a transaction rolled back)."""
    now = datetime.now(UTC)
    variants: list[tuple[str, TaskFilters]] = [
        (
            "a list of 10,000 in position order (top level)",
            TaskFilters(list_id=state.big_list, parent="none"),
        ),
        ("a task's subtasks in position order", TaskFilters(parent=state.big_first)),
    ]
    first, second = state.big_first + 100, state.big_first + 200
    move: dict[str, Any] = {
        "owner_id": "bench-big",
        "task_id": first,
        "moved_id": first,
        "after_id": second,
        "to_list_id": state.big_list,
        "to_parent_id": None,
        "now": now,
    }

    async def explain() -> list[str]:
        connection = await asyncpg.connect(url)
        plans = []

        async def analyse(name: str, query: Query, values: dict[str, Any]) -> dict[str, Any]:
            rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query.sql}", *query.arguments(values))
            plans.append(f"-- {name}\n" + "\n".join(row[0] for row in rows))
            found = (
                await connection.fetchrow(query.sql, *query.arguments(values)) if "SELECT" in name else None
            )
            return dict(found) if found else {}

        try:
            for name, filters in variants:
                values = {"owner_id": "bench-big", "limit": 100, "offset": 0, **filters.parameters(now)}
                await analyse(name, list_query(filters.status, "position", "asc", filters.shape()), values)
                await analyse(f"{name}: its count", total_query(filters.shape()), values)
            transaction = connection.transaction()
            await transaction.start()
            try:
                await analyse("a move: the counter locked (SELECT)", task_tree.LOCK_COUNTER, move)
                await analyse("a move: the task read (SELECT)", task_tree._MOVED, move)
                lower = await analyse("a move: the sibling it follows (SELECT)", task_tree._TOP.after, move)
                upper = await analyse(
                    "a move: the next sibling up (SELECT)",
                    task_tree._TOP.next_up,
                    {**move, "lower": lower["position"]},
                )
                upper_key = next(iter(upper.values()), None)
                key = between(lower["position"], upper_key) if upper_key else "r9"
                await analyse("a move: the one row written", task_tree._PUT, {**move, "new_position": key})
            finally:
                await transaction.rollback()
            return plans
        finally:
            await connection.close()

    return "\n".join(asyncio.run(explain()))


def lua_script(directory: Path, operation: str, state: Seed) -> Path:
    tokens = [issue_token(SECRET, user, lifetime=timedelta(hours=2)) for user in state.users]
    text = LUA_PRELUDE.format(
        users="{" + ",".join(f'"{u}"' for u in state.users) + "}",
        tokens="{" + ",".join(f'"{t}"' for t in tokens) + "}",
        first_task=state.first_task,
        per_user=TASKS_PER_USER,
        doomed_first=state.doomed_first,
        doomed_count=DELETE_POOL,
        big_first=state.big_first,
        big_list=state.big_list,
        big_token=issue_token(SECRET, "bench-big", lifetime=timedelta(hours=2)),
        request=REQUESTS[operation],
        threads=WRK_THREADS,
    )
    path = directory / f"{operation.lower()}.lua"
    path.write_text(text)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# The hand-written apps measured against: Starlette's, and the raw ASGI one (bench/ceiling.py).
CEILINGS = {"ceiling": "bench.ceiling:app", "raw": "bench.ceiling:raw_app"}


@contextlib.contextmanager
def serve(
    app: str, url: str, workers: int, log: Path, against: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The API, or a ceiling (`CEILINGS`); or, with `against`, the API of the checkout there
    in the ceiling's place (the same environment, its own code)."""
    port = free_port()
    # The per-user rate limit is off (RATE_LIMIT_PER_SECOND=0): wrk sends each seeded
    # user's requests far faster than any person, and a 429 is not the work measured.
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BETTER_AUTH_SECRET": SECRET,
        "LOG_LEVEL": "info",
        "RATE_LIMIT_PER_SECOND": "0",
    }
    cwd = ROOT
    if app == "api":
        command = [str(Path(sys.executable).parent / "todo-api"), "serve", "--port", str(port)]
    elif app == "granian":
        # The API itself under Granian, for `--ceilings granian`: not a dependency, so from
        # an environment of its own (BENCH_GRANIAN: its `granian`), given this checkout's.
        site_packages = next(Path(sys.prefix).glob("lib/python*/site-packages"))
        env["PYTHONPATH"] = f"{ROOT}:{site_packages}"
        # The API's own logging (the JSON access line), not Granian's default handlers.
        log_config = dict(logging_config("info"))
        log_config["formatters"] = {"json": {"()": "backend.edge.access_log.JsonFormatter"}}
        (log.parent / "granian-logging.json").write_text(json.dumps(log_config))
        command = [
            os.environ.get("BENCH_GRANIAN") or "granian", "--interface", "asgi", "--factory",
            "--log-config", str(log.parent / "granian-logging.json"),
            "backend.app:create_app", "--port", str(port), "--http", "1", "--no-ws", "--loop", "uvloop",
            "--log-level", "warning", "--http1-buffer-size", "16384", "--http1-header-read-timeout", "10000",
        ]  # fmt: skip
    elif against is not None:
        command = [sys.executable, "-c", "import sys; from backend.cli import main; sys.exit(main())"]
        command += ["serve", "--port", str(port)]
        env["PYTHONPATH"] = str(against)
        cwd = against
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            CEILINGS[app],
            "--port",
            str(port),
            "--no-access-log",
            "--no-server-header",  # as the API
        ]
        command += ["--log-level", "warning"]
    command += ["--workers", str(workers)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/api/x/tasks", timeout=1).status_code in (401, 403):
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{app} did not start:\n{log.read_text()}")
        yield base, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def serving(
    url: str, workers: int, directory: Path, rivals: list[str], state: Seed, against: Path | None
) -> Iterator[tuple[list[tuple[str, str]], subprocess.Popen[bytes]]]:
    """The API and its rivals, each warmed up: [(name, base URL)], and the API's process."""
    with contextlib.ExitStack() as servers:
        api, api_process = servers.enter_context(serve("api", url, workers, directory / f"api-{workers}.log"))
        apps = [("api", api)] + [
            (
                rival,
                servers.enter_context(
                    serve(rival, url, workers, directory / f"{rival}-{workers}.log", against)
                )[0],
            )
            for rival in rivals
        ]
        # Unmeasured: every app opens its pool and prepares its statements
        # before anything is timed, so no first cell pays for a cold start.
        for _, base in apps:
            wrk(base, lua_script(directory, "MIXED", state), 32, WARM_UP_SECONDS)
        yield apps, api_process


@contextlib.contextmanager
def delayed(url: str, delay_ms: float) -> Iterator[tuple[str, float]]:
    """The database at `url` behind bench/delay_proxy.py: its URL, and the round trip a
    statement then takes (the median of 200 `SELECT 1`s, in ms)."""
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "bench.delay_proxy", "--port", str(port), "--delay-ms", str(delay_ms)],
        cwd=ROOT,
    )
    far = url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    assert far != url, "the bench database is expected at 127.0.0.1:5432"

    async def round_trip() -> float:
        for _ in range(50):
            try:
                connection = await asyncpg.connect(far)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the delay proxy did not start")
        try:
            times = []
            for _ in range(200):
                started = time.perf_counter()
                await connection.fetchval("SELECT 1")
                times.append((time.perf_counter() - started) * 1000)
            return round(statistics.median(times), 2)
        finally:
            await connection.close()

    try:
        yield far, asyncio.run(round_trip())
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


# What the open-loop runs send: raw HTTP/1.1, as wrk's scripts build them.
def raw_requests(operation: str, state: Seed, count: int = 2000) -> list[bytes]:
    rng = random.Random(7)  # noqa: S311 - a repeatable choice of tasks, not a secret
    tokens = {user: issue_token(SECRET, user, lifetime=timedelta(hours=2)) for user in state.users}
    made = []
    for _ in range(count):
        index = rng.randrange(len(state.users))
        user = state.users[index]
        task = state.first_task + index * TASKS_PER_USER + rng.randrange(TASKS_PER_USER)
        method, path, body = {
            "GET": ("GET", f"/api/{user}/tasks/{task}", b""),
            "LIST": ("GET", f"/api/{user}/tasks", b""),
            "CREATE": ("POST", f"/api/{user}/tasks", b'{"title":"benchmark task"}'),
            "TOGGLE": ("PATCH", f"/api/{user}/tasks/{task}/complete", b""),
        }[operation]
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tokens[user]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        made.append(head.encode() + body)
    return made


def open_loop_phase(
    apps: list[tuple[str, str]],
    state: Seed,
    maxima: dict[str, float],
    args: argparse.Namespace,
    round_trip_ms: float | None,
) -> list[dict[str, Any]]:
    """Each operation at a constant rate, a share of the API's closed-loop maximum, offered to
    every app in turn (the same load to each): their latency percentiles. With the database
    far away (`round_trip_ms`), at half the maximum only."""
    rows = []
    shares = (0.5,) if round_trip_ms is not None else (0.5, 0.8)
    for operation, maximum in maxima.items():
        requests = raw_requests(operation, state)
        for share in shares:
            rate = round(maximum * share)
            for app, base in apps:
                port = int(base.rsplit(":", 1)[1])
                result = uvloop.run(
                    run_open_loop("127.0.0.1", port, requests, rate=rate, seconds=args.open_seconds)
                )
                row = {"operation": operation, "app": app, "share": share, "round_trip_ms": round_trip_ms}
                rows.append(row | asdict(result))
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def wrk(base: str, script: Path, connections: int, duration: int) -> dict[str, int]:
    result = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    parsed: dict[str, int] = json.loads(line.removeprefix("RESULT "))
    return parsed


def rss_mb(process: subprocess.Popen[bytes]) -> float:
    """Resident memory of the server's workers (children of the supervisor, or the process itself)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    pids = [int(pid) for pid in children] or [process.pid]
    sizes = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return round(max(sizes), 1)


def measure(
    app: str, operation: str, base: str, script: Path, workers: int, connections: int, duration: int
) -> Measurement:
    raw = wrk(base, script, connections, duration)
    seconds = raw["duration_us"] / 1e6
    return Measurement(
        app=app,
        operation=operation,
        workers=workers,
        connections=connections,
        requests_per_second=round(raw["requests"] / seconds, 1),
        p50_ms=round(raw["p50_us"] / 1000, 2),
        p99_ms=round(raw["p99_us"] / 1000, 2),
        non_2xx=raw["non_2xx"],
        socket_errors=raw["socket_errors"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", default="32,128")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating API/ceiling runs per cell; the table shows their medians (default 3)",
    )
    parser.add_argument(
        "--ceilings",
        default="ceiling,raw",
        help="the apps to measure against: ceiling (Starlette), raw (bare ASGI), default both; "
        "or granian, the API itself under Granian (BENCH_GRANIAN names its binary)",
    )
    parser.add_argument(
        "--against",
        metavar="COMMIT",
        help="serve the API of an earlier commit in the ceiling's place: this API against that one, "
        "in the same alternating rounds (a ratio near 1 means no slower)",
    )
    parser.add_argument(
        "--open-loop",
        default="GET,LIST,CREATE,TOGGLE",
        help="operations then sent open-loop, at 50%% and 80%% of the API's closed-loop maximum "
        "(1 worker, 32 connections, which must be measured too); empty for none",
    )
    parser.add_argument("--open-seconds", type=int, default=10, help="seconds per open-loop run (default 10)")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=2.0,
        help="the open-loop runs again with the database this far away each way (bench/delay_proxy.py); "
        "0 for none (default 2)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (make bench installs it: apt-get install wrk)", file=sys.stderr)
        return 2
    operations = args.operations.split(",")
    wanted_open = [name for name in args.open_loop.split(",") if name]
    if wanted_open and not (
        set(wanted_open) <= set(operations)
        and "1" in args.workers.split(",")
        and "32" in args.connections.split(",")
    ):
        print(
            "error: --open-loop needs its operations measured with 1 worker and 32 connections",
            file=sys.stderr,
        )
        return 2
    results: list[Measurement] = []
    latency_rows: list[dict[str, Any]] = []
    memory: dict[str, list[float]] = {}
    with bench_database() as url, tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        against = None
        if args.against:
            against = directory / "against"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(against), args.against],
                check=True,
            )
        env = {**os.environ, "DATABASE_URL": url}
        subprocess.run([str(Path(sys.executable).parent / "todo-api"), "migrate"], env=env, check=True)
        state = seed(url)
        print(explain_big_list(url))
        print(explain_tree(url, state))
        rivals = ["ceiling"] if against is not None else args.ceilings.split(",")
        for workers in map(int, args.workers.split(",")):
            with serving(url, workers, directory, rivals, state, against) as (apps, api_process):
                extra = ["LIST_100K", "LIST_100K_OFFSET", "GET_100K"] if workers == 1 else []
                for connections in map(int, args.connections.split(",")):
                    for operation in operations + (extra if connections == 32 else []):
                        # The apps alternate, so a slow spell of a shared machine
                        # falls on all; the medians of the rounds are reported.
                        for _ in range(args.rounds):
                            for app, base in apps:
                                if operation in ("DELETE", "PATCH_IF_MATCH"):
                                    seed_doomed(url, state)
                                script = lua_script(directory, operation, state)
                                result = measure(
                                    app, operation, base, script, workers, connections, args.duration
                                )
                                results.append(result)
                                print(json.dumps(asdict(result)), file=sys.stderr)
                        memory.setdefault(f"workers={workers}", []).append(rss_mb(api_process))
        if wanted_open:
            # Every one was measured (checked before anything ran).
            measured = {
                operation: [
                    r.requests_per_second
                    for r in results
                    if (r.app, r.operation, r.workers, r.connections) == ("api", operation, 1, 32)
                ]
                for operation in wanted_open
            }
            maxima = {operation: statistics.median(runs) for operation, runs in measured.items()}
            with serving(url, 1, directory, rivals, state, against) as (apps, _):
                latency_rows += open_loop_phase(apps, state, maxima, args, None)
            if args.delay_ms > 0:
                with (
                    delayed(url, args.delay_ms) as (far_url, round_trip_ms),
                    serving(far_url, 1, directory, rivals, state, against) as (apps, _),
                ):
                    latency_rows += open_loop_phase(apps, state, maxima, args, round_trip_ms)
        if against is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(against)], check=True
            )
    failed = report(results, memory, args, latency_rows)
    if failed:
        # A ratio against an app that answered errors compares failures, not work.
        print(f"error: non-2xx answers or socket errors in {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


@dataclass
class Summary:
    """The median of a cell's rounds, for one app."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    failures: int  # non-2xx answers and socket errors, summed over the rounds


def summarise(runs: list[Measurement]) -> Summary:
    return Summary(
        requests_per_second=round(statistics.median(r.requests_per_second for r in runs), 1),
        p50_ms=round(statistics.median(r.p50_ms for r in runs), 2),
        p99_ms=round(statistics.median(r.p99_ms for r in runs), 2),
        failures=sum(r.non_2xx + r.socket_errors for r in runs),
    )


def report(
    results: list[Measurement],
    memory: dict[str, list[float]],
    args: argparse.Namespace,
    latency_rows: list[dict[str, Any]],
) -> list[str]:
    """Print and save the table; the cells where either app failed a request."""
    cells: dict[tuple[str, int, int], dict[str, list[Measurement]]] = {}
    for result in results:
        cell = cells.setdefault((result.operation, result.workers, result.connections), {})
        cell.setdefault(result.app, []).append(result)
    rows: list[dict[str, Any]] = []
    for (operation, workers, connections), runs in cells.items():
        ours = summarise(runs["api"])
        row: dict[str, Any] = {
            "operation": operation,
            "workers": workers,
            "connections": connections,
            "api_rps": ours.requests_per_second,
            "api_p50_ms": ours.p50_ms,
            "api_p99_ms": ours.p99_ms,
            "api_non_2xx": ours.failures,
        }
        # Against each rival: `ceiling_*` and `ratio` (Starlette's, or --against's), `raw_*`.
        for rival in (name for name in runs if name != "api"):
            top = summarise(runs[rival])
            prefix = "" if rival == "ceiling" else f"{rival}_"
            row |= {
                f"{rival}_rps": top.requests_per_second,
                f"{prefix}ratio": round(ours.requests_per_second / top.requests_per_second, 2),
                f"{rival}_p50_ms": top.p50_ms,
                f"{rival}_p99_ms": top.p99_ms,
                f"{prefix}p99_ratio": round(ours.p99_ms / top.p99_ms, 2),
                f"{rival}_non_2xx": top.failures,
            }
        rows.append(row)
    rivals = [
        key.removesuffix("_rps")
        for key in (rows[0] if rows else {})
        if key.endswith("_rps") and key != "api_rps"
    ]
    header = f"{'operation':<17}{'w':>2}{'conn':>5}{'api rps':>9}{'p50 ms':>8}{'p99 ms':>8}{'non2xx':>7}"
    for rival in rivals:
        header += f"{rival + ' rps':>12}{'ratio':>6}{'p99':>7}{'p99 x':>6}{'non2xx':>7}"
    print(f"medians of {args.rounds} alternating rounds of {args.duration} s per cell")
    if args.against:
        print(f"'ceiling' is the API at commit {args.against}, not the hand-written ceiling")
    else:
        print("'ceiling' is bench/ceiling.py on Starlette, 'raw' the same handlers as a bare ASGI app")
    print(
        "the API runs with its per-user rate limit off (RATE_LIMIT_PER_SECOND=0); everything else as shipped"
    )
    print(header)
    for row in rows:
        line = (
            f"{row['operation']:<17}{row['workers']:>2}{row['connections']:>5}{row['api_rps']:>9}"
            f"{row['api_p50_ms']:>8}{row['api_p99_ms']:>8}{row['api_non_2xx']:>7}"
        )
        for rival in rivals:
            prefix = "" if rival == "ceiling" else f"{rival}_"
            line += (
                f"{row[f'{rival}_rps']:>12}{row[f'{prefix}ratio']:>6}{row[f'{rival}_p99_ms']:>7}"
                f"{row[f'{prefix}p99_ratio']:>6}{row[f'{rival}_non_2xx']:>7}"
            )
        print(line)
    if latency_rows:
        print(
            f"open loop: a constant rate for {args.open_seconds} s, latency timed from when each request was due"
        )
        print(
            f"{'operation':<10}{'db rtt ms':>10}{'share':>6}{'rate':>7}{'app':>9}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'p99.9 ms':>9}{'non2xx':>7}{'errors':>7}"
        )
        for row in latency_rows:
            print(
                f"{row['operation']:<10}{row['round_trip_ms'] or '-':>10}{row['share']:>6}{row['rate']:>7}"
                f"{row['app']:>9}{row['p50_ms']:>8}{row['p99_ms']:>8}{row['p999_ms']:>9}{row['non_2xx']:>7}"
                f"{row['errors']:>7}"
            )
    print("worker RSS (MB) after each operation:", memory)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "when": stamp,
        "command": "make bench " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "duration_seconds": args.duration,
        "api_settings": {"RATE_LIMIT_PER_SECOND": "0"},
        "rounds": args.rounds,
        "against": args.against,
        "rows": rows,
        "open_loop": latency_rows,
        "runs": [asdict(result) for result in results],
        "worker_rss_mb": memory,
        "median_ratio": statistics.median(row["ratio"] for row in rows) if "ceiling" in rivals else None,
        "median_raw_ratio": statistics.median(row["raw_ratio"] for row in rows) if "raw" in rivals else None,
    }
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return [
        f"{row['operation']} (workers={row['workers']}, connections={row['connections']})"
        for row in rows
        if any(row[f"{name}_non_2xx"] for name in ("api", *rivals))
    ] + [
        f"open loop {row['operation']} at {row['share']} ({row['app']})"
        for row in latency_rows
        if row["non_2xx"] or row["errors"]
    ]


if __name__ == "__main__":
    sys.exit(main())
