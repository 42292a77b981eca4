"""A person's conversations with the chat agent, and their messages (`api/chat` runs the turns).

A turn is two short transactions around the model's work, so no connection is held while
the model thinks: `start_turn` stores the person's message and takes the conversation's
lease (`answering`, until `answering_until`), `finish_turn` stores the answer (or the
problem that ended the turn) and gives the lease back. A second message while the lease
holds is refused (`ConversationBusy`, a 409); a lease that ran out belongs to a server
that stopped mid-turn, and the next message records that turn as failed and goes on.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    Text,
    bindparam,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from backend.auth.tokens import TokenClaims
from backend.errors import Conflict, NotFound
from backend.models import CONVERSATION_TITLE_LENGTH, metadata, utc_now
from backend.store.database import Connection, Database, Query, Row

CONVERSATIONS = metadata.tables["conversations"]
MESSAGES = metadata.tables["messages"]

_NOW = bindparam("now", type_=DateTime(timezone=True))
OWNED_CONVERSATION = (CONVERSATIONS.c.id == bindparam("conversation_id")) & (
    CONVERSATIONS.c.user_id == bindparam("owner_id")
)
_SUMMARY = (
    CONVERSATIONS.c.id,
    CONVERSATIONS.c.title,
    CONVERSATIONS.c.created_at,
    CONVERSATIONS.c.updated_at,
)
_MESSAGE = (
    MESSAGES.c.id,
    MESSAGES.c.role,
    MESSAGES.c.content,
    MESSAGES.c.tool_calls,
    MESSAGES.c.error,
    MESSAGES.c.reply_to,
    MESSAGES.c.created_at,
)


class ConversationNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no conversation with this id belongs to this user")


class ConversationBusy(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "this conversation is still answering another message; send this one when that answer "
            "has come (messages to one conversation are answered one at a time)"
        )


class KeyTaken(Exception):
    """The Idempotency-Key names a message stored before: its turn is replayed, not run."""


@dataclass(frozen=True, slots=True)
class Started:
    """A turn begun: the person's message stored, the conversation's lease taken."""

    conversation_id: int
    message_id: int
    # The conversation's newest messages before this one, newest first (the model's window).
    history: list[Row]


_LOCK = Query(
    select(CONVERSATIONS.c.answering, CONVERSATIONS.c.answering_until)
    .where(OWNED_CONVERSATION)
    .with_for_update()  # two messages to one conversation take turns here (PostgreSQL)
)
_CREATE = Query(
    postgresql.insert(CONVERSATIONS)
    .values(
        user_id=bindparam("owner_id"),
        title=bindparam("title"),
        created_at=_NOW,
        updated_at=_NOW,
    )
    .returning(CONVERSATIONS.c.id)
)
# The person's message; nothing if its Idempotency-Key was used before.
_ADD_MESSAGE = Query(
    postgresql.insert(MESSAGES)
    .values(
        conversation_id=bindparam("conversation_id"),
        user_id=bindparam("owner_id"),
        role="user",
        content=bindparam("content"),
        idempotency_key=bindparam("idempotency_key"),
        fingerprint=bindparam("fingerprint"),
        created_at=_NOW,
    )
    .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
    .returning(MESSAGES.c.id)
)
_TAKE_LEASE = Query(
    update(CONVERSATIONS)
    .where(OWNED_CONVERSATION)
    .values(answering=bindparam("message_id"), answering_until=bindparam("until"), updated_at=_NOW)
)
# The answer, or the problem that ended the turn: one per message (a turn taken over after
# its lease ran out may have been answered by then), and none once the conversation is gone.
_REPLY = Query(
    postgresql.insert(MESSAGES)
    .from_select(
        [
            "conversation_id",
            "user_id",
            "role",
            "content",
            "tool_calls",
            "error",
            "reply_to",
            "created_at",
        ],
        select(
            bindparam("conversation_id", type_=BigInteger),
            bindparam("owner_id", type_=String),
            literal("assistant", String),
            bindparam("content", type_=Text),
            bindparam("tool_calls", type_=Text),
            bindparam("error", type_=Text),
            bindparam("message_id", type_=BigInteger),
            _NOW,
        ).where(exists().where(OWNED_CONVERSATION)),
    )
    .on_conflict_do_nothing(index_elements=["reply_to"])
)
_GIVE_LEASE = Query(
    update(CONVERSATIONS)
    .where(OWNED_CONVERSATION)
    .where(CONVERSATIONS.c.answering == bindparam("message_id"))
    .values(answering=None, answering_until=None, updated_at=_NOW)
)
_BY_KEY = Query(
    select(
        MESSAGES.c.id,
        MESSAGES.c.conversation_id,
        MESSAGES.c.fingerprint,
        CONVERSATIONS.c.answering,
        CONVERSATIONS.c.answering_until,
    )
    .select_from(MESSAGES.outerjoin(CONVERSATIONS, CONVERSATIONS.c.id == MESSAGES.c.conversation_id))
    .where(MESSAGES.c.user_id == bindparam("owner_id"))
    .where(MESSAGES.c.idempotency_key == bindparam("idempotency_key"))
)
_REPLY_TO = Query(select(*_MESSAGE).where(MESSAGES.c.reply_to == bindparam("message_id")))
# The conversation's newest messages before one, newest first (the model's window).
_HISTORY = Query(
    select(*_MESSAGE)
    .where(MESSAGES.c.conversation_id == bindparam("conversation_id"))
    .where(MESSAGES.c.id < bindparam("before"))
    .order_by(MESSAGES.c.id.desc())
    .limit(bindparam("limit"))
)
_LIST = Query(
    select(*_SUMMARY)
    .where(CONVERSATIONS.c.user_id == bindparam("owner_id"))
    .order_by(CONVERSATIONS.c.updated_at.desc(), CONVERSATIONS.c.id.desc())
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)
_COUNT = Query(select(func.count()).where(CONVERSATIONS.c.user_id == bindparam("owner_id")))
_GET = Query(select(*_SUMMARY).where(OWNED_CONVERSATION))
_MESSAGES = Query(
    select(*_MESSAGE)
    .where(MESSAGES.c.conversation_id == bindparam("conversation_id"))
    .where(MESSAGES.c.id > bindparam("after"))
    .order_by(MESSAGES.c.id)
    .limit(bindparam("limit"))
)
# Its messages go with it (ON DELETE CASCADE; SQLite's connections enforce foreign keys).
_DELETE = Query(delete(CONVERSATIONS).where(OWNED_CONVERSATION).returning(CONVERSATIONS.c.id))

ABANDONED = {"status": 503, "detail": "the server answering this message stopped before it finished"}


def title_of(message: str) -> str:
    """A conversation's title: its first message, on one line, cut to the column."""
    line = " ".join(message.split())
    if len(line) <= CONVERSATION_TITLE_LENGTH:
        return line
    return line[: CONVERSATION_TITLE_LENGTH - 1].rstrip() + "…"


