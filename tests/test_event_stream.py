"""The live event stream, against real servers: each change reaches every open stream of its
owner, in number order, once; a stream resumes from Last-Event-ID without a gap (or says
`reset`); it ends when its token expires and when the server stops; a write on one server
reaches a stream held by another."""

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import asyncpg
import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from backend.api.event_stream import stream_events
from backend.store.events import CHANNEL
from backend.store.housekeeping import purge
from tests.conftest import (
    BACKENDS,
    fresh_postgres_database,
    http_client,
    libpq_url,
    make_settings,
    migrate,
    run_sql,
    running_app,
    sign_in,
)
from tests.processes import (
    Server,
    bearer,
    blocking,
    cli,
    fresh,
    fresh_server,
    server_env,
    serving,
)

pytestmark = pytest.mark.anyio

# Generous for a loaded CI machine; `make bench` measures the real figure.
ARRIVES_WITHIN = 5.0


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the module: each test has users of its own."""
    directory = tmp_path_factory.mktemp("events")
    with fresh_server(
        request.param, directory, STREAMS_PER_USER="3", STREAM_HEARTBEAT_SECONDS="1"
    ) as running:
        yield running


class Stream:
    """An open stream's events, gathered as they arrive."""

    def __init__(self) -> None:
        self.events: list[ServerSentEvent] = []
        self.arrived = asyncio.Condition()
        self.ended = asyncio.Event()

    async def wait_for(self, count: int, within: float = ARRIVES_WITHIN) -> list[ServerSentEvent]:
        async with asyncio.timeout(within), self.arrived:
            await self.arrived.wait_for(lambda: len(self.events) >= count)
        return self.events[:count]


