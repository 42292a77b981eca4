"""Each route's budget of SQL statements: one or two for most, at most five for a keyed write
with tags (the budgets are in each test's table).

Counted as they are sent: by SQLAlchemy's cursor events on SQLite, and by the
connection on PostgreSQL (where statements go to asyncpg directly). Transaction
control is listed but not counted as work; which writes open a transaction is checked too.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from agents.testing import ScriptedModel, assistant_message
from fastapi import FastAPI

from backend.api.chat.agent import ChatAgent
from backend.api.event_stream import stream_events
from tests.conftest import Caller

pytestmark = pytest.mark.anyio


@pytest.fixture
def statements(app: FastAPI) -> Iterator[list[str]]:
    executed: list[str] = []
    listeners = app.state.database.statement_listeners
    listeners.append(executed.append)
    yield executed
    listeners.remove(executed.append)


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


def work(statements: list[str]) -> list[str]:
    return [statement for statement in statements if not statement.startswith(TRANSACTION_CONTROL)]


async def test_every_route_needs_at_most_two_statements(
    app: FastAPI, alice: Caller, alice_task: dict[str, Any], statements: list[str]
) -> None:
    writes_in_with = app.state.database.writes_in_with
    task = f"/{alice_task['id']}"
    calls = [
        ("POST", "", {"title": "new"}),
        ("GET", "", None),
        ("GET", "?status=completed&sort=title&limit=1&offset=1", None),
        ("GET", "?offset=1000", None),  # past the end: the page, then the count
        ("GET", task, None),
        ("PUT", task, {"title": "replaced"}),
        ("PATCH", task, {"description": "patched"}),
        ("PATCH", f"{task}/complete", None),
        ("PATCH", f"{task}/complete", {"completed": True}),
        ("GET", "/999999", None),  # a miss costs the same
        ("DELETE", task, None),
    ]
    for method, path, body in calls:
        statements.clear()
        response = await alice.request(method, path, json=body)
        assert response.status_code < 500
        assert 1 <= len(work(statements)) <= 2, (method, path, statements)
        # Only create on SQLite needs a transaction; PostgreSQL writes the user's row and
        # the task in one statement. Every other route is one statement, or reads.
        opened = statements[0] == "BEGIN" or statements[0].startswith("BEGIN ")
        assert opened == (method == "POST" and not writes_in_with), (method, path, statements)


async def test_reads_and_single_task_writes_are_one_statement(
    alice: Caller, alice_task: dict[str, Any], statements: list[str]
) -> None:
    task = f"/{alice_task['id']}"
    for method, path, body in [
        ("GET", "", None),
        ("GET", task, None),
        ("PATCH", task, {"title": "t"}),
        ("PATCH", f"{task}/complete", None),
        ("DELETE", task, None),
    ]:
        statements.clear()
        await alice.request(method, path, json=body)
        assert statements == work(statements)
        assert len(statements) == 1, (method, path, statements)


def transactions(statements: list[str]) -> list[list[str]]:
    """The work statements of each BEGIN … COMMIT, in order."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for statement in statements:
        if statement.startswith("BEGIN"):
            current = []
        elif statement.startswith(("COMMIT", "ROLLBACK")):
            assert current is not None
            groups.append(current)
            current = None
        elif current is not None:
            current.append(statement)
    return groups


