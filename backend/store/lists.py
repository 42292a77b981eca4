"""A person's lists: the Inbox every person has, and the lists they make; each with the counts
of its tasks, in the order the person keeps them (`position`, a fractional-indexing key).

Every write of a person's lists first takes their Inbox's row (`_ENSURE_INBOX`: an upsert that
creates it on their first write and locks it after), so one person's list writes take turns:
two creates cannot both take the last place, two moves one place, or both pass the 1,000-list
cap. Then the list itself, then (a deletion) the change counter through its task writes.

A task's create holds its list FOR KEY SHARE (`task_statements._target_list`), which does not
conflict with the Inbox's lock, and which a deletion's FOR UPDATE waits for, and waits for: a
task is never added to a list being deleted (it finds the list gone: 422). A recurring
successor's insert locks the counter before its list (the foreign key), the deletion the other
way round: PostgreSQL breaks that rare deadlock and `Database.atomic` runs the loser again.

A deleted list is a tombstone (`deleted_at`) with its deleted tasks, for sync, until
housekeeping purges them with SYNC_RETENTION_DAYS.
"""

from datetime import datetime
from http import HTTPStatus
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from backend.auth.tokens import TokenClaims
from backend.errors import Conflict, NotFound, ProblemError, Unprocessable
from backend.models import INBOX, fold, utc_now
from backend.store.database import Connection, Database, Query, Row
from backend.store.positions import FIRST_POSITION, REBALANCE_AT, after, between, spread
from backend.store.tables import COUNTER_LOCKED, TASK_LISTS, TASKS

MAX_LISTS = 1000  # per person, the Inbox included

_NOW = bindparam("now", type_=DateTime(timezone=True))
OWNED_LIST = and_(
    TASK_LISTS.c.id == bindparam("list_id", type_=BigInteger),
    TASK_LISTS.c.user_id == bindparam("owner_id", type_=String),
    TASK_LISTS.c.deleted_at.is_(None),
)
# Counted from the tasks' (list_id, created_at, id) index. Written out with every column
# qualified: SQLAlchemy renders RETURNING on SQLite without table names, where an unqualified
# `id` inside the subquery would be the task's (as `tags._COUNTS`).
_ALIVE = "FROM tasks WHERE tasks.list_id = task_lists.id AND tasks.deleted_at IS NULL"
_COUNTS: tuple[Any, ...] = (
    literal_column(f"(SELECT count(*) {_ALIVE})").label("task_count"),
    literal_column(f"(SELECT count(*) {_ALIVE} AND NOT tasks.completed)").label("pending_count"),
)
LIST_COLUMNS = (
    TASK_LISTS.c.id,
    TASK_LISTS.c.name,
    TASK_LISTS.c.position,
    TASK_LISTS.c.inbox,
    TASK_LISTS.c.created_at,
    TASK_LISTS.c.updated_at,
    TASK_LISTS.c.version,
    *_COUNTS,
)


class ListNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no list with this id belongs to this user")


class ListLimitReached(Conflict):
    def __init__(self) -> None:
        super().__init__(
            f"this user already has {MAX_LISTS} lists (the Inbox included), the most one person may "
            "keep; delete one first"
        )


class ListNameTaken(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"this user already has a list named {name!r} (names are compared case-insensitively)"
        )


class InboxKept(Conflict):
    def __init__(self) -> None:
        super().__init__("the Inbox cannot be deleted (it may be renamed)")


class NoSuchTargetList(Unprocessable):
    def __init__(self, field: str, where: str = "query") -> None:
        message = "no other list with this id belongs to this user"
        super().__init__(
            f"the request is invalid: {where}.{field}",
            errors=[{"loc": [where, field], "msg": message, "type": "list_not_found"}],
        )


class ListChanged(ProblemError):
    """If-Match named no current version of the list."""

    status = HTTPStatus.PRECONDITION_FAILED

    def __init__(self, current_version: int) -> None:
        super().__init__(
            f"the list has changed since the version in If-Match (it is at version {current_version} now); "
            "read it again (its ETag), then retry"
        )
        self.current_version = current_version


