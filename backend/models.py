"""Tables, and the request and response schemas of the task API."""

import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic import Field as PydanticField
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from backend.domain import recurrence

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 1000
USER_ID_MAX_LENGTH = 255
EMAIL_MAX_LENGTH = 320
NAME_MAX_LENGTH = 255
TAG_MAX_LENGTH = 50
TAGS_PER_TASK = 20
# Names sent for one task's tags before duplicates collapse (each is folded and compared).
TAG_NAMES_SENT = 10 * TAGS_PER_TASK
TIME_ZONE_MAX_LENGTH = 64
CONVERSATION_TITLE_LENGTH = 100
LIST_NAME_MAX_LENGTH = 100
INBOX = "Inbox"  # every person's first list, which cannot be deleted
POSITION_MAX_LENGTH = 64  # a fractional-indexing key: grows only with many moves between two neighbours
# Levels of subtasks below a top-level task (as Todoist): a task at this depth takes no subtask.
MAX_SUBTASK_DEPTH = 4
# Ids are PostgreSQL bigints.
MAX_ID = 2**63 - 1

# Stored as a small integer, so that sorting by priority is sorting by urgency.
PRIORITIES = ("none", "low", "medium", "high")
Priority = Literal["none", "low", "medium", "high"]
PRIORITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(PRIORITIES)}

# Stable constraint names, so migrations can drop and alter them on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata


def utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp_column() -> Any:
    return Column(DateTime(timezone=True), nullable=False)