@asynccontextmanager
async def streaming(
    base_url: str, user: str, *, last_event_id: str | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    """The user's stream, read in the background while the block runs."""
    stream = Stream()
    sent = {**bearer(user), **(headers or {})}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    opened = asyncio.Event()

    async def read() -> None:
        try:
            async with (
                httpx.AsyncClient(base_url=base_url, timeout=None) as http,
                aconnect_sse(http, "GET", f"/api/{user}/events", headers=sent) as source,
            ):
                assert source.response.status_code == 200, await source.response.aread()
                assert source.response.headers["content-type"].startswith("text/event-stream")
                opened.set()
                async for event in source.aiter_sse():
                    if event.event == "message" and not event.data:
                        continue  # a heartbeat's comment line (httpx-sse yields it as an empty event)
                    async with stream.arrived:
                        stream.events.append(event)
                        stream.arrived.notify_all()
        finally:
            opened.set()
            stream.ended.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(opened.wait(), ARRIVES_WITHIN)
    # The stream reads its position when it opens: a write sent before that is read would
    # count as earlier. Its first heartbeat (a second here) says it is past that point.
    await asyncio.sleep(0.3)
    try:
        yield stream
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def write(base_url: str, user: str, method: str, path: str, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.request(
            method, f"/api/{user}/tasks{path}", json=body or None, headers=bearer(user)
        )
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.status_code != 204 else {}


def cloud_event(event: ServerSentEvent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.data)
    return data


async def test_each_change_reaches_the_open_stream_as_a_cloud_event(server: Server) -> None:
    user = "stream-changes"
    async with streaming(server.base_url, user) as stream:
        task = await write(server.base_url, user, "POST", "", title="Call Ana", priority="high")
        renamed = await write(server.base_url, user, "PATCH", f"/{task['id']}", title="Call Ana back")
        completed = await write(server.base_url, user, "PATCH", f"/{task['id']}/complete")
        await write(server.base_url, user, "DELETE", f"/{task['id']}")
        inbox, *events = await stream.wait_for(5)

    # A person's first write makes their Inbox: a change of its own, numbered first.
    assert (inbox.event, inbox.id, cloud_event(inbox)["data"]["name"]) == ("list.created", "1", "Inbox")
    assert cloud_event(inbox)["subject"] == str(task["list_id"])
    assert [(e.event, e.id) for e in events] == [
        ("task.created", "2"),
        ("task.updated", "3"),
        ("task.completed", "4"),
        ("task.deleted", "5"),
    ]
    first = cloud_event(events[0])
    assert first["specversion"] == "1.0"
    assert first["id"] == f"{user}-2"
    assert first["source"] == "http://localhost:8000"  # PUBLIC_URL
    assert first["type"] == "todo.task.created"
    assert first["subject"] == str(task["id"])
    assert first["datacontenttype"] == "application/json"
    assert first["userid"] == user
    assert first["sequence"] == "00000000000000000002"
    assert datetime.fromisoformat(first["time"]) <= datetime.now(UTC)
    # Each carries the task as it was when the event was read: as that change left it, or
    # newer (the change after it may already have committed); the deletion, its tombstone.
    states = [task, renamed, completed]
    for event, state in zip(events[:3], states, strict=True):
        data = cloud_event(event)["data"]
        assert data == state or data["version"] > state["version"] or set(data) == {"id", "deleted_at"}
    assert cloud_event(events[3])["data"] == {"id": task["id"], "deleted_at": ANY}


async def test_an_events_data_is_the_task_as_the_rest_api_returns_it(server: Server) -> None:
    user = "stream-data"
    async with streaming(server.base_url, user) as stream:
        task = await write(
            server.base_url, user, "POST", "", title="Pay rent", tags=["home"], due_at="2030-01-01T09:00:00Z"
        )
        _inbox, event = await stream.wait_for(2)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        now = (await http.get(f"/api/{user}/tasks/{task['id']}", headers=bearer(user))).json()
    assert cloud_event(event)["data"] == now == task


async def test_a_stream_resumes_after_last_event_id_and_misses_nothing(server: Server) -> None:
    user = "stream-resume"
    tasks = [await write(server.base_url, user, "POST", "", title=f"task {i}") for i in range(5)]
    # Events 1 to 6: the Inbox's creation, then the five tasks'.
    async with streaming(server.base_url, user, last_event_id="3") as stream:
        replayed = await stream.wait_for(3)
        await write(server.base_url, user, "PATCH", f"/{tasks[0]['id']}", title="live")
        live = (await stream.wait_for(4))[3]
    assert [e.id for e in replayed] == ["4", "5", "6"]
    assert [cloud_event(e)["data"]["id"] for e in replayed] == [t["id"] for t in tasks[2:]]
    assert (live.id, live.event, cloud_event(live)["data"]["title"]) == ("7", "task.updated", "live")


async def test_without_last_event_id_a_stream_starts_with_the_next_change(server: Server) -> None:
    user = "stream-fresh"
    await write(server.base_url, user, "POST", "", title="before")
    async with streaming(server.base_url, user) as stream:
        await write(server.base_url, user, "POST", "", title="after")
        (event,) = await stream.wait_for(1)
    assert (event.id, cloud_event(event)["data"]["title"]) == ("3", "after")  # 1: the Inbox


async def test_a_position_the_events_no_longer_reach_gets_one_reset(server: Server) -> None:
    user = "stream-reset"
    for i in range(3):
        await write(server.base_url, user, "POST", "", title=f"task {i}")
    # Events 1 to 4: the Inbox's creation, then the tasks'. As the purge does after
    # SYNC_RETENTION_DAYS: the first three are gone.
    await blocking(
        run_sql, server.env["DATABASE_URL"], f"DELETE FROM events WHERE user_id = '{user}' AND sequence < 4"
    )
    async with streaming(server.base_url, user, last_event_id="2") as stream:
        (reset,) = await stream.wait_for(1)
        await write(server.base_url, user, "POST", "", title="after the reset")
        following = (await stream.wait_for(2))[1]
    assert (reset.event, reset.id) == ("reset", "4")
    assert "sync in full" in json.loads(reset.data)["reason"]
    assert following.id == "5"

    # Still reachable from 3 (the first kept is 4): no reset.
    async with streaming(server.base_url, user, last_event_id="3") as stream:
        assert [e.id for e in await stream.wait_for(2)] == ["4", "5"]
    # Ahead of every number given (not a position this server issued): a reset to the last.
    async with streaming(server.base_url, user, last_event_id="99") as stream:
        (ahead,) = await stream.wait_for(1)
    assert (ahead.event, ahead.id) == ("reset", "5")


async def test_a_user_sees_only_their_own_events(server: Server) -> None:
    async with (
        streaming(server.base_url, "stream-ana") as ana,
        streaming(server.base_url, "stream-ben") as ben,
    ):
        await write(server.base_url, "stream-ben", "POST", "", title="ben's")
        await write(server.base_url, "stream-ana", "POST", "", title="ana's")
        # Each one's Inbox (made by their first write), then their task.
        _inbox, mine = await ana.wait_for(2)
        _inbox, theirs = await ben.wait_for(2)
        await asyncio.sleep(0.5)
        assert len(ana.events) == len(ben.events) == 2
    assert cloud_event(mine)["data"]["title"] == "ana's"
    assert cloud_event(theirs)["data"]["title"] == "ben's"


async def test_the_stream_is_refused_as_every_route_refuses(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        unsigned = await http.get("/api/stream-x/events")
        assert unsigned.status_code == 401
        assert unsigned.headers["content-type"] == "application/problem+json"
        other = await http.get("/api/stream-x/events", headers=bearer("stream-y"))
        assert other.status_code == 403
        for bad in ("x", "-1", "1.5", "9" * 20):
            refused = await http.get("/api/me/events", headers={**bearer("stream-x"), "Last-Event-ID": bad})
            assert refused.status_code == 400, bad
            assert "Last-Event-ID" in refused.json()["detail"]


async def test_streams_beyond_the_per_user_cap_are_429(server: Server) -> None:
    user = "stream-cap"
    async with (
        streaming(server.base_url, user),
        streaming(server.base_url, user),
        streaming(server.base_url, user),
    ):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            refused = await http.get(f"/api/{user}/events", headers=bearer(user))
        assert refused.status_code == 429
        assert "STREAMS_PER_USER" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "5"
        # Another person is not held back by this one's streams.
        async with streaming(server.base_url, "stream-cap-other"):
            pass
    # Closed streams free their places.
    async with streaming(server.base_url, user) as stream:
        await write(server.base_url, user, "POST", "", title="after")
        assert len(await stream.wait_for(1)) == 1


async def test_heartbeats_keep_an_idle_stream_alive(server: Server) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=None) as http,
        http.stream("GET", "/api/me/events", headers=bearer("stream-idle")) as response,
    ):
        assert response.status_code == 200
        lines: list[str] = []
        async with asyncio.timeout(ARRIVES_WITHIN):
            async for line in response.aiter_lines():
                lines.append(line)
                if sum(line.startswith(":") for line in lines) >= 2:
                    break
    # Comment lines (STREAM_HEARTBEAT_SECONDS=1 here), past the request deadline's reach too.
    assert sum(line.startswith(":") for line in lines) >= 2


async def test_a_stream_ends_when_its_token_expires(server: Server) -> None:
    user = "stream-expiry"
    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=None) as http,
        aconnect_sse(
            http, "GET", f"/api/{user}/events", headers=bearer(user, lifetime=timedelta(seconds=3))
        ) as source,
    ):
        assert source.response.status_code == 200
        async with asyncio.timeout(10):
            async for _ in source.aiter_sse():
                pass
    lasted = time.monotonic() - started
    assert 2 < lasted < 6, lasted


