"""The tag routes: a user's tags, addressed by id so that any name works in a URL."""

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from backend.api.rest.dependencies import OwnedTagsDep
from backend.api.rest.headers import IdempotencyKey
from backend.api.rest.idempotency import Answer, answer
from backend.errors import problem_responses
from backend.models import DECIMAL_ID, MAX_ID, TagPublic, TagRename
from backend.store.tags import OwnedTags

router = APIRouter(
    prefix="/api/{user_id}/tags",
    tags=["tags"],
    responses=problem_responses(401, 403, 422, 429, 431, 500, 503),
)

TagId = Annotated[int, Path(ge=1, le=MAX_ID, description="The tag's id.", examples=[7]), DECIMAL_ID]
not_found = problem_responses(404)


@router.get("", operation_id="listTags")
async def list_tags(tags: OwnedTagsDep) -> list[TagPublic]:
    """The user's tags on at least one task, with their counts, by name case-insensitively."""
    return [TagPublic.model_validate(tag) for tag in await tags.list()]


@router.patch(
    "/{tag_id}",
    operation_id="renameTag",
    response_model=TagPublic,
    responses={**not_found, **problem_responses(400, 409, 413)},
)
async def rename_tag(
    request: Request,
    tag_id: TagId,
    tags: OwnedTagsDep,
    body: TagRename,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Rename a tag; onto another tag's name (case-insensitively), merge the two, and answer the survivor."""

    async def rename(owned: OwnedTags) -> Answer:
        return Answer(status.HTTP_200_OK, TagPublic.model_validate(await owned.rename(tag_id, body.name)))

    return await answer(request, tags, idempotency_key, rename)


@router.delete(
    "/{tag_id}",
    operation_id="deleteTag",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**not_found, **problem_responses(400, 409)},
)
async def delete_tag(
    request: Request, tag_id: TagId, tags: OwnedTagsDep, idempotency_key: IdempotencyKey = None
) -> Response:
    """Delete a tag: it comes off every task; the tasks stay."""

    async def delete(owned: OwnedTags) -> Answer:
        await owned.delete(tag_id)
        return Answer(status.HTTP_204_NO_CONTENT)

    return await answer(request, tags, idempotency_key, delete)
