"""A user's events: every change of their tasks and lists, numbered as sync numbers it.

The rows are written by trigger in the statement that makes the change (see the migration
`a7b8c9d0e1f2`), so an event exists exactly when its change committed, and its number is
the change's place in the owner's commit order (`store/changes.py` says why). Numbers have
no gaps: each numbered change is one event. The server purges them after
SYNC_RETENTION_DAYS, as it purges tombstones; a reader whose position is older than the
first event kept has missed some, and starts over (`Position.reset_from`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, Table, and_, bindparam, delete, func, select

from backend.models import metadata
from backend.store.database import Database, Query, Row
from backend.store.lists import LIST_COLUMNS
from backend.store.tables import CHANGE_COUNTERS, TASK_COLUMNS, TASK_LISTS, TASKS

EVENTS: Table = metadata.tables["events"]

# PostgreSQL's NOTIFY channel: the events trigger sends the owner's id on it at commit
# (migration `b8c9d0e1f2a3`), `store/notifications.py` listens.
CHANNEL = "todo_api_events"

_OWNER = bindparam("owner_id", type_=String)
_PURGE = Query(
    delete(EVENTS).where(EVENTS.c.occurred_at < bindparam("before", type_=DateTime(timezone=True)))
)
# A list's event (`list.*`) holds the list's id in `task_id` (migration a3b4c5d6e7f8).
_OF_A_LIST = EVENTS.c.type.like("list.%")
# A list's columns beside a task's, each prefixed `the_list_` (a task has a `list_id`).
LIST_EVENT_COLUMNS = [
    column.label(f"the_list_{column.name}") for column in (*LIST_COLUMNS, TASK_LISTS.c.deleted_at)
]
# The events after a position, each with its task or list as it is now (a tombstone, or gone:
# no row).
_AFTER = Query(
    select(
        EVENTS.c.sequence,
        EVENTS.c.type.label("event_type"),
        EVENTS.c.task_id,
        EVENTS.c.occurred_at,
        TASKS.c.deleted_at,
        *TASK_COLUMNS,
        *LIST_EVENT_COLUMNS,
    )
    .select_from(
        EVENTS.outerjoin(
            TASKS, and_(TASKS.c.id == EVENTS.c.task_id, TASKS.c.user_id == _OWNER, ~_OF_A_LIST)
        ).outerjoin(
            TASK_LISTS,
            and_(TASK_LISTS.c.id == EVENTS.c.task_id, TASK_LISTS.c.user_id == _OWNER, _OF_A_LIST),
        )
    )
    .where(EVENTS.c.user_id == _OWNER, EVENTS.c.sequence > bindparam("after", type_=BigInteger))
    .order_by(EVENTS.c.sequence)
    .limit(bindparam("limit", type_=Integer))
)
# Where the owner's events stand: the last number given, and the first still kept.
_LAST = select(CHANGE_COUNTERS.c.seq).where(CHANGE_COUNTERS.c.user_id == _OWNER)
_FIRST = select(func.min(EVENTS.c.sequence)).where(EVENTS.c.user_id == _OWNER)
_POSITION = Query(select(_LAST.scalar_subquery().label("last"), _FIRST.scalar_subquery().label("first")))


@dataclass(frozen=True, slots=True)
class Position:
    last: int  # the owner's last change number (0: none yet)
    first: int | None  # the first event still kept, if any

    def reset_from(self, after: int) -> bool:
        """Whether a reader that has every event up to `after` must start over: events after
        it were purged, or it is ahead of every number given (not a position we issued, or a
        database restored from an older backup)."""
        if after > self.last:
            return True
        return after < self.last and (self.first is None or self.first > after + 1)


class OwnedEvents:
    """One user's events, scoped to `owner_id` (a stream's feed reads on behalf of every
    stream of the user, so it holds the id, not one request's claims)."""

    __slots__ = ("db", "owner_id")

    def __init__(self, db: Database, owner_id: str) -> None:
        self.db = db
        self.owner_id = owner_id

    async def position(self) -> Position:
        row = await self.db.fetch_one(_POSITION, owner_id=self.owner_id)
        assert row is not None  # one row, always
        return Position(last=row["last"] or 0, first=row["first"])

    async def after(self, sequence: int, limit: int) -> Sequence[Row]:
        """Up to `limit` events after `sequence`, in order, each with its task's columns
        (`id` None when the task is gone) and `event_type`."""
        return await self.db.fetch_all(_AFTER, owner_id=self.owner_id, after=sequence, limit=limit)


async def purge_events(db: Database, before: datetime) -> int:
    """Delete for good the events that occurred before `before`; how many."""
    return await db.execute(_PURGE, before=before)
