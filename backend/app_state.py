"""What the application keeps for its requests, typed: `state_of(request).services` rather
than an untyped `request.app.state.services`."""

import re
from typing import TYPE_CHECKING

from starlette.datastructures import State
from starlette.requests import HTTPConnection

from backend.config import Settings

if TYPE_CHECKING:  # imported for their types only: these modules read the state themselves
    from backend.api.chat.agent import ChatAgent
    from backend.api.event_stream import EventHub
    from backend.api.mcp.server import TasksMcp
    from backend.api.shared import Services
    from backend.api.webhooks import WebhookSender
    from backend.auth.rate_limit import RateLimiter
    from backend.auth.tokens import TokenVerifier
    from backend.edge.metrics import Metrics
    from backend.store.database import Database
    from backend.store.notifications import PostgresListener
    from backend.store.reminders import Reminders


class AppState(State):
    """`app.state`, with the names and types `create_app` gives it."""

    settings: Settings
    services: "Services"
    database: "Database"
    token_verifier: "TokenVerifier"
    rate_limiter: "RateLimiter | None"
    mcp: "TasksMcp | None"
    metrics: "Metrics | None"
    reminders: "Reminders"
    event_hub: "EventHub"
    listener: "PostgresListener | None"
    webhooks: "WebhookSender | None"
    chat: "ChatAgent | None"
    metrics_token: str | None
    # (path pattern, methods) of every route, for a 405's Allow header.
    route_methods: list[tuple[re.Pattern[str], set[str]]]


def state_of(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state
    return state
