"""The chat endpoint, in-process on both databases, with the Agents SDK's scripted model at
the model interface: what the agent's tools do to the person's tasks, what is stored, and
every limit. (`test_chat_model_server.py` drives the real OpenAI client against a local
OpenAI-compatible server, across restarts and servers.)"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import orjson
import pytest
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.tracing import get_trace_provider
from agents.tracing.traces import NoOpTrace
from agents.usage import Usage
from fastapi import FastAPI
from httpx import AsyncClient, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.api.chat.agent import ChatAgent
from backend.auth.tokens import TokenClaims
from backend.store.conversations import OwnedConversations
from tests.conftest import (
    Caller,
    assert_problem,
    http_client,
    make_settings,
    run_sql,
    running_app,
    sign_in,
    sse_events,
)

pytestmark = pytest.mark.anyio


def scripted(app: FastAPI, *steps: Any) -> ScriptedModel:
    """The app's chat agent on a scripted model answering `steps`, one per model call."""
    model = ScriptedModel(steps)
    app.state.chat = ChatAgent(app.state.services, model)
    return model


def tool(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> list[Any]:
    """A model step that calls one tool."""
    return [function_call(name, arguments, call_id=call_id)]


def say(text: str) -> list[Any]:
    return [assistant_message(text)]


async def send(caller: Caller, message: str, **body: Any) -> Response:
    headers = {**caller.headers, **body.pop("headers", {})}
    return await caller.client.post(
        f"/api/{body.pop('user_id', caller.user_id)}/chat", json={"message": message, **body}, headers=headers
    )


def events(response: Response) -> list[tuple[str, dict[str, Any]]]:
    return sse_events(response.text)


async def conversation(caller: Caller, conversation_id: int) -> dict[str, Any]:
    response = await caller.client.get(f"/api/me/conversations/{conversation_id}", headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the agent and the tools -------------------------------------------------------------


async def test_a_conversation_uses_every_tool_on_the_persons_tasks(app: FastAPI, alice: Caller) -> None:
    model = scripted(
        app,
        tool("add_task", {"title": "Buy milk", "priority": "high"}),
        tool("add_task", {"title": "Call mum"}, "call_2"),
        say("Added both."),
        tool("list_tasks", {"q": "milk"}),
        say("Milk is on your list."),
    )
    first = await send(alice, "add milk (urgent) and call mum")
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["response"] == "Added both."
    assert [call["tool"] for call in answer["tool_calls"]] == ["add_task", "add_task"]
    milk_id = answer["tool_calls"][0]["result"]["id"]
    mum_id = answer["tool_calls"][1]["result"]["id"]
    conversation_id = answer["conversation_id"]
    second = await send(alice, "is milk there?", conversation_id=conversation_id)
    assert second.json()["tool_calls"][0]["result"]["total"] == 1
    model.extend(
        [
            tool("complete_task", {"task_id": milk_id}),
            tool("update_task", {"task_id": mum_id, "title": "Call mum on Sunday"}, "call_2"),
            tool("delete_task", {"task_id": mum_id}, "call_3"),
            say("Done, renamed, then deleted."),
        ]
    )
    third = await send(alice, "milk is bought; rename mum's; no, delete it", conversation_id=conversation_id)
    assert third.status_code == 200, third.text
    assert [call["tool"] for call in third.json()["tool_calls"]] == [
        "complete_task",
        "update_task",
        "delete_task",
    ]
    model.assert_complete()

    # The database afterwards, through the REST door.
    tasks = (await alice.request("GET")).json()
    assert [(task["id"], task["title"], task["completed"], task["priority"]) for task in tasks] == [
        (milk_id, "Buy milk", True, "high")
    ]
    assert (await alice.request("GET", f"/{mum_id}")).status_code == 404
    # The model saw the earlier turns, tool calls and all, from the database.
    sent = model.last_call.input if model.last_call else []
    assert {"role": "user", "content": "add milk (urgent) and call mum"} in sent
    assert any(item.get("type") == "function_call_output" and "Buy milk" in item["output"] for item in sent)


async def test_the_stored_conversation_shows_messages_oldest_first_with_tool_calls(
    app: FastAPI, alice: Caller
) -> None:
    scripted(app, tool("add_task", {"title": "Water the plants"}), say("Added."))
    answer = (await send(alice, "remind me to water the plants")).json()
    stored = await conversation(alice, answer["conversation_id"])
    assert stored["title"] == "remind me to water the plants"
    person, agent = stored["messages"]
    assert (person["role"], person["content"], person["tool_calls"]) == (
        "user",
        "remind me to water the plants",
        [],
    )
    assert (agent["role"], agent["content"], agent["reply_to"], agent["error"]) == (
        "assistant",
        "Added.",
        person["id"],
        None,
    )
    assert agent["tool_calls"] == answer["tool_calls"]


async def test_conversations_are_listed_newest_first_and_paged(app: FastAPI, alice: Caller) -> None:
    scripted(app, say("one"), say("two"), say("three"), say("again"))
    ids = [(await send(alice, f"message {n}")).json()["conversation_id"] for n in range(3)]
    # Answering in the first conversation makes it the most recently active.
    await send(alice, "back to the first", conversation_id=ids[0])
    page = await alice.client.get("/api/me/conversations?limit=2", headers=alice.headers)
    assert page.status_code == 200
    assert [item["id"] for item in page.json()] == [ids[0], ids[2]]
    assert page.headers["X-Total-Count"] == "3"
    assert 'rel="next"' in page.headers["Link"]
    rest = await alice.client.get("/api/me/conversations?limit=2&offset=2", headers=alice.headers)
    assert [item["id"] for item in rest.json()] == [ids[1]]


async def test_a_deleted_conversation_is_gone_with_its_messages(app: FastAPI, alice: Caller) -> None:
    scripted(app, tool("add_task", {"title": "Stays"}), say("Added."))
    conversation_id = (await send(alice, "add a task")).json()["conversation_id"]
    deleted = await alice.client.delete(f"/api/me/conversations/{conversation_id}", headers=alice.headers)
    assert deleted.status_code == 204
    assert_problem(
        await alice.client.get(f"/api/me/conversations/{conversation_id}", headers=alice.headers), 404
    )
    assert_problem(
        await alice.client.delete(f"/api/me/conversations/{conversation_id}", headers=alice.headers), 404
    )
    assert run_sql(app.state.settings.database_url, "SELECT count(*) FROM messages")[0][0] == 0
    # Its tasks are the person's, not the conversation's.
    assert [task["title"] for task in (await alice.request("GET")).json()] == ["Stays"]


async def test_the_agent_is_told_the_persons_time_zone_and_today(app: FastAPI, alice: Caller) -> None:
    model = scripted(app, say("Noted."))
    await send(alice, "what day is it?", time_zone="Pacific/Auckland")
    instructions = model.first_call.system_instructions if model.first_call else ""
    assert instructions is not None
    today = datetime.now(ZoneInfo("Pacific/Auckland"))
    assert "Pacific/Auckland" in instructions
    assert (
        today.strftime("%Y-%m-%d") in instructions
        or (today - timedelta(minutes=1)).strftime("%Y-%m-%d") in instructions
    )
    assert today.strftime("%A") in instructions


async def test_a_due_date_the_agent_gives_in_the_persons_zone_is_stored_as_that_instant(
    app: FastAPI, alice: Caller
) -> None:
    tomorrow_nine = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=1)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    scripted(app, tool("add_task", {"title": "Dentist", "due_at": tomorrow_nine.isoformat()}), say("Added."))
    await send(alice, "dentist tomorrow at 9", time_zone="Europe/Berlin")
    (task,) = (await alice.request("GET")).json()
    assert datetime.fromisoformat(task["due_at"]) == tomorrow_nine.astimezone(UTC)


async def test_the_agent_never_acts_for_another_person(app: FastAPI, alice: Caller, bob: Caller) -> None:
    await bob.create(title="Bob's secret")
    bobs = (await bob.request("GET")).json()[0]["id"]
    scripted(
        app,
        tool("add_task", {"title": "For bob", "user_id": bob.user_id}),
        tool("delete_task", {"task_id": bobs}, "call_2"),
        tool("list_tasks", {}, "call_3"),
        say("I can only manage your tasks."),
    )
    answer = (await send(alice, "add a task for bob and delete his")).json()
    refused, missing, listed = (call["result"] for call in answer["tool_calls"])
    assert refused == {"error": "user_id is not the signed-in user"}
    assert missing == {"error": "no task with this id belongs to this user"}
    assert listed["total"] == 0
    assert [task["title"] for task in (await bob.request("GET")).json()] == ["Bob's secret"]
    assert (await alice.request("GET")).json() == []


async def test_a_refused_tool_call_is_the_models_to_read_not_an_error(app: FastAPI, alice: Caller) -> None:
    model = scripted(
        app,
        [function_call("add_task", "{not json", call_id="call_1")],
        tool("add_task", {"title": ""}, "call_2"),
        tool("no_such_tool", {}, "call_3"),
        say("Sorry."),
    )
    response = await send(alice, "add nothing")
    assert response.status_code == 200, response.text
    results = [call["result"]["error"] for call in response.json()["tool_calls"]]
    assert results[0] == "the arguments are not a JSON object"
    assert results[1].startswith("invalid arguments: title")
    # A tool it does not have is not called at all; the model is told so.
    assert len(results) == 2
    assert "Tool 'no_such_tool' not found." in str(model.last_call.input if model.last_call else "")
    assert (await alice.request("GET")).json() == []


# --- isolation ---------------------------------------------------------------------------


async def test_another_persons_conversation_is_the_same_404_as_a_missing_one(
    app: FastAPI, alice: Caller, bob: Caller
) -> None:
    scripted(app, say("Hi Alice."), say("Hi Bob."))
    alices = (await send(alice, "hello")).json()["conversation_id"]
    missing = alices + 1000
    for method in ("GET", "DELETE"):
        theirs = await bob.client.request(method, f"/api/me/conversations/{alices}", headers=bob.headers)
        nobodys = await bob.client.request(method, f"/api/me/conversations/{missing}", headers=bob.headers)
        assert assert_problem(theirs, 404) == assert_problem(nobodys, 404)
    continued = await send(bob, "let me in", conversation_id=alices)
    assert assert_problem(continued, 404)["detail"] == "no conversation with this id belongs to this user"
    assert (await bob.client.get("/api/me/conversations", headers=bob.headers)).json() == []
    assert len((await conversation(alice, alices))["messages"]) == 2


async def test_another_persons_path_is_403_on_every_chat_route(
    app: FastAPI, alice: Caller, bob: Caller
) -> None:
    scripted(app)
    assert_problem(await send(bob, "hi", user_id=alice.user_id), 403)
    for method, path in (
        ("GET", "conversations"),
        ("GET", "conversations/1"),
        ("DELETE", "conversations/1"),
    ):
        response = await bob.client.request(method, f"/api/{alice.user_id}/{path}", headers=bob.headers)
        assert_problem(response, 403)


async def test_every_chat_route_needs_a_token(client: AsyncClient) -> None:
    for method, path in (
        ("POST", "chat"),
        ("GET", "conversations"),
        ("GET", "conversations/1"),
        ("DELETE", "conversations/1"),
    ):
        response = await client.request(method, f"/api/me/{path}", json={"message": "hi"})
        assert_problem(response, 401)


# --- configuration and limits ------------------------------------------------------------


async def test_without_a_model_chat_is_503_and_the_rest_is_unaffected(app: FastAPI, alice: Caller) -> None:
    assert app.state.chat is None
    body = assert_problem(await send(alice, "hello"), 503)
    assert "CHAT_MODEL" in body["detail"]
    assert (await alice.client.get("/health")).status_code == 200
    assert (await alice.client.get("/api/me/conversations", headers=alice.headers)).json() == []
    await alice.create(title="Still works")


async def test_a_message_over_the_limit_is_422_naming_the_setting(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, chat_message_max_length=10)) as app,
        http_client(app) as http,
    ):
        alice = sign_in(http, "alice")
        model = scripted(app, say("ok"))
        body = assert_problem(await send(alice, "x" * 11), 422)
        assert body["errors"][0]["loc"] == ["body", "message"]
        assert "CHAT_MESSAGE_MAX_LENGTH" in body["errors"][0]["msg"]
        assert (await send(alice, "x" * 10)).status_code == 200
        assert len(model.calls) == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "a\x00b"}, "message"),
        ({"message": 5}, "message"),
        ({}, "message"),
        ({"message": "hi", "conversation_id": 0}, "conversation_id"),
        ({"message": "hi", "conversation_id": "7"}, "conversation_id"),
        ({"message": "hi", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"message": "hi", "user_id": "bob"}, "user_id"),
    ],
)
async def test_a_bad_chat_body_is_422_naming_the_field(
    app: FastAPI, alice: Caller, body: dict[str, Any], named: str
) -> None:
    model = scripted(app)
    response = await alice.client.post("/api/me/chat", json=body, headers=alice.headers)
    problem = assert_problem(response, 422)
    assert named in {str(part) for issue in problem["errors"] for part in issue["loc"]}
    assert model.calls == ()
    assert run_sql(app.state.settings.database_url, "SELECT count(*) FROM messages")[0][0] == 0


