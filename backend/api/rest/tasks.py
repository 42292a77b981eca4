"""The task routes: each checks nothing itself; the dependencies and the store do."""

from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import QueryParams

from backend.api.rest.dependencies import OwnedTasksDep
from backend.api.rest.headers import IdempotencyKey, IfMatch, IfNoneMatch
from backend.api.rest.idempotency import Answer, answer, read_answer
from backend.api.shared import if_match_versions, task_stats
from backend.api.shared import list_tasks as list_page
from backend.api.task_json import task_json, tasks_json
from backend.app_state import state_of
from backend.errors import problem_responses
from backend.models import (
    DECIMAL_ID,
    MAX_ID,
    DeletedCount,
    ListQuery,
    StatsQuery,
    TaskCompletion,
    TaskCreate,
    TaskMove,
    TaskPublic,
    TaskReplace,
    TaskStats,
    TaskUpdate,
)
from backend.store.tables import TaskRow
from backend.store.tasks import OwnedTasks


class TaskIdConvertor(Convertor[str]):
    """A task's id in a path: any segment but `stats` and `changes`, which are routes of
    their own, so that `PUT …/tasks/stats` is a 405 rather than a 422 about an id. FastAPI
    then parses the segment as an integer (a non-integer is still a 422 naming `task_id`)."""

    regex = r"(?!(?:stats|changes)$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task_id", TaskIdConvertor())

router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["tasks"],
    responses=problem_responses(401, 403, 422, 429, 431, 500, 503),
)

TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="The task's id.", examples=[42]), DECIMAL_ID]
not_found = problem_responses(404)
# A body that is not UTF-8 cannot even be parsed: 400, not 422; one too large is 413.
with_body = problem_responses(400, 413)

