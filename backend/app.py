"""The application: `create_app()` composes the services, the middleware and the routes."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from backend.api.docs import docs_routes
from backend.api.event_stream import EventHub, Rendering
from backend.api.fastapi_hot_path import remember_parameter_shapes
from backend.api.mcp.server import MCP_PATH, McpEndpoint, create_mcp
from backend.api.openapi import DESCRIPTION, OPENAPI_URL, openapi_schema
from backend.api.rest import changes, chat, events, lists, operations, tags, tasks
from backend.api.rest.operations import READY
from backend.api.shared import Services
from backend.api.webhooks import WebhookSender
from backend.app_state import AppState
from backend.auth.rate_limit import create_rate_limiter
from backend.auth.tokens import JwksCache, TokenVerifier
from backend.config import Settings, get_settings
from backend.edge.metrics import Metrics, metrics_endpoint
from backend.edge.middleware import EdgeMiddleware
from backend.errors import index_route_methods, install_error_handlers
from backend.store.database import Database, create_database
from backend.store.database.urls import asyncpg_dsn
from backend.store.housekeeping import keep_house
from backend.store.notifications import ListenerRegistry, PostgresListener
from backend.store.reminders import Reminders, keep_reminding

__all__ = ["READY", "TodoApi", "create_app"]


class TodoApi(FastAPI):
    """FastAPI, with its state typed, its OpenAPI document shaped (`api.openapi`), and only
    the layers this app uses around the router."""

    state: AppState

    def openapi(self) -> dict[str, Any]:
        return openapi_schema(self)

    def build_middleware_stack(self) -> ASGIApp:
        """Ours (`edge.middleware`), then FastAPI's exception handlers and its exit stack.

        FastAPI also puts its server-error layer, its exceptions' telemetry and its body limit
        outside ours: our edge answers a bug's 500 (inside CORS, with the request id) and
        holds the body limit, and this app sends no telemetry of FastAPI's (its metrics are
        `/metrics`). Each wrapped every request, two of them its `send`."""
        handlers = {
            key: value for key, value in self.exception_handlers.items() if key not in (500, Exception)
        }
        app: ASGIApp = ExceptionMiddleware(
            AsyncExitStackMiddleware(self.router), handlers=handlers, debug=self.debug
        )
        for layer, args, kwargs in reversed(self.user_middleware):
            app = layer(app, *args, **kwargs)
        return app


def create_app(settings: Settings | None = None) -> TodoApi:
    settings = settings or get_settings()
    remember_parameter_shapes()
    state = services(settings)
    app = TodoApi(
        # The task routes go straight into the app's router, as `include_router`
        # did before FastAPI 0.137: since then an included router stays a branch
        # of its own that each request is matched through twice, 9% of a task
        # read's CPU instructions (callgrind). The router carries its own prefix,
        # tags and responses, so including it would add nothing else.
        routes=[
            *tasks.router.routes,
            *changes.router.routes,
            *tags.router.routes,
            *lists.router.routes,
            *events.router.routes,
            *chat.router.routes,
            *operations.router.routes,
        ],
        title="Todo API",
        description=DESCRIPTION,
        version=version("todo-api"),
        lifespan=_lifespan,
        separate_input_output_schemas=False,
        # `api.docs` serves both pages from files of its own, not from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.docs_enabled else None,
        # No 307 to the path with(out) a trailing slash: its Location would be built
        # from the Host header, which a client does not control the meaning of.
        redirect_slashes=False,
        # FastAPI's OpenTelemetry, off: it asked on every request whether a tracer or a meter
        # was configured (about 1% of a task read's CPU, py-spy).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state = state
    install_error_handlers(app)
    middleware(app, settings, state)
    routes(app, settings, state)
    return app


def services(settings: Settings) -> AppState:
    """The database, the token verifier (with Better Auth's key set, if configured), the rate
    limiter, the shared layer every door calls, the MCP server and the metrics. Nothing
    connects yet: the pool opens on first use."""
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
    shared = Services(settings=settings, database=database, verifier=token_verifier, limiter=rate_limiter)
    state = AppState()
    state.settings = settings
    state.services = shared
    state.database = database
    state.token_verifier = token_verifier
    state.rate_limiter = rate_limiter
    state.mcp = create_mcp(shared) if settings.mcp_enabled else None
    state.reminders = Reminders()
    state.event_hub, state.listener = event_hub(settings, database)
    state.webhooks = (
        WebhookSender(database, settings, state.event_hub.rendering) if settings.webhook_url else None
    )
    state.chat = None
    if settings.chat_model is not None:
        from backend.api.chat.agent import create_chat  # the Agents SDK: 1.3 s of a start

        state.chat = create_chat(shared)
    state.metrics = Metrics(state) if settings.metrics_enabled else None
    state.metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    return state


def event_hub(settings: Settings, database: Database) -> tuple[EventHub, PostgresListener | None]:
    """The event streams' hub, and what wakes it: on PostgreSQL a LISTEN connection of its
    own, opened with the first stream; on SQLite the database itself."""
    rendering = Rendering(source=settings.public_url, type_prefix=settings.event_type_prefix)
    hub = EventHub(database, rendering, heartbeat_seconds=settings.stream_heartbeat_seconds)
    if database.dialect != "postgresql":
        database.after_user_write = hub.wake
        return hub, None
    listener = PostgresListener(
        asyncpg_dsn(settings.listen_url),
        wake=hub.wake,
        wake_all=hub.wake_all,
        timeout_seconds=settings.database_timeout_seconds,
    )
    hub.on_first_stream = listener.start
    hub.registry = ListenerRegistry(database, hub.wake)
    return hub, listener


def middleware(app: FastAPI, settings: Settings, state: AppState) -> None:
    """One layer, `edge.middleware`'s: every answer, the app's or the edge's own (413, the
    deadline's 503, a bug's 500, a refused preflight or Host), goes out through CORS, the
    security headers and the request id, and is logged."""
    app.add_middleware(
        EdgeMiddleware,
        cors_origins=settings.cors_origins,
        allowed_hosts=settings.allowed_hosts or (),
        max_body_bytes=settings.max_body_bytes,
        deadline_seconds=settings.request_timeout_seconds,
        metrics=state.metrics,
    )


def routes(app: FastAPI, settings: Settings, state: AppState) -> None:
    """Beside the REST routes (given to the app itself): metrics, the docs pages, and /mcp;
    HEAD wherever GET; the methods of every path, for a 405's Allow."""
    if settings.metrics_enabled:
        app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    if settings.docs_enabled:
        app.router.routes.extend(docs_routes(app, OPENAPI_URL))
    if state.mcp is not None:
        # The SDK's app answers exactly its own paths (/mcp and its protected resource
        # metadata): a route each, no Mount (whose /mcp would redirect to /mcp/).
        served = McpEndpoint(state.mcp.streamable_http_app())
        for path in (MCP_PATH, f"/.well-known/oauth-protected-resource{MCP_PATH}"):
            app.router.routes.append(Route(path, served, include_in_schema=False))
    # HEAD wherever GET (RFC 9110 §9.3.2): Starlette's routes do it themselves,
    # FastAPI's do not. The server sends a HEAD response's head only.
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
            route.methods.add("HEAD")
    state.route_methods = index_route_methods(app.router.routes)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    assert isinstance(state, AppState)  # create_app's
    # Everything built so far (modules, schemas, routes) lives as long as the
    # process: freeze it out of the garbage collector's sight, and collect the
    # youngest objects less often. The collector was walking that whole heap;
    # under `make bench` this took GET from about 1,475 to 1,760 req/s and the
    # latency's standard deviation from 14 ms to 2 ms.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    housekeeping = asyncio.create_task(keep_house(state.database, state.settings))
    lateness = timedelta(minutes=state.settings.reminder_max_lateness_minutes)
    reminding = asyncio.create_task(keep_reminding(state.database, state.reminders, lateness))
    background = [housekeeping, reminding]
    if state.webhooks is not None:
        background.append(asyncio.create_task(state.webhooks.run()))
    async with contextlib.AsyncExitStack() as stack:
        if state.mcp is not None:
            await stack.enter_async_context(state.mcp.session_manager.run())
        yield
    if state.chat is not None:
        await state.chat.aclose()  # the turns still running record that they stopped
    for task in background:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if state.webhooks is not None:
        await state.webhooks.aclose()
    await state.event_hub.aclose()
    if state.listener is not None:
        await state.listener.aclose()
    await state.database.close()
    jwks = state.token_verifier.jwks
    if jwks is not None:
        await jwks.aclose()
    if state.rate_limiter is not None:
        await state.rate_limiter.aclose()