async def test_chat_messages_per_minute_are_limited(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, chat_requests_per_minute=2)) as app,
        http_client(app) as http,
    ):
        alice, bob = sign_in(http, "alice"), sign_in(http, "bob")
        model = scripted(app, say("1"), say("2"), say("bob's"))
        assert (await send(alice, "one")).status_code == 200
        assert (await send(alice, "two")).status_code == 200
        limited = await send(alice, "three")
        assert "CHAT_REQUESTS_PER_MINUTE" in assert_problem(limited, 429)["detail"]
        assert int(limited.headers["Retry-After"]) >= 1
        # Per person: Bob's messages are his own.
        assert (await send(bob, "mine")).status_code == 200
        assert len(model.calls) == 3


async def test_each_tool_call_counts_against_the_persons_rate_limit(database_url: str) -> None:
    settings = make_settings(database_url, rate_limit_per_second=0.01, rate_limit_burst=3)
    async with running_app(settings) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        scripted(
            app,
            tool("add_task", {"title": "one"}),
            tool("add_task", {"title": "two"}, "call_2"),
            tool("add_task", {"title": "three"}, "call_3"),
            say("I was slowed down."),
        )
        # The request takes one token, each tool call one more: the third call finds none.
        answer = (await send(alice, "add three tasks")).json()
        results = [call["result"] for call in answer["tool_calls"]]
        assert results[2]["error"].startswith("rate limit exceeded for this user")
        assert run_sql(settings.database_url, "SELECT count(*) FROM tasks")[0][0] == 2


