"""The MCP server at /mcp, with the official SDK's client over Streamable HTTP against the real
server process: the same tokens, the same isolation, the same rules as the REST API."""

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.mcp import MCPServerStreamableHttp
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from backend.auth.tokens import issue_token
from tests.conftest import BACKENDS, fresh_database
from tests.processes import (
    Server,
    bearer,
    blocking,
    cli,
    fresh,
    fresh_server,
    running_server,
    server_env,
    serving,
)

pytestmark = pytest.mark.anyio

TOOLS = {
    "add_task",
    "list_tasks",
    "get_task",
    "update_task",
    "complete_task",
    "delete_task",
    "move_task",
    "list_tags",
    "list_lists",
    "create_list",
    "get_stats",
}


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the module: each test signs in users of its own."""
    directory = tmp_path_factory.mktemp("mcp")
    with fresh_server(request.param, directory) as running:
        yield running


@asynccontextmanager
async def session_for(
    server: Server, user: str, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers=bearer(user), timeout=30, transport=transport) as http,
        streamable_http_client(f"{server.base_url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.isError, result.content
    assert result.structuredContent is not None
    return result.structuredContent


def error_text(result: CallToolResult) -> str:
    assert result.isError
    return " ".join(getattr(part, "text", "") for part in result.content)


async def test_the_tools_their_schemas_and_annotations(server: Server) -> None:
    async with session_for(server, "alice") as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        # Acts for the token's sub: a user_id is optional (for agents written to the spec's
        # signatures) and must name the signed-in person; anything not listed is refused.
        assert "user_id" not in tool.inputSchema.get("required", []), name
        assert tool.inputSchema["additionalProperties"] is False, name
        assert tool.description, name
        assert tool.outputSchema is not None, name
        assert tool.annotations is not None, name
    assert tools["list_tasks"].annotations.readOnlyHint is True  # type: ignore[union-attr]
    assert tools["get_task"].annotations.readOnlyHint is True  # type: ignore[union-attr]
    assert tools["delete_task"].annotations.destructiveHint is True  # type: ignore[union-attr]
    assert tools["update_task"].annotations.idempotentHint is True  # type: ignore[union-attr]
    assert tools["add_task"].annotations.readOnlyHint is False  # type: ignore[union-attr]
    listing = tools["list_tasks"].inputSchema["properties"]
    assert {"status", "priority", "tag", "q", "sort", "order", "limit", "offset"} <= set(listing)
    assert listing["limit"]["maximum"] == 500
    assert tools["add_task"].inputSchema["required"] == ["title"]
    assert set(tools["get_task"].outputSchema["properties"]) >= {"id", "title", "tags", "version"}  # type: ignore[index]


async def test_every_tool_and_the_rest_api_see_one_state(server: Server) -> None:
    rest = httpx.AsyncClient(base_url=server.base_url, headers=bearer("carol"), timeout=10)
    async with rest, session_for(server, "carol") as session:
        added = structured(
            await session.call_tool(
                "add_task",
                {
                    "title": "Buy groceries",
                    "due_at": "2026-12-01T17:00:00+01:00",
                    "tags": ["errands"],
                    "priority": "high",
                },
            )
        )
        assert added["due_at"] == "2026-12-01T16:00:00Z"
        listed = (await rest.get("/api/carol/tasks")).json()
        assert [task["id"] for task in listed] == [added["id"]]
        assert listed[0] == added

        from_rest = (await rest.post("/api/me/tasks", json={"title": "Call mum"})).json()
        found = structured(await session.call_tool("list_tasks", {"q": "mum"}))
        assert found["total"] == 1
        assert found["tasks"] == [from_rest]

        assert structured(await session.call_tool("get_task", {"task_id": added["id"]})) == added
        updated = structured(
            await session.call_tool(
                "update_task", {"task_id": added["id"], "title": "Buy bread", "clear": ["due_at"]}
            )
        )
        assert (updated["title"], updated["due_at"]) == ("Buy bread", None)
        done = structured(await session.call_tool("complete_task", {"task_id": added["id"]}))
        assert done["completed"] is True
        assert (await rest.get(f"/api/carol/tasks/{added['id']}")).json() == done
        tags = structured(await session.call_tool("list_tags", {}))
        assert [(t["name"], t["task_count"]) for t in tags["tags"]] == [("errands", 1)]
        stats = structured(await session.call_tool("get_stats", {"tz": "Europe/Berlin"}))
        assert (stats["total"], stats["completed"], stats["pending"]) == (2, 1, 1)
        assert structured(await session.call_tool("delete_task", {"task_id": added["id"]})) == {
            "deleted": added["id"]
        }
        assert (await rest.get(f"/api/carol/tasks/{added['id']}")).status_code == 404


async def test_list_tasks_date_filters_mean_the_instant_whatever_the_offset(server: Server) -> None:
    async with session_for(server, "dora") as session:
        await session.call_tool("add_task", {"title": "New year", "due_at": "2030-01-01T01:00:00Z"})
        # 05:00 at +05:00 is midnight UTC, an hour before the task is due; 06:00 is the hour itself.
        for arguments, total in (
            ({"due_before": "2030-01-01T05:00:00+05:00"}, 0),
            ({"due_before": "2030-01-01T06:00:00+05:00"}, 1),
            ({"due_after": "2030-01-01T06:30:00+05:00"}, 0),
        ):
            listed = structured(await session.call_tool("list_tasks", arguments))
            assert listed["total"] == total, arguments


async def test_another_users_token_cannot_see_change_or_delete_through_any_tool(server: Server) -> None:
    async with session_for(server, "dave") as alice:
        secret = structured(await alice.call_tool("add_task", {"title": "dave's secret"}))
    async with session_for(server, "mallory") as mallory:
        assert structured(await mallory.call_tool("list_tasks", {}))["tasks"] == []
        for name, arguments in [
            ("get_task", {"task_id": secret["id"]}),
            ("update_task", {"task_id": secret["id"], "title": "mine"}),
            ("complete_task", {"task_id": secret["id"]}),
            ("delete_task", {"task_id": secret["id"]}),
        ]:
            assert "no task with this id belongs to this user" in error_text(
                await mallory.call_tool(name, arguments)
            )
        assert structured(await mallory.call_tool("list_tags", {}))["tags"] == []
    async with session_for(server, "dave") as alice:
        assert structured(await alice.call_tool("get_task", {"task_id": secret["id"]})) == secret


INVALID = [
    ("add_task", {"title": ""}, "title"),
    ("add_task", {"title": "x" * 201}, "title"),
    ("add_task", {"title": "t", "due_at": "2026-12-01T17:00:00"}, "due_at"),
    ("add_task", {"title": "t", "priority": "urgent"}, "priority"),
    ("add_task", {"title": "t", "recurrence": "FREQ=DAILY"}, "due_at"),
    ("add_task", {}, "title"),
    ("list_tasks", {"limit": 501}, "limit"),
    ("get_task", {"task_id": "seven"}, "task_id"),
    ("get_stats", {"tz": "Mars/Olympus"}, "tz"),
]


async def test_invalid_arguments_are_a_tool_error_naming_the_argument(server: Server) -> None:
    async with session_for(server, "invalid-args") as session:
        for tool, arguments, named in INVALID:
            message = error_text(await session.call_tool(tool, arguments))
            assert named in message, (tool, arguments, message)
            assert "Traceback" not in message
        assert structured(await session.call_tool("list_tasks", {}))["tasks"] == []  # nothing was added


async def test_no_token_or_a_bad_one_is_401_with_the_resource_metadata(server: Server) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        for headers in (
            {},
            {"Authorization": "Bearer not.a.token"},
            {"Authorization": f"Bearer {issue_token('x' * 40, 'a')}"},
        ):
            response = await http.post("/mcp", json=initialize, headers={**accept, **headers})
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith("Bearer")
            assert 'resource_metadata="' in challenge
        metadata = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
        assert metadata["resource"].endswith("/mcp")
        assert metadata["authorization_servers"]
        assert (await http.post("/mcp/", json=initialize, headers=accept)).status_code == 404  # no redirect


async def test_every_call_is_one_access_line_without_its_arguments(tmp_path: Path) -> None:
    async with fresh("sqlite", tmp_path) as database_url:
        env = server_env(database_url)
        await blocking(cli, env, "migrate")
        async with serving(env, tmp_path / "server.log") as server:
            async with session_for(server, "alice") as session:
                await session.call_tool("add_task", {"title": "a very private title"})
                await session.call_tool("get_task", {"task_id": 999})
            assert await blocking(server.stop)
    lines = [line for line in server.log_lines() if line.get("logger") == "backend.mcp"]
    assert [(line["tool"], line["outcome"]) for line in lines] == [
        ("add_task", "ok"),
        ("get_task", "error 404"),
    ]
    assert all("duration_ms" in line for line in lines)
    assert "a very private title" not in server.log_path.read_text()


class TakingTurns(httpx.AsyncBaseTransport):
    """Sends each request to the next of `servers` in turn, as a load balancer without
    sticky sessions may: one client's consecutive requests go to different processes."""

    def __init__(self, servers: list[Server]) -> None:
        self.ports = itertools.cycle([httpx.URL(server.base_url).port for server in servers])
        self.transport = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(port=next(self.ports))
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()


