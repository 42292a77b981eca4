"""The MCP tools, each a module-level function of a `ToolContext` and its arguments' model,
testable alone; their schemas (`TOOLS`, `tool_definitions`); and how a refusal reads as a
tool error. Served by `server.TasksMcp`.

The tools are a second door into the same layer as the REST routes (`api.shared`): each acts
for the token's `sub`, admitted as a REST request is, and validates its arguments with the
same field types as the REST bodies and the same `ListQuery`, so a rule is one rule in both
doors.
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import orjson
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import Tool as McpTool
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from backend.api.shared import Services, check_owner, expected_version, task_stats
from backend.api.shared import list_tasks as list_page
from backend.auth.tokens import TokenClaims
from backend.domain.header_grammar import MAX_VERSION
from backend.errors import ProblemError, UserBusy
from backend.models import (
    HIDE_NULL,
    USER_ID_MAX_LENGTH,
    Description,
    Id,
    Instant,
    ListName,
    ListPublic,
    ListQuery,
    PriorityField,
    Recurrence,
    TagPublic,
    Tags,
    TaskCreate,
    TaskMove,
    TaskPublic,
    TaskStats,
    TaskUpdate,
    TimeZone,
    Title,
)
from backend.store.database import DatabaseUnavailableError, UserBusyError
from backend.store.tags import OwnedTags
from backend.store.task_errors import PreconditionFailed
from backend.store.tasks import OwnedTasks


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
    list_id: Annotated[
        Id | None, HIDE_NULL, Field(description="The list it goes in (default: the Inbox).")
    ] = None
    list: Annotated[
        ListName | None,
        HIDE_NULL,
        Field(description="Or the list's name (case-insensitively), instead of list_id."),
    ] = None
    parent_id: Annotated[
        Id | None,
        HIDE_NULL,
        Field(description="Make it a subtask of this task (it goes in that task's list, last)."),
    ] = None


class MoveTask(ToolArguments):
    task_id: TaskIdArgument
    list_id: Annotated[
        Id | None, HIDE_NULL, Field(description="The list it goes to (default: its parent's, or its own).")
    ] = None
    list: Annotated[ListName | None, HIDE_NULL, Field(description="Or that list's name.")] = None
    parent_id: Annotated[
        Id | None, HIDE_NULL, Field(description="The task it goes under; omit it for the top level.")
    ] = None
    after_id: Annotated[
        Id | None, HIDE_NULL, Field(description="The task it is to follow there; omit it to put it first.")
    ] = None
    expected_version: ExpectedVersion = None


class ListTasks(ToolArguments, ListQuery):
    # ListQuery's lenient parsing stays (a limit of "5" is 5, as in a REST query), its
    # extra="ignore" does not: an unknown argument is refused.
    model_config = ConfigDict(extra="forbid", strict=False)

    list: Annotated[
        ListName | None, HIDE_NULL, Field(description="Only this list's tasks, by name (or give list_id).")
    ] = None


class CreateList(ToolArguments):
    name: ListName


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
    list_id: Annotated[Id | None, HIDE_NULL, Field(description="Count only this list's tasks.")] = None


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


class ListList(BaseModel):
    lists: list[ListPublic]


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


async def _list_named(context: ToolContext, list_id: int | None, name: str | None) -> int | None:
    """A list given by id or by name (not both); its id."""
    if name is None:
        return list_id
    if list_id is not None:
        raise ToolError("give list_id or list, not both")
    found = await context.services.lists(context.owner).named(name)
    if found is None:
        raise ToolError(f"no list named {name!r}: list_lists shows the person's lists")
    return found


async def add_task(context: ToolContext, args: AddTask) -> TaskPublic:
    """Add a task for the signed-in person (to their Inbox, to a list given by id or name, or as a
    subtask of one of their tasks)."""
    values = args.model_dump(exclude={"user_id", "list"}, exclude_none=True)
    values["list_id"] = await _list_named(context, args.list_id, args.list)
    body = TaskCreate.model_validate(values)
    return TaskPublic.model_validate(await context.tasks.create(body))


async def move_task(context: ToolContext, args: MoveTask) -> TaskPublic:
    """Move one of the signed-in person's tasks: to another list, under another task (or to the
    top level), after a given task (or first). Its subtasks go with it."""
    expected = expected_version(args.expected_version, required=context.require_if_match)
    values = args.model_dump(include={"parent_id", "after_id"}, exclude_none=True)
    values["list_id"] = await _list_named(context, args.list_id, args.list)
    target = TaskMove.model_validate(values)
    return TaskPublic.model_validate(await context.tasks.move(args.task_id, target, expected=expected))


async def list_tasks(context: ToolContext, args: ListTasks) -> TaskList:
    """List the signed-in person's tasks, with the REST list's filters, sorting and paging (one
    list's, given by list_id or its name)."""
    if args.list is not None:
        args = args.model_copy(update={"list_id": await _list_named(context, args.list_id, args.list)})
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


async def list_lists(context: ToolContext, args: NoArguments) -> ListList:
    """The signed-in person's lists (the Inbox first among them), with how many tasks (and pending)
    each holds."""
    rows = await context.services.lists(context.owner).list()
    return ListList(lists=[ListPublic.model_validate(row) for row in rows])


async def create_list(context: ToolContext, args: CreateList) -> ListPublic:
    """Make a new list for the signed-in person, after their others."""
    return ListPublic.model_validate(await context.services.lists(context.owner).create(args.name))


async def get_stats(context: ToolContext, args: GetStats) -> TaskStats:
    """Counts of the signed-in person's tasks: total, completed, pending, overdue, due today, and
    pending by priority."""
    return await task_stats(context.tasks, args.tz, args.list_id)


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
            inputSchema=compact_schema(self.arguments.model_json_schema()),
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
        ToolSpec(move_task, MoveTask, TaskPublic, _writes(idempotent=True)),
        ToolSpec(list_tags, NoArguments, TagList, READ),
        ToolSpec(list_lists, NoArguments, ListList, READ),
        ToolSpec(create_list, CreateList, ListPublic, _writes()),
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


def compact_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: compact_schema(value)
            for key, value in schema.items()
            if not (key == "enum" and isinstance(value, list) and len(value) > _LONGEST_ENUM)
        }
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    return schema