async def test_a_due_reminder_reaches_the_stream(server: Server) -> None:
    user = "stream-reminder"
    async with streaming(server.base_url, user) as stream:
        due = datetime.now(UTC) + timedelta(seconds=1)
        task = await write(server.base_url, user, "POST", "", title="Stand up", remind_at=due.isoformat())
        _inbox, created, reminded = await stream.wait_for(3)
    assert (created.event, reminded.event) == ("task.created", "reminder.due")
    event = cloud_event(reminded)
    assert event["type"] == "todo.reminder.due"
    assert event["subject"] == str(task["id"])
    assert event["data"]["reminded_at"] is not None
    assert "late" not in event  # fired on time


async def test_resuming_while_writers_race_replays_every_change_in_order(server: Server) -> None:
    """Four writers change one person's tasks as fast as they can, while a reader drops its
    stream after every few events and comes back with Last-Event-ID: every number arrives
    exactly once, in order, and the last event of each task is the task as it is."""
    user = "stream-race"
    tasks = [await write(server.base_url, user, "POST", "", title=f"task {i}") for i in range(4)]
    rounds = 15

    async def writer(task: dict[str, Any]) -> None:
        for round_ in range(rounds):
            await write(
                server.base_url, user, "PATCH", f"/{task['id']}", title=f"{task['id']} round {round_}"
            )

    writing = asyncio.gather(*(writer(task) for task in tasks))
    received: list[ServerSentEvent] = []
    total = 1 + len(tasks) * (rounds + 1)  # the Inbox's creation, and each task's changes
    last = "0"
    async with asyncio.timeout(60):
        while len(received) < total:
            async with streaming(server.base_url, user, last_event_id=last) as stream:
                take = min(len(received) + 7, total) - len(received)
                got = await stream.wait_for(take, within=30)
            received.extend(got)
            last = got[-1].id or last
    await writing
    assert [int(e.id or 0) for e in received] == list(range(1, total + 1))
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        now = {t["id"]: t for t in (await http.get(f"/api/{user}/tasks", headers=bearer(user))).json()}
    final = {
        cloud_event(e)["subject"]: cloud_event(e)["data"] for e in received if e.event.startswith("task.")
    }
    assert final == {str(task_id): task for task_id, task in now.items()}


