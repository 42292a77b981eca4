"""Database faults: the real server, PostgreSQL behind a proxy that cuts, stalls and restores it.

While the database is away the API answers 503 problem+json with Retry-After,
fast; /health stays up; when it comes back the same process serves again; and
no write is ever half done or acknowledged without being stored.
"""

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from backend.auth.tokens import issue_token
from tests.conftest import SECRET, fresh_postgres_database, libpq_url, migrate
from tests.faults import FaultProxy, fault_proxy
from tests.processes import Server, running_server, server_env

pytestmark = pytest.mark.anyio

DATABASE_TIMEOUT = 2.0
REQUEST_TIMEOUT = 4.0
# Connect or checkout timeout, plus the time to write the answer.
PROMPT = DATABASE_TIMEOUT + 2


@dataclass
class Setup:
    server: Server
    proxy: FaultProxy
    database_url: str


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with fresh_postgres_database() as database_url:
        migrate(database_url)
        url = make_url(database_url)
        with fault_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            env = server_env(
                proxied,
                DATABASE_TIMEOUT_SECONDS=str(DATABASE_TIMEOUT),
                REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT),
            )
            with running_server(env, tmp_path / "server.log") as server:
                yield Setup(server, proxy, database_url)


def problem_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"].isdigit()


async def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await call
    return response, time.perf_counter() - started


async def test_an_outage_is_a_prompt_503_and_the_same_process_recovers(setup: Setup) -> None:
    auth = {"Authorization": f"Bearer {issue_token(SECRET, 'alice')}"}
    async with httpx.AsyncClient(base_url=setup.server.base_url, headers=auth, timeout=30) as http:
        task = (await http.post("/api/alice/tasks", json={"title": "before"})).json()
        lines_before = len(setup.server.log_lines())

        setup.proxy.cut()
        calls = [
            http.get("/ready"),
            http.get("/api/alice/tasks"),
            http.post("/api/alice/tasks", json={"title": "during"}),
            http.get(f"/api/alice/tasks/{task['id']}"),
            http.patch(f"/api/alice/tasks/{task['id']}", json={"title": "during"}),
            http.patch(f"/api/alice/tasks/{task['id']}/complete"),
            http.delete(f"/api/alice/tasks/{task['id']}"),
        ]
        for call in calls:
            response, elapsed = await timed(call)
            problem_503(response)
            assert elapsed < PROMPT, f"{response.request.method} {response.request.url} took {elapsed:.1f} s"
        assert (await http.get("/health")).status_code == 200
        # A few lines per failed request at most: an outage must not flood the disk.
        assert len(setup.server.log_lines()) - lines_before <= 3 * len(calls)

        setup.proxy.restore()
        # Stale pooled connections are detected and replaced: no restart, no failed request.
        listed = await http.get("/api/alice/tasks")
        assert listed.status_code == 200
        assert [t["title"] for t in listed.json()] == ["before"]
        assert (await http.get("/ready")).status_code == 200


async def test_a_stalled_database_is_a_503_within_the_deadline(setup: Setup) -> None:
    auth = {"Authorization": f"Bearer {issue_token(SECRET, 'alice')}"}
    async with httpx.AsyncClient(base_url=setup.server.base_url, headers=auth, timeout=30) as http:
        assert (await http.get("/api/alice/tasks")).status_code == 200

        setup.proxy.stall()
        response, elapsed = await timed(http.get("/api/alice/tasks"))
        problem_503(response)
        assert elapsed < REQUEST_TIMEOUT + 1.5
        assert (await http.get("/health")).status_code == 200

        setup.proxy.restore()
        deadline = time.monotonic() + 10
        statuses = []
        while time.monotonic() < deadline:
            statuses.append((await http.get("/api/alice/tasks")).status_code)
            if statuses[-3:] == [200, 200, 200]:
                break
            await asyncio.sleep(0.2)
        assert statuses[-3:] == [200, 200, 200], statuses
        assert set(statuses) <= {200, 503}


