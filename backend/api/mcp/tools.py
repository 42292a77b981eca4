"""Tools for AI agents, over the Model Context Protocol: served at /mcp by the official SDK
(`mcp`, 1.x, FastMCP's Streamable HTTP transport, stateless), in this app and process.

The tools are a second door into the same layer as the REST routes (`shared`): each acts
for the token's `sub`, admitted by `Services.admit` (the token, the rate limit, the key
server's 503) as a REST request is, and validates its arguments with the same field types
as the REST bodies and the same `ListQuery`, so a rule is one rule in both doors.

Each tool is a module-level function of a `ToolContext` and its arguments' model, testable
alone; `TasksMcp` serves them (listing their schemas, validating and admitting each call,
logging it) in place of FastMCP's own tool registry, which ignores unknown arguments and
validates leniently. Tokens are checked by the REST routes' `TokenVerifier`, plugged into
the SDK's own token-verifier interface.
"""

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Annotated, Any, Literal

import orjson
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ContentBlock, ToolAnnotations
from mcp.types import Tool as McpTool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.shared import Services, check_owner, expected_version, task_stats
from backend.api.shared import list_tasks as list_page
from backend.auth.tokens import InvalidTokenError, KeySetUnavailableError, TokenClaims, TokenVerifier
from backend.domain.header_grammar import MAX_VERSION
from backend.errors import (
    PROBLEM_JSON,
    ProblemError,
    ServiceUnavailable,
    UserBusy,
    problem_response,
)
from backend.models import (
    HIDE_NULL,
    USER_ID_MAX_LENGTH,
    Description,
    Id,
    Instant,
    ListQuery,
    PriorityField,
    Recurrence,
    TagPublic,
    Tags,
    TaskCreate,
    TaskPublic,
    TaskStats,
    TaskUpdate,
    TimeZone,
    Title,
)
from backend.store.database import DatabaseUnavailableError, UserBusyError
from backend.store.tags import OwnedTags
from backend.store.tasks import OwnedTasks, PreconditionFailed

logger = logging.getLogger("backend.mcp")

MCP_PATH = "/mcp"


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


# --- arguments ------------------------------------------------------------------------------