async def test_two_server_processes_take_turns_at_one_clients_calls(tmp_path: Path) -> None:
    """Stateless: one session's requests, its initialisation included, alternate between
    two server processes on one database (two instances, or two workers), and all work."""
    async with fresh("postgresql", tmp_path) as database_url:
        env = server_env(database_url)
        await blocking(cli, env, "migrate")
        async with (
            serving(env, tmp_path / "first.log") as first,
            serving(env, tmp_path / "second.log") as second,
        ):
            async with session_for(first, "alice", TakingTurns([first, second])) as session:
                ids = [
                    structured(await session.call_tool("add_task", {"title": f"t{i}"}))["id"]
                    for i in range(12)
                ]
                listed = structured(await session.call_tool("list_tasks", {"limit": 50}))
            calls = [
                [line["tool"] for line in server.log_lines() if line.get("message") == "tool"]
                for server in (first, second)
            ]
    assert all(calls), calls  # each process took some of the calls
    assert sorted(calls[0] + calls[1]) == sorted(["add_task"] * 12 + ["list_tasks"])
    assert sorted(task["id"] for task in listed["tasks"]) == sorted(ids)
    assert json.loads(json.dumps(listed)) == listed


def test_mcp_enabled_false_turns_it_off(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as database_url:
        env = server_env(database_url, MCP_ENABLED="false")
        cli(env, "migrate")
        with running_server(env, tmp_path / "server.log") as server:
            response = httpx.post(f"{server.base_url}/mcp", json={}, headers=bearer("alice"))
    assert response.status_code == 404


async def test_an_openai_agents_sdk_agent_can_use_the_server(server: Server) -> None:
    """The OpenAI Agents SDK's own MCP client, forwarding the signed-in person's token: it lists
    the tools and calls one directly (no model involved)."""
    async with session_for(server, "erin") as session:
        created = structured(await session.call_tool("add_task", {"title": "from the agent test"}))
    params = {"url": f"{server.base_url}/mcp", "headers": bearer("erin")}
    async with MCPServerStreamableHttp(params=params, name="todo", cache_tools_list=True) as agent_server:  # type: ignore[arg-type]
        tools = {tool.name for tool in await agent_server.list_tools()}
        result = await agent_server.call_tool("list_tasks", {"q": "agent"})
    assert tools == TOOLS
    assert not result.isError
    assert result.structuredContent == {"tasks": [created], "total": 1}


def test_a_foreign_host_is_refused_by_the_dns_rebinding_protection(server: Server) -> None:
    response = httpx.post(
        f"{server.base_url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={**bearer("alice"), "Host": "evil.example", "Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 421
    assert response.headers["content-type"] == "application/problem+json"
    assert "Host" in response.json()["detail"]


async def test_the_rate_limit_counts_tool_calls(tmp_path: Path) -> None:
    async with fresh("sqlite", tmp_path) as database_url:
        env = server_env(database_url, RATE_LIMIT_PER_SECOND="0.1", RATE_LIMIT_BURST="3")
        await blocking(cli, env, "migrate")
        async with serving(env, tmp_path / "server.log") as server, session_for(server, "frank") as session:
            results = [await session.call_tool("list_tasks", {}) for _ in range(4)]
    assert [result.isError for result in results] == [False, False, False, True]
    assert "rate limit" in error_text(results[-1])


async def test_over_the_wire_unknown_arguments_are_refused_and_versions_checked(server: Server) -> None:
    async with session_for(server, "grace") as session:
        typo = await session.call_tool("add_task", {"title": "t", "due": "tomorrow"})
        assert "due: Extra inputs are not permitted" in error_text(typo)
        added = structured(await session.call_tool("add_task", {"user_id": "me", "title": "versioned"}))
        stale = await session.call_tool(
            "update_task", {"task_id": added["id"], "title": "late", "expected_version": added["version"] + 1}
        )
        assert f"version {added['version']}" in error_text(stale)
        fresh = structured(
            await session.call_tool(
                "update_task",
                {"task_id": added["id"], "title": "on time", "expected_version": added["version"]},
            )
        )
        assert fresh["version"] == added["version"] + 1
        refused = await session.call_tool("list_tasks", {"user_id": "someone-else"})
        assert error_text(refused) == "user_id is not the signed-in user"