# The Inbox's row as every write that makes it writes it (the values anonymous parameters, so
# that no caller's `name` can fill one).
_INBOX_ROW: dict[str, Any] = {
    "user_id": bindparam("owner_id", type_=String),
    "name": literal(INBOX),
    "name_folded": literal(fold(INBOX)),
    "position": literal(FIRST_POSITION),
    "inbox": true(),
    "created_at": _NOW,
    "updated_at": _NOW,
    "version": literal(1),
}
# The person's Inbox, created on their first write; locked (DO UPDATE) for the rest of the
# transaction, whoever created it, and its id returned in either case.
_ENSURE_INBOX = Query(
    postgresql.insert(TASK_LISTS)
    .values(**_INBOX_ROW)
    .on_conflict_do_update(index_elements=["user_id"], index_where=TASK_LISTS.c.inbox, set_={"inbox": true()})
    .returning(TASK_LISTS.c.id)
)


def new_inbox() -> postgresql.Insert:
    """The person's Inbox, inserted only when they have none (their first write): nothing is
    attempted otherwise, not even a sequence number taken. Without the lock `_ENSURE_INBOX`
    takes: for a task's create (`CREATE_INBOX`), before the task's insert."""
    first = select(*_INBOX_ROW.values()).where(
        ~exists().where(TASK_LISTS.c.user_id == bindparam("owner_id", type_=String), TASK_LISTS.c.inbox)
    )
    return (
        postgresql.insert(TASK_LISTS)
        .from_select(list(_INBOX_ROW), first)
        .on_conflict_do_nothing(index_elements=["user_id"], index_where=TASK_LISTS.c.inbox)
    )


CREATE_INBOX = Query(new_inbox())
_MINE = and_(TASK_LISTS.c.user_id == bindparam("owner_id", type_=String), TASK_LISTS.c.deleted_at.is_(None))
_LIST = Query(select(*LIST_COLUMNS).where(_MINE).order_by(TASK_LISTS.c.position, TASK_LISTS.c.id))
_GET = Query(select(*LIST_COLUMNS).where(OWNED_LIST))
_NAMED = Query(
    select(TASK_LISTS.c.id).where(_MINE, TASK_LISTS.c.name_folded == bindparam("folded", type_=String))
)
# What a create must know: how many lists, the last place, whether the name is taken.
_SURVEY = Query(
    select(  # type: ignore[arg-type]  # three columns: mypy infers a 3-tuple Select
        func.count().label("lists"),
        func.max(TASK_LISTS.c.position).label("last"),
        func.count().filter(TASK_LISTS.c.name_folded == bindparam("folded", type_=String)).label("named"),
    ).where(_MINE)
)
_CREATE = Query(
    postgresql.insert(TASK_LISTS)
    .values(
        user_id=bindparam("owner_id", type_=String),
        name=bindparam("name", type_=String),
        name_folded=bindparam("folded", type_=String),
        position=bindparam("position", type_=String),
        inbox=False,
        created_at=_NOW,
        updated_at=_NOW,
        version=1,
    )
    .returning(*LIST_COLUMNS)
)
_OTHER = aliased(TASK_LISTS, name="other")
_NAME_TAKEN = exists().where(
    _OTHER.c.user_id == bindparam("owner_id", type_=String),
    _OTHER.c.deleted_at.is_(None),
    _OTHER.c.name_folded == bindparam("folded", type_=String),
    _OTHER.c.id != bindparam("list_id", type_=BigInteger),
)
_RENAME = Query(
    update(TASK_LISTS)
    .where(OWNED_LIST)
    .values(
        name=bindparam("name", type_=String),
        name_folded=bindparam("folded", type_=String),
        updated_at=_NOW,
        version=TASK_LISTS.c.version + 1,
    )
    .returning(*LIST_COLUMNS)
)
# FOR UPDATE: a create into this list waits (its target holds FOR KEY SHARE), then finds it
# deleted, rather than adding a task to a list being deleted.
_LOCK = Query(
    select(TASK_LISTS.c.inbox, TASK_LISTS.c.version, _NAME_TAKEN.label("name_taken"))
    .where(OWNED_LIST)
    .with_for_update(of=TASK_LISTS)
)
# Deleting a list: its tasks go to another list (a change of each, numbered: sync and events see
# it), or become tombstones; then the list does.
_MOVE_TASKS = Query(
    update(TASKS)
    .where(COUNTER_LOCKED)
    .where(TASKS.c.list_id == bindparam("from_list_id", type_=BigInteger))
    .where(TASKS.c.deleted_at.is_(None))
    .values(list_id=bindparam("target_id", type_=BigInteger), updated_at=_NOW, version=TASKS.c.version + 1)
)
_DELETE_TASKS = Query(
    update(TASKS)
    .where(COUNTER_LOCKED)
    .where(TASKS.c.list_id == bindparam("from_list_id", type_=BigInteger))
    .where(TASKS.c.deleted_at.is_(None))
    .values(deleted_at=_NOW, updated_at=_NOW, version=TASKS.c.version + 1)
)
_DELETE = Query(
    update(TASK_LISTS)
    .where(OWNED_LIST)
    .values(deleted_at=_NOW, updated_at=_NOW, version=TASK_LISTS.c.version + 1)
)
_PURGE = Query(
    delete(TASK_LISTS).where(TASK_LISTS.c.deleted_at < bindparam("before", type_=DateTime(timezone=True)))
)
OWNS_LIST = Query(select(TASK_LISTS.c.id).where(OWNED_LIST))
# A move's neighbours: the position of the list it goes after, and the next one up from there,
# leaving the moved list itself out.
_POSITION_OF = Query(select(TASK_LISTS.c.position).where(OWNED_LIST))
_NOT_MOVED = and_(_MINE, TASK_LISTS.c.id != bindparam("moved_id", type_=BigInteger))
_NEXT_UP = Query(
    select(func.min(TASK_LISTS.c.position)).where(
        _NOT_MOVED, TASK_LISTS.c.position > bindparam("lower", type_=String)
    )
)
_FIRST = Query(select(func.min(TASK_LISTS.c.position)).where(_NOT_MOVED))
_PLACE = Query(
    update(TASK_LISTS)
    .where(OWNED_LIST)
    .values(
        position=bindparam("new_position", type_=String), updated_at=_NOW, version=TASK_LISTS.c.version + 1
    )
    .returning(*LIST_COLUMNS)
)
_IN_ORDER = Query(select(TASK_LISTS.c.id).where(_MINE).order_by(TASK_LISTS.c.position, TASK_LISTS.c.id))
# A rebalance's new keys: not a change a client sees (the order is the same), so no version.
_RESPREAD = Query(
    update(TASK_LISTS).where(OWNED_LIST).values(position=bindparam("new_position", type_=String))
)


