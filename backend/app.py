"""The application: `create_app()` wires settings, database, auth, routes and error handling."""

import asyncio
import contextlib
import copy
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from sqlalchemy import literal, select
from starlette.routing import BaseRoute, Route

from backend.api.docs import docs_routes
from backend.api.mcp.tools import MCP_PATH, McpEndpoint, create_mcp
from backend.api.rest import changes, tags, tasks
from backend.api.rest.dependencies import BEARER_SCHEME
from backend.api.shared import Services
from backend.auth.rate_limit import create_rate_limiter
from backend.auth.tokens import JwksCache, TokenVerifier
from backend.config import Settings, get_settings
from backend.edge.access_log import RequestLogMiddleware
from backend.edge.metrics import Metrics, metrics_endpoint
from backend.edge.middleware import (
    AllowedHostsMiddleware,
    BodyLimitMiddleware,
    CORSMiddleware,
    DeadlineMiddleware,
    SecurityHeadersMiddleware,
    UnexpectedErrorMiddleware,
)
from backend.errors import PROBLEM_JSON, index_route_methods, install_error_handlers, problem_responses
from backend.store.database import Database, Query, create_database
from backend.store.housekeeping import keep_house

DESCRIPTION = """
Tasks for a multi-user todo app whose users sign in with Better Auth.

Every `/api/{user_id}/tasks` route needs `Authorization: Bearer <jwt>`, and the
path's `user_id` must be the token's `sub`, or `me`, which always means the
signed-in user. Errors are `application/problem+json` (RFC 9457).
"""

OPENAPI_URL = "/openapi.json"


READY = Query(select(literal(1)))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    database = create_database(
        settings.url,
        timeout_seconds=settings.database_timeout_seconds,
        pool_size=settings.database_pool_size,
    )

    jwks = (
        JwksCache(
            url=settings.better_auth_jwks_url,
            cache_seconds=settings.jwks_cache_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
            timeout_seconds=settings.jwks_timeout_seconds,
        )
        if settings.better_auth_jwks_url
        else None
    )

    rate_limiter = create_rate_limiter(
        settings.rate_limit_per_second, settings.rate_limit_burst, settings.redis_url
    )
    token_verifier = TokenVerifier(
        algorithms=frozenset(settings.jwt_algorithms),
        secret=settings.better_auth_secret.get_secret_value() if settings.better_auth_secret else None,
        jwks=jwks,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
    )
    services = Services(settings=settings, database=database, verifier=token_verifier, limiter=rate_limiter)
    mcp = create_mcp(services) if settings.mcp_enabled else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built so far (modules, schemas, routes) lives as long as the
        # process: freeze it out of the garbage collector's sight, and collect the
        # youngest objects less often. The collector was walking that whole heap;
        # under `make bench` this took GET from about 1,475 to 1,760 req/s and the
        # latency's standard deviation from 14 ms to 2 ms.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        housekeeping = asyncio.create_task(keep_house(database, settings))
        async with contextlib.AsyncExitStack() as stack:
            if mcp is not None:
                await stack.enter_async_context(mcp.session_manager.run())
            yield
        housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
        await database.close()
        if jwks is not None:
            await jwks.aclose()
        if rate_limiter is not None:
            await rate_limiter.aclose()

    app = FastAPI(
        # The task routes go straight into the app's router, as `include_router`
        # did before FastAPI 0.137: since then an included router stays a branch
        # of its own that each request is matched through twice, 9% of a task
        # read's CPU instructions (callgrind). The router carries its own prefix,
        # tags and responses, so including it would add nothing else.
        routes=[*tasks.router.routes, *changes.router.routes, *tags.router.routes],
        title="Todo API",
        description=DESCRIPTION,
        version=version("todo-api"),
        lifespan=lifespan,
        separate_input_output_schemas=False,
        # `docs` serves both pages from files of its own, not from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.docs_enabled else None,
        # No 307 to the path with(out) a trailing slash: its Location would be built
        # from the Host header, which a client does not control the meaning of.
        redirect_slashes=False,
    )
    app.state.services = services
    app.state.mcp = mcp
    app.state.settings = settings
    app.state.database = database
    app.state.rate_limiter = rate_limiter
    app.state.metrics = Metrics(database, jwks) if settings.metrics_enabled else None
    app.state.metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app.state.token_verifier = token_verifier

    install_error_handlers(app)
    # Added innermost first: every answer, the app's or a layer's own (413, the
    # deadline's 503, a bug's 500, a refused preflight or Host), goes out through
    # CORS, the security headers and the request id.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(DeadlineMiddleware, seconds=settings.request_timeout_seconds)
    app.add_middleware(UnexpectedErrorMiddleware)
    if settings.allowed_hosts:
        app.add_middleware(AllowedHostsMiddleware, hosts=settings.allowed_hosts)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-Request-ID",
            "If-Match",
            "If-None-Match",
            "Idempotency-Key",
            # A browser MCP client's.
            "Mcp-Session-Id",
            "Mcp-Protocol-Version",
            "Last-Event-ID",
        ],
        expose_headers=[
            "Location",
            "Link",
            "X-Total-Count",
            "X-Next-Cursor",
            "X-Request-ID",
            "WWW-Authenticate",
            "Retry-After",
            "ETag",
            "Idempotent-Replayed",
            "Mcp-Session-Id",
        ],
    )
    app.add_middleware(SecurityHeadersMiddleware)
    # Outermost, so the line is written for every request, with the status sent.
    app.add_middleware(RequestLogMiddleware, metrics=app.state.metrics)

    app.add_api_route("/health", health, methods=["GET"], tags=["operations"], operation_id="health")
    app.add_api_route(
        "/ready",
        ready,
        methods=["GET"],
        tags=["operations"],
        operation_id="ready",
        responses=problem_responses(503),
    )
    if settings.metrics_enabled:
        app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    if settings.docs_enabled:
        app.router.routes.extend(docs_routes(app, OPENAPI_URL))
    if mcp is not None:
        # The SDK's app answers exactly its own paths (/mcp and its protected resource
        # metadata): a route each, no Mount (whose /mcp would redirect to /mcp/).
        served = McpEndpoint(mcp.streamable_http_app())
        for path in (MCP_PATH, f"/.well-known/oauth-protected-resource{MCP_PATH}"):
            app.router.routes.append(Route(path, served, include_in_schema=False))
    # HEAD wherever GET (RFC 9110 §9.3.2): Starlette's routes do it themselves,
    # FastAPI's do not. The server sends a HEAD response's head only.
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
            route.methods.add("HEAD")
    app.state.route_methods = index_route_methods(app.router.routes)
    app.openapi_schema = None
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def health() -> dict[str, str]:
    """Liveness: the process answers. Touches no database."""
    return {"status": "ok"}


async def ready(request: Request) -> dict[str, str]:
    """Readiness: the database answers a query."""
    database: Database = request.app.state.database
    await database.fetch_one(READY)
    return {"status": "ok"}


def _without_head(route: BaseRoute) -> BaseRoute:
    """The route as the schema shows it: HEAD is GET without a body, documented once, as GET."""
    if isinstance(route, APIRoute) and route.methods and "HEAD" in route.methods:
        methods = route.methods - {"HEAD"}
        route = copy.copy(route)
        route.methods = methods
    return route


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error response under `application/problem+json` only."""
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