class OwnedConversations:
    """One person's conversations, every statement scoped to `owner`."""

    __slots__ = ("db", "owner")

    def __init__(self, db: Database, owner: TokenClaims) -> None:
        self.db = db
        self.owner = owner

    async def start_turn(
        self,
        conversation_id: int | None,
        content: str,
        *,
        lease_until: datetime,
        history: int = 0,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> Started:
        """Store the person's message (in a new conversation without an id), take the
        conversation's lease and read its `history` newest messages before, in one
        transaction. `ConversationNotFound` for a conversation that is not theirs,
        `ConversationBusy` while another message is answered, `KeyTaken` (nothing stored)
        for a key used before."""
        now = utc_now()
        base: dict[str, Any] = {
            "owner_id": self.owner.subject,
            "now": now,
            "content": content,
            "idempotency_key": idempotency_key,
            "fingerprint": fingerprint,
        }

        async def start(connection: Connection) -> Started:
            if conversation_id is None:
                created = await connection.fetch_one(_CREATE, **base, title=title_of(content))
                assert created is not None
                ids = {**base, "conversation_id": created["id"]}
            else:
                ids = {**base, "conversation_id": conversation_id}
                held = await connection.fetch_one(_LOCK, **ids)
                if held is None:
                    raise ConversationNotFound()
                if held["answering"] is not None:
                    if aware(held["answering_until"]) > now:
                        raise ConversationBusy()
                    # Its server stopped mid-turn: that message is recorded as unanswered.
                    where = {key: ids[key] for key in ("owner_id", "conversation_id", "now")}
                    await _reply(connection, where, held["answering"], "", None, ABANDONED)
            added = await connection.fetch_one(_ADD_MESSAGE, **ids)
            if added is None:
                raise KeyTaken
            await connection.execute(_TAKE_LEASE, **ids, message_id=added["id"], until=lease_until)
            window = []
            if conversation_id is not None and history > 0:
                window = await connection.fetch_all(
                    _HISTORY, conversation_id=conversation_id, before=added["id"], limit=history
                )
            return Started(ids["conversation_id"], added["id"], window)

        return await self.db.atomic(start)

    async def finish_turn(
        self,
        started: Started,
        *,
        content: str,
        tool_calls: str | None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Store the answer (or the problem that ended the turn) and give the lease back."""
        ids = {
            "owner_id": self.owner.subject,
            "conversation_id": started.conversation_id,
            "now": utc_now(),
        }

        async def finish(connection: Connection) -> None:
            await _reply(connection, ids, started.message_id, content, tool_calls, error)
            await connection.execute(_GIVE_LEASE, **ids, message_id=started.message_id)

        await self.db.atomic(finish)

    async def by_key(self, idempotency_key: str) -> tuple[Row, Row | None] | None:
        """The message stored with this key, and its answer (None while it is answered)."""
        message = await self.db.fetch_one(
            _BY_KEY, owner_id=self.owner.subject, idempotency_key=idempotency_key
        )
        if message is None:
            return None
        return message, await self.db.fetch_one(_REPLY_TO, message_id=message["id"])

    async def page(self, limit: int, offset: int) -> tuple[list[Row], int]:
        """The person's conversations, most recently active first, and how many they have."""

        async def read(connection: Connection) -> tuple[list[Row], int]:
            rows = await connection.fetch_all(_LIST, owner_id=self.owner.subject, limit=limit, offset=offset)
            if offset == 0 and len(rows) < limit:
                return rows, len(rows)
            counted = await connection.fetch_one(_COUNT, owner_id=self.owner.subject)
            assert counted is not None
            return rows, int(next(iter(counted.values())))

        return await self.db.using(read)

    async def get(self, conversation_id: int, after: int, limit: int) -> tuple[Row, list[Row]]:
        """The conversation and its first `limit` messages after the message `after`, oldest first."""
        ids = {"owner_id": self.owner.subject, "conversation_id": conversation_id}

        async def read(connection: Connection) -> tuple[Row, list[Row]]:
            conversation = await connection.fetch_one(_GET, **ids)
            if conversation is None:
                raise ConversationNotFound()
            return conversation, await connection.fetch_all(_MESSAGES, **ids, after=after, limit=limit)

        return await self.db.using(read)

    async def delete(self, conversation_id: int) -> None:
        deleted = await self.db.fetch_one(
            _DELETE, owner_id=self.owner.subject, conversation_id=conversation_id
        )
        if deleted is None:
            raise ConversationNotFound()


async def _reply(
    connection: Connection,
    ids: dict[str, Any],
    message_id: int,
    content: str,
    tool_calls: str | None,
    error: dict[str, Any] | None,
) -> None:
    await connection.execute(
        _REPLY,
        **ids,
        message_id=message_id,
        content=content,
        tool_calls=tool_calls,
        error=None if error is None else orjson.dumps(error).decode(),
    )


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
