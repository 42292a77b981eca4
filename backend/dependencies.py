"""What handlers receive: the tasks (or tags) of the caller, who is authorised for the path."""

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from backend.errors import Forbidden, NotAuthenticated, ServiceUnavailable, TooManyRequests
from backend.models import USER_ID_MAX_LENGTH
from backend.rate_limit import RateLimiter
from backend.security import InvalidTokenError, KeySetUnavailableError, TokenClaims, TokenVerifier
from backend.store.changes import OwnedChanges
from backend.store.tags import OwnedTags
from backend.store.tasks import OwnedTasks

# How the API is signed into, for the OpenAPI document (`main` adds it to every
# /api/ operation). The header is read by `get_owned_tasks` itself rather than
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


# In a path, the signed-in user, whatever their id: a frontend need not know it, and
# Swagger UI's "Try it out" works with the example as it stands.
ME = "me"

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
    claims = await authorised_owner(request, user_id)
    return OwnedTasks(request.app.state.database, claims, max_tasks=request.app.state.max_tasks_per_user)


async def get_owned_tags(request: Request, user_id: UserIdPath) -> OwnedTags:
    """The caller's tags, on the same terms as `get_owned_tasks`."""
    return OwnedTags(request.app.state.database, await authorised_owner(request, user_id))


async def get_owned_changes(request: Request, user_id: UserIdPath) -> OwnedChanges:
    """The caller's changes, on the same terms as `get_owned_tasks`."""
    return OwnedChanges(request.app.state.database, await authorised_owner(request, user_id))


async def authorised_owner(request: Request, user_id: str) -> TokenClaims:
    """The verified caller, within their rate limit, if the path's user is them (or `me`)."""
    claims = await _verified_claims(request)
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None and (wait := await limiter.wait_seconds(claims.subject)) > 0:
        raise TooManyRequests(wait)
    # A 403, not a 404: the caller is known and the path is plainly not theirs,
    # so saying so leaks nothing and helps a client with a wrong id.
    if user_id != claims.subject and user_id != ME:
        raise Forbidden("the path's user id is not the signed-in user")
    return claims


async def _verified_claims(request: Request) -> TokenClaims:
    header = request.headers.get("authorization")
    if header is None:
        raise NotAuthenticated("a Bearer token is required", token_sent=False)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("the Authorization header is not a Bearer token", token_sent=True)
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return await verifier.verify(token)
    except InvalidTokenError as error:
        raise NotAuthenticated(str(error), token_sent=True) from None
    except KeySetUnavailableError:
        # Not the client's fault, and not a verdict on the token: retry later.
        raise ServiceUnavailable("Better Auth's key server (JWKS) is unreachable; retry shortly") from None


OwnedTasksDep = Annotated[OwnedTasks, Depends(get_owned_tasks)]
OwnedTagsDep = Annotated[OwnedTags, Depends(get_owned_tags)]
OwnedChangesDep = Annotated[OwnedChanges, Depends(get_owned_changes)]