async def test_the_organising_routes_stay_within_the_budget(
    app: FastAPI, alice: Caller, statements: list[str]
) -> None:
    """Reads at most two statements; writes at most three, every one that changes anything
    in one transaction (completing a recurring occurrence included: its first statement
    declines to complete it alone and changes nothing)."""
    writes_in_with = app.state.database.writes_in_with
    recurring = await alice.create(
        title="r", due_at="2026-12-01T10:00:00Z", recurrence="FREQ=DAILY", tags=["a"]
    )
    plain = await alice.create(title="p", tags=["b"])
    tags = (await alice.client.get(f"/api/{alice.user_id}/tags", headers=alice.headers)).json()
    calls: list[tuple[str, str, Any, int, bool]] = [
        # method, path, body, most work statements, whether the writes need a transaction
        ("POST", "/tasks", {"title": "tagged", "tags": ["x", "y", "z"]}, 3, True),
        (
            "GET",
            "/tasks?tag=x&q=tag&priority=none&priority=high&due_before=2030-01-01T00:00:00Z",
            None,
            2,
            False,
        ),
        ("GET", "/tasks?sort=due&overdue=false&remind_before=2030-01-01T00:00:00Z", None, 2, False),
        ("GET", "/tasks?sort=priority&offset=1000&tag=nothing", None, 2, False),
        ("GET", "/tasks/stats?tz=Europe/Berlin", None, 1, False),
        ("GET", "/tags", None, 1, False),
        ("PATCH", f"/tasks/{plain['id']}", {"tags": ["b", "c"], "priority": "low"}, 3, True),
        ("PUT", f"/tasks/{plain['id']}", {"title": "p", "tags": []}, 3, True),
        # A recurring occurrence's completion reads where its successor goes (just after it among
        # its siblings): one statement more.
        ("PATCH", f"/tasks/{recurring['id']}/complete", None, 4, True),
        # On PostgreSQL a rename first locks the owner's change counter, in a statement of its
        # own, so that the rename's reads see any rename that held it before (a race of two
        # renames onto one name merges them): one statement more.
        ("PATCH", f"/tags/{tags[0]['id']}", {"name": "renamed"}, 4 if writes_in_with else 3, True),
        ("PATCH", f"/tags/{tags[1]['id']}", {"name": "RENAMED"}, 4 if writes_in_with else 3, True),  # a merge
        ("DELETE", f"/tags/{tags[0]['id']}", None, 1, False),
        ("DELETE", "/tasks?status=completed", None, 1, False),
    ]
    for method, path, body, most, transactional in calls:
        statements.clear()
        response = await alice.client.request(
            method, f"/api/{alice.user_id}{path}", json=body, headers=alice.headers
        )
        assert response.status_code < 300, (method, path, response.text)
        done = work(statements)
        assert 1 <= len(done) <= most, (method, path, statements)
        if transactional:
            grouped = transactions(statements)
            assert len(grouped) == 1, (method, path, statements)
            outside = [s for s in done if s not in grouped[0]]
            # At most the declining statement runs outside, before the transaction.
            assert len(outside) <= 1, (method, path, statements)
        else:
            assert transactions(statements) == [], (method, path, statements)
    # The completed occurrence was cleared with the other completed tasks; its successor stays.
    remaining = (await alice.request("GET", params={"status": "pending"})).json()
    assert "r" in [task["title"] for task in remaining]


async def test_conditional_keyed_and_sync_requests_stay_within_the_budget(
    app: FastAPI, alice: Caller, statements: list[str]
) -> None:
    """A conditional or keyed write: at most three statements, in one transaction; a read
    (sync, a cursor page) at most two. The exceptions, each one statement more, are named."""
    writes_in_with = app.state.database.writes_in_with
    plain = await alice.create(title="p")
    recurring = await alice.create(title="r", due_at="2026-12-01T10:00:00Z", recurrence="FREQ=DAILY")
    first_page = await alice.request("GET", params={"limit": 1})
    cursor = first_page.headers["x-next-cursor"]
    key = iter(range(1000))
    calls: list[tuple[str, str, Any, dict[str, str], int]] = [
        ("PATCH", f"/tasks/{plain['id']}", {"title": "q"}, {"If-Match": '"1"'}, 1),
        (
            "PATCH",
            f"/tasks/{plain['id']}",
            {"title": "q2"},
            {"If-Match": '"1"'},
            2,
        ),  # 412: the write, then why
        ("POST", "/tasks", {"title": "keyed"}, {"Idempotency-Key": f"k{next(key)}"}, 3),
        # Keyed, with tags: SQLite writes the user, the task, the tags and the key (one more).
        (
            "POST",
            "/tasks",
            {"title": "k", "tags": ["a", "b"]},
            {"Idempotency-Key": "tags"},
            3 if writes_in_with else 4,
        ),
        # The replay: the write runs, finds its key taken and rolls back; then the stored answer is read.
        (
            "POST",
            "/tasks",
            {"title": "k", "tags": ["a", "b"]},
            {"Idempotency-Key": "tags"},
            4 if writes_in_with else 5,
        ),
        (
            "PATCH",
            f"/tasks/{plain['id']}/complete",
            None,
            {"Idempotency-Key": f"k{next(key)}", "If-Match": '"2"'},
            3,
        ),
        # Where the successor goes: one more (as above).
        ("PATCH", f"/tasks/{recurring['id']}/complete", None, {"Idempotency-Key": f"k{next(key)}"}, 4),
        ("DELETE", f"/tasks/{plain['id']}", None, {"Idempotency-Key": f"k{next(key)}"}, 3),
        # Sync reads the page, then the lists changed up to where it ends: one more.
        ("GET", "/tasks/changes", None, {}, 2),
        ("GET", f"/tasks?limit=1&cursor={cursor}", None, {}, 2),
        ("GET", f"/tasks/{recurring['id']}", None, {"If-None-Match": '"2"'}, 1),
    ]
    for method, path, body, headers, most in calls:
        statements.clear()
        response = await alice.client.request(
            method, f"/api/{alice.user_id}{path}", json=body, headers={**alice.headers, **headers}
        )
        assert response.status_code < 500, (method, path, response.text)
        done = work(statements)
        assert 1 <= len(done) <= most, (method, path, statements)
        writes = [s for s in done if not s.startswith("SELECT")]
        if "Idempotency-Key" in headers and response.headers.get("idempotent-replayed") != "true":
            grouped = transactions(statements)
            assert len(grouped) == 1, (method, path, statements)
            assert set(writes) <= set(grouped[0]), (method, path, statements)


