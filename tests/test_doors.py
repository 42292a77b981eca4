"""One rule, one answer, whichever door: the REST routes, the MCP tools and the chat agent's
tools go through one layer (`backend.api.shared`, the request models, the store), so the same
invalid input is refused by each with the same detail, and the same conditions hold (If-Match
and `expected_version`, REQUIRE_IF_MATCH, who the request may act for). Both databases; the
tools are called in-process exactly as the server calls them (tests/test_mcp.py drives the real
server)."""

from typing import Any

import pytest
from agents.testing import ScriptedModel, assistant_message, function_call
from fastapi import FastAPI

from backend.api.chat.agent import ChatAgent
from tests.conftest import Caller, assert_problem, http_client, make_settings, running_app, sign_in

pytestmark = pytest.mark.anyio

TWENTY_ONE = [f"t{i}" for i in range(21)]
ELEVEN_WORDS = " ".join(["word"] * 11)

# (REST method, path, query, body), (tool, arguments): the same input through each door.
SAME_INPUTS: list[
    tuple[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None], tuple[str, dict[str, Any]]]
] = [
    (("POST", "", None, {"title": ""}), ("add_task", {"title": ""})),
    (("POST", "", None, {"title": "x" * 201}), ("add_task", {"title": "x" * 201})),
    (("POST", "", None, {"title": 7}), ("add_task", {"title": 7})),
    (
        ("POST", "", None, {"title": "t", "completed": "yes"}),
        ("complete_task", {"task_id": 1, "completed": "yes"}),
    ),
    (
        ("POST", "", None, {"title": "t", "due_at": "2026-12-01T17:00:00"}),
        ("add_task", {"title": "t", "due_at": "2026-12-01T17:00:00"}),
    ),
    (
        ("POST", "", None, {"title": "t", "due_at": "9999-12-31T23:59:59-05:00"}),
        ("add_task", {"title": "t", "due_at": "9999-12-31T23:59:59-05:00"}),
    ),
    (
        ("POST", "", None, {"title": "t", "priority": "urgent"}),
        ("add_task", {"title": "t", "priority": "urgent"}),
    ),
    (
        ("POST", "", None, {"title": "t", "tags": TWENTY_ONE}),
        ("add_task", {"title": "t", "tags": TWENTY_ONE}),
    ),
    (("POST", "", None, {"title": "t", "tags": ["a\tb"]}), ("add_task", {"title": "t", "tags": ["a\tb"]})),
    (
        ("POST", "", None, {"title": "t", "recurrence": "FREQ=HOURLY", "due_at": "2090-01-01T00:00:00Z"}),
        ("add_task", {"title": "t", "recurrence": "FREQ=HOURLY", "due_at": "2090-01-01T00:00:00Z"}),
    ),
    (
        ("POST", "", None, {"title": "t", "recurrence": "FREQ=DAILY"}),
        ("add_task", {"title": "t", "recurrence": "FREQ=DAILY"}),
    ),
    (
        ("POST", "", None, {"title": "t", "time_zone": "Mars/Olympus"}),
        ("add_task", {"title": "t", "time_zone": "Mars/Olympus"}),
    ),
    (
        ("POST", "", None, {"title": "t", "description": "\x00"}),
        ("add_task", {"title": "t", "description": "\x00"}),
    ),
    (("POST", "", None, {"title": "t", "colour": "red"}), ("add_task", {"title": "t", "colour": "red"})),
    (("GET", "", {"limit": 501}, None), ("list_tasks", {"limit": 501})),
    (("GET", "", {"limit": 0}, None), ("list_tasks", {"limit": 0})),
    (("GET", "", {"offset": -1}, None), ("list_tasks", {"offset": -1})),
    (("GET", "", {"q": ELEVEN_WORDS}, None), ("list_tasks", {"q": ELEVEN_WORDS})),
    (("GET", "", {"tag": TWENTY_ONE}, None), ("list_tasks", {"tag": TWENTY_ONE})),
    (("GET", "", {"priority": "urgent"}, None), ("list_tasks", {"priority": ["urgent"]})),
    (("GET", "", {"sort": "colour"}, None), ("list_tasks", {"sort": "colour"})),
    (("GET", "", {"status": "done"}, None), ("list_tasks", {"status": "done"})),
    (
        ("GET", "", {"due_before": "2026-12-01T17:00:00"}, None),
        ("list_tasks", {"due_before": "2026-12-01T17:00:00"}),
    ),
    (("GET", "", {"cursor": "not-a-cursor"}, None), ("list_tasks", {"cursor": "not-a-cursor"})),
    (("GET", "", {"cursor": "x", "offset": 5}, None), ("list_tasks", {"cursor": "x", "offset": 5})),
    (("GET", "/stats", {"tz": "Europe"}, None), ("get_stats", {"tz": "Europe"})),
    (("GET", "/abc", None, None), ("get_task", {"task_id": "abc"})),
    (("GET", "/05", None, None), ("get_task", {"task_id": "05"})),
    (("GET", "/9223372036854775808", None, None), ("get_task", {"task_id": 9223372036854775808})),
    (("PATCH", "/1", None, {"title": ""}), ("update_task", {"task_id": 1, "title": ""})),
    (
        ("PATCH", "/1", None, {"time_zone": "posix/UTC"}),
        ("update_task", {"task_id": 1, "time_zone": "posix/UTC"}),
    ),
]


