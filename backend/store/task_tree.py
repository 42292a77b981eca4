"""Subtasks and the order people choose: where a subtask may go (its parent's chain, checked for
depth and cycles), moves (`OwnedTasks.move`), and the copies of its subtasks a recurring task's
next occurrence gets.

Each runs in a transaction that first locks the owner's change counter (`LOCK_COUNTER`), which
every write of theirs takes (`tables.COUNTER_LOCKED`, the numbering trigger): the owner's writes
take turns from there, so the parent checked is the parent written under, and two moves never
read the same neighbours and write one key. The statements after the lock read a fresh snapshot
(READ COMMITTED): they see every write committed while this one waited.

What follows a task (its subtasks completed with it, deleted with it, moved to its list) is the
database's, in triggers: see the migration f2a3b4c5d6e7 and `TRIGGERS.md`.
"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, DateTime, String, and_, bindparam, func, insert, literal, select, update
from sqlalchemy.orm import aliased

from backend.models import MAX_SUBTASK_DEPTH, TaskMove
from backend.store.database import Connection, Query
from backend.store.lists import OWNS_LIST, first_value
from backend.store.positions import REBALANCE_AT, between, numbered, spread
from backend.store.tables import CHANGE_COUNTERS, OWNED, TASK_COLUMNS, TASK_TAGS, TASKS, TaskRow
from backend.store.task_errors import (
    NotASibling,
    ParentInAnotherList,
    ParentNotFound,
    PreconditionFailed,
    SubtaskCycle,
    SubtaskRecurs,
    SubtaskTooDeep,
    TaskListNotFound,
    TaskNotFound,
)

_OWNER = bindparam("owner_id", type_=String)
_NOW = bindparam("now", type_=DateTime(timezone=True))

# The owner's change counter, locked until the transaction ends, and its value.
LOCK_COUNTER = Query(
    select(CHANGE_COUNTERS.c.seq).where(CHANGE_COUNTERS.c.user_id == _OWNER).with_for_update()
)


def _chain() -> Query:
    """A task of the owner's (`start_id`, not deleted) and its ancestors, nearest first, each with
    its level above the start: the last one's level is the start's depth. Bounded: no chain is
    deeper than MAX_SUBTASK_DEPTH (one more step would show a cycle, which cannot be written)."""
    start = (
        select(TASKS.c.id, TASKS.c.parent_id, TASKS.c.list_id, literal(0).label("level"))
        .where(TASKS.c.id == bindparam("start_id", type_=BigInteger), TASKS.c.user_id == _OWNER)
        .where(TASKS.c.deleted_at.is_(None))
        .cte("chain", recursive=True)
    )
    up = aliased(TASKS, name="up")
    chain = start.union_all(
        select(up.c.id, up.c.parent_id, up.c.list_id, start.c.level + 1).where(
            up.c.id == start.c.parent_id, start.c.level <= MAX_SUBTASK_DEPTH
        )
    )
    return Query(select(chain.c.id, chain.c.list_id, chain.c.level).order_by(chain.c.level))


CHAIN = _chain()


def _height() -> Query:
    """How many levels of subtasks a task has below it (0: none). Bounded as the chain is."""
    start = select(TASKS.c.id, literal(0).label("level")).where(
        TASKS.c.id == bindparam("task_id", type_=BigInteger)
    )
    tree = start.cte("subtree", recursive=True)
    below = aliased(TASKS, name="below")
    tree = tree.union_all(
        select(below.c.id, tree.c.level + 1).where(
            below.c.parent_id == tree.c.id, below.c.deleted_at.is_(None), tree.c.level <= MAX_SUBTASK_DEPTH
        )
    )
    return Query(select(func.max(tree.c.level).label("height")))


HEIGHT = _height()
# A task as a move reads it (locked by the counter: no write of the owner's runs beside).
_MOVED = Query(
    select(TASKS.c.list_id, TASKS.c.parent_id, TASKS.c.version, TASKS.c.recurrence, TASKS.c.position).where(
        OWNED
    )
)


def _siblings(top: bool) -> Any:
    """The tasks at a place: the top level of a list, or one task's subtasks (which are in its
    list), the moved task left out. Each an index range: (list_id, position, id) or
    (parent_id, position, id)."""
    place = (
        and_(TASKS.c.list_id == bindparam("to_list_id", type_=BigInteger), TASKS.c.parent_id.is_(None))
        if top
        else TASKS.c.parent_id == bindparam("to_parent_id", type_=BigInteger)
    )
    return and_(
        place,
        TASKS.c.user_id == _OWNER,
        TASKS.c.deleted_at.is_(None),
        TASKS.c.id != bindparam("moved_id", type_=BigInteger),
    )


@dataclass(frozen=True, slots=True)
class _Place:
    """The statements that read one kind of place."""

    after: Query  # the position of the sibling `after_id`
    next_up: Query  # the first position after `lower`
    first: Query  # the first position
    in_order: Query  # the siblings' ids in order (a rebalance)


def _place(top: bool) -> _Place:
    siblings = _siblings(top)
    return _Place(
        after=Query(
            select(TASKS.c.position).where(siblings, TASKS.c.id == bindparam("after_id", type_=BigInteger))
        ),
        next_up=Query(
            select(func.min(TASKS.c.position)).where(
                siblings, TASKS.c.position > bindparam("lower", type_=String)
            )
        ),
        first=Query(select(func.min(TASKS.c.position)).where(siblings)),
        in_order=Query(select(TASKS.c.id).where(siblings).order_by(TASKS.c.position, TASKS.c.id)),
    )


_TOP, _UNDER = _place(True), _place(False)
_PUT = Query(
    update(TASKS)
    .where(OWNED)
    .values(
        list_id=bindparam("to_list_id", type_=BigInteger),
        parent_id=bindparam("to_parent_id", type_=BigInteger),
        position=bindparam("new_position", type_=String),
        updated_at=_NOW,
        version=TASKS.c.version + 1,
    )
    .returning(*TASK_COLUMNS)
)
# A rebalance's new keys: each a change of its task (a sync client must learn its new key).
_RESPREAD = Query(
    update(TASKS)
    .where(TASKS.c.id == bindparam("task_id", type_=BigInteger), TASKS.c.user_id == _OWNER)
    .values(position=bindparam("new_position", type_=String), updated_at=_NOW, version=TASKS.c.version + 1)
)


async def parent_of_new_task(
    connection: Connection, owner_id: str, parent_id: int, list_id: int | None
) -> int:
    """Check that a new task may go under `parent_id` (the owner's, shallow enough, in `list_id`
    if given); the list it goes in. Call with the counter locked."""
    chain = await connection.fetch_all(CHAIN, owner_id=owner_id, start_id=parent_id)
    if not chain:
        raise ParentNotFound()
    if chain[-1]["level"] >= MAX_SUBTASK_DEPTH:
        raise SubtaskTooDeep()
    parent_list: int = chain[0]["list_id"]
    if list_id is not None and list_id != parent_list:
        raise ParentInAnotherList()
    return parent_list


async def move(
    connection: Connection,
    owner_id: str,
    task_id: int,
    target: TaskMove,
    expected: frozenset[int] | None,
    now: Any,
) -> TaskRow:
    """Put the task at `target` (see `OwnedTasks.move`), in the caller's transaction."""
    counter = await connection.fetch_one(LOCK_COUNTER, owner_id=owner_id)
    ids = {"owner_id": owner_id, "task_id": task_id, "moved_id": task_id, "now": now}
    moved = await connection.fetch_one(_MOVED, **ids) if counter is not None else None
    if moved is None:
        raise TaskNotFound()
    if expected is not None and moved["version"] not in expected:
        raise PreconditionFailed(moved["version"])
    to_list: int = moved["list_id"]
    if target.parent_id is not None:
        if moved["recurrence"] is not None:
            raise SubtaskRecurs("parent_id")
        chain = await connection.fetch_all(CHAIN, owner_id=owner_id, start_id=target.parent_id)
        if not chain:
            raise ParentNotFound()
        if any(row["id"] == task_id for row in chain):
            raise SubtaskCycle()
        to_list = chain[0]["list_id"]
        if target.list_id is not None and target.list_id != to_list:
            raise ParentInAnotherList()
        height = await connection.fetch_one(HEIGHT, **ids)
        assert height is not None  # an aggregate
        if chain[-1]["level"] + 1 + (height["height"] or 0) > MAX_SUBTASK_DEPTH:
            raise SubtaskTooDeep()
    elif target.list_id is not None:
        if await connection.fetch_one(OWNS_LIST, owner_id=owner_id, list_id=target.list_id) is None:
            raise TaskListNotFound()
        to_list = target.list_id
    place = _TOP if target.parent_id is None else _UNDER
    where = {**ids, "to_list_id": to_list, "to_parent_id": target.parent_id}
    if target.after_id is None:
        lower = None
        upper = await first_value(connection, place.first, where)
    else:
        after = await connection.fetch_one(place.after, **where, after_id=target.after_id)
        if after is None:
            raise NotASibling()
        lower = after["position"]
        upper = await first_value(connection, place.next_up, {**where, "lower": lower})
    assert counter is not None
    position = _between(lower, upper, counter["seq"])
    if position is None:
        position = await _respread(connection, place, where, target.after_id)
    row = await connection.fetch_one(_PUT, **where, new_position=position)
    assert row is not None  # the counter is held: nothing deleted it since it was read
    return row  # type: ignore[return-value]  # a row of TASK_COLUMNS


