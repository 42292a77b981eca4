"""The chat routes' request and answer bodies, and a stored message as they show it."""

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field, StringConstraints

from backend.config import CHAT_MESSAGE_HARD_LIMIT
from backend.models import HIDE_NULL, MAX_ID, TITLE_PATTERN, RequestBody, TimeZone
from backend.store.database import Row

MAX_MESSAGES_PAGE = 1000


class ChatRequest(RequestBody):
    conversation_id: Annotated[
        int | None,
        HIDE_NULL,
        Field(ge=1, le=MAX_ID, description="The conversation to continue; without it, a new one is started."),
    ] = None
    message: Annotated[
        str,
        # Something besides whitespace, no NUL; CHAT_MESSAGE_MAX_LENGTH (4000) is checked on top.
        StringConstraints(min_length=1, max_length=CHAT_MESSAGE_HARD_LIMIT, pattern=TITLE_PATTERN),
        Field(description="What the person says (at most CHAT_MESSAGE_MAX_LENGTH characters, 4000)."),
    ]
    time_zone: Annotated[
        TimeZone,
        Field(
            description="The person's IANA time zone: the agent reads dates such as 'tomorrow at 9' in it.",
            examples=["Europe/Berlin"],
        ),
    ] = "UTC"


class ToolCall(BaseModel):
    """A tool the agent called while answering, with what it returned (`{"error": ...}` if refused)."""

    tool: str = Field(examples=["add_task"])
    arguments: dict[str, Any] = Field(examples=[{"title": "Buy milk"}])
    result: dict[str, Any] = Field(examples=[{"id": 42, "title": "Buy milk", "completed": False}])


class ChatAnswer(BaseModel):
    conversation_id: int = Field(
        description="The conversation, new or continued: send it with the next message."
    )
    response: str = Field(description="The agent's answer.")
    tool_calls: list[ToolCall] = Field(
        description="The tools it called to answer, in the order they finished."
    )


class TurnProblem(BaseModel):
    """Why a message was left unanswered (as the problem its request got)."""

    status: int
    detail: str


class MessagePublic(BaseModel):
    id: int
    role: Literal["user", "assistant"]
    content: str
    tool_calls: list[ToolCall] = Field(
        description="An answer's tool calls (empty for the person's messages)."
    )
    error: TurnProblem | None = Field(
        description="On an answer that did not come (a timeout, the model unavailable): why; else null."
    )
    reply_to: int | None = Field(description="An answer's: the message it answers; null for the person's.")
    created_at: datetime

    @classmethod
    def of(cls, row: Row) -> "MessagePublic":
        return cls(
            id=row["id"],
            role=row["role"],
            content=row["content"],
            tool_calls=orjson.loads(row["tool_calls"]) if row["tool_calls"] else [],
            error=None if row["error"] is None else orjson.loads(row["error"]),
            reply_to=row["reply_to"],
            created_at=row["created_at"],
        )


class ConversationPublic(BaseModel):
    id: int
    title: str = Field(description="Its first message, cut to 100 characters.")
    created_at: datetime
    updated_at: datetime = Field(description="When its last message came.")


class ConversationDetail(ConversationPublic):
    messages: list[MessagePublic] = Field(description="Oldest first (a page of them: `after`, `limit`).")


class ConversationQuery(BaseModel):
    limit: int = Field(default=20, ge=1, le=100, description="Conversations per page.")
    offset: int = Field(default=0, ge=0, le=1_000_000_000, description="Conversations to skip.")


class MessagesQuery(BaseModel):
    after: int = Field(default=0, ge=0, le=2**63 - 1, description="Messages after this message id.")
    limit: int = Field(default=200, ge=1, le=MAX_MESSAGES_PAGE, description="Messages per page.")