class User(SQLModel, table=True):
    """A Better Auth user, recorded the first time they write."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=USER_ID_MAX_LENGTH)
    email: str | None = Field(default=None, max_length=EMAIL_MAX_LENGTH)
    name: str | None = Field(default=None, max_length=NAME_MAX_LENGTH)
    created_at: datetime = Field(default_factory=utc_now, sa_column=_timestamp_column())
    # Kept by database triggers on `tasks` (see the migrations), so a list's
    # X-Total-Count is one row away however many tasks a user has.
    task_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    completed_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


def _bigint_id() -> Any:
    # BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
    return BigInteger().with_variant(Integer, "sqlite")


class TaskList(SQLModel, table=True):
    """A person's list of tasks. Every person has one Inbox (`inbox`, created with their
    first write, never deleted); a deleted list is a tombstone (`deleted_at`) while its
    deleted tasks are, for sync, then purged with them."""

    __tablename__ = "task_lists"
    __table_args__ = (
        # Unique per person case-insensitively, as tags are, among the lists not deleted.
        Index(
            "uq_task_lists_user_id_name_folded",
            "user_id",
            "name_folded",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        Index(
            "uq_task_lists_user_id_inbox",
            "user_id",
            unique=True,
            postgresql_where=text("inbox"),
            sqlite_where=text("inbox"),
        ),
        # The person's lists in their order.
        Index(None, "user_id", "position", "id"),
        Index(None, "deleted_at"),
        # Sync reads a person's list changes by number, as their tasks'.
        Index(None, "user_id", "change_seq"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=Column(_bigint_id(), primary_key=True))
    # The token's subject, with or without a `users` row (only a first task writes one).
    user_id: str = Field(max_length=USER_ID_MAX_LENGTH)
    name: str = Field(max_length=LIST_NAME_MAX_LENGTH)
    name_folded: str = Field(max_length=4 * LIST_NAME_MAX_LENGTH)
    # A fractional-indexing key (base 62): ordered bytewise, hence the C collation.
    position: str = Field(
        sa_column=Column(
            String(POSITION_MAX_LENGTH).with_variant(
                String(POSITION_MAX_LENGTH, collation="C"), "postgresql"
            ),
            nullable=False,
        )
    )
    inbox: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    created_at: datetime = Field(sa_column=_timestamp_column())
    updated_at: datetime = Field(sa_column=_timestamp_column())
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # The owner's change counter when the list last changed, numbered with their tasks' (see
    # the migration a3b4c5d6e7f8): sync and events cover lists in the same order.
    change_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    # One index per sort key the list offers, each led by the owner and ending
    # in the id tie-breaker, so every list is an index range scan. Tasks without
    # a due date sort last in both orders: one index per direction of `due_at`.
    __table_args__ = (
        Index(None, "user_id", "created_at", "id"),
        Index(None, "user_id", "updated_at", "id"),
        # The title sort is case-insensitive, by the folded title's first characters.
        Index(None, "user_id", "title_sort", "id"),
        Index(None, "user_id", "priority", "id"),
        Index(None, "user_id", "due_at", "id"),
        Index(None, "user_id", "remind_at"),
        # Deleting a task nulls the links to it (ON DELETE SET NULL): found by index, not
        # by reading every task (DELETE went from 2,900 to 70 a second without it).
        Index(None, "next_occurrence_id"),
        # Search: trigram indexes on the case-folded text (PostgreSQL's pg_trgm).
        Index(
            "ix_tasks_title_folded_trgm",
            "title_folded",
            postgresql_using="gin",
            postgresql_ops={"title_folded": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_tasks_description_folded_trgm",
            "description_folded",
            postgresql_using="gin",
            postgresql_ops={"description_folded": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        CheckConstraint("recurrence IS NULL OR due_at IS NOT NULL", name="recurrence_has_due_at"),
        UniqueConstraint("previous_occurrence_id"),
        # Incremental sync reads a user's changes in the order they committed.
        Index(None, "user_id", "change_seq"),
        # Tombstones past SYNC_RETENTION_DAYS are purged by age.
        Index(None, "deleted_at"),
        # A list's tasks (its filter, its counts, its deletion).
        Index(None, "list_id", "created_at", "id"),
        # The order people choose: a list's tasks, a task's subtasks (their counts, the
        # cascades), every list's at once.
        Index(None, "list_id", "position", "id"),
        Index(None, "parent_id", "position", "id"),
        Index(None, "user_id", "position", "id"),
        # A subtask comes round with its parent (whose next occurrence gets copies of it).
        CheckConstraint("parent_id IS NULL OR recurrence IS NULL", name="subtask_not_recurring"),
        # Ids are never reused, on SQLite too (a sync client may hold a deleted one).
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=Column(_bigint_id(), primary_key=True))
    user_id: str = Field(
        sa_column=Column(
            String(USER_ID_MAX_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    title: str = Field(max_length=TITLE_MAX_LENGTH)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX_LENGTH)
    completed: bool = False
    created_at: datetime = Field(default_factory=utc_now, sa_column=_timestamp_column())
    updated_at: datetime = Field(default_factory=utc_now, sa_column=_timestamp_column())
    priority: int = Field(default=0, sa_column=Column(SmallInteger, nullable=False, server_default="0"))
    due_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    remind_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    recurrence: str | None = Field(default=None, max_length=recurrence.MAX_RULE_LENGTH)
    time_zone: str = Field(
        default="UTC",
        sa_column=Column(String(TIME_ZONE_MAX_LENGTH), nullable=False, server_default="UTC"),
    )
    completed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # The occurrence this one was created from, and the one created from it (kept by a
    # trigger from the former: see the migration). Unique: one successor at most.
    previous_occurrence_id: int | None = Field(
        default=None, sa_column=Column(_bigint_id(), ForeignKey("tasks.id", ondelete="SET NULL"))
    )
    next_occurrence_id: int | None = Field(
        default=None, sa_column=Column(_bigint_id(), ForeignKey("tasks.id", ondelete="SET NULL"))
    )
    # 1 on creation, +1 on every change: the entity tag (`ETag: "<version>"`).
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    # The user's change counter when this task last changed (kept by triggers, see the
    # migration): what incremental sync pages by.
    change_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    # Set when the task is deleted: a tombstone, gone from every route but sync's,
    # until it is purged after SYNC_RETENTION_DAYS.
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # Title and description folded by `search_fold` (casefold and NFKC, all of Unicode), for
    # search: the same on SQLite, which folds only ASCII, and PostgreSQL, whose lower()
    # depends on the database's locale. `title_sort` is the title sort's key.
    title_folded: str = Field(
        default="", sa_column=Column(String(4 * TITLE_MAX_LENGTH), nullable=False, server_default="")
    )
    description_folded: str | None = Field(default=None, sa_column=Column(String(4 * DESCRIPTION_MAX_LENGTH)))
    title_sort: str = Field(default="", sa_column=Column(String(100), nullable=False, server_default=""))
    # The due date a recurring series started from (set with its rule, due date or zone,
    # copied to each next occurrence): its times of day and days of month come from here.
    recurrence_anchor: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # When the reminder at `remind_at` fired (read-only in the task's JSON).
    reminded_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # Its list (the owner's Inbox unless given). Set on every task the API writes; nullable
    # only because SQLite cannot add a NOT NULL column to a table with triggers in place.
    list_id: int | None = Field(
        default=None, sa_column=Column(_bigint_id(), ForeignKey("task_lists.id", ondelete="CASCADE"))
    )
    # The task it is a subtask of (same owner, same list; at most MAX_SUBTASK_DEPTH levels below
    # a top-level task).
    parent_id: int | None = Field(
        default=None, sa_column=Column(_bigint_id(), ForeignKey("tasks.id", ondelete="CASCADE"))
    )
    # Its place among its siblings (same list, same parent): a fractional-indexing key, ordered
    # bytewise (see `store/positions.py`). Set on every insert (on PostgreSQL by a trigger);
    # nullable only because SQLite cannot add a NOT NULL column to a table with triggers.
    position: str | None = Field(
        default=None,
        sa_column=Column(
            String(POSITION_MAX_LENGTH).with_variant(String(POSITION_MAX_LENGTH, collation="C"), "postgresql")
        ),
    )
    # Its direct subtasks (not deleted), and those not completed: kept by triggers (see the
    # migration f2a3b4c5d6e7), read as columns.
    subtask_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    open_subtask_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


# Descending due dates, still without-a-date last: PostgreSQL only (SQLite's CREATE
# INDEX has no NULLS LAST, and lists there are small enough to sort).
_TASKS = Task.__table__  # type: ignore[attr-defined]
Index(
    "ix_tasks_user_id_due_at_desc_id",
    _TASKS.c.user_id,
    _TASKS.c.due_at.desc().nullslast(),
    _TASKS.c.id.desc(),
).ddl_if(dialect="postgresql")

# Armed reminders (see `store/reminders.py`): the scheduler's scan across users is a range
# of this index, however many tasks carry old, fired or completed reminders.
ARMED_REMINDERS = (
    "remind_at IS NOT NULL AND NOT completed AND deleted_at IS NULL "
    "AND (reminded_at IS NULL OR reminded_at < remind_at)"
)
Index(
    "ix_tasks_armed_reminders",
    _TASKS.c.remind_at,
    postgresql_where=text(ARMED_REMINDERS),
    sqlite_where=text(ARMED_REMINDERS),
)


class ChangeCounter(SQLModel, table=True):
    """Each user's change counter, bumped by triggers inside every writing transaction.

    Its own table rather than a column of `users`: the counter is taken by a BEFORE
    trigger, which on PostgreSQL cannot see a user row inserted by the same
    statement's WITH clause (a first create), and an upsert here needs none.
    """

    __tablename__ = "change_counters"

    user_id: str = Field(primary_key=True, max_length=USER_ID_MAX_LENGTH)
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class Event(SQLModel, table=True):
    """One change of a user's tasks, numbered as sync numbers it: written by trigger in the
    statement that makes the change (see the migration), purged after SYNC_RETENTION_DAYS."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "occurred_at"),)

    user_id: str = Field(primary_key=True, max_length=USER_ID_MAX_LENGTH)
    sequence: int = Field(sa_column=Column(BigInteger, primary_key=True))
    type: str = Field(max_length=32)
    task_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    occurred_at: datetime = Field(sa_column=_timestamp_column())