def rest_issues(problem: dict[str, Any]) -> set[tuple[str, str]]:
    """A 422's errors as (where, why), without the `body`, `query` or `path` a tool has not."""
    return {(".".join(str(part) for part in error["loc"][1:]), error["msg"]) for error in problem["errors"]}


def tool_issues(text: str) -> set[tuple[str, str]]:
    assert text.startswith("invalid arguments: "), text
    issues = set()
    for issue in text.removeprefix("invalid arguments: ").split("; "):
        where, _, why = issue.partition(": ")
        issues.add((where, why))
    return issues


@pytest.mark.parametrize(("rest", "tool"), SAME_INPUTS, ids=lambda value: str(value)[:60])
async def test_the_same_invalid_input_is_refused_alike_by_both_doors(
    alice: Caller, rest: tuple[str, str, Any, Any], tool: tuple[str, dict[str, Any]]
) -> None:
    method, path, query, body = rest
    problem = assert_problem(await alice.request(method, path, params=query, json=body), 422)
    refused = (await alice.tool(*tool)).refused
    assert rest_issues(problem) == tool_issues(refused), (problem, refused)
    assert (await alice.request("GET")).json() == []  # nothing was stored by either


@pytest.mark.parametrize(("rest", "tool"), SAME_INPUTS[:8], ids=lambda value: str(value)[:60])
async def test_the_chat_agents_tools_refuse_alike(
    app: FastAPI, alice: Caller, rest: tuple[str, str, Any, Any], tool: tuple[str, dict[str, Any]]
) -> None:
    """The agent's tool calls are the MCP tools' calls: the same refusal, word for word."""
    name, arguments = tool
    model = ScriptedModel([[function_call(name, arguments, call_id="c1")], [assistant_message("ok")]])
    app.state.chat = ChatAgent(app.state.services, model)
    answer = await alice.client.post("/api/me/chat", json={"message": "do it"}, headers=alice.headers)
    (call,) = answer.json()["tool_calls"]
    assert call["result"] == {"error": (await alice.tool(*tool)).refused}
    assert (await alice.request("GET")).json() == []


async def test_a_tools_expected_version_is_if_match(alice: Caller) -> None:
    task = await alice.create(title="t")
    await alice.request("PATCH", f"/{task['id']}", json={"title": "now at 2"})
    for tool, arguments in [
        ("update_task", {"task_id": task["id"], "title": "stale", "expected_version": 1}),
        ("complete_task", {"task_id": task["id"], "expected_version": 1}),
        ("delete_task", {"task_id": task["id"], "expected_version": 1}),
    ]:
        refused = (await alice.tool(tool, arguments)).refused
        assert "version 2" in refused, (tool, refused)
        assert "expected_version" in refused
    current = await alice.tool(
        "update_task", {"task_id": task["id"], "title": "fresh", "expected_version": 2}
    )
    assert current.result is not None
    assert current.result["version"] == 3
    missing = (await alice.tool("delete_task", {"task_id": 999_999, "expected_version": 1})).refused
    assert missing == "no task with this id belongs to this user"  # as REST's 404


async def test_require_if_match_holds_in_both_doors(database_url: str) -> None:
    async with (
        running_app(make_settings(database_url, require_if_match=True)) as app,
        http_client(app) as http,
    ):
        alice = sign_in(http, "alice")
        task = await alice.create(title="t")
        assert_problem(await alice.request("PATCH", f"/{task['id']}", json={"title": "blind"}), 428)
        for tool, arguments in [
            ("update_task", {"task_id": task["id"], "title": "blind"}),
            ("complete_task", {"task_id": task["id"]}),
            ("delete_task", {"task_id": task["id"]}),
        ]:
            assert "REQUIRE_IF_MATCH" in (await alice.tool(tool, arguments)).refused, tool
        written = await alice.tool("complete_task", {"task_id": task["id"], "expected_version": 1})
        assert written.result is not None
        assert written.result["completed"] is True
        added = await alice.tool("add_task", {"title": "a create needs no version"})
        assert added.result is not None


async def test_a_tool_may_name_the_signed_in_person_and_no_one_else(alice: Caller, bob: Caller) -> None:
    for user_id in (alice.user_id, "me"):
        added = await alice.tool("add_task", {"user_id": user_id, "title": f"for {user_id}"})
        assert added.result is not None
        listed = await alice.tool("list_tasks", {"user_id": user_id, "status": "pending"})
        assert listed.result is not None
    refused = (await alice.tool("list_tasks", {"user_id": bob.user_id})).refused
    assert refused == "user_id is not the signed-in user"
    assert (await alice.tool("add_task", {"user_id": bob.user_id, "title": "planted"})).error
    assert (await bob.request("GET")).json() == []


async def test_unknown_arguments_are_refused_by_every_tool(alice: Caller) -> None:
    task = await alice.create(title="t")
    for tool, arguments in [
        ("add_task", {"title": "t", "due": "tomorrow"}),
        ("list_tasks", {"stauts": "pending"}),
        ("get_task", {"task_id": task["id"], "verbose": True}),
        ("update_task", {"task_id": task["id"], "titel": "typo"}),
        ("complete_task", {"task_id": task["id"], "done": True}),
        ("delete_task", {"task_id": task["id"], "force": True}),
        ("list_tags", {"sort": "name"}),
        ("get_stats", {"timezone": "Europe/Berlin"}),
    ]:
        assert "Extra inputs are not permitted" in (await alice.tool(tool, arguments)).refused, tool
    assert (await alice.request("GET", f"/{task['id']}")).json() == task
