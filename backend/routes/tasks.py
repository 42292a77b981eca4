"""The task routes: each checks nothing itself; the dependencies and the store do."""

from datetime import UTC, datetime
from typing import Annotated, Literal, get_args
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from pydantic import AwareDatetime, Field, StringConstraints, TypeAdapter, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import QueryParams

from backend.dependencies import OwnedTasksDep
from backend.errors import Unprocessable, problem_responses
from backend.models import (
    NO_NUL,
    TAG_MAX_LENGTH,
    TAG_PATTERN,
    TAGS_PER_TASK,
    DeletedCount,
    Priority,
    PriorityCounts,
    SortOrder,
    TaskCompletion,
    TaskCreate,
    TaskPublic,
    TaskReplace,
    TaskSort,
    TaskStats,
    TaskStatus,
    TaskUpdate,
)
from backend.recurrence import valid_time_zone
from backend.store.tasks import TaskFilters, default_order

MAX_PAGE_SIZE = 500
# Far beyond any real list, and small enough for every database's OFFSET.
MAX_OFFSET = 1_000_000_000
MAX_SEARCH_LENGTH = 200
MAX_SEARCH_WORDS = 10
TagQuery = Annotated[str, StringConstraints(min_length=1, max_length=TAG_MAX_LENGTH, pattern=TAG_PATTERN)]


class TaskIdConvertor(Convertor[str]):
    """A task's id in a path: any segment but `stats`, which is its own route, so that
    `PUT …/tasks/stats` is a 405 rather than a 422 about an id. FastAPI then parses the
    segment as an integer (a non-integer is still a 422 naming `task_id`)."""

    regex = r"(?!stats$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task_id", TaskIdConvertor())

router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["tasks"],
    responses=problem_responses(401, 403, 422, 429, 500, 503),
)

# One validation for the whole page: a third faster than a model_validate per task.
TASK_LIST = TypeAdapter(list[TaskPublic])
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The task's id.", examples=[42])]
not_found = problem_responses(404)
# A body that is not UTF-8 cannot even be parsed: 400, not 422; one too large is 413.
with_body = problem_responses(400, 413)


def tasks_path(request: Request, user_id: str) -> str:
    """The path of the user's task list, as a relative reference (RFC 9110 and RFC 8288
    allow one; clients resolve it against the request's URL).

    Built from the user's id, every character of it percent-encoded, and never from
    the Host header or the request's decoded path: it stays right behind a proxy,
    names no other host, and holds any `sub` the API accepts (`中文`, `a b`, a `>`).
    An absolute URL from `request.base_url` also cost 5% of a create's CPU (py-spy).
    """
    return f"{request.scope.get('root_path', '')}{router.prefix.format(user_id=quote(user_id, safe=''))}"


def task_path(request: Request, user_id: str, task_id: int) -> str:
    """The path of `get_task`, for `Location`."""
    return f"{tasks_path(request, user_id)}/{task_id}"


def link_header(path: str, query: QueryParams, *, total: int, limit: int, offset: int) -> str | None:
    """RFC 8288 `next` and `prev` links to `path`, keeping the request's other query parameters."""
    kept = [(name, value) for name, value in query.multi_items() if name not in ("limit", "offset")]

    def page(at: int) -> str:
        return f"{path}?{urlencode([*kept, ('limit', limit), ('offset', at)])}"

    links = []
    if offset + limit < total:
        links.append(f'<{page(offset + limit)}>; rel="next"')
    if offset > 0:
        links.append(f'<{page(min(max(offset - limit, 0), max(total - limit, 0)))}>; rel="prev"')
    return ", ".join(links) or None


