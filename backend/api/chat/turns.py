"""One turn of a conversation: the person's message answered by the agent, start to finish.

A turn runs as a task of its own (`ChatAgent.keep`), not as the request's: a client that
goes away mid-answer does not cut it, and its answer is stored all the same. It reads the
window of history the model is sent, runs the agent streamed (text deltas and each tool call
go to the request as they come), bounds the whole by CHAT_TIMEOUT_SECONDS, and stores the
answer, or the problem that ended it with the tool calls made before, whatever happens: a
timeout, the model failing, the app stopping.

A tool call, once begun, is finished even if the turn is cut: it runs in a task of its own
that the turn waits for before storing, so the stored tool calls are every change the turn
made, and none is half made.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import openai
import orjson
from agents import MaxTurnsExceeded, Runner
from agents.exceptions import AgentsException
from agents.items import TResponseInputItem
from agents.stream_events import RawResponsesStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from backend.api.chat.schemas import ChatAnswer, ToolCall
from backend.api.mcp.tools import ToolContext, ToolRefused, call_tool
from backend.auth.tokens import TokenClaims
from backend.errors import GatewayTimeout, ProblemError, ServiceUnavailable, TooManyRequests, Unprocessable
from backend.store.conversations import OwnedConversations, Started
from backend.store.database import Row

if TYPE_CHECKING:
    from backend.api.chat.agent import ChatAgent

logger = logging.getLogger("backend.chat")

# An estimate, not a tokenizer: about four characters a token in English (OpenAI's rule of
# thumb), which a window needs only roughly.
CHARACTERS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """What a streamed answer sends, in order: `conversation`, then `delta`s and `tool_call`s
    as they come, then `done` (the answer) or `error` (the problem)."""

    kind: Literal["conversation", "delta", "tool_call", "done", "error"]
    data: dict[str, Any]


def model_input(window: list[Row], message: str) -> list[TResponseInputItem]:
    """The stored messages (oldest first) and the new one, as the model's input: each answer's
    tool calls replayed as the calls and outputs they were, so the model knows the ids it saw."""
    items: list[TResponseInputItem] = []
    for row in window:
        if row["role"] == "user":
            items.append({"role": "user", "content": row["content"]})
            continue
        for index, call in enumerate(orjson.loads(row["tool_calls"]) if row["tool_calls"] else []):
            call_id = f"call_{row['id']}_{index}"
            items.append(
                {
                    "type": "function_call",
                    "call_id": call_id,
                    "name": call["tool"],
                    "arguments": orjson.dumps(call["arguments"]).decode(),
                }
            )
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": call_id,
                    "output": orjson.dumps(call["result"]).decode(),
                }
            )
        if row["content"]:
            items.append({"role": "assistant", "content": row["content"]})
    items.append({"role": "user", "content": message})
    return items


def history_window(newest_first: list[Row], token_budget: int) -> list[Row]:
    """The newest messages that fit in `token_budget` (estimated), oldest first, starting with
    one of the person's (an answer without its question would mislead the model)."""
    kept: list[Row] = []
    spent = 0
    for row in newest_first:
        spent += (len(row["content"]) + len(row["tool_calls"] or "")) // CHARACTERS_PER_TOKEN + 1
        if spent > token_budget:
            break
        kept.append(row)
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return kept


class ChatTimeout(GatewayTimeout):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the model did not finish answering within CHAT_TIMEOUT_SECONDS ({seconds:g} s); the "
            "message is kept (with any tool calls made) and the conversation can go on"
        )


class TooManyTurns(Unprocessable):
    def __init__(self, turns: int) -> None:
        super().__init__(
            f"the agent needed more than CHAT_MAX_TURNS ({turns}) model calls to answer and was "
            "stopped; the tool calls it made are kept with the message",
            errors=[
                {
                    "loc": ["body", "message"],
                    "msg": f"needed more than CHAT_MAX_TURNS ({turns}) model calls",
                    "type": "chat_max_turns",
                }
            ],
        )


class ModelUnavailable(ServiceUnavailable):
    def __init__(self, why: str) -> None:
        super().__init__(f"the chat model is unavailable ({why}); the message is kept; retry shortly")