class ToolArguments(BaseModel):
    """Every tool's arguments: strict, as the REST bodies are (`"yes"` is not a boolean), and
    unknown ones refused, as REST refuses unknown fields. A null is an argument not given
    (agents send them for what they leave out). `user_id` is for agents written to the
    hackathon spec's tool signatures: it must name the signed-in person (or be `me`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Annotated[
        str | None,
        HIDE_NULL,
        Field(
            max_length=USER_ID_MAX_LENGTH,
            description="Optional: the signed-in person's id, or `me`. Every tool acts for the token's "
            "person whatever it says; any other id is refused.",
        ),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: object) -> object:
        if isinstance(data, dict):
            return {name: value for name, value in data.items() if value is not None}
        return data


ExpectedVersion = Annotated[
    int | None,
    HIDE_NULL,
    Field(
        ge=1,
        le=MAX_VERSION,
        description="Write only if the task is still at this version (its `version`), as REST's "
        "If-Match; otherwise the call fails, naming the current version.",
    ),
]
TaskIdArgument = Annotated[Id, Field(description="The task's id.")]


class AddTask(ToolArguments):
    title: Annotated[Title, Field(description="What to do: 1 to 200 characters.")]
    description: Annotated[Description | None, HIDE_NULL, Field(description="Up to 1000 characters.")] = None
    priority: PriorityField = "none"
    due_at: Annotated[
        Instant | None,
        HIDE_NULL,
        Field(description="When it is due: an ISO 8601 date-time with an offset."),
    ] = None
    remind_at: Annotated[Instant | None, HIDE_NULL, Field(description="When to remind the person.")] = None
    tags: Tags = []
    recurrence: Annotated[Recurrence | None, HIDE_NULL, Field(description="An RRULE (needs due_at).")] = None
    time_zone: TimeZone = "UTC"


class ListTasks(ToolArguments, ListQuery):
    # ListQuery's lenient parsing stays (a limit of "5" is 5, as in a REST query), its
    # extra="ignore" does not: an unknown argument is refused.
    model_config = ConfigDict(extra="forbid", strict=False)


class TaskRef(ToolArguments):
    task_id: TaskIdArgument


class UpdateTask(ToolArguments):
    task_id: TaskIdArgument
    expected_version: ExpectedVersion = None
    title: Annotated[Title | None, HIDE_NULL, Field(description="A new title.")] = None
    description: Annotated[Description | None, HIDE_NULL, Field(description="New details.")] = None
    completed: Annotated[
        bool | None, HIDE_NULL, Field(description="Mark it completed (true) or pending.")
    ] = None
    priority: Annotated[PriorityField | None, HIDE_NULL] = None
    due_at: Annotated[
        Instant | None, HIDE_NULL, Field(description="A new due date-time, with an offset.")
    ] = None
    remind_at: Annotated[Instant | None, HIDE_NULL, Field(description="A new reminder date-time.")] = None
    tags: Annotated[Tags | None, HIDE_NULL, Field(description="The task's tags, replacing the old ones.")] = (
        None
    )
    recurrence: Annotated[Recurrence | None, HIDE_NULL, Field(description="A new RRULE.")] = None
    time_zone: Annotated[TimeZone | None, HIDE_NULL] = None
    clear: Annotated[
        list[Literal["description", "due_at", "remind_at", "recurrence", "tags"]],
        Field(max_length=5, description="Fields to empty."),
    ] = []


class CompleteTask(ToolArguments):
    task_id: TaskIdArgument
    completed: Annotated[
        bool | None,
        HIDE_NULL,
        Field(description="true: completed, false: pending; omit it to toggle."),
    ] = None
    expected_version: ExpectedVersion = None


class DeleteTask(ToolArguments):
    task_id: TaskIdArgument
    expected_version: ExpectedVersion = None


class NoArguments(ToolArguments):
    pass


class GetStats(ToolArguments):
    tz: Annotated[TimeZone, Field(description="IANA zone whose today `due_today` counts.")] = "UTC"


# --- results --------------------------------------------------------------------------------


class TaskList(BaseModel):
    tasks: list[TaskPublic]
    total: int = Field(description="Tasks matching the filters, before paging.")
    next_cursor: str | None = Field(
        None, description="When tasks follow: pass it as `cursor` for the next page (absent on the last)."
    )

    @model_serializer(mode="wrap")
    def _without_an_empty_cursor(self, handler: Any) -> Any:
        data = handler(self)
        if data.get("next_cursor") is None:
            data.pop("next_cursor", None)
        return data


class TagList(BaseModel):
    tags: list[TagPublic]


class Deleted(BaseModel):
    deleted: int = Field(description="The id of the task deleted.")


# --- the tools ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool acts on: the admitted person's stores, and the settings."""

    services: Services
    owner: TokenClaims

    @property
    def tasks(self) -> OwnedTasks:
        return self.services.tasks(self.owner)

    @property
    def tags(self) -> OwnedTags:
        return self.services.tags(self.owner)

    @property
    def require_if_match(self) -> bool:
        return self.services.settings.require_if_match


async def add_task(context: ToolContext, args: AddTask) -> TaskPublic:
    """Add a task for the signed-in person."""
    body = TaskCreate.model_validate(args.model_dump(exclude={"user_id"}, exclude_none=True))
    return TaskPublic.model_validate(await context.tasks.create(body))


async def list_tasks(context: ToolContext, args: ListTasks) -> TaskList:
    """List the signed-in person's tasks, with the REST list's filters, sorting and paging."""
    listing = await list_page(context.tasks, args)
    return TaskList(
        tasks=[TaskPublic.model_validate(row) for row in listing.page.tasks],
        total=listing.page.total,
        next_cursor=listing.next_cursor,
    )


