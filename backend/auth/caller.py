"""Who is calling: the Bearer token of a request, verified and admitted (`api.shared.Services.admit`:
the token, the rate limit, the key server's 503), and authorised for the path's user."""

from typing import Any

from fastapi import Request

from backend.api.shared import check_owner
from backend.app_state import state_of
from backend.auth.tokens import TokenClaims
from backend.errors import NotAuthenticated

# How the API is signed into, for the OpenAPI document (`api.openapi` adds it to every
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


async def authorised_owner(request: Request, user_id: str) -> TokenClaims:
    """The admitted caller, if the path's user is them (or `me`)."""
    claims = await state_of(request).services.admit(bearer_token(request))
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