# One task in a response comes with its entity tag.
ETAG = {
    "ETag": {"description": 'The task\'s version, a strong entity tag: `"7"`.', "schema": {"type": "string"}}
}
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` on the stored answer to an earlier request with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
# What a conditional or keyed write may answer besides its own errors.
conditional = problem_responses(400, 412, 428)
keyed = problem_responses(400, 409)


def tasks_path(request: Request, user_id: str) -> str:
    """The path of the user's task list, as a relative reference (RFC 9110 and RFC 8288
    allow one; clients resolve it against the request's URL).

    Built from the user's id, every character of it percent-encoded, and never from
    the Host header or the request's decoded path: it stays right behind a proxy,
    names no other host, and holds any `sub` the API accepts (`中文`, `a b`, a `>`).
    An absolute URL from `request.base_url` also cost 5% of a create's CPU (py-spy).
    """
    return owner_path(request, router.prefix, user_id)


def owner_path(request: Request, prefix: str, user_id: str) -> str:
    """A route prefix of the user's (`/api/{user_id}/...`) as a relative reference, as
    `tasks_path` explains."""
    return f"{request.scope.get('root_path', '')}{prefix.format(user_id=quote(user_id, safe=''))}"


def task_path(request: Request, user_id: str, task_id: int) -> str:
    """The path of `get_task`, for `Location`."""
    return f"{tasks_path(request, user_id)}/{task_id}"


def cursor_link(path: str, query: QueryParams, cursor: str) -> str:
    """RFC 8288 `next` in cursor mode (there is no `prev`), keeping the other query parameters."""
    kept = [(name, value) for name, value in query.multi_items() if name != "cursor"]
    return f'<{path}?{urlencode([*kept, ("cursor", cursor)])}>; rel="next"'


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
    request: Request, tasks: OwnedTasksDep, query: Annotated[ListQuery, Query()]
) -> Response:
    """List the user's tasks, filtered, searched, sorted and paged."""
    listing = await list_page(tasks, query)
    page = listing.page
    headers = {"X-Total-Count": str(page.total)}
    path = tasks_path(request, tasks.owner.subject)
    if listing.next_cursor is not None:
        headers["X-Next-Cursor"] = listing.next_cursor
        if query.cursor is not None:
            headers["Link"] = cursor_link(path, request.query_params, listing.next_cursor)
    if query.cursor is None and (
        links := link_header(
            path, request.query_params, total=page.total, limit=query.limit, offset=query.offset
        )
    ):
        headers["Link"] = links
    # Rows straight to JSON (`api.task_json`), not through `list[TaskPublic]` and back.
    return Response(tasks_json(page.tasks), headers=headers, media_type="application/json")


@router.delete(
    "",
    operation_id="deleteCompletedTasks",
    response_model=DeletedCount,
    responses={**problem_responses(400, 409), 200: {"headers": REPLAYED}},
)
async def delete_completed_tasks(
    request: Request,
    tasks: OwnedTasksDep,
    status_filter: Annotated[
        Literal["completed"],
        Query(
            alias="status", description="Must be `completed`: only completed tasks can be cleared at once."
        ),
    ],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Delete all of the user's completed tasks, in one statement (each is reported deleted by sync)."""

    async def clear(owned: OwnedTasks) -> Answer:
        return Answer(status.HTTP_200_OK, DeletedCount(deleted=await owned.delete_completed()))

    return await answer(request, tasks, idempotency_key, clear)


@router.get("/stats", operation_id="getTaskStats")
async def get_task_stats(tasks: OwnedTasksDep, query: Annotated[StatsQuery, Query()]) -> TaskStats:
    """Counts of the user's tasks: total, completed, pending, overdue, due today, and pending by priority."""
    return await task_stats(tasks, query.tz, query.list_id)


def _required(request: Request) -> bool:
    return state_of(request).settings.require_if_match


@router.post(
    "",
    operation_id="createTask",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskPublic,
    responses={
        **with_body,
        **keyed,
        **problem_responses(409),
        201: {
            "headers": {
                "Location": {
                    "description": "The new task's path (a reference relative to the request's URL).",
                    "schema": {"type": "string"},
                },
                **ETAG,
                **REPLAYED,
            }
        },
    },
)
async def create_task(
    request: Request, tasks: OwnedTasksDep, body: TaskCreate, idempotency_key: IdempotencyKey = None
) -> Response:
    """Create a task for the user."""

    async def create(owned: OwnedTasks) -> Answer:
        row = await owned.create(body)
        location = task_path(request, owned.owner.subject, row["id"])
        return Answer(status.HTTP_201_CREATED, task_json(row), location=location, version=row["version"])

    return await answer(request, tasks, idempotency_key, create)


@router.get(
    "/{task_id:task_id}",
    operation_id="getTask",
    response_model=TaskPublic,
    responses={
        **not_found,
        **problem_responses(400),
        200: {"headers": ETAG},
        304: {
            "description": "Not Modified: the task is still at the version in If-None-Match.",
            "headers": ETAG,
        },
    },
)
async def get_task(task_id: TaskId, tasks: OwnedTasksDep, if_none_match: IfNoneMatch = None) -> Response:
    """Read one of the user's tasks."""
    row = await tasks.get(task_id)
    return read_answer(task_json(row), row["version"], if_none_match)


def _one_task(extra: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """What a write to one task documents: its ETag, and every error it may answer."""
    return {**not_found, **conditional, **keyed, 200: {"headers": {**ETAG, **REPLAYED}}, **extra}


@router.put(
    "/{task_id:task_id}",
    operation_id="replaceTask",
    response_model=TaskPublic,
    responses=_one_task(with_body),
)
async def replace_task(
    request: Request,
    task_id: TaskId,
    tasks: OwnedTasksDep,
    body: TaskReplace,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Replace a task's title and description (and `completed` and the organising fields, when given)."""
    expected = if_match_versions(if_match, required=_required(request))

    async def replace(owned: OwnedTasks) -> Answer:
        return _task_answer(await owned.replace(task_id, body, expected=expected))

    return await answer(request, tasks, idempotency_key, replace)


@router.patch(
    "/{task_id:task_id}",
    operation_id="updateTask",
    response_model=TaskPublic,
    responses=_one_task(with_body),
)
async def update_task(
    request: Request,
    task_id: TaskId,
    tasks: OwnedTasksDep,
    body: TaskUpdate,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Change some of a task's fields; `description: null` clears it."""
    expected = if_match_versions(if_match, required=_required(request))

    async def update(owned: OwnedTasks) -> Answer:
        return _task_answer(await owned.update(task_id, body, expected=expected))

    return await answer(request, tasks, idempotency_key, update)


@router.delete(
    "/{task_id:task_id}",
    operation_id="deleteTask",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**not_found, **conditional, **keyed, 204: {"headers": REPLAYED}},
)
async def delete_task(
    request: Request,
    task_id: TaskId,
    tasks: OwnedTasksDep,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Delete a task (sync reports it as deleted for SYNC_RETENTION_DAYS)."""
    expected = if_match_versions(if_match, required=_required(request))

    async def delete(owned: OwnedTasks) -> Answer:
        await owned.delete(task_id, expected=expected)
        return Answer(status.HTTP_204_NO_CONTENT)

    return await answer(request, tasks, idempotency_key, delete)


@router.patch(
    "/{task_id:task_id}/complete",
    operation_id="setTaskCompletion",
    response_model=TaskPublic,
    responses=_one_task(with_body),
)
async def set_task_completion(
    request: Request,
    task_id: TaskId,
    tasks: OwnedTasksDep,
    body: Annotated[
        TaskCompletion | None,
        Body(description="Omit the body to toggle; send `completed` to set it (safe to retry)."),
    ] = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Toggle a task's completion, or set it explicitly."""
    expected = if_match_versions(if_match, required=_required(request))
    completed = None if body is None else body.completed

    async def complete(owned: OwnedTasks) -> Answer:
        return _task_answer(await owned.set_completion(task_id, completed, expected=expected))

    return await answer(request, tasks, idempotency_key, complete)


@router.post(
    "/{task_id:task_id}/move",
    operation_id="moveTask",
    response_model=TaskPublic,
    responses=_one_task(with_body),
)
async def move_task(
    request: Request,
    task_id: TaskId,
    tasks: OwnedTasksDep,
    body: TaskMove,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Move a task within or across lists and parents, after a sibling or first (as Google Tasks'
    `move`); its subtasks go with it. One transaction; concurrent moves never share a position."""
    expected = if_match_versions(if_match, required=_required(request))

    async def move(owned: OwnedTasks) -> Answer:
        return _task_answer(await owned.move(task_id, body, expected=expected))

    return await answer(request, tasks, idempotency_key, move)


def _task_answer(row: TaskRow) -> Answer:
    return Answer(status.HTTP_200_OK, task_json(row), version=row["version"])
