"""What handlers receive: the tasks (or tags, or changes) of the caller, who is admitted
(token, rate limit) and authorised for the path. Admission itself is `shared.Services.admit`,
the same for every door."""

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from backend.api.shared import ME, Services, check_owner
from backend.auth.tokens import TokenClaims
from backend.errors import NotAuthenticated
from backend.models import USER_ID_MAX_LENGTH
from backend.store.changes import OwnedChanges
from backend.store.tags import OwnedTags
from backend.store.tasks import OwnedTasks

# How the API is signed into, for the OpenAPI document (`main` adds it to every
# /api/ operation). The header is read by `authorised_owner` itself rather than
# through FastAPI's HTTPBearer dependency: one dependency fewer per request, about
# 4% of a task read's CPU under `make bench`.
BEARER_SCHEME: dict[str, Any] = {
    "HTTPBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT issued by Better Auth for the signed-in user (or by `todo-api token`).",
    }
}

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
    services: Services = request.app.state.services
    return services.tasks(await authorised_owner(request, user_id))


async def get_owned_tags(request: Request, user_id: UserIdPath) -> OwnedTags:
    """The caller's tags, on the same terms as `get_owned_tasks`."""
    services: Services = request.app.state.services
    return services.tags(await authorised_owner(request, user_id))


async def get_owned_changes(request: Request, user_id: UserIdPath) -> OwnedChanges:
    """The caller's changes, on the same terms as `get_owned_tasks`."""
    services: Services = request.app.state.services
    return services.changes(await authorised_owner(request, user_id))


async def authorised_owner(request: Request, user_id: str) -> TokenClaims:
    """The admitted caller, if the path's user is them (or `me`)."""
    services: Services = request.app.state.services
    claims = await services.admit(bearer_token(request))
    check_owner(user_id, claims)
    return claims


def bearer_token(request: Request) -> str | None:
    """The Bearer token of the Authorization header; None without the header."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("the Authorization header is not a Bearer token", token_sent=True)
    return token


OwnedTasksDep = Annotated[OwnedTasks, Depends(get_owned_tasks)]
OwnedTagsDep = Annotated[OwnedTags, Depends(get_owned_tags)]
OwnedChangesDep = Annotated[OwnedChanges, Depends(get_owned_changes)]