async def test_a_stream_opens_in_two_statements_and_a_change_reaches_all_streams_in_one(
    app: FastAPI, alice: Caller, statements: list[str]
) -> None:
    """Opening a stream reads where the person's events stand and what follows its position;
    after that, each change is read once for all of the person's streams on the worker. (On
    PostgreSQL the person's first stream on a worker also registers them for NOTIFY, once.)"""
    await alice.create(title="before the streams")  # events 1 (her Inbox's creation) and 2
    hub = app.state.event_hub
    first = stream_events(hub, alice.user_id, 1, None)
    streams = [stream_events(hub, alice.user_id, 1, None) for _ in range(3)]
    try:
        statements.clear()
        assert (await asyncio.wait_for(anext(first), 5)).id == "2"
        await asyncio.sleep(1.3)  # the registration, and its wake-up a second later
        registered = [sql for sql in statements if "event_listener" in sql]
        assert len(registered) == (2 if app.state.database.dialect == "postgresql" else 0), statements

        statements.clear()
        opened = [await asyncio.wait_for(anext(stream), 5) for stream in streams]
        assert [event.id for event in opened] == ["2", "2", "2"]
        assert len(work(statements)) == 2 * len(streams), statements
        # Each stream, caught up, waits on the feed; the feed's first read finds nothing new.
        pending = [asyncio.ensure_future(anext(stream)) for stream in [first, *streams]]
        await asyncio.sleep(0.2)
        # A read of the person's wakes no feed: only a committed write does.
        statements.clear()
        assert (await alice.request("GET")).status_code == 200
        await asyncio.sleep(0.2)
        assert not [sql for sql in statements if "FROM events" in sql], statements
        statements.clear()
        created = await alice.create(title="seen by all four")
        done = await asyncio.wait_for(asyncio.gather(*pending), 5)
        assert {event.id for event in done} == {"3"}
        assert all(str(created["id"]) in str(event.data) for event in done)
        create_statements = 1 if app.state.database.writes_in_with else 2
        assert len(work(statements)) == create_statements + 1, statements
    finally:
        for stream in [first, *streams]:
            await stream.aclose()
    assert hub.streams == 0


async def test_the_chat_routes_stay_within_the_budget(
    app: FastAPI, alice: Caller, statements: list[str]
) -> None:
    """A message is two transactions around the model's work, none held while it thinks: the
    message stored with the lease taken (and, in a conversation, the history read), then the
    answer stored with the lease given back. A tool call costs what its route costs."""
    model = ScriptedModel([[assistant_message(text)] for text in ("one", "two", "three")])
    app.state.chat = ChatAgent(app.state.services, model)
    started = None
    calls: list[tuple[str, str, Any, dict[str, str], int, int]] = [
        # method, path, body, headers, most work statements, transactions
        ("POST", "/chat", {"message": "new"}, {}, 5, 2),
        ("POST", "/chat", {"message": "again"}, {"conversation_id": "?"}, 6, 2),
        ("POST", "/chat", {"message": "keyed"}, {"Idempotency-Key": "k1"}, 6, 2),
        ("POST", "/chat", {"message": "keyed"}, {"Idempotency-Key": "k1"}, 2, 0),  # the replay
        ("GET", "/conversations", None, {}, 1, 0),
        ("GET", "/conversations?limit=1", None, {}, 2, 0),  # a full page: and the count
        ("GET", "/conversations/?", None, {}, 2, 0),
        ("DELETE", "/conversations/?", None, {}, 1, 0),
    ]
    for method, path, body, headers, most, opened in calls:
        if started is not None:
            path = path.replace("?", str(started)) if path.endswith("?") else path
            if headers.get("conversation_id"):
                body = {**body, "conversation_id": started}
        headers = {key: value for key, value in headers.items() if key != "conversation_id"}
        statements.clear()
        response = await alice.client.request(
            method, f"/api/{alice.user_id}{path}", json=body, headers={**alice.headers, **headers}
        )
        assert response.status_code < 300, (method, path, response.text)
        if started is None:
            started = response.json()["conversation_id"]
        done = work(statements)
        assert 1 <= len(done) <= most, (method, path, statements)
        assert len(transactions(statements)) == opened, (method, path, statements)