async def get_task(context: ToolContext, args: TaskRef) -> TaskPublic:
    """Read one of the signed-in person's tasks."""
    return TaskPublic.model_validate(await context.tasks.get(args.task_id))


async def update_task(context: ToolContext, args: UpdateTask) -> TaskPublic:
    """Change some fields of one of the signed-in person's tasks; the others stay as they are."""
    body = args.model_dump(exclude={"user_id", "task_id", "expected_version", "clear"}, exclude_none=True)
    for name in args.clear:
        body[name] = [] if name == "tags" else None
    if not body:
        raise ToolError("nothing to change: give at least one field, or clear one")
    expected = expected_version(args.expected_version, required=context.require_if_match)
    update = TaskUpdate.model_validate(body)
    return TaskPublic.model_validate(await context.tasks.update(args.task_id, update, expected=expected))


async def complete_task(context: ToolContext, args: CompleteTask) -> TaskPublic:
    """Mark one of the signed-in person's tasks completed or pending, or toggle it; completing an
    occurrence of a recurring task creates the next one."""
    expected = expected_version(args.expected_version, required=context.require_if_match)
    return TaskPublic.model_validate(
        await context.tasks.set_completion(args.task_id, args.completed, expected=expected)
    )


async def delete_task(context: ToolContext, args: DeleteTask) -> Deleted:
    """Delete one of the signed-in person's tasks."""
    expected = expected_version(args.expected_version, required=context.require_if_match)
    await context.tasks.delete(args.task_id, expected=expected)
    return Deleted(deleted=args.task_id)


async def list_tags(context: ToolContext, args: NoArguments) -> TagList:
    """The signed-in person's tags on at least one task, with how many tasks (and pending) carry each."""
    return TagList(tags=[TagPublic.model_validate(row) for row in await context.tags.list()])


async def get_stats(context: ToolContext, args: GetStats) -> TaskStats:
    """Counts of the signed-in person's tasks: total, completed, pending, overdue, due today, and
    pending by priority."""
    return await task_stats(context.tasks, args.tz)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    run: Callable[[ToolContext, Any], Awaitable[BaseModel]]
    arguments: type[ToolArguments]
    result: type[BaseModel]
    annotations: ToolAnnotations

    @property
    def name(self) -> str:
        return self.run.__name__

    def definition(self) -> McpTool:
        return McpTool(
            name=self.name,
            description=(self.run.__doc__ or "").strip(),
            inputSchema=_compact(self.arguments.model_json_schema()),
            outputSchema=self.result.model_json_schema(mode="serialization"),
            annotations=self.annotations,
        )


def _writes(*, destructive: bool = False, idempotent: bool = False) -> ToolAnnotations:
    return ToolAnnotations(readOnlyHint=False, destructiveHint=destructive, idempotentHint=idempotent)


READ = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
TOOLS = {
    spec.name: spec
    for spec in (
        ToolSpec(add_task, AddTask, TaskPublic, _writes()),
        ToolSpec(list_tasks, ListTasks, TaskList, READ),
        ToolSpec(get_task, TaskRef, TaskPublic, READ),
        ToolSpec(update_task, UpdateTask, TaskPublic, _writes(idempotent=True)),
        ToolSpec(complete_task, CompleteTask, TaskPublic, _writes()),
        ToolSpec(delete_task, DeleteTask, Deleted, _writes(destructive=True, idempotent=True)),
        ToolSpec(list_tags, NoArguments, TagList, READ),
        ToolSpec(get_stats, GetStats, TaskStats, READ),
    )
}


@cache
def tool_definitions() -> list[McpTool]:
    """The tools as `tools/list` shows them: their schemas made once per process (8.6 ms)."""
    return [spec.definition() for spec in TOOLS.values()]


# An enum this long (the time zones) is left out of a tool's schema: an agent's model reads
# every tool's schema with every request, and the names are checked here anyway.
_LONGEST_ENUM = 50