class EventListenerProcess(SQLModel, table=True):
    """A process with open event streams, alive as of `seen_at` (`store/notifications.py`)."""

    __tablename__ = "event_listener_processes"

    process_id: str = Field(primary_key=True, max_length=32)
    seen_at: datetime = Field(sa_column=_timestamp_column())


class EventListener(SQLModel, table=True):
    """A person with an open event stream on a process: only their changes are NOTIFYed,
    NOTIFY's commit-time lock costing a third of PostgreSQL's write throughput when sent for
    every change (`store/notifications.py`)."""

    __tablename__ = "event_listeners"

    user_id: str = Field(primary_key=True, max_length=USER_ID_MAX_LENGTH)
    process_id: str = Field(primary_key=True, max_length=32)


class WebhookEndpoint(SQLModel, table=True):
    """A URL of WEBHOOK_URL, as the servers configured with it register it (`store/webhooks.py`).
    The events trigger queues a delivery of each event to every active endpoint; one no
    server has named for an hour is made inactive, and its deliveries dropped."""

    __tablename__ = "webhook_endpoints"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    url: str = Field(max_length=2048, unique=True)
    active: bool = Field(default=True)
    seen_at: datetime = Field(sa_column=_timestamp_column())


class WebhookDelivery(SQLModel, table=True):
    """An event still to be delivered to an endpoint: queued by the events trigger in the
    change's own transaction, deleted once delivered or given up (`store/webhooks.py`)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "endpoint_id", "next_attempt_at"),)

    endpoint_id: int = Field(
        sa_column=Column(Integer, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: str = Field(primary_key=True, max_length=USER_ID_MAX_LENGTH)
    sequence: int = Field(sa_column=Column(BigInteger, primary_key=True))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime = Field(sa_column=_timestamp_column())
    leased_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class IdempotencyKey(SQLModel, table=True):
    """A request key and the answer stored with its effect, for replays."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "created_at"),)

    # The token's subject, with or without a `users` row (only a first task writes one).
    user_id: str = Field(primary_key=True, max_length=USER_ID_MAX_LENGTH)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    status: int = Field(sa_column=Column(SmallInteger, nullable=False))
    location: str | None = Field(default=None, max_length=2048)
    etag: str | None = Field(default=None, max_length=32)
    body: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utc_now, sa_column=_timestamp_column())