@router.get(
    "",
    operation_id="listTasks",
    response_model=list[TaskPublic],
    responses={
        200: {
            "headers": {
                "X-Total-Count": {
                    "description": "Tasks matching the filter, before paging.",
                    "schema": {"type": "integer"},
                },
                "Link": {
                    "description": "RFC 8288 links to the `next` and `prev` pages, when they exist.",
                    "schema": {"type": "string"},
                },
            }
        }
    },
)
async def list_tasks(
    request: Request,
    response: Response,
    tasks: OwnedTasksDep,
    status_filter: Annotated[
        TaskStatus, Query(alias="status", description="Which tasks: all, pending or completed.")
    ] = "all",
    priority: Annotated[
        list[Priority] | SkipJsonSchema[None],
        Query(description="Tasks of any of these priorities (repeat the parameter for several)."),
    ] = None,
    tag: Annotated[
        Annotated[list[TagQuery], Field(max_length=TAGS_PER_TASK)] | SkipJsonSchema[None],
        Query(description="Tasks carrying all of these tags, case-insensitively (repeat for several)."),
    ] = None,
    due_before: Annotated[
        AwareDatetime | SkipJsonSchema[None],
        Query(
            description="Due at or before this date-time (with an offset); tasks without one are left out."
        ),
    ] = None,
    due_after: Annotated[
        AwareDatetime | SkipJsonSchema[None],
        Query(description="Due at or after this date-time (with an offset); tasks without one are left out."),
    ] = None,
    overdue: Annotated[
        bool | SkipJsonSchema[None],
        Query(description="`true`: due before now and not completed; `false`: every other task."),
    ] = None,
    remind_before: Annotated[
        AwareDatetime | SkipJsonSchema[None],
        Query(description="Reminder at or before this date-time: what a frontend polls to notify."),
    ] = None,
    q: Annotated[
        Annotated[str, StringConstraints(max_length=MAX_SEARCH_LENGTH, pattern=NO_NUL)]
        | SkipJsonSchema[None],
        Query(
            description=f"Search: every whitespace-separated word (at most {MAX_SEARCH_WORDS}) must occur "
            "in the title or the description, case-insensitively.",
        ),
    ] = None,
    sort: Annotated[
        TaskSort,
        Query(description="Sort key; ties are broken by id. `due` puts tasks without a due date last."),
    ] = "created",
    order: Annotated[
        SortOrder | None,
        # A plain enum in the schema: omitting it is how a client asks for the default.
        WithJsonSchema({"type": "string", "enum": list(get_args(SortOrder))}),
        Query(description="Default: `desc` for dates and priority, `asc` for title and due."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Tasks to skip.")] = 0,
) -> list[TaskPublic]:
    """List the user's tasks, filtered, searched, sorted and paged."""
    words = tuple((q or "").split())
    if len(words) > MAX_SEARCH_WORDS:
        raise Unprocessable(
            "the request is invalid: query.q",
            errors=[{"loc": ["query", "q"], "msg": f"at most {MAX_SEARCH_WORDS} words", "type": "too_long"}],
        )
    filters = TaskFilters(
        status=status_filter,
        priorities=frozenset(priority or ()),
        tags=tuple(dict.fromkeys(tag or ())),
        due_before=_utc(due_before),
        due_after=_utc(due_after),
        overdue=overdue,
        remind_before=_utc(remind_before),
        words=words,
    )
    page = await tasks.page(
        filters=filters, sort=sort, order=order or default_order(sort), limit=limit, offset=offset
    )
    response.headers["X-Total-Count"] = str(page.total)
    path = tasks_path(request, tasks.owner.subject)
    if links := link_header(path, request.query_params, total=page.total, limit=limit, offset=offset):
        response.headers["Link"] = links
    return TASK_LIST.validate_python(page.tasks)


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


@router.delete("", operation_id="deleteCompletedTasks")
async def delete_completed_tasks(
    tasks: OwnedTasksDep,
    status_filter: Annotated[
        Literal["completed"],
        Query(
            alias="status", description="Must be `completed`: only completed tasks can be cleared at once."
        ),
    ],
) -> DeletedCount:
    """Delete all of the user's completed tasks, in one statement."""
    return DeletedCount(deleted=await tasks.delete_completed())


@router.get("/stats", operation_id="getTaskStats")
async def get_task_stats(
    tasks: OwnedTasksDep,
    tz: Annotated[
        str,
        Query(
            max_length=64,
            description="IANA time zone whose today `due_today` counts.",
            examples=["Europe/Berlin"],
        ),
    ] = "UTC",
) -> TaskStats:
    """Counts of the user's tasks: total, completed, pending, overdue, due today, and pending by priority."""
    try:
        valid_time_zone(tz)
    except ValueError as error:
        raise Unprocessable(
            "the request is invalid: query.tz",
            errors=[{"loc": ["query", "tz"], "msg": str(error), "type": "value_error"}],
        ) from None
    row = await tasks.stats(tz)
    return TaskStats(
        total=row["total"],
        completed=row["completed"],
        pending=row["total"] - row["completed"],
        overdue=row["overdue"],
        due_today=row["due_today"],
        by_priority=PriorityCounts(none=row["none"], low=row["low"], medium=row["medium"], high=row["high"]),
    )


@router.post(
    "",
    operation_id="createTask",
    status_code=status.HTTP_201_CREATED,
    responses={
        **with_body,
        **problem_responses(409),
        201: {
            "headers": {
                "Location": {
                    "description": "The new task's path (a reference relative to the request's URL).",
                    "schema": {"type": "string"},
                }
            }
        },
    },
)
async def create_task(
    request: Request, response: Response, tasks: OwnedTasksDep, body: TaskCreate
) -> TaskPublic:
    """Create a task for the user."""
    task = await tasks.create(body)
    response.headers["Location"] = task_path(request, tasks.owner.subject, task["id"])
    return TaskPublic.model_validate(task)


@router.get("/{task_id:task_id}", operation_id="getTask", responses=not_found)
async def get_task(task_id: TaskId, tasks: OwnedTasksDep) -> TaskPublic:
    """Read one of the user's tasks."""
    return TaskPublic.model_validate(await tasks.get(task_id))


@router.put("/{task_id:task_id}", operation_id="replaceTask", responses={**not_found, **with_body})
async def replace_task(task_id: TaskId, tasks: OwnedTasksDep, body: TaskReplace) -> TaskPublic:
    """Replace a task's title and description (and `completed`, when given)."""
    return TaskPublic.model_validate(await tasks.replace(task_id, body))


@router.patch("/{task_id:task_id}", operation_id="updateTask", responses={**not_found, **with_body})
async def update_task(task_id: TaskId, tasks: OwnedTasksDep, body: TaskUpdate) -> TaskPublic:
    """Change some of a task's fields; `description: null` clears it."""
    return TaskPublic.model_validate(await tasks.update(task_id, body))


@router.delete(
    "/{task_id:task_id}",
    operation_id="deleteTask",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=not_found,
)
async def delete_task(task_id: TaskId, tasks: OwnedTasksDep) -> None:
    """Delete a task."""
    await tasks.delete(task_id)


@router.patch(
    "/{task_id:task_id}/complete", operation_id="setTaskCompletion", responses={**not_found, **with_body}
)
async def set_task_completion(
    task_id: TaskId,
    tasks: OwnedTasksDep,
    body: Annotated[
        TaskCompletion | None,
        Body(description="Omit the body to toggle; send `completed` to set it (safe to retry)."),
    ] = None,
) -> TaskPublic:
    """Toggle a task's completion, or set it explicitly."""
    completed = None if body is None else body.completed
    return TaskPublic.model_validate(await tasks.set_completion(task_id, completed))
