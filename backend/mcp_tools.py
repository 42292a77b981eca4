"""Tools for AI agents, over the Model Context Protocol: served at /mcp by the official SDK
(`mcp`, 1.x, FastMCP's Streamable HTTP transport, stateless), in this app and process.

The tools are a second door into the same store as the REST routes: each acts for the
token's `sub` and takes no user id, so an agent can do nothing the person could not;
every rule (validation, ownership, limits, recurrence) is the store's or the request
models', never a copy. Tokens are checked by the REST routes' `TokenVerifier`, plugged
into the SDK's own token-verifier interface; the per-user rate limit counts tool calls.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Annotated, Any, Literal, TypeVar

import orjson
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import AwareDatetime, BaseModel, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.config import Settings
from backend.db import Database
from backend.errors import PROBLEM_JSON, ProblemError, TooManyRequests, problem_response
from backend.models import (
    PRIORITIES,
    Priority,
    SortOrder,
    TagPublic,
    TaskCompletion,
    TaskCreate,
    TaskPublic,
    TaskSort,
    TaskStats,
    TaskStatus,
    TaskUpdate,
)
from backend.rate_limit import RateLimiter
from backend.recurrence import valid_time_zone
from backend.security import InvalidTokenError, KeySetUnavailableError, TokenClaims, TokenVerifier
from backend.store.tags import OwnedTags
from backend.store.tasks import (
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    MAX_SEARCH_LENGTH,
    OwnedTasks,
    TaskFilters,
    default_order,
    search_words,
)

logger = logging.getLogger("backend.mcp")

MCP_PATH = "/mcp"
T = TypeVar("T")


class SdkTokenVerifier:
    """The SDK's `TokenVerifier` interface over the REST routes' verifier: one implementation
    of every rule (HS256 and Better Auth's JWKS, algorithms, expiry, issuer, audience)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await self.verifier.verify(token)
        except InvalidTokenError:
            return None  # the SDK answers 401 with WWW-Authenticate
        # KeySetUnavailableError goes up: `McpEndpoint` answers it 503, as the REST routes do.
        return AccessToken(token=token, client_id=claims.subject, subject=claims.subject, scopes=[])


class TaskList(BaseModel):
    tasks: list[TaskPublic]
    total: int = Field(description="Tasks matching the filters, before paging.")


class TagList(BaseModel):
    tags: list[TagPublic]


class Deleted(BaseModel):
    deleted: int = Field(description="The id of the task deleted.")


READ = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)