def _compact(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: _compact(value)
            for key, value in schema.items()
            if not (key == "enum" and isinstance(value, list) and len(value) > _LONGEST_ENUM)
        }
    if isinstance(schema, list):
        return [_compact(item) for item in schema]
    return schema


# --- the server -----------------------------------------------------------------------------


class TasksMcp(FastMCP):
    """FastMCP's server, transport and auth, serving `TOOLS` through the shared layer."""

    def __init__(self, services: Services, **settings: Any) -> None:
        super().__init__(**settings)
        self.services = services

    async def list_tools(self) -> list[McpTool]:
        return tool_definitions()

    async def call_tool(
        self, name: str, arguments: dict[str, Any]
    ) -> Sequence[ContentBlock] | dict[str, Any]:
        """One call: admitted, validated, run; its access line; a refusal as a tool error
        with the detail REST's problem would carry."""
        spec = TOOLS.get(name)
        if spec is None:
            raise ToolError(f"Unknown tool: {name}")
        started = time.perf_counter()
        outcome = "ok"
        try:
            access = get_access_token()
            # The SDK's middleware lets no unauthenticated call this far; a missing token is a 401.
            owner = await self.services.admit(None if access is None else access.token)
            args = spec.arguments.model_validate(arguments)
            if args.user_id is not None:
                check_owner(args.user_id, owner, "user_id")
            result = await spec.run(ToolContext(self.services, owner), args)
            # The structured result; the SDK adds it as text for clients that read only that.
            structured: dict[str, Any] = orjson.loads(result.model_dump_json())
            return structured
        except PreconditionFailed as error:
            outcome = f"error {error.status.value}"
            raise ToolError(
                f"expected_version does not match: the task is at version {error.current_version} now; "
                "read it again, then retry"
            ) from None
        except ProblemError as error:
            outcome = f"error {error.status.value}"
            raise ToolError(refusal(error)) from None
        except ValidationError as error:
            outcome = "error 422"
            raise ToolError(invalid_arguments(error)) from None
        except UserBusyError as error:
            busy = UserBusy(error.share)
            outcome = f"error {busy.status.value}"
            raise ToolError(busy.detail) from None
        except DatabaseUnavailableError:
            outcome = "error 503"
            raise ToolError("the database is unreachable; retry shortly") from None
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
                    "tool": name,
                    "outcome": outcome,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


def refusal(error: ProblemError) -> str:
    """A problem as a tool error: its detail, and for a 422 the arguments it names."""
    if error.errors:
        return "invalid arguments: " + "; ".join(
            f"{_argument(issue.loc)}: {issue.msg}" for issue in error.errors
        )
    return error.detail


def invalid_arguments(error: ValidationError) -> str:
    """Which argument was wrong and why, in one line (never the value sent)."""
    parts = [
        f"{_argument(item['loc'])}: {str(item['msg']).removeprefix('Value error, ')}"
        for item in error.errors(include_input=False, include_url=False)
    ]
    return "invalid arguments: " + "; ".join(parts)


def _argument(loc: Sequence[str | int]) -> str:
    """An error's location as an argument: without REST's `body.` or `query.`."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(str(part) for part in parts) or "arguments"


def create_mcp(services: Services) -> TasksMcp:
    """The MCP server and its tools, for this app's services."""
    settings = services.settings
    public = settings.public_url.rstrip("/")
    return TasksMcp(
        services,
        name="todo-api",
        instructions="Manage the signed-in person's tasks: add, list (with filters), read, update, "
        "complete and delete them, and read their tags and counts. Every tool acts for the person "
        "whose token is sent; there is no other user to choose.",
        token_verifier=SdkTokenVerifier(services.verifier),
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
            unavailable = ServiceUnavailable("Better Auth's key server (JWKS) is unreachable; retry shortly")
            response = problem_response(
                HTTPStatus.SERVICE_UNAVAILABLE, unavailable.detail, headers=unavailable.headers
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