class ToolRefused(Exception):
    """A call refused, as a tool error says it: what REST's problem would say (`status`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def call_tool(context: ToolContext, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One call of a tool by an agent (the MCP server's, or the chat's own), for an admitted
    person: its arguments validated, its `user_id` checked, run through the shared layer; the
    structured result, or `ToolRefused` with the detail REST's problem would carry. Any
    other exception is a bug, for the door to log."""
    spec = TOOLS.get(name)
    if spec is None:
        raise ToolRefused(f"Unknown tool: {name}", 404)
    try:
        args = spec.arguments.model_validate(arguments)
        if args.user_id is not None:
            check_owner(args.user_id, context.owner, "user_id")
        result = await spec.run(context, args)
    except PreconditionFailed as error:
        raise ToolRefused(
            f"expected_version does not match: the task is at version {error.current_version} now; "
            "read it again, then retry",
            error.status.value,
        ) from None
    except ProblemError as error:
        raise ToolRefused(refusal(error), error.status.value) from None
    except ValidationError as error:
        raise ToolRefused(invalid_arguments(error), 422) from None
    except UserBusyError as error:
        busy = UserBusy(error.share)
        raise ToolRefused(busy.detail, busy.status.value) from None
    except DatabaseUnavailableError:
        raise ToolRefused("the database is unreachable; retry shortly", 503) from None
    except ToolError as error:
        raise ToolRefused(str(error), 400) from None
    # The structured result; the SDK adds it as text for clients that read only that.
    structured: dict[str, Any] = orjson.loads(result.model_dump_json())
    return structured


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
