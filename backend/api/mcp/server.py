"""The MCP server: served at /mcp by the official SDK (`mcp`, 1.x, FastMCP's Streamable HTTP
transport, stateless), in this app and process.

`TasksMcp` serves `tools.TOOLS` (listing their schemas, validating and admitting each call
through `Services.admit`, logging it) in place of FastMCP's own tool registry, which ignores
unknown arguments and validates leniently. Tokens are checked by the REST routes'
`TokenVerifier`, plugged into the SDK's own token-verifier interface. `McpEndpoint` puts the
SDK's HTTP-level refusals into problem+json.
"""

import logging
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import orjson
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ContentBlock
from mcp.types import Tool as McpTool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.mcp.tools import ToolContext, ToolRefused, call_tool, refusal, tool_definitions
from backend.api.shared import Services
from backend.auth.tokens import InvalidTokenError, KeySetUnavailableError, TokenVerifier
from backend.errors import PROBLEM_JSON, ProblemError, ServiceUnavailable, problem_response

logger = logging.getLogger("backend.mcp")


MCP_PATH = "/mcp"


class SdkTokenVerifier:
    """The SDK's `TokenVerifier` interface over the REST routes' verifier: one implementation
    of every rule (HS256 and Better Auth's JWKS, algorithms, expiry, issuer, audience)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await self.verifier.verify(token)
        except InvalidTokenError:
            return None  # the SDK answers 401 with WWW-Authenticate
        # KeySetUnavailableError goes up: `McpEndpoint` answers it 503, as the REST routes do.
        return AccessToken(token=token, client_id=claims.subject, subject=claims.subject, scopes=[])


# --- arguments ------------------------------------------------------------------------------


class TasksMcp(FastMCP):
    """FastMCP's server, transport and auth, serving `TOOLS` through the shared layer."""

    def __init__(self, services: Services, **settings: Any) -> None:
        super().__init__(**settings)
        self.services = services

    async def list_tools(self) -> list[McpTool]:
        return tool_definitions()

    async def call_tool(
        self, name: str, arguments: dict[str, Any]
    ) -> Sequence[ContentBlock] | dict[str, Any]:
        """One call: admitted, validated, run; its access line; a refusal as a tool error
        with the detail REST's problem would carry."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            access = get_access_token()
            # The SDK's middleware lets no unauthenticated call this far; a missing token is a 401.
            owner = await self.services.admit(None if access is None else access.token)
            return await call_tool(ToolContext(self.services, owner), name, arguments)
        except ToolRefused as error:
            outcome = f"error {error.status}"
            raise ToolError(error.message) from None
        except ProblemError as error:  # admission's
            outcome = f"error {error.status.value}"
            raise ToolError(refusal(error)) from None
        except Exception as error:
            outcome = "error 500"
            logger.error("unhandled error in a tool", exc_info=error)
            raise ToolError("an unexpected error occurred") from None
        finally:
            # The tool and the outcome, never the arguments (they are a person's tasks).
            logger.info(
                "tool",
                extra={
                    "tool": name,
                    "outcome": outcome,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


def create_mcp(services: Services) -> TasksMcp:
    """The MCP server and its tools, for this app's services."""
    settings = services.settings
    public = settings.public_url.rstrip("/")
    return TasksMcp(
        services,
        name="todo-api",
        instructions="Manage the signed-in person's tasks: add, list (with filters), read, update, "
        "complete and delete them, and read their tags and counts. Every tool acts for the person "
        "whose token is sent; there is no other user to choose.",
        token_verifier=SdkTokenVerifier(services.verifier),
        auth=AuthSettings(
            issuer_url=settings.better_auth_url or public,
            resource_server_url=f"{public}{MCP_PATH}",
            required_scopes=[],
            # Better Auth's tokens name its own origin as their audience, which our
            # verifier checks (JWT_AUDIENCE), not this resource's URL.
            validate_token_resource=False,
        ),
        stateless_http=True,  # no session to stick to a worker or an instance
        json_response=True,
        streamable_http_path=MCP_PATH,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=settings.mcp_allowed_hosts,
            allowed_origins=settings.cors_origins,
        ),
    )


def _refusal(start: Message) -> bool:
    """A 401 or 403, or any other 4xx not in JSON (a JSON-RPC error is left alone)."""
    status: int = start["status"]
    if status in (401, 403):
        return True
    content_type = dict(start.get("headers", [])).get(b"content-type", b"")
    return 400 <= status < 500 and not content_type.startswith(b"application/json")


class McpEndpoint:
    """The SDK's /mcp app inside ours: its HTTP-level refusals in problem+json (an OAuth
    error for a missing or bad token, keeping its `WWW-Authenticate`; plain text for a Host
    or Origin refused by the DNS-rebinding protection). JSON-RPC errors stay JSON-RPC, as
    MCP clients expect. And 503 when no verification key can be had (Better Auth's JWKS
    unreachable), as the REST routes answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: Message | None = None

        async def as_problem(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and _refusal(message):
                held = message  # replaced once its body says why
                return
            if held is not None and message["type"] == "http.response.body":
                await self._problem(scope, receive, send, held, message.get("body", b""))
                return
            await send(message)

        try:
            await self.app(scope, receive, as_problem)
        except KeySetUnavailableError:
            unavailable = ServiceUnavailable("Better Auth's key server (JWKS) is unreachable; retry shortly")
            response = problem_response(
                HTTPStatus.SERVICE_UNAVAILABLE, unavailable.detail, headers=unavailable.headers
            )
            await response(scope, receive, send)

    @staticmethod
    async def _problem(scope: Scope, receive: Receive, send: Send, start: Message, body: bytes) -> None:
        try:
            said = orjson.loads(body)
        except orjson.JSONDecodeError:
            said = {"error_description": body.decode("utf-8", "replace")}
        if not isinstance(said, dict):
            said = {}
        detail = said.get("error_description") or said.get("error") or "a valid Bearer token is required"
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in start.get("headers", [])
            if name.lower() == b"www-authenticate"
        }
        response = problem_response(start["status"], str(detail), headers=headers)
        assert response.media_type == PROBLEM_JSON
        await response(scope, receive, send)