def _check(row: Row | None, expected: frozenset[int] | None) -> Row:
    if row is None:
        raise ListNotFound()
    if expected is not None and row["version"] not in expected:
        raise ListChanged(row["version"])
    return row


class OwnedLists:
    """One person's lists, every statement scoped to `owner`."""

    __slots__ = ("db", "owner")

    def __init__(self, db: Database, owner: TokenClaims) -> None:
        self.db = db
        self.owner = owner

    def within(self, db: Database) -> "OwnedLists":
        return OwnedLists(db, self.owner)

    def _ids(self, **values: Any) -> dict[str, Any]:
        return {"owner_id": self.owner.subject, "now": utc_now(), **values}

    async def list(self) -> list[Row]:
        """The person's lists in their order, the Inbox among them (made if need be)."""
        rows = await self.db.fetch_all(_LIST, owner_id=self.owner.subject)
        if rows:
            return rows

        async def first(connection: Connection) -> list[Row]:
            await self._hold_inbox(connection)
            return await connection.fetch_all(_LIST, owner_id=self.owner.subject)

        return await self.db.atomic(first)

    async def get(self, list_id: int) -> Row:
        return _check(await self.db.fetch_one(_GET, **self._ids(list_id=list_id)), None)

    async def named(self, name: str) -> int | None:
        """The id of the person's list of this name (case-insensitively), if they have one."""
        row = await self.db.fetch_one(_NAMED, owner_id=self.owner.subject, folded=fold(name.strip()))
        return None if row is None else int(row["id"])

    async def create(self, name: str) -> Row:
        """A new list at the end; 409 at MAX_LISTS or for a name taken."""
        ids = self._ids(name=name, folded=fold(name))

        async def create(connection: Connection) -> Row:
            await self._hold_inbox(connection)
            survey = await connection.fetch_one(_SURVEY, **ids)
            assert survey is not None  # an aggregate
            if survey["named"]:
                raise ListNameTaken(name)
            if survey["lists"] >= MAX_LISTS:
                raise ListLimitReached()
            position = after(survey["last"])
            created = await connection.fetch_one(_CREATE, **ids, position=position)
            assert created is not None
            return created

        return await self.db.atomic(create)

    async def rename(self, list_id: int, name: str, *, expected: frozenset[int] | None = None) -> Row:
        ids = self._ids(list_id=list_id, name=name, folded=fold(name))

        async def rename(connection: Connection) -> Row:
            await self._hold_inbox(connection)
            held = _check(await connection.fetch_one(_LOCK, **ids), expected)
            if held["name_taken"]:
                raise ListNameTaken(name)
            renamed = await connection.fetch_one(_RENAME, **ids)
            assert renamed is not None  # locked above
            return renamed

        return await self.db.atomic(rename)

    async def move(
        self, list_id: int, after_id: int | None, *, expected: frozenset[int] | None = None
    ) -> Row:
        """Put the list after `after_id` (another of the person's lists), or first: one row
        written, with a new key between its new neighbours (`positions`); a rare rebalance of
        the person's lists when keys grow long. Moves take turns on the Inbox's row, so two
        never take one place."""
        ids = self._ids(list_id=list_id, moved_id=list_id, folded="")

        async def move(connection: Connection) -> Row:
            await self._hold_inbox(connection)
            _check(await connection.fetch_one(_LOCK, **ids), expected)
            if after_id is None:
                lower = None
                upper = await first_value(connection, _FIRST, ids)
            else:
                after = await connection.fetch_one(_POSITION_OF, **{**ids, "list_id": after_id})
                if after is None or after_id == list_id:
                    raise NoSuchTargetList("after_id", "body")
                lower = after["position"]
                upper = await first_value(connection, _NEXT_UP, {**ids, "lower": lower})
            position = between(lower, upper)
            if len(position) > REBALANCE_AT:
                position = await self._respread(connection, list_id, after_id)
            moved = await connection.fetch_one(_PLACE, **ids, new_position=position)
            assert moved is not None  # locked above
            return moved

        return await self.db.atomic(move)

    async def _respread(self, connection: Connection, list_id: int, after_id: int | None) -> str:
        """Fresh, short keys for all the person's lists in their order, the moved one in its new
        place; its key. At most MAX_LISTS rows, and only when keys have grown long."""
        order = [row["id"] for row in await connection.fetch_all(_IN_ORDER, owner_id=self.owner.subject)]
        order.remove(list_id)
        order.insert(0 if after_id is None else order.index(after_id) + 1, list_id)
        keys: dict[int, str] = dict(zip(order, spread(len(order)), strict=True))
        for other, key in keys.items():
            if other != list_id:
                await connection.execute(_RESPREAD, **self._ids(list_id=other), new_position=key)
        return keys[list_id]

    async def delete(
        self, list_id: int, *, move_tasks_to: int | None = None, expected: frozenset[int] | None = None
    ) -> None:
        """Delete the list, and its tasks, or first move them to `move_tasks_to`: one transaction."""
        ids = self._ids(list_id=list_id, from_list_id=list_id, folded="", target_id=move_tasks_to)

        async def delete(connection: Connection) -> None:
            await self._hold_inbox(connection)
            held = _check(await connection.fetch_one(_LOCK, **ids), expected)
            if held["inbox"]:
                raise InboxKept()
            if move_tasks_to is not None:
                target = await connection.fetch_one(OWNS_LIST, **{**ids, "list_id": move_tasks_to})
                if target is None or move_tasks_to == list_id:
                    raise NoSuchTargetList("move_tasks_to")
                await connection.execute(_MOVE_TASKS, **ids)
            else:
                await connection.execute(_DELETE_TASKS, **ids)
            await connection.execute(_DELETE, **ids)

        await self.db.atomic(delete)

    async def _hold_inbox(self, connection: Connection) -> None:
        """The person's Inbox, made if need be and locked until the transaction ends. (Its
        own parameters only: a caller's `name` would fill the statement's.)"""
        await connection.fetch_one(_ENSURE_INBOX, owner_id=self.owner.subject, now=utc_now())

    async def owns(self, connection: Connection, list_id: int) -> bool:
        return await connection.fetch_one(OWNS_LIST, **self._ids(list_id=list_id)) is not None


async def first_value(connection: Connection, query: Query, params: dict[str, Any]) -> Any:
    """The first column of the statement's first row, or None."""
    row = await connection.fetch_one(query, **params)
    return None if row is None else next(iter(row.values()))


async def purge(db: Database, before: datetime) -> int:
    """Forget the lists deleted before `before` (their tombstoned tasks go with them); how many."""
    return await db.execute(_PURGE, before=before)