class TurnStopped(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__("the server stopped before the answer was finished; the message is kept")


def _model_problem(error: BaseException) -> ProblemError | None:
    """What a model's failure is to the client, named without its text (which may echo the
    prompt); None for what is not the model's (a bug, to log)."""
    if isinstance(error, openai.APIStatusError):
        return ModelUnavailable(f"it answered {error.status_code}")
    if isinstance(error, openai.APITimeoutError):
        return ModelUnavailable("it did not answer in time")
    if isinstance(error, openai.APIConnectionError):
        return ModelUnavailable("it could not be reached")
    if isinstance(error, openai.APIError):
        return ModelUnavailable(type(error).__name__)
    if isinstance(error, AgentsException) and not isinstance(error, MaxTurnsExceeded):
        return ModelUnavailable(f"its answer could not be used: {type(error).__name__}")
    return None


@dataclass
class Turn:
    """One message being answered: the run's context (what its tools act for, and record)."""

    chat: "ChatAgent"
    owner: TokenClaims
    conversations: OwnedConversations
    started: Started
    message: str
    time_zone: str
    events: asyncio.Queue[ChatEvent | None] = field(default_factory=asyncio.Queue)
    calls: list[ToolCall] = field(default_factory=list)
    in_flight: set[asyncio.Task[str]] = field(default_factory=set)
    task: "asyncio.Task[ChatAnswer] | None" = None  # the turn's own, once begun

    # --- tools ------------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: str) -> str:
        """A call the model made: run to its end even if the turn is cut meanwhile."""
        task = asyncio.create_task(self._call(name, arguments))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return await asyncio.shield(task)

    async def _call(self, name: str, text: str) -> str:
        result: dict[str, Any]
        try:
            arguments = orjson.loads(text or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            arguments, result = {}, {"error": "the arguments are not a JSON object"}
        else:
            result = await self._run_tool(name, arguments)
        call = ToolCall(tool=name, arguments=arguments, result=result)
        self.calls.append(call)
        self.chat.counts.tool_calls += 1
        self.events.put_nowait(ChatEvent("tool_call", call.model_dump()))
        return orjson.dumps(result).decode()

    async def _run_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        services = self.chat.services
        # Each call counts against the person's rate limit, as a request would.
        if (
            services.limiter is not None
            and (wait := await services.limiter.wait_seconds(self.owner.subject)) > 0
        ):
            return {"error": TooManyRequests(wait).detail}
        try:
            return await call_tool(ToolContext(services, self.owner), name, arguments)
        except ToolRefused as error:
            return {"error": error.message}
        except Exception as error:
            logger.error("unhandled error in a chat tool", exc_info=error, extra={"tool": name})
            return {"error": "an unexpected error occurred"}

    # --- the turn ---------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[dict[str, str]]:
        """The turn's events as server-sent events, until `done` or `error`."""
        while (event := await self.events.get()) is not None:
            yield {"event": event.kind, "data": orjson.dumps(event.data).decode()}
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task  # its problem was sent as `error`

    async def run(self) -> ChatAnswer:
        """Answer, store, and say so on `events`; the answer, or the problem raised."""
        self.events.put_nowait(ChatEvent("conversation", {"conversation_id": self.started.conversation_id}))
        settings = self.chat.settings
        response = ""
        problem: ProblemError | None = None
        try:
            async with asyncio.timeout(settings.chat_timeout_seconds):
                response = await self._answer()
        except TimeoutError:
            problem = ChatTimeout(settings.chat_timeout_seconds)
        except MaxTurnsExceeded:
            problem = TooManyTurns(settings.chat_max_turns)
        except asyncio.CancelledError:
            await self._store(response, TurnStopped())
            raise
        except Exception as error:
            problem = _model_problem(error)
            if problem is None:
                logger.error("unhandled error in a chat turn", exc_info=error)
                problem = ServiceUnavailable("the answer failed unexpectedly; the message is kept")
        await self._store(response, problem)
        if problem is not None:
            raise problem
        answer = ChatAnswer(
            conversation_id=self.started.conversation_id, response=response, tool_calls=self.calls
        )
        self.events.put_nowait(ChatEvent("done", answer.model_dump()))
        self.events.put_nowait(None)
        return answer

    async def _answer(self) -> str:
        settings = self.chat.settings
        window = history_window(self.started.history, settings.chat_history_tokens)
        agent = self.chat.agent(self.time_zone, datetime.now(UTC))
        result = Runner.run_streamed(
            agent,
            model_input(window, self.message),
            context=self,
            max_turns=settings.chat_max_turns,
            run_config=self.chat.run_config,
        )
        try:
            async for event in result.stream_events():
                if isinstance(event, RawResponsesStreamEvent) and isinstance(
                    event.data, ResponseTextDeltaEvent
                ):
                    self.events.put_nowait(ChatEvent("delta", {"text": event.data.delta}))
        finally:
            if not result.is_complete:
                result.cancel()
            usage = result.context_wrapper.usage
            self.chat.counts.input_tokens += usage.input_tokens
            self.chat.counts.output_tokens += usage.output_tokens
        return str(result.final_output or "")

    async def _store(self, response: str, problem: ProblemError | None) -> None:
        """The answer, or the problem with the calls made: after every call begun has ended,
        and shielded, so a turn cut by the app stopping still records itself."""
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)
        tool_calls = orjson.dumps([call.model_dump() for call in self.calls]).decode() if self.calls else None
        error = None if problem is None else {"status": problem.status.value, "detail": problem.detail}
        self.chat.counts.turns["answered" if problem is None else str(problem.status.value)] += 1
        store = asyncio.ensure_future(
            self.conversations.finish_turn(self.started, content=response, tool_calls=tool_calls, error=error)
        )
        try:
            await asyncio.shield(store)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await store
            raise
        except Exception as failure:
            # The lease runs out and the next message records the turn as stopped.
            logger.error("could not store a chat answer", exc_info=failure)
        if problem is not None:
            self.events.put_nowait(ChatEvent("error", _problem_body(problem)))
            self.events.put_nowait(None)


def _problem_body(problem: ProblemError) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status.value,
        "detail": problem.detail,
    }
