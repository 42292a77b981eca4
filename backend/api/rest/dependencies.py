"""What handlers receive: the tasks (or tags, or changes) of the caller, who is admitted
(token, rate limit) and authorised for the path (`auth.caller`). Admission itself is
`api.shared.Services.admit`, the same for every door."""

from typing import Annotated

from fastapi import Depends, Path, Request

from backend.api.shared import ME
from backend.app_state import state_of
from backend.auth.caller import authorised_owner
from backend.models import USER_ID_MAX_LENGTH
from backend.store.changes import OwnedChanges
from backend.store.tags import OwnedTags
from backend.store.tasks import OwnedTasks

UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=USER_ID_MAX_LENGTH,
        description="The signed-in user's id (the `sub` claim of the token), or `me`.",
        examples=[ME],
        # What Swagger UI fills in for "Try it out".
        openapi_examples={ME: {"summary": "the signed-in user", "value": ME}},
    ),
]


async def get_owned_tasks(request: Request, user_id: UserIdPath) -> OwnedTasks:
    """The caller's tasks, once the caller is verified, within their rate limit, and
    the owner of the path.

    One dependency for all of that, rather than a chain (bearer header, token,
    path check, database): FastAPI's own bookkeeping costs about 25 us per
    dependency per request (py-spy), 5% of a task read's CPU each. `OwnedTasks`
    holds the database, not a connection: it borrows one per statement (or per
    transaction), so none is held while the request does anything else.
    """
    services = state_of(request).services
    return services.tasks(await authorised_owner(request, user_id))


async def get_owned_tags(request: Request, user_id: UserIdPath) -> OwnedTags:
    """The caller's tags, on the same terms as `get_owned_tasks`."""
    services = state_of(request).services
    return services.tags(await authorised_owner(request, user_id))


async def get_owned_changes(request: Request, user_id: UserIdPath) -> OwnedChanges:
    """The caller's changes, on the same terms as `get_owned_tasks`."""
    services = state_of(request).services
    return services.changes(await authorised_owner(request, user_id))


OwnedTasksDep = Annotated[OwnedTasks, Depends(get_owned_tasks)]
OwnedTagsDep = Annotated[OwnedTags, Depends(get_owned_tags)]
OwnedChangesDep = Annotated[OwnedChanges, Depends(get_owned_changes)]