def create_mcp(
    settings: Settings, database: Database, verifier: TokenVerifier, limiter: RateLimiter | None
) -> FastMCP:
    """The MCP server and its tools, for this app's database and verifier."""
    public = settings.public_url.rstrip("/")
    server = FastMCP(
        name="todo-api",
        instructions="Manage the signed-in person's tasks: add, list (with filters), read, update, "
        "complete and delete them, and read their tags and counts. Every tool acts for the person "
        "whose token is sent; there is no user id to give.",
        token_verifier=SdkTokenVerifier(verifier),
        auth=AuthSettings(
            issuer_url=settings.better_auth_url or public,
            resource_server_url=f"{public}{MCP_PATH}",
            required_scopes=[],
            # Better Auth's tokens name its own origin as their audience, which our
            # verifier checks (JWT_AUDIENCE), not this resource's URL.
            validate_token_resource=False,
        ),
        stateless_http=True,  # no session to stick to a worker or an instance
        json_response=True,
        streamable_http_path=MCP_PATH,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=settings.mcp_allowed_hosts,
            allowed_origins=settings.cors_origins,
        ),
    )

    async def caller() -> TokenClaims:
        access = get_access_token()
        if access is None:  # the SDK's middleware lets no unauthenticated call this far
            raise ToolError("not signed in")
        claims = await verifier.verify(access.token)  # remembered: no second check of the signature
        if limiter is not None and (wait := await limiter.wait_seconds(claims.subject)) > 0:
            raise TooManyRequests(wait)  # a tool error with the REST answer's detail (see `run`)
        return claims

    async def tasks() -> OwnedTasks:
        return OwnedTasks(database, await caller(), max_tasks=settings.max_tasks_per_user)

    async def run(tool: str, action: Callable[[], Awaitable[T]]) -> T:
        """One call: its access line; a refusal as a tool error with the problem's detail."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await action()
        except ProblemError as error:
            outcome = f"error {error.status.value}"
            raise ToolError(error.detail) from None
        except ValidationError as error:
            outcome = "error 422"
            raise ToolError(_invalid(error)) from None
        except ToolError:
            outcome = "error"
            raise
        except Exception as error:
            outcome = "error 500"
            logger.error("unhandled error in a tool", exc_info=error)
            raise ToolError("an unexpected error occurred") from None
        finally:
            # The tool and the outcome, never the arguments (they are a person's tasks).
            logger.info(
                "tool",
                extra={
                    "tool": tool,
                    "outcome": outcome,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False))
    async def add_task(
        title: Annotated[str, Field(description="What to do: 1 to 200 characters.")],
        description: Annotated[str | None, Field(description="Details, up to 1000 characters.")] = None,
        priority: Annotated[Priority, Field(description="none, low, medium or high.")] = "none",
        due_at: Annotated[
            AwareDatetime | None, Field(description="When it is due: an ISO 8601 date-time with an offset.")
        ] = None,
        remind_at: Annotated[AwareDatetime | None, Field(description="When to remind the person.")] = None,
        tags: Annotated[list[str] | None, Field(description="Up to 20 tag names.")] = None,
        recurrence: Annotated[
            str | None, Field(description="An RFC 5545 RRULE such as FREQ=WEEKLY;BYDAY=MO (needs due_at).")
        ] = None,
        time_zone: Annotated[str, Field(description="IANA zone the recurrence follows.")] = "UTC",
    ) -> TaskPublic:
        """Add a task for the signed-in person."""

        async def action() -> TaskPublic:
            body: dict[str, Any] = {"title": title, "priority": priority, "time_zone": time_zone}
            for name, value in (
                ("description", description),
                ("due_at", due_at),
                ("remind_at", remind_at),
                ("tags", tags),
                ("recurrence", recurrence),
            ):
                if value is not None:
                    body[name] = value
            return TaskPublic.model_validate(await (await tasks()).create(_body(TaskCreate, body)))

        return await run("add_task", action)

    @server.tool(annotations=READ)
    async def list_tasks(
        status: Annotated[TaskStatus, Field(description="all, pending or completed.")] = "all",
        priority: Annotated[list[Priority] | None, Field(description="Any of these priorities.")] = None,
        tag: Annotated[list[str] | None, Field(description="Tasks carrying all of these tags.")] = None,
        due_before: Annotated[AwareDatetime | None, Field(description="Due at or before this.")] = None,
        due_after: Annotated[AwareDatetime | None, Field(description="Due at or after this.")] = None,
        overdue: Annotated[bool | None, Field(description="true: due before now and not completed.")] = None,
        remind_before: Annotated[
            AwareDatetime | None, Field(description="Reminder at or before this.")
        ] = None,
        q: Annotated[
            str | None,
            Field(
                description="Words that must all occur in the title or description.",
                max_length=MAX_SEARCH_LENGTH,
            ),
        ] = None,
        sort: Annotated[TaskSort, Field(description="created, updated, title, due or priority.")] = "created",
        order: Annotated[SortOrder | None, Field(description="asc or desc; default by sort.")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = 100,
        offset: Annotated[int, Field(ge=0, le=MAX_OFFSET, description="Tasks to skip.")] = 0,
    ) -> TaskList:
        """List the signed-in person's tasks, with the REST list's filters, sorting and paging."""

        async def action() -> TaskList:
            try:
                words = search_words(q)
            except ValueError as error:
                raise ToolError(f"q: {error}") from None
            filters = TaskFilters(
                status=status,
                priorities=frozenset(priority or ()),
                tags=tuple(dict.fromkeys(tag or ())),
                due_before=due_before,
                due_after=due_after,
                overdue=overdue,
                remind_before=remind_before,
                words=words,
            )
            page = await (await tasks()).page(
                filters=filters, sort=sort, order=order or default_order(sort), limit=limit, offset=offset
            )
            return TaskList(tasks=[TaskPublic.model_validate(row) for row in page.tasks], total=page.total)

        return await run("list_tasks", action)

    @server.tool(annotations=READ)
    async def get_task(task_id: Annotated[int, Field(ge=1, description="The task's id.")]) -> TaskPublic:
        """Read one of the signed-in person's tasks."""

        async def action() -> TaskPublic:
            return TaskPublic.model_validate(await (await tasks()).get(task_id))

        return await run("get_task", action)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True))
    async def update_task(
        task_id: Annotated[int, Field(ge=1, description="The task's id.")],
        title: Annotated[str | None, Field(description="A new title.")] = None,
        description: Annotated[str | None, Field(description="New details.")] = None,
        completed: Annotated[bool | None, Field(description="Mark it completed (true) or pending.")] = None,
        priority: Annotated[Priority | None, Field(description="none, low, medium or high.")] = None,
        due_at: Annotated[
            AwareDatetime | None, Field(description="A new due date-time, with an offset.")
        ] = None,
        remind_at: Annotated[AwareDatetime | None, Field(description="A new reminder date-time.")] = None,
        tags: Annotated[
            list[str] | None, Field(description="The task's tags, replacing the old ones.")
        ] = None,
        recurrence: Annotated[str | None, Field(description="A new RRULE.")] = None,
        time_zone: Annotated[str | None, Field(description="A new IANA zone.")] = None,
        clear: Annotated[
            list[Literal["description", "due_at", "remind_at", "recurrence", "tags"]] | None,
            Field(description="Fields to empty."),
        ] = None,
    ) -> TaskPublic:
        """Change some fields of one of the signed-in person's tasks; the others stay as they are."""

        async def action() -> TaskPublic:
            given = {
                "title": title,
                "description": description,
                "completed": completed,
                "priority": priority,
                "due_at": due_at,
                "remind_at": remind_at,
                "tags": tags,
                "recurrence": recurrence,
                "time_zone": time_zone,
            }
            body: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
            for name in clear or ():
                body[name] = [] if name == "tags" else None
            if not body:
                raise ToolError("nothing to change: give at least one field, or clear one")
            return TaskPublic.model_validate(await (await tasks()).update(task_id, _body(TaskUpdate, body)))

        return await run("update_task", action)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False))
    async def complete_task(
        task_id: Annotated[int, Field(ge=1, description="The task's id.")],
        completed: Annotated[
            bool | None, Field(description="true: completed, false: pending; omit it to toggle.")
        ] = None,
    ) -> TaskPublic:
        """Mark one of the signed-in person's tasks completed or pending, or toggle it; completing an
        occurrence of a recurring task creates the next one."""

        async def action() -> TaskPublic:
            if completed is not None:
                _body(TaskCompletion, {"completed": completed})
            return TaskPublic.model_validate(await (await tasks()).set_completion(task_id, completed))

        return await run("complete_task", action)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True))
    async def delete_task(task_id: Annotated[int, Field(ge=1, description="The task's id.")]) -> Deleted:
        """Delete one of the signed-in person's tasks."""

        async def action() -> Deleted:
            await (await tasks()).delete(task_id)
            return Deleted(deleted=task_id)

        return await run("delete_task", action)

    @server.tool(annotations=READ)
    async def list_tags() -> TagList:
        """The signed-in person's tags on at least one task, with how many tasks (and pending) carry each."""

        async def action() -> TagList:
            owned = OwnedTags(database, await caller())
            return TagList(tags=[TagPublic.model_validate(row) for row in await owned.list()])

        return await run("list_tags", action)

    @server.tool(annotations=READ)
    async def get_stats(
        tz: Annotated[str, Field(description="IANA zone whose today `due_today` counts.")] = "UTC",
    ) -> TaskStats:
        """Counts of the signed-in person's tasks: total, completed, pending, overdue, due today, and pending
        by priority."""

        async def action() -> TaskStats:
            try:
                valid_time_zone(tz)
            except ValueError as error:
                raise ToolError(f"tz: {error}") from None
            row = await (await tasks()).stats(tz)
            return TaskStats.model_validate(
                {
                    **row,
                    "pending": row["total"] - row["completed"],
                    "by_priority": {name: row[name] for name in PRIORITIES},
                }
            )

        return await run("get_stats", action)

    return server


