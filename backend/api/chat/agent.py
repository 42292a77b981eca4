"""The chat agent: an OpenAI Agents SDK agent over the task tools, on any OpenAI-compatible model.

The tools are the MCP server's (`mcp.tools.TOOLS`), called in-process through the same
`call_tool`: the same validation, the same owner (the token's, never one the model names),
the same limits, and each call taking a token of the person's rate limit as a request does.
Their schemas are the MCP tools' without `user_id`, which the agent has no use for.

Imported only when a model is configured (or by the tests): the SDK costs 1.3 s of every
process's start (`python -c "import agents"`).
"""

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agents import Agent, FunctionTool, Model, ModelSettings, RunConfig, set_tracing_disabled
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tool_context import ToolContext as SdkToolContext
from openai import AsyncOpenAI

from backend.api.chat.turns import Turn
from backend.api.mcp.tools import TOOLS, ToolSpec, compact_schema
from backend.api.shared import Services
from backend.auth.rate_limit import RateLimiter, create_rate_limiter
from backend.auth.tokens import TokenClaims
from backend.errors import ChatRateLimited
from backend.store.conversations import OwnedConversations, Started

logger = logging.getLogger("backend.chat")

# What the agent is told, with the person's clock: "tomorrow at 9" is a date in their zone.
INSTRUCTIONS = """You manage the signed-in person's tasks in their todo app, with the tools you \
have: add, list, read, update, complete and delete tasks, and read their tags and counts. Every \
tool acts for this person; there is no other user.

The person's time zone is {zone}. Now it is {now} there ({weekday}). Give every date-time to a \
tool in ISO 8601 with that zone's offset (for example {example}); a day without a time means \
09:00 there. To change, complete or delete a task whose id you do not know, find it with \
list_tasks first (its `q` searches titles). Say briefly what you did; never invent a task, an id \
or a result the tools did not give. Answer in the person's language."""


def instructions(time_zone: str, now: datetime) -> str:
    local = now.astimezone(ZoneInfo(time_zone))
    return INSTRUCTIONS.format(
        zone=time_zone,
        now=local.isoformat(timespec="minutes"),
        weekday=local.strftime("%A"),
        example=local.replace(hour=9, minute=0, second=0, microsecond=0).isoformat(),
    )


# A tool's answer to the model: the JSON text of its result (or of {"error": ...}).
ToolInvoker = Callable[[str, str], Awaitable[str]]


def _function_tool(spec: ToolSpec) -> FunctionTool:
    schema = compact_schema(spec.arguments.model_json_schema())
    schema.get("properties", {}).pop("user_id", None)

    async def invoke(context: SdkToolContext[Any], arguments: str) -> str:
        # The run's context is the turn (`turns.Turn`), which runs and records the call.
        turn = context.context
        result: str = await turn.call_tool(spec.name, arguments)
        return result

    return FunctionTool(
        name=spec.name,
        description=(spec.run.__doc__ or "").strip(),
        params_json_schema=schema,
        on_invoke_tool=invoke,
        # The MCP tools' schemas (optional fields, formats) are not OpenAI's strict subset;
        # the arguments are validated by the tools' own models instead.
        strict_json_schema=False,
    )


@dataclass
class ChatCounts:
    """What this process's turns came to, for /metrics: turns by outcome (`answered`, or the
    status of the problem that ended them), tool calls, and the model's tokens (what it costs)."""

    turns: Counter[str] = field(default_factory=Counter)
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class ChatAgent:
    """The agent's parts, built once per app: the model, the tools, the per-minute limit; and
    the turns running now, which outlive their requests (a client that goes away does not
    stop a turn half done) but not the app."""

    def __init__(
        self,
        services: Services,
        model: Model,
        *,
        client: AsyncOpenAI | None = None,
    ) -> None:
        settings = services.settings
        # The SDK exports traces to OpenAI by default: only when the operator says so.
        set_tracing_disabled(not settings.chat_tracing)
        self.services = services
        self.settings = settings
        self.model = model
        self.client = client
        self.tools: list[Any] = [_function_tool(spec) for spec in TOOLS.values()]
        per_minute = settings.chat_requests_per_minute
        self.limiter: RateLimiter | None = create_rate_limiter(
            per_minute / 60,
            max(1, math.ceil(per_minute)),
            settings.redis_url,
            prefix="todo-api:chat-rate-limit:",
        )
        self.run_config = RunConfig(
            tracing_disabled=not settings.chat_tracing,
            trace_include_sensitive_data=False,
            workflow_name="todo-api chat",
            # A model that names a tool it does not have is told so, and may try again.
            tool_not_found_behavior="return_error_to_model",
        )
        self.turns: set[asyncio.Task[Any]] = set()
        self.counts = ChatCounts()

    def agent(self, time_zone: str, now: datetime) -> Agent[Any]:
        return Agent(
            name="Todo assistant",
            instructions=instructions(time_zone, now),
            tools=self.tools,
            model=self.model,
            # One tool call at a time: each sees the one before's effect, in the order told.
            model_settings=ModelSettings(parallel_tool_calls=False),
        )

    async def admit(self, owner: TokenClaims) -> None:
        """A message within the person's CHAT_REQUESTS_PER_MINUTE, or a 429 naming it."""
        if self.limiter is not None and (wait := await self.limiter.wait_seconds(owner.subject)) > 0:
            raise ChatRateLimited(wait, self.settings.chat_requests_per_minute)

    def begin(
        self,
        owner: TokenClaims,
        conversations: OwnedConversations,
        started: Started,
        message: str,
        time_zone: str,
    ) -> Turn:
        """The turn answering a stored message, running in a task of its own."""
        turn = Turn(self, owner, conversations, started, message, time_zone)
        turn.task = asyncio.create_task(turn.run())
        self.turns.add(turn.task)
        turn.task.add_done_callback(self._ended)
        return turn

    def _ended(self, task: "asyncio.Task[Any]") -> None:
        self.turns.discard(task)
        # Its problem was answered (or streamed as `error`) and stored; a streamed turn whose
        # client left has nobody to read it, which asyncio would log as never retrieved.
        if not task.cancelled():
            task.exception()

    async def aclose(self) -> None:
        """Stop the turns still running (each records that it stopped), then the clients."""
        for task in list(self.turns):
            task.cancel()
        for task in list(self.turns):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.limiter is not None:
            await self.limiter.aclose()
        if self.client is not None:
            await self.client.close()


def create_chat(services: Services) -> ChatAgent | None:
    """The chat agent on CHAT_MODEL at OPENAI_BASE_URL (OpenAI's chat completions API, which
    Ollama, vLLM, LiteLLM and the others speak); None without CHAT_MODEL."""
    settings = services.settings
    if settings.chat_model is None:
        return None
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    client = AsyncOpenAI(
        # A local server (Ollama) wants no key, but the client wants one to send.
        api_key=key or "unused",
        base_url=settings.openai_base_url,
        timeout=settings.chat_timeout_seconds,
        max_retries=1,
    )
    model = OpenAIChatCompletionsModel(model=settings.chat_model, openai_client=client)
    return ChatAgent(services, model, client=client)
