"""The OpenAPI document as clients read it: the API's description, the Bearer scheme on every
/api/ operation, HEAD documented once (as GET), and every error response under
`application/problem+json` only."""

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from backend.auth.caller import BEARER_SCHEME
from backend.errors import PROBLEM_JSON

DESCRIPTION = """
Tasks for a multi-user todo app whose users sign in with Better Auth.

Every `/api/{user_id}/tasks` route needs `Authorization: Bearer <jwt>`, and the
path's `user_id` must be the token's `sub`, or `me`, which always means the
signed-in user. Errors are `application/problem+json` (RFC 9457).
"""

OPENAPI_URL = "/openapi.json"


def _without_head(route: BaseRoute) -> BaseRoute:
    """The route as the schema shows it: HEAD is GET without a body, documented once, as GET."""
    if isinstance(route, APIRoute) and route.methods and "HEAD" in route.methods:
        methods = route.methods - {"HEAD"}
        route = copy.copy(route)
        route.methods = methods
    return route


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error response under `application/problem+json` only (made
    once, on first request)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=[_without_head(route) for route in app.routes],
            separate_input_output_schemas=False,
        )
        schema.setdefault("components", {})["securitySchemes"] = BEARER_SCHEME
        for path, operations in schema["paths"].items():
            if path.startswith("/api/"):
                for operation in operations.values():
                    operation["security"] = [{name: []} for name in BEARER_SCHEME]
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if int(status) >= 400 and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = schema
    return app.openapi_schema