def _between(lower: str | None, upper: str | None, counter: int) -> str | None:
    """A key between the neighbours; None when they leave no short one (a rebalance). Last of all,
    the key of the change this move is about to be (`positions`): no later create can sort
    before it."""
    if upper is None:
        return numbered(counter + 1)
    if lower is not None and lower >= upper:
        return None  # keys written outside the API: give the place fresh ones
    key = between(lower, upper)
    return key if len(key) <= REBALANCE_AT else None


async def _respread(
    connection: Connection, place: _Place, where: dict[str, Any], after_id: int | None
) -> str:
    """Fresh, short keys for every task at the place, the moved one in its new place; its key.
    Rare (keys grow long only after many moves between the same two neighbours) and bounded by
    the place's tasks."""
    order = [row["id"] for row in await connection.fetch_all(place.in_order, **where)]
    moved_id = where["moved_id"]
    order.insert(0 if after_id is None else order.index(after_id) + 1, moved_id)
    keys = dict(zip(order, spread(len(order)), strict=True))
    for task_id, key in keys.items():
        if task_id != moved_id:
            await connection.execute(
                _RESPREAD, owner_id=where["owner_id"], task_id=task_id, new_position=key, now=where["now"]
            )
    moved_key: str = keys[moved_id]
    return moved_key


