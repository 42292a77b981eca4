"""The list routes: the person's lists with their counts; create, read, rename, delete (with
their tasks, or moving them first). Conditions and request keys as on tasks."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import TypeAdapter

from backend.api.rest.dependencies import UserIdPath
from backend.api.rest.headers import IdempotencyKey, IfMatch, IfNoneMatch
from backend.api.rest.idempotency import Answer, answer, read_answer
from backend.api.rest.tasks import ETAG, REPLAYED, conditional, keyed, owner_path, with_body
from backend.api.shared import if_match_versions
from backend.app_state import state_of
from backend.auth.caller import authorised_owner
from backend.errors import problem_responses
from backend.models import DECIMAL_ID, MAX_ID, ListCreate, ListMove, ListPublic, ListUpdate
from backend.store.lists import OwnedLists

router = APIRouter(
    prefix="/api/{user_id}/lists",
    tags=["lists"],
    responses=problem_responses(401, 403, 422, 429, 431, 500, 503),
)

LISTS = TypeAdapter(list[ListPublic])
ListId = Annotated[int, Path(ge=1, le=MAX_ID, description="The list's id.", examples=[7]), DECIMAL_ID]
MoveTasksTo = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_ID,
        description="Move the list's tasks to this list of the person's before deleting it (else they "
        "are deleted with it).",
    ),
]


async def _lists(request: Request, user_id: str) -> OwnedLists:
    return state_of(request).services.lists(await authorised_owner(request, user_id))


def _path(request: Request, user_id: str, list_id: int) -> str:
    """The list's path, for `Location` (relative, every character of the user id encoded)."""
    return f"{owner_path(request, router.prefix, user_id)}/{list_id}"


def _answer(code: int, row: Any, location: str | None = None) -> Answer:
    listed = ListPublic.model_validate(row)
    return Answer(code, listed, location=location, version=listed.version)


@router.get("", operation_id="listLists", response_model=list[ListPublic])
async def list_lists(request: Request, user_id: UserIdPath) -> list[ListPublic]:
    """The person's lists in their order, with the counts of their tasks; the Inbox is always
    among them."""
    return LISTS.validate_python(await (await _lists(request, user_id)).list())


@router.post(
    "",
    operation_id="createList",
    status_code=status.HTTP_201_CREATED,
    response_model=ListPublic,
    responses={
        **with_body,
        **keyed,
        **problem_responses(409),
        201: {
            "headers": {
                "Location": {"description": "The new list's path.", "schema": {"type": "string"}},
                **ETAG,
                **REPLAYED,
            }
        },
    },
)
async def create_list(
    request: Request, user_id: UserIdPath, body: ListCreate, idempotency_key: IdempotencyKey = None
) -> Response:
    """A new list, after the person's others; 409 for a name they already use, or past 1,000 lists."""
    lists = await _lists(request, user_id)

    async def create(owned: OwnedLists) -> Answer:
        row = await owned.create(body.name)
        return _answer(status.HTTP_201_CREATED, row, _path(request, owned.owner.subject, row["id"]))

    return await answer(request, lists, idempotency_key, create)


@router.get(
    "/{list_id}",
    operation_id="getList",
    response_model=ListPublic,
    responses={
        **problem_responses(400, 404),
        200: {"headers": ETAG},
        304: {
            "description": "Not Modified: the list is still at the version in If-None-Match.",
            "headers": ETAG,
        },
    },
)
async def get_list(
    request: Request, user_id: UserIdPath, list_id: ListId, if_none_match: IfNoneMatch = None
) -> Response:
    """One of the person's lists, with its counts."""
    listed = ListPublic.model_validate(await (await _lists(request, user_id)).get(list_id))
    return read_answer(listed, listed.version, if_none_match)


@router.patch(
    "/{list_id}",
    operation_id="updateList",
    response_model=ListPublic,
    responses={
        **with_body,
        **conditional,
        **keyed,
        **problem_responses(404),
        200: {"headers": {**ETAG, **REPLAYED}},
    },
)
async def update_list(
    request: Request,
    user_id: UserIdPath,
    list_id: ListId,
    body: ListUpdate,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Rename the list (the Inbox too); 409 for a name another of the person's lists has."""
    lists = await _lists(request, user_id)
    expected = if_match_versions(if_match, required=state_of(request).settings.require_if_match)

    async def rename(owned: OwnedLists) -> Answer:
        return _answer(status.HTTP_200_OK, await owned.rename(list_id, body.name, expected=expected))

    return await answer(request, lists, idempotency_key, rename)


@router.delete(
    "/{list_id}",
    operation_id="deleteList",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**conditional, **keyed, **problem_responses(404, 409), 204: {"headers": REPLAYED}},
)
async def delete_list(
    request: Request,
    user_id: UserIdPath,
    list_id: ListId,
    move_tasks_to: MoveTasksTo = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Delete the list and its tasks, or with `move_tasks_to` move them first, in one
    transaction; the Inbox cannot be deleted (409)."""
    lists = await _lists(request, user_id)
    expected = if_match_versions(if_match, required=state_of(request).settings.require_if_match)

    async def delete(owned: OwnedLists) -> Answer:
        await owned.delete(list_id, move_tasks_to=move_tasks_to, expected=expected)
        return Answer(status.HTTP_204_NO_CONTENT)

    return await answer(request, lists, idempotency_key, delete)


@router.post(
    "/{list_id}/move",
    operation_id="moveList",
    response_model=ListPublic,
    responses={
        **with_body,
        **conditional,
        **keyed,
        **problem_responses(404),
        200: {"headers": {**ETAG, **REPLAYED}},
    },
)
async def move_list(
    request: Request,
    user_id: UserIdPath,
    list_id: ListId,
    body: ListMove,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Put the list after another of the person's lists (`after_id`), or first (null): its
    `position` changes, no other list's does."""
    lists = await _lists(request, user_id)
    expected = if_match_versions(if_match, required=state_of(request).settings.require_if_match)

    async def move(owned: OwnedLists) -> Answer:
        return _answer(status.HTTP_200_OK, await owned.move(list_id, body.after_id, expected=expected))

    return await answer(request, lists, idempotency_key, move)
