"""What handlers receive: the database, and the caller authorised for the path."""

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from backend.db import Database
from backend.errors import Forbidden, NotAuthenticated, ServiceUnavailable, TooManyRequests
from backend.models import USER_ID_MAX_LENGTH
from backend.rate_limit import RateLimiter
from backend.security import InvalidTokenError, KeySetUnavailableError, TokenClaims, TokenVerifier


async def get_database(request: Request) -> Database:
    return request.app.state.database  # type: ignore[no-any-return]


# Not a connection: `crud` borrows one per statement (or per transaction), so none
# is held while the request does anything else. This also spares FastAPI's
# generator-dependency machinery, about 10% of a task read's CPU (py-spy).
DatabaseDep = Annotated[Database, Depends(get_database)]

# How the API is signed into, for the OpenAPI document (`main` adds it to every
# /api/ operation). The header is read by `get_current_user` itself rather than
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
        description="The signed-in user's id: the `sub` claim of the token.",
        examples=["u_8KJx2mQ"],
    ),
]


async def get_current_user(request: Request, user_id: UserIdPath) -> TokenClaims:
    """The caller, verified, within their rate limit, and the owner of the path.

    One dependency rather than a chain of three: FastAPI's own bookkeeping per
    dependency was about 25 us a request (py-spy), a tenth of a task read.
    """
    claims = await _verified_claims(request)
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None and (wait := await limiter.wait_seconds(claims.subject)) > 0:
        raise TooManyRequests(wait)
    # A 403, not a 404: the caller is known and the path is plainly not theirs,
    # so saying so leaks nothing and helps a client with a wrong id.
    if user_id != claims.subject:
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


CurrentUser = Annotated[TokenClaims, Depends(get_current_user)]