async def stored_tasks(database_url: str) -> dict[str, dict[str, Any]]:
    """Every task in the database, by title (titles are unique in these tests); a deleted
    one is a tombstone, kept for sync, and not a task."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as connection:
        cursor = await connection.execute(
            "SELECT id, user_id, title, description, completed FROM tasks WHERE deleted_at IS NULL"
        )
        columns = ["id", "user_id", "title", "description", "completed"]
        return {row[2]: dict(zip(columns, row, strict=True)) async for row in cursor}


async def test_a_cut_in_the_middle_of_writes_leaves_no_partial_state(setup: Setup) -> None:
    auth = {"Authorization": f"Bearer {issue_token(SECRET, 'writer')}"}
    acknowledged: dict[str, dict[str, Any]] = {}
    unacknowledged: set[str] = set()
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(
        base_url=setup.server.base_url, headers=auth, timeout=30, limits=limits
    ) as http:
        # The writer's first write (it makes their Inbox, in a transaction of three statements)
        # before the cuts: the cuts are for the one-statement creates that follow.
        first = await http.post(
            "/api/writer/tasks", json={"title": "first", "description": "description of first"}
        )
        assert first.status_code == 201, first.text
        acknowledged["first"] = first.json()
        for round_number in range(5):

            async def create(i: int, round_number: int = round_number) -> None:
                title = f"round {round_number} task {i}"
                body = {"title": title, "description": f"description of {title}"}
                response = await http.post("/api/writer/tasks", json=body)
                if response.status_code == 201:
                    acknowledged[title] = response.json()
                else:
                    problem_503(response)
                    unacknowledged.add(title)

            async def cut_soon() -> None:
                await asyncio.sleep(random.uniform(0.0, 0.05))
                setup.proxy.cut()
                await asyncio.sleep(0.3)
                setup.proxy.restore()

            await asyncio.gather(cut_soon(), *(create(i) for i in range(20)))
            await asyncio.sleep(0.2)

    stored = await stored_tasks(setup.database_url)
    assert unacknowledged, "no write was cut: the test did not test anything"
    await assert_an_event_for_each_committed_change_and_no_other(setup.database_url)
    for title, task in acknowledged.items():
        assert stored[title]["id"] == task["id"]
        assert stored[title]["description"] == f"description of {title}"
    for title in stored:
        assert title in acknowledged or title in unacknowledged
        assert stored[title]["description"] == f"description of {title}"  # complete, never half


async def assert_an_event_for_each_committed_change_and_no_other(database_url: str) -> None:
    """Events exist exactly for the changes that committed: each user's event numbers are
    their change counter's numbers, 1 to its value, none missing and none extra (a change
    cut before its commit took no number that stayed); each task's last change and its
    creation are among its own events."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as connection:
        counters = {
            user: seq
            async for user, seq in await connection.execute("SELECT user_id, seq FROM change_counters")
        }
        numbered: dict[str, set[int]] = {}
        created: dict[int, int] = {}
        of_task: set[tuple[int, int]] = set()
        async for user, sequence, kind, task_id in await connection.execute(
            "SELECT user_id, sequence, type, task_id FROM events"
        ):
            numbered.setdefault(user, set()).add(sequence)
            of_task.add((task_id, sequence))
            if kind == "task.created":
                created[task_id] = created.get(task_id, 0) + 1
        tasks = [row async for row in await connection.execute("SELECT id, change_seq FROM tasks")]
    assert counters, "no write committed: the check checked nothing"
    for user, seq in counters.items():
        assert numbered.get(user, set()) == set(range(1, seq + 1)), user
    assert set(numbered) <= set(counters)
    for task_id, change_seq in tasks:
        assert (task_id, change_seq) in of_task
        assert created.get(task_id) == 1
    assert set(created) == {task_id for task_id, _ in tasks}


@dataclass
class TaskHistory:
    """What one client knows about one task: the states it may be in now."""

    title: str
    task_id: int | None = None
    possible: list[dict[str, Any] | None] = field(default_factory=list)
    abandoned: bool = False


def state(task: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if task is None else {k: task[k] for k in ("title", "description", "completed")}


async def test_mixed_load_with_two_cuts_loses_nothing_acknowledged(setup: Setup) -> None:
    users = [f"user{i}" for i in range(12)]
    # Signed in-process, as `todo-api token` does (the end-to-end test covers the command).
    tokens = {user: issue_token(SECRET, user) for user in users}
    histories: list[TaskHistory] = []
    error_statuses: list[int] = []
    stop = asyncio.Event()

    async def client_loop(user: str, http: httpx.AsyncClient) -> None:
        auth = {"Authorization": f"Bearer {tokens[user]}"}
        rng = random.Random(user)
        serial = 0
        while not stop.is_set():
            serial += 1
            history = TaskHistory(title=f"{user} task {serial}")
            histories.append(history)
            submitted = {"title": history.title, "description": "v0", "completed": False}
            response = await http.post(f"/api/{user}/tasks", json=submitted, headers=auth)
            if response.status_code != 201:
                error_statuses.append(response.status_code)
                history.possible, history.abandoned = [None, submitted], True
                continue
            current = response.json()
            history.task_id, history.possible = current["id"], [state(current)]
            for step in range(rng.randint(1, 4)):
                url = f"/api/{user}/tasks/{current['id']}"
                operation = rng.choice(["read", "read", "update", "toggle", "delete"])
                if operation == "read":
                    response = await http.get(url, headers=auth)
                    intended = state(current)
                elif operation == "update":
                    intended = {**state(current), "description": f"v{step + 1}"}  # type: ignore[dict-item]
                    response = await http.patch(
                        url, json={"description": intended["description"]}, headers=auth
                    )
                elif operation == "toggle":
                    intended = {**state(current), "completed": not current["completed"]}  # type: ignore[dict-item]
                    response = await http.patch(f"{url}/complete", headers=auth)
                else:
                    intended = None
                    response = await http.delete(url, headers=auth)
                if response.status_code >= 400:
                    error_statuses.append(response.status_code)
                    # Unknown whether it happened: either state is right; leave the task alone.
                    history.possible, history.abandoned = [*history.possible, intended], True
                    break
                if operation == "delete":
                    history.possible = [None]
                    break
                current = response.json()
                history.possible = [state(current)]

    async def two_cuts() -> None:
        for _ in range(2):
            await asyncio.sleep(1.5)
            setup.proxy.cut()
            await asyncio.sleep(1.5)
            setup.proxy.restore()
        await asyncio.sleep(1.5)
        stop.set()

    limits = httpx.Limits(max_connections=len(users))
    async with httpx.AsyncClient(base_url=setup.server.base_url, timeout=30, limits=limits) as http:
        await asyncio.gather(two_cuts(), *(client_loop(user, http) for user in users))

    assert error_statuses, "the cuts caused no error: the test did not test anything"
    assert set(error_statuses) == {503}, error_statuses
    stored = await stored_tasks(setup.database_url)
    known_titles = {history.title for history in histories}
    assert set(stored) <= known_titles, "a task exists that no client ever asked for"
    for history in histories:
        assert state(stored.get(history.title)) in history.possible, history
    acknowledged_creates = sum(1 for history in histories if history.task_id is not None)
    assert acknowledged_creates > 50  # the load was real
    await assert_an_event_for_each_committed_change_and_no_other(setup.database_url)