async def test_the_list_routes_stay_within_the_budget(alice: Caller, statements: list[str]) -> None:
    """Reads are one statement (a list's counts are subqueries of it); every write takes the
    person's Inbox row first (their list writes take turns), in one transaction."""
    await alice.create(title="in the inbox")
    lists = f"/api/{alice.user_id}/lists"
    created = await alice.client.post(lists, json={"name": "Work"}, headers=alice.headers)
    job = created.json()["id"]
    other = (await alice.client.post(lists, json={"name": "Other"}, headers=alice.headers)).json()["id"]
    await alice.create(title="at work", list_id=job)
    calls: list[tuple[str, str, Any, int, int]] = [
        # method, path, body, most work statements, transactions
        ("GET", "", None, 1, 0),
        ("POST", "", {"name": "Home"}, 3, 1),
        ("GET", f"/{job}", None, 1, 0),
        ("PATCH", f"/{job}", {"name": "Job"}, 3, 1),
        ("POST", f"/{job}/move", {"after_id": other}, 5, 1),
        ("POST", f"/{job}/move", {"after_id": None}, 4, 1),
        ("DELETE", f"/{job}?move_tasks_to={other}", None, 5, 1),
        ("DELETE", f"/{other}", None, 4, 1),
    ]
    for method, path, body, most, opened in calls:
        statements.clear()
        response = await alice.client.request(method, f"{lists}{path}", json=body, headers=alice.headers)
        assert response.status_code < 300, (method, path, response.text)
        assert 1 <= len(work(statements)) <= most, (method, path, statements)
        assert len(transactions(statements)) == opened, (method, path, statements)
    # A task created into a list, and the list's tasks and stats: as without a list.
    third = (await alice.client.post(lists, json={"name": "Third"}, headers=alice.headers)).json()["id"]
    for method, path, body in (
        ("POST", "", {"title": "x", "list_id": third}),
        ("GET", f"?list_id={third}", None),
        ("GET", f"/stats?list_id={third}", None),
    ):
        statements.clear()
        response = await alice.request(method, path, json=body)
        assert response.status_code < 300, (method, path, response.text)
        assert len(work(statements)) <= 2, (method, path, statements)


async def test_the_subtask_and_move_routes_stay_within_the_budget(
    app: FastAPI, alice: Caller, statements: list[str]
) -> None:
    """A subtask's create locks the owner's counter, reads its parent's chain, then writes (one
    transaction); a move locks, reads the task, its new place and neighbours, writes one row;
    the tree's reads are one statement or two, as any list."""
    writes_in_with = app.state.database.writes_in_with
    parent = await alice.create(title="parent")
    first = await alice.create(title="first", parent_id=parent["id"])
    loose = await alice.create(title="loose")
    other_list = (
        await alice.client.post(f"/api/{alice.user_id}/lists", json={"name": "W"}, headers=alice.headers)
    ).json()
    calls: list[tuple[str, str, Any, int, int]] = [
        # method, path, body, most work statements, transactions
        ("POST", "", {"title": "sub", "parent_id": parent["id"]}, 3 if writes_in_with else 4, 1),
        ("GET", "?parent_id=none&sort=position", None, 2, 0),
        ("GET", f"?parent_id={parent['id']}&sort=position", None, 2, 0),
        ("GET", f"?list_id={other_list['id']}&sort=position", None, 2, 0),
        ("POST", f"/{loose['id']}/move", {"after_id": parent["id"]}, 5, 1),  # between two
        ("POST", f"/{loose['id']}/move", {}, 4, 1),  # first
        ("POST", f"/{loose['id']}/move", {"list_id": other_list["id"]}, 5, 1),  # another list
        ("POST", f"/{loose['id']}/move", {"parent_id": parent["id"], "after_id": first["id"]}, 7, 1),
        ("PATCH", f"/{parent['id']}/complete", None, 2, 0),  # with open subtasks: their count again
        ("DELETE", f"/{parent['id']}", None, 1, 0),  # its subtasks by trigger
    ]
    for method, path, body, most, opened in calls:
        statements.clear()
        response = await alice.request(method, path, json=body)
        assert response.status_code < 300, (method, path, response.text)
        assert 1 <= len(work(statements)) <= most, (method, path, statements)
        assert len(transactions(statements)) == opened, (method, path, statements)
