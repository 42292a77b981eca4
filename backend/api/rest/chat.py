"""The chat routes: `POST /chat` (an answer as JSON, or streamed as server-sent events) and
the saved conversations. The turn itself is `api/chat/turns.py`'s; its storage
`store/conversations.py`'s."""

import asyncio
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from sse_starlette import EventSourceResponse

from backend.api.chat.schemas import (
    ChatAnswer,
    ChatRequest,
    ConversationDetail,
    ConversationPublic,
    ConversationQuery,
    MessagePublic,
    MessagesQuery,
)
from backend.api.rest.dependencies import UserIdPath
from backend.api.rest.headers import IdempotencyKey
from backend.api.rest.idempotency import KeyInUse, KeyReused, fingerprints, request_key
from backend.api.rest.tasks import REPLAYED, link_header
from backend.app_state import state_of
from backend.auth.caller import authorised_owner
from backend.auth.tokens import TokenClaims
from backend.edge.middleware import lift_deadline
from backend.errors import ProblemError, ServiceUnavailable, Unprocessable, problem_responses
from backend.models import DECIMAL_ID, MAX_ID
from backend.store.conversations import KeyTaken, OwnedConversations, aware

if TYPE_CHECKING:
    from backend.api.chat.agent import ChatAgent

router = APIRouter(
    prefix="/api/{user_id}",
    tags=["chat"],
    responses=problem_responses(401, 403, 422, 429, 431, 500, 503),
)

ConversationId = Annotated[
    int, Path(ge=1, le=MAX_ID, description="The conversation's id.", examples=[7]), DECIMAL_ID
]

_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer; with `Accept: text/event-stream`, streamed as server-sent events: "
        '`conversation` (its id), then `delta` (`{"text"}`, the answer as it is written) and `tool_call` '
        '(`{"tool", "arguments", "result"}`, each as it finishes), then `done` (the answer, as '
        "the JSON body) or `error` (a problem).",
        "headers": REPLAYED,
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'event: conversation\ndata: {"conversation_id": 7}\n\n'
                'event: delta\ndata: {"text": "Added"}\n\n'
                'event: done\ndata: {"conversation_id": 7, "response": "Added", "tool_calls": []}\n\n',
            }
        },
    },
    **problem_responses(400, 404, 409, 413, 504),
}


