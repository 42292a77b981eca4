"""What handlers receive: a database connection, and the caller authorised for the path."""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.db import Connection, Database
from backend.errors import Forbidden, NotAuthenticated, ServiceUnavailable, TooManyRequests
from backend.models import USER_ID_MAX_LENGTH
from backend.rate_limit import RateLimiter
from backend.security import InvalidTokenError, KeySetUnavailableError, TokenClaims, TokenVerifier

if TYPE_CHECKING:
    from backend.metrics import Metrics


async def get_connection(request: Request) -> AsyncIterator[Connection]:
    """A pooled connection for the request, returned to the pool as soon as the handler is done.

    Used with `scope="function"`, so the connection is released (and any
    transaction committed) before the response is sent: a 2xx means the change
    is stored.
    """
    database: Database = request.app.state.database
    metrics: Metrics | None = request.app.state.metrics
    if metrics is None:
        async with database.connection() as connection:
            yield connection
        return
    metrics.pool_waiting.inc()  # counts the requests queueing for a connection
    waiting = True
    try:
        async with database.connection() as connection:
            metrics.pool_waiting.dec()
            waiting = False
            yield connection
    finally:
        if waiting:
            metrics.pool_waiting.dec()


DatabaseDep = Annotated[Connection, Depends(get_connection, scope="function")]

# auto_error=False: a missing or non-Bearer header is ours to answer, as problem+json.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT issued by Better Auth for the signed-in user (or by `todo-api token`).",
)


async def get_token_claims(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> TokenClaims:
    if credentials is None:
        token_sent = "authorization" in request.headers
        raise NotAuthenticated(
            "the Authorization header is not a Bearer token" if token_sent else "a Bearer token is required",
            token_sent=token_sent,
        )
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return await verifier.verify(credentials.credentials)
    except InvalidTokenError as error:
        raise NotAuthenticated(str(error), token_sent=True) from None
    except KeySetUnavailableError:
        # Not the client's fault, and not a verdict on the token: retry later.
        raise ServiceUnavailable("Better Auth's key server (JWKS) is unreachable; retry shortly") from None


UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=USER_ID_MAX_LENGTH,
        description="The signed-in user's id: the `sub` claim of the token.",
        examples=["u_8KJx2mQ"],
    ),
]


async def get_rate_limited_claims(
    request: Request, claims: Annotated[TokenClaims, Depends(get_token_claims)]
) -> TokenClaims:
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None and (wait := await limiter.wait_seconds(claims.subject)) > 0:
        raise TooManyRequests(wait)
    return claims


async def get_current_user(
    user_id: UserIdPath, claims: Annotated[TokenClaims, Depends(get_rate_limited_claims)]
) -> TokenClaims:
    # A 403, not a 404: the caller is known and the path is plainly not theirs,
    # so saying so leaks nothing and helps a client with a wrong id.
    if user_id != claims.subject:
        raise Forbidden("the path's user id is not the signed-in user")
    return claims


CurrentUser = Annotated[TokenClaims, Depends(get_current_user)]