class Conversation(SQLModel, table=True):
    """A person's conversation with the chat agent (`api/chat`). `answering` is the message
    being answered, until `answering_until` (the turn's lease): a second message meanwhile is
    a 409, and a lease run out (its server stopped) is taken over by the next message."""

    __tablename__ = "conversations"
    # The person's conversations, most recently active first.
    __table_args__ = (Index(None, "user_id", "updated_at", "id"),)

    id: int | None = Field(default=None, sa_column=Column(_bigint_id(), primary_key=True))
    # The token's subject, with or without a `users` row (only a first task writes one).
    user_id: str = Field(max_length=USER_ID_MAX_LENGTH)
    title: str = Field(max_length=CONVERSATION_TITLE_LENGTH)
    created_at: datetime = Field(sa_column=_timestamp_column())
    updated_at: datetime = Field(sa_column=_timestamp_column())
    answering: int | None = Field(default=None, sa_column=Column(BigInteger))
    answering_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Message(SQLModel, table=True):
    """A message of a conversation: the person's (`user`, with its Idempotency-Key), or the
    agent's answer to one (`assistant`, `reply_to` it, with its tool calls, or the problem
    that ended the turn)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index(None, "conversation_id", "id"),
        UniqueConstraint("user_id", "idempotency_key"),
        UniqueConstraint("reply_to"),
    )

    id: int | None = Field(default=None, sa_column=Column(_bigint_id(), primary_key=True))
    conversation_id: int = Field(
        sa_column=Column(_bigint_id(), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: str = Field(max_length=USER_ID_MAX_LENGTH)
    role: str = Field(max_length=16)
    content: str = Field(sa_column=Column(Text, nullable=False))
    # JSON: [{"tool", "arguments", "result"}] for an answer.
    tool_calls: str | None = Field(default=None, sa_column=Column(Text))
    # JSON: the problem (status, detail) that ended an unanswered turn.
    error: str | None = Field(default=None, sa_column=Column(Text))
    reply_to: int | None = Field(default=None, sa_column=Column(BigInteger))
    idempotency_key: str | None = Field(default=None, max_length=255)
    fingerprint: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_column=_timestamp_column())


class Tag(SQLModel, table=True):
    """A user's tag. Unique per user case-insensitively; `name` keeps the spelling first used."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("user_id", "name_folded"),)

    id: int | None = Field(default=None, sa_column=Column(_bigint_id(), primary_key=True))
    user_id: str = Field(
        sa_column=Column(
            String(USER_ID_MAX_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    name: str = Field(max_length=TAG_MAX_LENGTH)
    name_folded: str = Field(max_length=4 * TAG_MAX_LENGTH)


class TaskTag(SQLModel, table=True):
    """A tag on a task."""

    __tablename__ = "task_tags"
    # The primary key finds a task's tags; this index, a tag's tasks.
    __table_args__ = (Index(None, "tag_id", "task_id"),)

    task_id: int = Field(
        sa_column=Column(_bigint_id(), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    )
    tag_id: int = Field(
        sa_column=Column(_bigint_id(), ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    )


def schema_of(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's `include_object` for one database: the models' objects it has (the
    PostgreSQL-only indexes are not SQLite's), so that comparing finds nothing missing."""

    def include(item: Any, _name: str | None, kind: str, reflected: bool, _compare_to: Any) -> bool:
        if kind == "foreign_key_constraint" and dialect == "sqlite" and _is_added_link(item):
            # `list_id` and `parent_id`, added by ALTER TABLE (a rebuild of `tasks` would drop
            # its triggers) with a REFERENCES clause, which SQLAlchemy reflects without its name
            # or ON DELETE.
            return False
        only = getattr(item, "_ddl_if", None) if kind == "index" and not reflected else None
        return only is None or only.dialect in (None, dialect)

    return include


def _is_added_link(constraint: Any) -> bool:
    return bool(
        constraint.table.name == "tasks"
        and [column.name for column in constraint.columns] in (["list_id"], ["parent_id"])
    )


def fold(text: str) -> str:
    """A tag's name as tags compare it: case-folded for all of Unicode (`ÄRGER` is `ärger`)."""
    return text.casefold()


def search_fold(text: str) -> str:
    """Text as search and the title sort compare it: case-folded and in Unicode's NFKC form,
    so `éclair` typed precomposed finds it decomposed (and `ﬁ` finds `fi`); casefold can
    undo the normal form, hence the second pass."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


# NFKC can make one character eighteen (U+FDFA): the folded texts are cut to their columns'
# sizes (four times the text's limit), so a pathological title loses only its searchable tail.
TITLE_FOLDED_LENGTH = 4 * TITLE_MAX_LENGTH
DESCRIPTION_FOLDED_LENGTH = 4 * DESCRIPTION_MAX_LENGTH
# The title sort's key: the first characters of the folded title (ties beyond: by id). Short,
# so that an index entry stays far below PostgreSQL's btree limit with any user id.
TITLE_SORT_LENGTH = 100


def folded_text(title: str, description: str | None) -> dict[str, str | None]:
    """A task's folded columns, for search and the title sort."""
    title_folded = search_fold(title)
    return {
        "title_folded": title_folded[:TITLE_FOLDED_LENGTH],
        "title_sort": title_folded[:TITLE_SORT_LENGTH],
        "description_folded": None
        if description is None
        else search_fold(description)[:DESCRIPTION_FOLDED_LENGTH],
    }


# --- request bodies -------------------------------------------------------------------


class _HideNull:
    """On `X | None`: null left out of the field's JSON schema, for a field a client may omit
    but not send as null (the model refuses it), or a query parameter, which has no null.
    Unlike `X | SkipJsonSchema[None]`, a union, it keeps errors naming the field alone (a
    union named each of its members: `body.time_zone.function-after[...]`, and "Input should
    be None")."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        generated = handler(schema)
        options = generated.get("anyOf")
        if isinstance(options, list):
            kept = [option for option in options if option != {"type": "null"}]
            if len(kept) == 1:
                return {**kept[0], **{key: value for key, value in generated.items() if key != "anyOf"}}
        return generated


HIDE_NULL = _HideNull()

# PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
NO_NUL = r"^[^\x00]*$"
# A title has something besides whitespace (and no NUL): the schema says so to clients too.
TITLE_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
Title = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=TITLE_MAX_LENGTH, pattern=TITLE_PATTERN
    ),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH, pattern=NO_NUL)]


def request_schema(*examples: dict[str, Any], **extra: Any) -> Callable[[dict[str, Any]], None]:
    """A request body's JSON schema: its examples, and no `default`s.

    Generators such as openapi-typescript (with their default options) make a
    property with a default required, so a client could not create a task with a
    title alone. Each default is in the field's description instead.
    """

    def edit(schema: dict[str, Any]) -> None:
        for field in schema.get("properties", {}).values():
            field.pop("default", None)
        if examples:
            schema["examples"] = list(examples)
        schema.update(extra)

    return edit


class RequestBody(BaseModel):
    # Unknown fields are an error, so a client can never set id, user_id or
    # timestamps; strict types, so "yes" is not a boolean and 1 not a title.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=request_schema())


def _valid_rule(value: str) -> str:
    try:
        return recurrence.normalise_rule(value)
    except recurrence.InvalidRecurrenceError as error:
        raise ValueError(str(error)) from None


def _unique_tags(tags: list[str]) -> list[str]:
    """Duplicates (case-insensitively) collapse to the first spelling; then at most
    TAGS_PER_TASK distinct names."""
    seen: dict[str, str] = {}
    for tag in tags:
        seen.setdefault(fold(tag), tag)
    if len(seen) > TAGS_PER_TASK:
        raise ValueError(f"at most {TAGS_PER_TASK} distinct tags (duplicates collapse first)")
    return list(seen.values())


# No control characters (C0, DEL, C1): they would hide in a list or break a header.
TAG_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
TagName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_MAX_LENGTH, pattern=TAG_PATTERN),
]
Tags = Annotated[
    list[TagName],
    PydanticField(
        max_length=TAG_NAMES_SENT,
        description=f"At most {TAGS_PER_TASK} distinct names, each 1 to {TAG_MAX_LENGTH} characters; "
        "case-insensitive (`Work` is `work`), duplicates collapse (before the limit is counted).",
        examples=[["work", "errands"]],
    ),
    AfterValidator(_unique_tags),
]


_OUT_OF_RANGE = (
    "is outside the range of date-times this API stores: after 0001-01-01T00:00:00Z and before "
    "9999-12-31T23:59:59.999999Z, in UTC"
)


def _in_utc(value: datetime) -> datetime:
    """The instant in UTC, if it can be stored: `9999-12-31T23:59:59-05:00` is in the year
    10000; and the very first and last instants Python knows are PostgreSQL's -infinity and
    infinity to asyncpg, which reads them back without a time zone."""
    try:
        moment = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(_OUT_OF_RANGE) from None
    if moment in (_FIRST, _LAST):
        raise ValueError(_OUT_OF_RANGE)
    return moment


_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


# Date-times need an offset (a local time is ambiguous): `Z`, `+02:00`... Stored in UTC.
# Not strict: JSON carries them as strings.
Instant = Annotated[AwareDatetime, PydanticField(strict=False), AfterValidator(_in_utc)]
Recurrence = Annotated[
    str,
    AfterValidator(_valid_rule),
    PydanticField(
        description="An RFC 5545 RRULE: FREQ=DAILY, WEEKLY, MONTHLY or YEARLY, with INTERVAL, BYDAY, "
        "BYMONTHDAY, COUNT or UNTIL (in UTC), within RFC 5545's ranges. The pattern shows the parts in "
        "one order; any order, lower case and a leading `RRULE:` are accepted too. Needs a `due_at`, "
        "and an occurrence after it.",
        examples=["FREQ=WEEKLY;BYDAY=MO"],
        json_schema_extra={"pattern": recurrence.RULE_PATTERN},
    ),
]
TimeZone = Annotated[
    str,
    StringConstraints(max_length=TIME_ZONE_MAX_LENGTH),
    AfterValidator(recurrence.valid_time_zone),
    PydanticField(
        description="IANA time zone in which the recurrence is expanded.",
        examples=["Europe/Berlin"],
        json_schema_extra={"enum": sorted(recurrence.time_zone_names())},
    ),
]
_DECIMAL = re.compile(r"[1-9][0-9]{0,18}")


def _decimal_id(value: object) -> object:
    """An id as a path carries it: plain decimal digits (`+5`, `05`, `5.0` and `5_0` are not)."""
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError("must be a whole number from 1, written in plain decimal digits, such as 42")
        return int(value)
    return value


DECIMAL_ID = BeforeValidator(_decimal_id)
# A task's or tag's id, as an argument: a PostgreSQL bigint from 1. (In a path, FastAPI's
# `Path` carries the bounds, before DECIMAL_ID: after a validator, its bounds reached the
# schema as raw `ge` and `le`, which bound nothing.)
Id = Annotated[int, DECIMAL_ID, PydanticField(ge=1, le=MAX_ID)]
PriorityField = Annotated[
    Priority, PydanticField(description="`none` (the default), `low`, `medium` or `high`.")
]


class TaskCreate(RequestBody):
    title: Title
    description: Description | None = None
    completed: bool = False
    priority: PriorityField = "none"
    due_at: Instant | None = None
    remind_at: Instant | None = None
    tags: Tags = []
    recurrence: Recurrence | None = None
    time_zone: TimeZone = "UTC"
    list_id: Annotated[
        int | None,
        PydanticField(
            ge=1, le=MAX_ID, description="The owner's list it goes in; their Inbox if omitted or null."
        ),
    ] = None
    parent_id: Annotated[
        int | None,
        PydanticField(
            ge=1,
            le=MAX_ID,
            description="The owner's task it is a subtask of (it goes in that task's list, last among its "
            f"subtasks); at most {MAX_SUBTASK_DEPTH} levels below a top-level task. A subtask has no "
            "recurrence of its own.",
        ),
    ] = None

    model_config = ConfigDict(
        json_schema_extra=request_schema(
            {"title": "Buy milk", "description": "2 litres, oat"},
            {
                "title": "Team meeting",
                "priority": "high",
                "due_at": "2026-11-30T09:00:00+01:00",
                "remind_at": "2026-11-30T08:45:00+01:00",
                "tags": ["work"],
                "recurrence": "FREQ=WEEKLY;BYDAY=MO",
                "time_zone": "Europe/Berlin",
            },
            # A recurring task needs a due date: the schema says so too.
            **{
                "if": {"properties": {"recurrence": {"type": "string"}}, "required": ["recurrence"]},
                "then": {"required": ["due_at"], "properties": {"due_at": {"type": "string"}}},
            },
        ),
    )


class TaskReplace(RequestBody):
    """The editable content, whole: an omitted description becomes null; every other
    omitted field (`completed`, and the organising fields) is left as it is."""

    title: Title
    description: Description | None = None
    completed: Annotated[bool | None, HIDE_NULL] = None
    priority: Annotated[PriorityField | None, HIDE_NULL] = None
    due_at: Instant | None = None
    remind_at: Instant | None = None
    tags: Annotated[Tags | None, HIDE_NULL] = None
    recurrence: Recurrence | None = None
    time_zone: Annotated[TimeZone | None, HIDE_NULL] = None

    model_config = ConfigDict(
        json_schema_extra=request_schema({"title": "Buy oat milk", "description": None, "completed": False}),
    )

    @field_validator("priority", "tags", "time_zone", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class TaskUpdate(RequestBody):
    """Any non-empty subset of the editable fields."""

    title: Annotated[Title | None, HIDE_NULL] = None
    description: Description | None = None
    completed: Annotated[bool | None, HIDE_NULL] = None
    priority: Annotated[PriorityField | None, HIDE_NULL] = None
    due_at: Instant | None = None
    remind_at: Instant | None = None
    tags: Annotated[Tags | None, HIDE_NULL] = None
    recurrence: Recurrence | None = None
    time_zone: Annotated[TimeZone | None, HIDE_NULL] = None

    model_config = ConfigDict(
        json_schema_extra=request_schema(
            {"completed": True}, {"description": None}, {"tags": ["work", "urgent"]}, minProperties=1
        ),
    )

    @field_validator("title", "completed", "priority", "tags", "time_zone", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Only description, due_at, remind_at and recurrence may be cleared; a missing
        # title is a different thing from a null one.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("at least one field is required")
        return self


ListName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=LIST_NAME_MAX_LENGTH, pattern=TITLE_PATTERN
    ),
    PydanticField(description="1 to 100 characters; unique per person, case-insensitively."),
]


class ListCreate(RequestBody):
    name: ListName

    model_config = ConfigDict(json_schema_extra=request_schema({"name": "Groceries"}))


class ListUpdate(RequestBody):
    name: ListName

    model_config = ConfigDict(json_schema_extra=request_schema({"name": "Shopping"}))


class ListMove(RequestBody):
    after_id: Annotated[
        int | None,
        PydanticField(ge=1, le=MAX_ID, description="The list it is to follow; null or absent: first."),
    ] = None

    model_config = ConfigDict(json_schema_extra=request_schema({"after_id": 7}, {"after_id": None}))


class TaskMove(RequestBody):
    """Where a task goes (Google Tasks' `move`): under `parent_id` (or at the top), in `list_id`,
    after `after_id` (or first). Its subtasks go with it."""

    list_id: Annotated[
        int | None,
        PydanticField(
            ge=1,
            le=MAX_ID,
            description="The owner's list it goes to; if omitted or null, the parent's list, or the "
            "list it is in.",
        ),
    ] = None
    parent_id: Annotated[
        int | None,
        PydanticField(ge=1, le=MAX_ID, description="The task it goes under; null or absent: the top level."),
    ] = None
    after_id: Annotated[
        int | None,
        PydanticField(
            ge=1, le=MAX_ID, description="The sibling it is to follow there; null or absent: first."
        ),
    ] = None

    model_config = ConfigDict(
        json_schema_extra=request_schema(
            {"after_id": 41}, {"list_id": 7}, {"parent_id": 40, "after_id": 43}, {"after_id": None}
        )
    )


class ListPublic(BaseModel):
    id: int
    name: str
    position: str = PydanticField(description="Its place among the person's lists: ordered bytewise.")
    inbox: bool = PydanticField(description="The person's Inbox: where tasks go by default; not deletable.")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = PydanticField(description='1 on creation, +1 on every change; the ETag is `"<version>"`.')
    task_count: int = PydanticField(description="Its tasks.")
    pending_count: int = PydanticField(description="Its tasks not completed.")


class TaskCompletion(RequestBody):
    completed: bool

    model_config = ConfigDict(json_schema_extra=request_schema({"completed": True}))


class TagRename(RequestBody):
    name: TagName

    model_config = ConfigDict(json_schema_extra=request_schema({"name": "work"}))


# --- responses --------------------------------------------------------------------------


def priority_name(value: object) -> object:
    return PRIORITIES[value] if isinstance(value, int) and 0 <= value < len(PRIORITIES) else value


def tag_list(value: object) -> object:
    """Tags as stored rows carry them (names joined by a unit separator, which names
    cannot contain), as a list sorted case-insensitively."""
    if value is None:
        return []
    if isinstance(value, str):
        return sorted(value.split(TAG_SEPARATOR), key=lambda name: (fold(name), name))
    return value


TAG_SEPARATOR = "\x1f"


class TaskPublic(BaseModel):
    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime
    priority: Annotated[Priority, BeforeValidator(priority_name)]
    due_at: AwareDatetime | None
    remind_at: AwareDatetime | None
    reminded_at: AwareDatetime | None = PydanticField(
        description="When the reminder at `remind_at` fired (read-only): null until it does, and "
        "again when `remind_at` moves later, which arms it anew."
    )
    tags: Annotated[
        list[str], BeforeValidator(tag_list), PydanticField(description="Sorted case-insensitively.")
    ]
    recurrence: str | None
    time_zone: str
    completed_at: AwareDatetime | None
    next_occurrence_id: int | None
    version: int = PydanticField(description='1 on creation, +1 on every change; the ETag is `"<version>"`.')
    list_id: int = PydanticField(description="The list it is in (the owner's Inbox unless put elsewhere).")
    parent_id: int | None = PydanticField(description="The task it is a subtask of; null at the top level.")
    position: str = PydanticField(
        description="Its place among its siblings (same list, same parent), ordered bytewise: what "
        "`sort=position` sorts by. New tasks go last; `move` puts them elsewhere."
    )
    subtask_count: int = PydanticField(description="Its subtasks (direct ones).")
    open_subtask_count: int = PydanticField(description="Of those, the ones not completed.")

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "user_id": "u_8KJx2mQ",
                    "title": "Buy milk",
                    "description": "2 litres, oat",
                    "completed": False,
                    "created_at": "2026-11-22T09:30:00.123456Z",
                    "updated_at": "2026-11-22T09:30:00.123456Z",
                    "priority": "medium",
                    "due_at": "2026-11-23T17:00:00Z",
                    "remind_at": "2026-11-23T16:30:00Z",
                    "reminded_at": None,
                    "tags": ["errands"],
                    "recurrence": "FREQ=WEEKLY;BYDAY=MO",
                    "time_zone": "Europe/Berlin",
                    "completed_at": None,
                    "next_occurrence_id": None,
                    "version": 3,
                    "list_id": 7,
                    "parent_id": None,
                    "position": "r000000000000000042",
                    "subtask_count": 2,
                    "open_subtask_count": 1,
                }
            ]
        },
    )


class TagPublic(BaseModel):
    id: int
    name: str
    task_count: int = PydanticField(description="Tasks carrying the tag.")
    pending_count: int = PydanticField(description="Of those, the ones not completed.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": 7, "name": "work", "task_count": 12, "pending_count": 5}]}
    )


class PriorityCounts(BaseModel):
    none: int
    low: int
    medium: int
    high: int


class TaskStats(BaseModel):
    total: int
    completed: int
    pending: int
    overdue: int = PydanticField(description="Pending tasks due before now.")
    due_today: int = PydanticField(description="Pending tasks due on today's date in `tz`.")
    by_priority: PriorityCounts = PydanticField(description="Pending tasks per priority.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "total": 12,
                    "completed": 4,
                    "pending": 8,
                    "overdue": 1,
                    "due_today": 2,
                    "by_priority": {"none": 3, "low": 2, "medium": 2, "high": 1},
                }
            ]
        }
    )


class DeletedCount(BaseModel):
    deleted: int


class DeletedTask(BaseModel):
    id: int
    deleted_at: AwareDatetime


class DeletedList(BaseModel):
    id: int
    deleted_at: AwareDatetime


class TaskChanges(BaseModel):
    """What changed since a sync position."""

    tasks: list[TaskPublic] = PydanticField(description="Tasks created or changed since, as they are now.")
    deleted: list[DeletedTask] = PydanticField(description="Tasks deleted since.")
    lists: list[ListPublic] = PydanticField(
        [],
        description="Lists created or changed since (renamed, moved, their counts aside), as they are now.",
    )
    deleted_lists: list[DeletedList] = PydanticField([], description="Lists deleted since.")
    next_since: str = PydanticField(description="Where this answer ends: the `since` of the next request.")
    has_more: bool = PydanticField(description="More changes wait: ask again at once with `next_since`.")


# --- query parameters -----------------------------------------------------------------

TaskStatus = Literal["all", "pending", "completed"]
TaskSort = Literal["created", "updated", "title", "due", "priority", "position"]
SortOrder = Literal["asc", "desc"]

# The list's limits, the same through every door (the REST route, the MCP tool, the agent).
MAX_PAGE_SIZE = 500
# Far beyond any real list, and small enough for every database's OFFSET.
MAX_OFFSET = 1_000_000_000
MAX_SEARCH_LENGTH = 200
MAX_SEARCH_WORDS = 10
MAX_CURSOR_LENGTH = 1000

TagQuery = Annotated[str, StringConstraints(min_length=1, max_length=TAG_MAX_LENGTH, pattern=TAG_PATTERN)]
SearchText = Annotated[str, StringConstraints(max_length=MAX_SEARCH_LENGTH, pattern=NO_NUL)]
CursorText = Annotated[str, StringConstraints(max_length=MAX_CURSOR_LENGTH)]


def _distinct_folded(tags: list[str]) -> list[str]:
    """Tags the list filters by: one per name case-insensitively, at most TAGS_PER_TASK."""
    seen: dict[str, str] = {}
    for tag in tags:
        seen.setdefault(fold(tag), tag)
    if len(seen) > TAGS_PER_TASK:
        raise ValueError(f"at most {TAGS_PER_TASK} distinct tags")
    return list(seen.values())


def default_order(sort: TaskSort) -> SortOrder:
    """Newest first for dates, alphabetical for titles, soonest due first, most urgent first,
    the order people chose from its top."""
    return "asc" if sort in ("title", "due", "position") else "desc"


ParentFilter = Annotated[
    Literal["none"] | Annotated[int, PydanticField(ge=1, le=MAX_ID)],
    # One schema a client generator reads plainly: the word or a decimal id.
    WithJsonSchema({"type": "string", "pattern": "^(none|[1-9][0-9]{0,18})$", "examples": ["none", "42"]}),
]


class ListQuery(BaseModel):
    """What the list is asked for: filters, sort and page. One model, validated the same way
    for every door: the REST route's query parameters and the MCP tool's arguments."""

    # Unknown query parameters are ignored, as they always were (cache-busters and the like);
    # the MCP tool refuses unknown arguments itself.
    model_config = ConfigDict(extra="ignore")

    status: TaskStatus = PydanticField("all", description="Which tasks: all, pending or completed.")
    priority: list[Priority] = PydanticField(
        [],
        max_length=len(PRIORITIES) * 4,
        description="Tasks of any of these priorities (repeat the parameter for several).",
    )
    tag: Annotated[list[TagQuery], AfterValidator(_distinct_folded)] = PydanticField(
        [],
        max_length=TAG_NAMES_SENT,
        description="Tasks carrying all of these tags, case-insensitively (repeat for several; "
        f"at most {TAGS_PER_TASK} distinct).",
    )
    due_before: Annotated[Instant | None, HIDE_NULL] = PydanticField(
        None, description="Due at or before this date-time (with an offset); tasks without one are left out."
    )
    due_after: Annotated[Instant | None, HIDE_NULL] = PydanticField(
        None, description="Due at or after this date-time (with an offset); tasks without one are left out."
    )
    overdue: Annotated[bool | None, HIDE_NULL] = PydanticField(
        None, description="`true`: due before now and not completed; `false`: every other task."
    )
    remind_before: Annotated[Instant | None, HIDE_NULL] = PydanticField(
        None, description="Reminder at or before this date-time: what a frontend polls to notify."
    )
    q: Annotated[
        Annotated[str, StringConstraints(max_length=MAX_SEARCH_LENGTH, pattern=NO_NUL)] | None, HIDE_NULL
    ] = PydanticField(
        None,
        description=f"Search: every whitespace-separated word (at most {MAX_SEARCH_WORDS}) must occur "
        "in the title or the description, case-insensitively.",
    )
    sort: TaskSort = PydanticField(
        "created",
        description="Sort key; ties are broken by id. `due` puts tasks without a due date last; "
        "`position` is the order people chose (with `list_id` and `parent_id`: one list's, one level's).",
    )
    order: Annotated[
        SortOrder | None,
        # A plain enum in the schema: omitting it is how a client asks for the default.
        WithJsonSchema({"type": "string", "enum": list(get_args(SortOrder))}),
    ] = PydanticField(
        None, description="Default: `desc` for dates and priority, `asc` for title, due and position."
    )
    limit: int = PydanticField(100, ge=1, le=MAX_PAGE_SIZE, description="Page size.")
    offset: int = PydanticField(0, ge=0, le=MAX_OFFSET, description="Tasks to skip.")
    list_id: Annotated[int | None, HIDE_NULL] = PydanticField(
        None, ge=1, le=MAX_ID, description="Only the tasks of this list of the owner's."
    )
    parent_id: Annotated[ParentFilter | None, HIDE_NULL] = PydanticField(
        None,
        description="`none`: top-level tasks only; a task's id: that task's subtasks (direct ones).",
    )
    cursor: Annotated[CursorText | None, HIDE_NULL] = PydanticField(
        None,
        description="Instead of `offset`: the `X-Next-Cursor` of the previous page. The next page starts "
        "after that page's last task, so creates and deletes between pages skip or repeat nothing.",
    )

    @field_validator("q")
    @classmethod
    def _few_words(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) > MAX_SEARCH_WORDS:
            raise ValueError(f"at most {MAX_SEARCH_WORDS} words")
        return value

    @field_validator("cursor")
    @classmethod
    def _cursor_or_offset(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("offset"):
            raise ValueError("send cursor or offset, not both")
        return value

    @property
    def words(self) -> tuple[str, ...]:
        """The search's words, each to occur in the title or description."""
        return tuple((self.q or "").split())

    @property
    def sort_order(self) -> SortOrder:
        return self.order or default_order(self.sort)


class StatsQuery(BaseModel):
    """The stats' parameters, for every door."""

    model_config = ConfigDict(extra="ignore")

    tz: TimeZone = PydanticField("UTC", description="IANA time zone whose today `due_today` counts.")
    list_id: Annotated[int | None, HIDE_NULL] = PydanticField(
        None, ge=1, le=MAX_ID, description="Count only the tasks of this list of the owner's."
    )
