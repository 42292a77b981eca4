"""The chat endpoint as deployed: `todo-api serve` with CHAT_MODEL at OPENAI_BASE_URL, a
local OpenAI-compatible server (`openai_stub`), through the Agents SDK's real OpenAI client:
streamed chunks and tool calls, conversations that outlive a server and span two, the
timeout, and a model that cannot be reached."""

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import assert_problem, fresh_database, migrate, sse_events
from tests.openai_stub import Answer, ModelStub, calls, model_stub, text
from tests.processes import Server, bearer, cli, free_port, running_server, server_env

ALICE = "alice-chat"


@pytest.fixture
def stub() -> Iterator[tuple[ModelStub, str]]:
    with model_stub() as running:
        yield running


def chat_env(database_url: str, base_url: str, **settings: str) -> dict[str, str]:
    return server_env(
        database_url,
        CHAT_MODEL="stub-model-1",
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="sk-test-key",
        **settings,
    )


def send(server: Server, message: str, *, stream: bool = False, **body: Any) -> httpx.Response:
    headers = {**bearer(ALICE), **({"Accept": "text/event-stream"} if stream else {})}
    return httpx.post(
        f"{server.base_url}/api/me/chat", json={"message": message, **body}, headers=headers, timeout=30
    )


def latest_conversation(server: Server) -> dict[str, Any]:
    """The person's most recently active conversation, as the list shows it."""
    listed: list[dict[str, Any]] = httpx.get(
        f"{server.base_url}/api/me/conversations", headers=bearer(ALICE)
    ).json()
    return listed[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_streamed_conversation_through_an_openai_compatible_server(
    backend: str, tmp_path: Path, stub: tuple[ModelStub, str]
) -> None:
    model, base_url = stub
    model.script(calls(("add_task", {"title": "Buy milk", "due_at": "2027-01-05T09:00:00+01:00"})))
    model.script(text("Added Buy milk for Tuesday at 9."))
    with fresh_database(backend, tmp_path) as url:
        migrate(url)
        with running_server(chat_env(url, base_url), tmp_path / "server.log") as server:
            response = send(server, "add milk for tuesday at 9", stream=True, time_zone="Europe/Berlin")
            assert response.status_code == 200, response.text
            events = sse_events(response.text)
            kinds = [kind for kind, _ in events]
            assert kinds[0] == "conversation"
            assert kinds[-1] == "done"
            # The text came in the pieces the model streamed it in.
            deltas = [data["text"] for kind, data in events if kind == "delta"]
            assert len(deltas) > 1
            assert "".join(deltas) == "Added Buy milk for Tuesday at 9."
            (call,) = [data for kind, data in events if kind == "tool_call"]
            assert call["tool"] == "add_task"
            assert call["result"]["due_at"] == "2027-01-05T08:00:00Z"
            tasks = httpx.get(f"{server.base_url}/api/me/tasks", headers=bearer(ALICE)).json()
            assert [task["title"] for task in tasks] == ["Buy milk"]

    first, second = model.requests
    # The real client: the operator's model and key, streamed, with the task tools.
    assert first["model"] == "stub-model-1"
    assert first["stream"] is True
    assert model.headers[0]["authorization"] == "Bearer sk-test-key"
    tools = {tool["function"]["name"]: tool["function"] for tool in first["tools"]}
    assert {"add_task", "list_tasks", "get_task", "update_task", "complete_task", "delete_task"} <= set(tools)
    assert "user_id" not in tools["add_task"]["parameters"]["properties"]
    assert "Europe/Berlin" in first["messages"][0]["content"]
    # The second model call was sent the tool's result.
    assert any(
        message["role"] == "tool" and "Buy milk" in message["content"] for message in second["messages"]
    )


def _said(request: dict[str, Any]) -> list[str]:
    return [
        m["content"] for m in request["messages"] if m["role"] in ("user", "assistant") and m.get("content")
    ]


def test_a_conversation_resumes_after_a_restart_and_on_a_second_server(
    tmp_path: Path, stub: tuple[ModelStub, str]
) -> None:
    model, base_url = stub
    model.script(text("Hello, Alice."), text("Still here."), text("And here."))
    with fresh_database("postgresql", tmp_path) as url:
        migrate(url)
        env = chat_env(url, base_url)
        with running_server(env, tmp_path / "a.log") as first:
            conversation_id = send(first, "hello").json()["conversation_id"]
        # The first server is gone; a new one, and a second beside it, carry the conversation on.
        with (
            running_server(env, tmp_path / "b.log") as restarted,
            running_server(env, tmp_path / "c.log") as other,
        ):
            assert send(restarted, "are you there?", conversation_id=conversation_id).json()["response"] == (
                "Still here."
            )
            assert send(other, "and you?", conversation_id=conversation_id).json()["response"] == "And here."
            stored = httpx.get(
                f"{other.base_url}/api/me/conversations/{conversation_id}", headers=bearer(ALICE)
            ).json()
    # Each server read the history from the database, not from its memory.
    assert _said(model.requests[1])[-3:] == ["hello", "Hello, Alice.", "are you there?"]
    assert _said(model.requests[2])[-5:] == [
        "hello",
        "Hello, Alice.",
        "are you there?",
        "Still here.",
        "and you?",
    ]
    assert [m["content"] for m in stored["messages"]] == [
        "hello",
        "Hello, Alice.",
        "are you there?",
        "Still here.",
        "and you?",
        "And here.",
    ]


def test_a_restart_on_sqlite_keeps_the_conversation(tmp_path: Path, stub: tuple[ModelStub, str]) -> None:
    model, base_url = stub
    model.script(text("First."), text("Second."))
    with fresh_database("sqlite", tmp_path) as url:
        migrate(url)
        env = chat_env(url, base_url)
        with running_server(env, tmp_path / "a.log") as server:
            conversation_id = send(server, "one").json()["conversation_id"]
        with running_server(env, tmp_path / "b.log") as server:
            assert send(server, "two", conversation_id=conversation_id).json()["response"] == "Second."
    assert _said(model.requests[1]) == ["one", "First.", "two"]


def test_a_slow_model_is_504_after_the_chat_timeout_and_the_conversation_goes_on(
    tmp_path: Path, stub: tuple[ModelStub, str]
) -> None:
    # (On SQLite too in test_chat.py, in-process.)
    model, base_url = stub
    model.script(Answer(text="too late", delay=5), text("On time."))
    with fresh_database("postgresql", tmp_path) as url:
        migrate(url)
        env = chat_env(url, base_url, CHAT_TIMEOUT_SECONDS="1")
        with running_server(env, tmp_path / "server.log") as server:
            timed_out = send(server, "think slowly")
            assert "CHAT_TIMEOUT_SECONDS" in assert_problem(timed_out, 504)["detail"]
            conversation_id = latest_conversation(server)["id"]
            goes_on = send(server, "now quickly", conversation_id=conversation_id)
            assert goes_on.status_code == 200, goes_on.text
            assert goes_on.json()["response"] == "On time."


def test_a_model_that_fails_or_cannot_be_reached_is_503(tmp_path: Path, stub: tuple[ModelStub, str]) -> None:
    model, base_url = stub
    model.script(Answer(status=500), Answer(status=500))  # the client retries once
    with fresh_database("sqlite", tmp_path) as url:
        env = chat_env(url, base_url)
        cli(env, "migrate")
        with running_server(env, tmp_path / "a.log") as server:
            failed = assert_problem(send(server, "hello"), 503)
            assert failed["detail"].startswith("the chat model is unavailable (it answered 500)")
            assert latest_conversation(server)["title"] == "hello"
        unreachable = chat_env(url, f"http://127.0.0.1:{free_port()}/v1")
        with running_server(unreachable, tmp_path / "b.log") as server:
            detail = assert_problem(send(server, "hello?"), 503)["detail"]
            assert detail.startswith("the chat model is unavailable (it could not be reached)")
            assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_a_turn_cut_by_the_server_stopping_is_recorded_as_stopped(
    tmp_path: Path, stub: tuple[ModelStub, str]
) -> None:
    model, base_url = stub
    model.script(Answer(text="never sent", delay=60), text("After the restart."))
    with fresh_database("postgresql", tmp_path) as url:
        migrate(url)
        # A short graceful shutdown (REQUEST_TIMEOUT_SECONDS + 5 s) that the turn outlives.
        env = chat_env(url, base_url, REQUEST_TIMEOUT_SECONDS="1")
        with running_server(env, tmp_path / "a.log") as server, ThreadPoolExecutor(1) as thread:
            pending = thread.submit(send, server, "a long question")
            while not model.requests:
                time.sleep(0.05)
            assert server.stop(), "the server did not shut down cleanly"
            with contextlib.suppress(httpx.HTTPError):
                pending.result()
        with running_server(env, tmp_path / "b.log") as server:
            conversation_id = latest_conversation(server)["id"]
            stored = httpx.get(
                f"{server.base_url}/api/me/conversations/{conversation_id}", headers=bearer(ALICE)
            ).json()
            person, answer = stored["messages"]
            assert person["content"] == "a long question"
            assert answer["error"]["status"] == 503
            assert "stopped" in answer["error"]["detail"]
            # The conversation is free again: the next message is answered.
            goes_on = send(server, "are you back?", conversation_id=conversation_id)
            assert goes_on.json()["response"] == "After the restart."