class ChatUnavailable(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__(
            "no chat model is configured on this server: set CHAT_MODEL (with OPENAI_API_KEY, and "
            "OPENAI_BASE_URL for a server other than OpenAI)"
        )


class ChatMessageTooLong(Unprocessable):
    def __init__(self, limit: int) -> None:
        message = f"at most {limit} characters (CHAT_MESSAGE_MAX_LENGTH)"
        super().__init__(
            "the request is invalid: body.message",
            errors=[{"loc": ["body", "message"], "msg": message, "type": "string_too_long"}],
        )


class StoredProblem(ProblemError):
    """The problem a message's turn ended with, replayed for its Idempotency-Key."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem["detail"]), headers={"Idempotent-Replayed": "true"})
        self.status = HTTPStatus(int(problem["status"]))


def _conversations(request: Request, owner: TokenClaims) -> OwnedConversations:
    return OwnedConversations(state_of(request).database.for_user(owner.subject), owner)


def _wants_stream(accept: str | None) -> bool:
    return accept is not None and "text/event-stream" in accept.lower()


@router.post("/chat", operation_id="sendChatMessage", response_model=ChatAnswer, responses=_STREAMED)
async def chat(
    request: Request,
    user_id: UserIdPath,
    body: ChatRequest,
    idempotency_key: IdempotencyKey = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Send the person's message to the agent, which answers using the task tools (acting for
    the signed-in person only); the message and the answer are stored in the conversation."""
    owner = await authorised_owner(request, user_id)
    agent: ChatAgent | None = state_of(request).chat
    if agent is None:
        raise ChatUnavailable()
    if len(body.message) > agent.settings.chat_message_max_length:
        raise ChatMessageTooLong(agent.settings.chat_message_max_length)
    conversations = _conversations(request, owner)
    streaming = _wants_stream(accept)
    key = sent = None
    if idempotency_key is not None:
        key = request_key(idempotency_key)
        sent = fingerprints(request, owner.subject, await request.body())
        if (replay := await _replay(conversations, key, sent, streaming)) is not None:
            return replay
    await agent.admit(owner)
    # The whole turn, and the answer's own write.
    lease = timedelta(seconds=agent.settings.chat_timeout_seconds + 30)
    try:
        started = await conversations.start_turn(
            body.conversation_id,
            body.message,
            lease_until=datetime.now(UTC) + lease,
            history=agent.settings.chat_history_messages,
            idempotency_key=key,
            fingerprint=None if sent is None else sent[0],
        )
    except KeyTaken:
        assert key is not None
        assert sent is not None
        # The same key, sent twice at once: the other request stored it first.
        if (replay := await _replay(conversations, key, sent, streaming)) is not None:
            return replay
        raise KeyInUse() from None
    # A turn has limits of its own (CHAT_TIMEOUT_SECONDS), longer than a request's.
    lift_deadline(request.scope)
    turn = agent.begin(owner, conversations, started, body.message, body.time_zone)
    assert turn.task is not None
    if streaming:
        return EventSourceResponse(turn.stream(), headers={"Cache-Control": "no-store"})
    # Shielded: a client that goes away leaves the turn to finish (and be stored).
    answer = await asyncio.shield(turn.task)
    return Response(answer.model_dump_json(), media_type="application/json")


async def _replay(
    conversations: OwnedConversations, key: str, sent: tuple[str, str], streaming: bool
) -> Response | None:
    """The stored answer to the message sent with this key; None if there is none."""
    found = await conversations.by_key(key)
    if found is None:
        return None
    message, reply = found
    if message["fingerprint"] not in sent:
        raise KeyReused()
    if reply is None:
        until = message["answering_until"]
        if message["answering"] == message["id"] and until is not None and aware(until) > datetime.now(UTC):
            raise KeyInUse()
        raise StoredProblem({"status": 503, "detail": "the server stopped before the answer was finished"})
    if reply["error"] is not None:
        raise StoredProblem(orjson.loads(reply["error"]))
    answer = ChatAnswer(
        conversation_id=message["conversation_id"],
        response=reply["content"],
        tool_calls=orjson.loads(reply["tool_calls"]) if reply["tool_calls"] else [],
    )
    headers = {"Idempotent-Replayed": "true"}
    if not streaming:
        return Response(answer.model_dump_json(), media_type="application/json", headers=headers)

    async def events() -> Any:
        yield {
            "event": "conversation",
            "data": orjson.dumps({"conversation_id": answer.conversation_id}).decode(),
        }
        for call in answer.tool_calls:
            yield {"event": "tool_call", "data": call.model_dump_json()}
        if answer.response:
            yield {"event": "delta", "data": orjson.dumps({"text": answer.response}).decode()}
        yield {"event": "done", "data": answer.model_dump_json()}

    return EventSourceResponse(events(), headers={**headers, "Cache-Control": "no-store"})


@router.get(
    "/conversations",
    operation_id="listConversations",
    response_model=list[ConversationPublic],
    responses={
        200: {
            "headers": {
                "X-Total-Count": {
                    "description": "The person's conversations.",
                    "schema": {"type": "integer"},
                },
                "Link": {"description": "RFC 8288 `next` and `prev` pages.", "schema": {"type": "string"}},
            }
        }
    },
)
async def list_conversations(
    request: Request, response: Response, user_id: UserIdPath, query: Annotated[ConversationQuery, Query()]
) -> list[ConversationPublic]:
    """The person's conversations, most recently active first."""
    owner = await authorised_owner(request, user_id)
    rows, total = await _conversations(request, owner).page(query.limit, query.offset)
    response.headers["X-Total-Count"] = str(total)
    path = f"{request.scope.get('root_path', '')}{request.url.path}"
    if links := link_header(path, request.query_params, total=total, limit=query.limit, offset=query.offset):
        response.headers["Link"] = links
    return [ConversationPublic.model_validate(row) for row in rows]


@router.get(
    "/conversations/{conversation_id}",
    operation_id="getConversation",
    response_model=ConversationDetail,
    responses=problem_responses(404),
)
async def get_conversation(
    request: Request,
    user_id: UserIdPath,
    conversation_id: ConversationId,
    query: Annotated[MessagesQuery, Query()],
) -> ConversationDetail:
    """The conversation with its messages, oldest first, each answer with its tool calls."""
    owner = await authorised_owner(request, user_id)
    row, messages = await _conversations(request, owner).get(conversation_id, query.after, query.limit)
    return ConversationDetail(**row, messages=[MessagePublic.of(message) for message in messages])


@router.delete(
    "/conversations/{conversation_id}",
    operation_id="deleteConversation",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404),
)
async def delete_conversation(
    request: Request, user_id: UserIdPath, conversation_id: ConversationId
) -> Response:
    """Delete the conversation and its messages (its tasks stay)."""
    owner = await authorised_owner(request, user_id)
    await _conversations(request, owner).delete(conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