async def test_an_agent_that_never_finishes_is_stopped_at_the_turn_limit(database_url: str) -> None:
    async with running_app(make_settings(database_url, chat_max_turns=2)) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        scripted(app, tool("add_task", {"title": "again"}), tool("add_task", {"title": "again"}, "call_2"))
        response = await send(alice, "loop")
        problem = assert_problem(response, 422)
        assert "CHAT_MAX_TURNS" in problem["detail"]
        assert problem["errors"][0]["type"] == "chat_max_turns"
        (stored,) = [row for row in await _messages(app, "alice") if row["role"] == "assistant"]
        assert stored["error"]["status"] == 422
        assert len(stored["tool_calls"]) == 2  # what it did before it was stopped is kept


async def _messages(app: FastAPI, user: str) -> list[dict[str, Any]]:
    rows = run_sql(
        app.state.settings.database_url,
        f"SELECT role, content, tool_calls, error FROM messages WHERE user_id = '{user}' ORDER BY id",
    )
    return [
        {
            "role": role,
            "content": content,
            "tool_calls": orjson.loads(calls) if calls else [],
            "error": orjson.loads(error) if error else None,
        }
        for role, content, calls, error in rows
    ]


# --- faults ------------------------------------------------------------------------------


def slow(seconds: float, then: list[Any]) -> ModelStep:
    async def respond(_call: Any) -> list[Any]:
        await asyncio.sleep(seconds)
        return then

    return ModelStep.respond(respond)