# --- a recurring task's next occurrence ---------------------------------------------------

_TREE = aliased(TASKS, name="tree_task")


def _subtree_rows() -> Query:
    """A task's subtasks at every level (not deleted), parents before their subtasks."""
    start = (
        select(TASKS.c.id, TASKS.c.parent_id, literal(1).label("level"))
        .where(TASKS.c.parent_id == bindparam("task_id", type_=BigInteger), TASKS.c.deleted_at.is_(None))
        .cte("subtree", recursive=True)
    )
    tree = start.union_all(
        select(_TREE.c.id, _TREE.c.parent_id, start.c.level + 1).where(
            _TREE.c.parent_id == start.c.id, _TREE.c.deleted_at.is_(None), start.c.level <= MAX_SUBTASK_DEPTH
        )
    )
    return Query(select(tree.c.id, tree.c.parent_id).order_by(tree.c.level, tree.c.id))


_SUBTREE = _subtree_rows()
_SOURCE = aliased(TASKS, name="source")
_COPY_COLUMNS = (
    "user_id",
    "title",
    "description",
    "priority",
    "time_zone",
    "title_folded",
    "title_sort",
    "description_folded",
    "list_id",
    "position",
)
# A pending copy of a subtask, under its new parent: its text, priority and place (no dates:
# they were the old occurrence's).
_COPY = Query(
    insert(TASKS)
    .from_select(
        [*_COPY_COLUMNS, "completed", "created_at", "updated_at", "parent_id"],
        select(
            *(_SOURCE.c[name] for name in _COPY_COLUMNS),
            literal(False),
            _NOW,
            _NOW,
            bindparam("new_parent_id", type_=BigInteger),
        ).where(_SOURCE.c.id == bindparam("source_id", type_=BigInteger)),
    )
    .returning(TASKS.c.id)
)
_COPY_TAGS = Query(
    insert(TASK_TAGS).from_select(
        ["task_id", "tag_id"],
        select(bindparam("copy_id", type_=BigInteger), TASK_TAGS.c.tag_id).where(
            TASK_TAGS.c.task_id == bindparam("source_id", type_=BigInteger)
        ),
    )
)
# The sibling after a task: its next occurrence goes between the two.
NEXT_SIBLING = Query(
    select(func.min(TASKS.c.position)).where(
        TASKS.c.user_id == _OWNER,
        TASKS.c.list_id == bindparam("list_id", type_=BigInteger),
        TASKS.c.parent_id.is_(None),
        TASKS.c.deleted_at.is_(None),
        TASKS.c.position > bindparam("lower", type_=String),
    )
)


async def next_to(connection: Connection, owner_id: str, task: TaskRow) -> str | None:
    """A key just after `task` among its siblings (for its next occurrence); None: last."""
    lower = task["position"]
    if lower is None:
        return None
    upper = await first_value(
        connection, NEXT_SIBLING, {"owner_id": owner_id, "list_id": task["list_id"], "lower": lower}
    )
    if upper is None or lower >= upper:
        return None
    key = between(lower, upper)
    return key if len(key) <= REBALANCE_AT else None


async def copy_subtasks(connection: Connection, owner_id: str, from_id: int, to_id: int, now: Any) -> int:
    """Pending copies of `from_id`'s subtasks (every level, their tags and order) under `to_id`;
    how many. One insert per subtask: a recurring task's checklist, a handful as a rule."""
    copies: dict[int, int] = {from_id: to_id}
    for row in await connection.fetch_all(_SUBTREE, task_id=from_id):
        source: int = row["id"]
        copied = await connection.fetch_one(
            _COPY, owner_id=owner_id, source_id=source, new_parent_id=copies[row["parent_id"]], now=now
        )
        assert copied is not None  # the source is read in this transaction
        copies[source] = copied["id"]
        await connection.execute(_COPY_TAGS, source_id=source, copy_id=copied["id"])
    return len(copies) - 1