def _body(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """The arguments as the REST route's body would be, validated by the same model."""
    # Through JSON, as a request body travels: dates as strings, as the models expect.
    return model.model_validate_json(orjson.dumps(values))


def _invalid(error: ValidationError) -> str:
    """Which argument was wrong and why, in one line (never the value sent)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        parts.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return "invalid arguments: " + "; ".join(parts)


def _refusal(start: Message) -> bool:
    """A 401 or 403, or any other 4xx not in JSON (a JSON-RPC error is left alone)."""
    status: int = start["status"]
    if status in (401, 403):
        return True
    content_type = dict(start.get("headers", [])).get(b"content-type", b"")
    return 400 <= status < 500 and not content_type.startswith(b"application/json")


class McpEndpoint:
    """The SDK's /mcp app inside ours: its HTTP-level refusals in problem+json (an OAuth
    error for a missing or bad token, keeping its `WWW-Authenticate`; plain text for a Host
    or Origin refused by the DNS-rebinding protection). JSON-RPC errors stay JSON-RPC, as
    MCP clients expect. And 503 when no verification key can be had (Better Auth's JWKS
    unreachable), as the REST routes answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: Message | None = None

        async def as_problem(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and _refusal(message):
                held = message  # replaced once its body says why
                return
            if held is not None and message["type"] == "http.response.body":
                await self._problem(scope, receive, send, held, message.get("body", b""))
                return
            await send(message)

        try:
            await self.app(scope, receive, as_problem)
        except KeySetUnavailableError:
            response = problem_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "Better Auth's key server (JWKS) is unreachable; retry shortly",
                headers={"Retry-After": "5"},
            )
            await response(scope, receive, send)

    @staticmethod
    async def _problem(scope: Scope, receive: Receive, send: Send, start: Message, body: bytes) -> None:
        try:
            said = orjson.loads(body)
        except orjson.JSONDecodeError:
            said = {"error_description": body.decode("utf-8", "replace")}
        if not isinstance(said, dict):
            said = {}
        detail = said.get("error_description") or said.get("error") or "a valid Bearer token is required"
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in start.get("headers", [])
            if name.lower() == b"www-authenticate"
        }
        response = problem_response(start["status"], str(detail), headers=headers)
        assert response.media_type == PROBLEM_JSON
        await response(scope, receive, send)