async def test_a_turn_past_the_timeout_is_504_and_the_conversation_goes_on(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, chat_timeout_seconds=0.5)) as app,
        http_client(app) as http,
    ):
        alice = sign_in(http, "alice")
        scripted(app, tool("add_task", {"title": "Made before the timeout"}), slow(5, say("too late")))
        timed_out = await send(alice, "add a task, then think hard", headers={"Idempotency-Key": "k1"})
        assert "CHAT_TIMEOUT_SECONDS" in assert_problem(timed_out, 504)["detail"]
        person, agent = await _messages(app, "alice")
        assert person["content"] == "add a task, then think hard"
        assert agent["error"]["status"] == 504
        assert [call["tool"] for call in agent["tool_calls"]] == ["add_task"]
        # The retry with the same key gets the same answer and runs nothing again.
        again = await send(alice, "add a task, then think hard", headers={"Idempotency-Key": "k1"})
        assert assert_problem(again, 504)["detail"] == assert_problem(timed_out, 504)["detail"]
        assert again.headers["Idempotent-Replayed"] == "true"
        app.state.chat.model.extend([say("Here now.")])
        conversation_id = (await http.get("/api/me/conversations", headers=alice.headers)).json()[0]["id"]
        goes_on = await send(alice, "still there?", conversation_id=conversation_id)
        assert goes_on.status_code == 200, goes_on.text
        assert goes_on.json()["response"] == "Here now."
        assert run_sql(settings_url(app), "SELECT count(*) FROM tasks")[0][0] == 1