async def test_a_write_on_one_server_reaches_a_stream_on_another(tmp_path: Path) -> None:
    """Two servers on one PostgreSQL database: LISTEN/NOTIFY carries the wake-up, also after
    the listening connection is cut (it comes back, and reads what it missed)."""
    with fresh_postgres_database() as url:
        await blocking(migrate, url)
        async with (
            serving(server_env(url), tmp_path / "a.log") as first,
            serving(server_env(url), tmp_path / "b.log") as second,
        ):
            user = "stream-two-servers"
            async with streaming(first.base_url, user) as stream:
                await write(second.base_url, user, "POST", "", title="from the other server")
                _inbox, event = await stream.wait_for(2)
                assert cloud_event(event)["data"]["title"] == "from the other server"

                cut = await blocking(
                    run_sql,
                    url,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'todo-api events' AND datname = current_database()",
                )
                assert len(cut) == 1  # the first server's listener (the second has no stream)
                await write(second.base_url, user, "POST", "", title="while it reconnects")
                second_event = (await stream.wait_for(3, within=10))[2]
                assert cloud_event(second_event)["data"]["title"] == "while it reconnects"
            assert any(
                line.get("message") == "the event listener lost its connection" for line in first.log_lines()
            )


async def test_stopping_the_server_ends_its_streams_promptly(tmp_path: Path) -> None:
    async with fresh("sqlite", tmp_path) as url:
        env = server_env(url)
        await blocking(cli, env, "migrate")
        async with (
            serving(env, tmp_path / "server.log") as running,
            streaming(running.base_url, "stream-stop") as stream,
        ):
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(stream.ended.wait(), 5)
            await blocking(running.process.wait, 10)
            stopped = time.monotonic() - started
    # Well inside the graceful timeout (REQUEST_TIMEOUT_SECONDS + 5 = 20 s): streams do not hold it up.
    assert stopped < 5, stopped


async def test_only_the_changes_of_people_with_open_streams_are_notified(postgres_url: str) -> None:
    """NOTIFY's commit-time lock costs a third of PostgreSQL's write throughput when sent for
    every change: it is sent for people with an open stream somewhere, and for nobody else."""
    notified: list[str] = []
    watcher = await asyncpg.connect(libpq_url(postgres_url))
    await watcher.add_listener(CHANNEL, lambda *args: notified.append(args[-1]))
    try:
        async with running_app(make_settings(postgres_url)) as app, http_client(app) as client:
            ana, ben = sign_in(client, "notify-ana"), sign_in(client, "notify-ben")
            await ana.create(title="nobody listens yet")
            await asyncio.sleep(0.3)
            assert notified == []

            stream = stream_events(app.state.event_hub, ana.user_id, None, None)
            pending = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.5)  # registered
            assert run_sql(postgres_url, "SELECT user_id FROM event_listeners") == [("notify-ana",)]
            await ana.create(title="ana has a stream")
            await ben.create(title="ben has none")
            event = await asyncio.wait_for(pending, ARRIVES_WITHIN)
            assert event.id == "3"  # after her Inbox's creation and her first task
            await asyncio.sleep(0.3)
            assert notified == ["notify-ana"]

            await stream.aclose()
            await asyncio.sleep(0.3)  # unregistered
            assert run_sql(postgres_url, "SELECT user_id FROM event_listeners") == []
            await ana.create(title="the stream has closed")
            await asyncio.sleep(0.3)
            assert notified == ["notify-ana"]

            # A process that vanished without a word is forgotten by the housekeeping.
            run_sql(
                postgres_url,
                "INSERT INTO event_listener_processes VALUES ('gone', now() - interval '1 hour')",
            )
            run_sql(postgres_url, "INSERT INTO event_listeners VALUES ('notify-ben', 'gone')")
            purged = await purge(app.state.database, app.state.settings)
            assert purged.event_listeners == 1
            assert run_sql(
                postgres_url, "SELECT count(*) FROM event_listener_processes WHERE process_id = 'gone'"
            ) == [(0,)]
    finally:
        await watcher.close()