def settings_url(app: FastAPI) -> str:
    url: str = app.state.settings.database_url
    return url


@pytest.mark.parametrize(
    "failure",
    [
        openai.APIConnectionError(request=httpx.Request("POST", "http://model")),
        openai.RateLimitError(
            "slow down",
            response=httpx.Response(429, request=httpx.Request("POST", "http://model")),
            body=None,
        ),
    ],
    ids=["unreachable", "rate-limited"],
)
async def test_a_failing_model_is_503_and_the_message_is_kept(
    app: FastAPI, alice: Caller, failure: Exception
) -> None:
    scripted(app, failure)
    response = await send(alice, "hello?")
    body = assert_problem(response, 503)
    assert body["detail"].startswith("the chat model is unavailable")
    assert "slow down" not in body["detail"]
    person, agent = await _messages(app, alice.user_id)
    assert (person["content"], agent["error"]["status"]) == ("hello?", 503)


async def test_a_turn_left_by_a_stopped_server_is_closed_by_the_next_message(
    app: FastAPI, alice: Caller
) -> None:
    scripted(app, say("Back."))
    conversations = OwnedConversations(app.state.database, TokenClaims(subject=alice.user_id))
    # A turn whose server stopped mid-answer: its lease has run out, no answer came.
    started = await conversations.start_turn(
        None, "before the crash", lease_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    response = await send(alice, "hello again", conversation_id=started.conversation_id)
    assert response.status_code == 200, response.text
    messages = (await conversation(alice, started.conversation_id))["messages"]
    assert [(m["role"], m["content"], (m["error"] or {}).get("status")) for m in messages] == [
        ("user", "before the crash", None),
        ("assistant", "", 503),
        ("user", "hello again", None),
        ("assistant", "Back.", None),
    ]


# --- retries and concurrency -------------------------------------------------------------


async def test_an_idempotent_retry_replays_the_answer_and_runs_nothing_twice(
    app: FastAPI, alice: Caller
) -> None:
    model = scripted(app, tool("add_task", {"title": "Only once"}), say("Added."))
    key = {"Idempotency-Key": "add-once-1"}
    first = await send(alice, "add it", headers=key)
    second = await send(alice, "add it", headers=key)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(model.calls) == 2  # the first turn's two model calls; none for the retry
    streamed = await send(alice, "add it", headers={**key, "Accept": "text/event-stream"})
    assert events(streamed)[-1] == ("done", first.json())
    assert [task["title"] for task in (await alice.request("GET")).json()] == ["Only once"]
    reused = await send(alice, "something else", headers=key)
    assert assert_problem(reused, 422)["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert len(await _messages(app, alice.user_id)) == 2


class Gate:
    """A model step that waits until the test opens it."""

    def __init__(self, then: list[Any]) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.then = then

    def step(self) -> ModelStep:
        async def respond(_call: Any) -> list[Any]:
            self.entered.set()
            await self.opened.wait()
            return self.then

        return ModelStep.respond(respond)


@contextlib.asynccontextmanager
async def in_background(coroutine: Any) -> AsyncIterator["asyncio.Task[Any]"]:
    task = asyncio.ensure_future(coroutine)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_second_message_while_one_is_answered_is_409_never_interleaved(
    app: FastAPI, alice: Caller
) -> None:
    gate = Gate(say("First answered."))
    scripted(app, say("Started."), gate.step(), say("Second answered."))
    conversation_id = (await send(alice, "start")).json()["conversation_id"]
    async with in_background(send(alice, "first", conversation_id=conversation_id)) as first:
        await asyncio.wait_for(gate.entered.wait(), 10)
        # Twice the pool's size of messages at once to the same conversation: all refused.
        pool = app.state.settings.database_pool_size
        busy = await asyncio.gather(
            *(send(alice, f"second {n}", conversation_id=conversation_id) for n in range(2 * pool))
        )
        for response in busy:
            assert "still answering" in assert_problem(response, 409)["detail"]
        gate.opened.set()
        assert (await first).json()["response"] == "First answered."
    after = await send(alice, "second", conversation_id=conversation_id)
    assert after.json()["response"] == "Second answered."
    roles = [(m["role"], m["content"]) for m in (await conversation(alice, conversation_id))["messages"]]
    assert roles == [
        ("user", "start"),
        ("assistant", "Started."),
        ("user", "first"),
        ("assistant", "First answered."),
        ("user", "second"),
        ("assistant", "Second answered."),
    ]


async def test_a_retry_while_the_first_is_still_answered_is_409(app: FastAPI, alice: Caller) -> None:
    gate = Gate(say("Done."))
    model = scripted(app, gate.step())
    key = {"Idempotency-Key": "slow-1"}
    async with in_background(send(alice, "slow one", headers=key)) as first:
        await asyncio.wait_for(gate.entered.wait(), 10)
        retry = await send(alice, "slow one", headers=key)
        assert "still running" in assert_problem(retry, 409)["detail"]
        gate.opened.set()
        assert (await first).status_code == 200
    assert (await send(alice, "slow one", headers=key)).json()["response"] == "Done."
    assert len(model.calls) == 1


async def test_a_client_that_goes_away_does_not_cut_the_turn(app: FastAPI, alice: Caller) -> None:
    gate = Gate(say("Stored anyway."))
    scripted(app, tool("add_task", {"title": "Kept"}), gate.step())
    async with in_background(send(alice, "add and answer")) as request:
        await asyncio.wait_for(gate.entered.wait(), 10)
        request.cancel()
    gate.opened.set()
    for _ in range(100):
        messages = await _messages(app, alice.user_id)
        if len(messages) == 2:
            break
        await asyncio.sleep(0.05)
    assert messages[1]["content"] == "Stored anyway."
    assert [task["title"] for task in (await alice.request("GET")).json()] == ["Kept"]


# --- streaming ---------------------------------------------------------------------------


async def test_a_streamed_answer_sends_the_conversation_deltas_tool_calls_then_done(
    app: FastAPI, alice: Caller
) -> None:
    scripted(app, tool("add_task", {"title": "Streamed"}), say("Added it."))
    response = await send(alice, "add streamed", headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    sent = events(response)
    kinds = [kind for kind, _ in sent]
    assert kinds[0] == "conversation"
    assert kinds.index("tool_call") < kinds.index("delta") < kinds.index("done") == len(kinds) - 1
    assert "".join(data["text"] for kind, data in sent if kind == "delta") == "Added it."
    done = sent[-1][1]
    assert done["response"] == "Added it."
    assert done["conversation_id"] == sent[0][1]["conversation_id"]
    assert done["tool_calls"][0]["result"]["title"] == "Streamed"


async def test_a_streamed_turn_that_fails_ends_with_an_error_event(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, chat_timeout_seconds=0.3)) as app,
        http_client(app) as http,
    ):
        alice = sign_in(http, "alice")
        scripted(app, slow(5, say("too late")))
        response = await send(alice, "think", headers={"Accept": "text/event-stream"})
        kind, problem = events(response)[-1]
        assert kind == "error"
        assert problem["status"] == 504
        assert "CHAT_TIMEOUT_SECONDS" in problem["detail"]


# --- what the model is sent --------------------------------------------------------------


async def test_the_model_is_sent_a_window_of_recent_history_within_the_budget(database_url: str) -> None:
    settings = make_settings(database_url, chat_history_messages=40, chat_history_tokens=60)
    async with running_app(settings) as app, http_client(app) as http:
        alice = sign_in(http, "alice")
        model = scripted(app, *(say(f"answer {n} " + "x" * 40) for n in range(6)))
        conversation_id = None
        for n in range(6):
            body = {} if conversation_id is None else {"conversation_id": conversation_id}
            conversation_id = (await send(alice, f"question {n} " + "y" * 40, **body)).json()[
                "conversation_id"
            ]
        sent = model.last_call.input if model.last_call else []
        assert sent[-1] == {"role": "user", "content": "question 5 " + "y" * 40}
        history = sent[:-1]
        # About 13 tokens a message here: four messages fit in 60; the window starts with a question.
        assert [item["content"].split(" ")[1] for item in history] == ["3", "3", "4", "4"]
        assert history[0]["role"] == "user"
        assert "question 0" not in str(sent)


async def test_with_no_history_budget_the_model_sees_only_the_new_message(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, chat_history_messages=0)) as app,
        http_client(app) as http,
    ):
        alice = sign_in(http, "alice")
        model = scripted(app, say("a"), say("b"))
        conversation_id = (await send(alice, "first")).json()["conversation_id"]
        await send(alice, "second", conversation_id=conversation_id)
        assert model.last_call is not None
        assert model.last_call.input == [{"role": "user", "content": "second"}]


# --- hostile input -----------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.text(max_size=300), time_zone=st.text(max_size=70) | st.just("UTC"))
async def test_any_message_is_answered_or_refused_never_5xx(
    app: FastAPI, alice: Caller, message: str, time_zone: str
) -> None:
    model = scripted(app, *(say("ok") for _ in range(1)))
    response = await send(alice, message, time_zone=time_zone)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert len(model.calls) == 1
        assert response.json()["response"] == "ok"
    else:
        assert model.calls == ()


async def test_a_configured_model_sends_no_traces_unless_told(database_url: str) -> None:
    settings = make_settings(database_url, chat_model="llama3.2", openai_base_url="http://127.0.0.1:9/v1")
    async with running_app(settings) as app:
        assert app.state.chat is not None
        assert app.state.chat.run_config.tracing_disabled is True
        assert isinstance(get_trace_provider().create_trace("probe"), NoOpTrace)
    traced = make_settings(
        database_url, chat_model="m", openai_base_url="http://127.0.0.1:9/v1", chat_tracing=True
    )
    async with running_app(traced) as app:
        assert app.state.chat is not None
        assert app.state.chat.run_config.tracing_disabled is False
        assert not isinstance(get_trace_provider().create_trace("probe"), NoOpTrace)
    async with running_app(settings):
        assert isinstance(get_trace_provider().create_trace("probe"), NoOpTrace)


async def test_metrics_count_turns_tool_calls_and_tokens(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, metrics_enabled=True)) as app,
        http_client(app) as http,
    ):
        alice = sign_in(http, "alice")
        model = ScriptedModel(
            [
                tool("add_task", {"title": "Counted"}),
                say("Added."),
                openai.APIConnectionError(request=_REQUEST),
            ],
            default_usage=Usage(requests=1, input_tokens=100, output_tokens=20, total_tokens=120),
        )
        app.state.chat = ChatAgent(app.state.services, model)
        assert (await send(alice, "add one")).status_code == 200
        assert (await send(alice, "again")).status_code == 503
        text = (await http.get("/metrics")).text
        assert 'todo_api_chat_turns_total{outcome="answered"} 1.0' in text
        assert 'todo_api_chat_turns_total{outcome="503"} 1.0' in text
        assert "todo_api_chat_tool_calls_total 1.0" in text
        assert 'todo_api_chat_tokens_total{kind="input"} 200.0' in text
        assert 'todo_api_chat_tokens_total{kind="output"} 40.0' in text


_REQUEST = httpx.Request("POST", "http://model")
