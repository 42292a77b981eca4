"""The task list's filters and sort as SQL: status, priorities, tags (`matching`: a task carries
every tag asked for), due dates, overdue, reminders, words; the sort keys, keyset paging after a
cursor, the page's statement and its total.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    SmallInteger,
    String,
    and_,
    bindparam,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
    tuple_,
)

from backend.models import PRIORITY_RANK, SortOrder, TaskSort, TaskStatus, fold, search_fold
from backend.store.database import Query
from backend.store.tables import (
    PUBLIC_COLUMNS,
    TAGS,
    TASK_TAG_NAMES,
    TASK_TAGS,
    TASKS,
    USERS,
)

# --- listing -------------------------------------------------------------------------

_SORT_COLUMNS: dict[TaskSort, Any] = {
    "created": TASKS.c.created_at,
    "updated": TASKS.c.updated_at,
    # Case-insensitively (`Apple, banana, cherry`), by the folded title and its index.
    "title": TASKS.c.title_sort,
    "due": TASKS.c.due_at,
    "priority": TASKS.c.priority,
    # The order people chose: siblings' keys, bytewise (the C collation on PostgreSQL).
    "position": TASKS.c.position,
}


def sort_value(sort: TaskSort, row: Mapping[str, Any]) -> Any:
    """The value `row` is sorted by, as stored (priority as its rank, the title folded): what
    a cursor keeps."""
    return row[_SORT_COLUMNS[sort].name]


@dataclass(frozen=True, slots=True)
class TaskFilters:
    """What the list is narrowed to; every field combines with every other."""

    status: TaskStatus = "all"
    priorities: frozenset[str] = frozenset()
    tags: tuple[str, ...] = ()  # the task carries all of them
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool | None = None
    remind_before: datetime | None = None
    words: tuple[str, ...] = ()  # each in the title or the description
    list_id: int | None = None  # in this list of the owner's
    parent: int | Literal["none"] | None = None  # "none": top-level tasks; an id: its subtasks

    @property
    def only_status(self) -> bool:
        """Nothing but the status: the total comes from the user's counters."""
        return self == TaskFilters(status=self.status)

    def shape(self) -> "ListShape":
        return ListShape(
            status=self.status,
            priorities=frozenset(PRIORITY_RANK[name] for name in self.priorities),
            tags=len(self.tags),
            due_before=self.due_before is not None,
            due_after=self.due_after is not None,
            overdue=self.overdue,
            remind_before=self.remind_before is not None,
            words=len(self.words),
            in_list=self.list_id is not None,
            parent=None if self.parent is None else "none" if self.parent == "none" else "id",
        )

    def parameters(self, now: datetime) -> dict[str, Any]:
        # In UTC, as stored: SQLite compares date-times as text, offsets unread.
        values: dict[str, Any] = {
            "due_before": _in_utc(self.due_before),
            "due_after": _in_utc(self.due_after),
            "remind_before": _in_utc(self.remind_before),
            "now": now,
            "list_id": self.list_id,
            "parent_id": None if self.parent == "none" else self.parent,
        }
        values.update({f"tag_{i}": fold(tag) for i, tag in enumerate(self.tags)})
        values.update(
            {f"word_{i}": f"%{_escape_like(search_fold(word))}%" for i, word in enumerate(self.words)}
        )
        return {name: value for name, value in values.items() if value is not None}


def _in_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class ListShape:
    status: TaskStatus
    priorities: frozenset[int] = field(default_factory=frozenset)
    tags: int = 0
    due_before: bool = False
    due_after: bool = False
    overdue: bool | None = None
    remind_before: bool = False
    words: int = 0
    in_list: bool = False
    parent: Literal["none", "id"] | None = None
    # Tags matching a large share of the user's tasks: walk the sort's index and test
    # each task, rather than gather every tagged task and sort them (see `page`).
    walk: bool = False
    # Keyset paging: after a cursor's sort value and id ("value"), or, sorting by due
    # date, after a task without one ("null").
    after: Literal["value", "null"] | None = None


def matching(shape: ListShape) -> list[Any]:
    """The WHERE clause of the owner's tasks that match the filters."""
    conditions: list[Any] = [TASKS.c.user_id == bindparam("owner_id"), TASKS.c.deleted_at.is_(None)]
    if shape.in_list:
        conditions.append(TASKS.c.list_id == bindparam("list_id", type_=BigInteger))
    if shape.parent == "none":
        conditions.append(TASKS.c.parent_id.is_(None))
    elif shape.parent == "id":
        conditions.append(TASKS.c.parent_id == bindparam("parent_id", type_=BigInteger))
    if shape.status != "all":
        conditions.append(TASKS.c.completed == (shape.status == "completed"))
    if shape.priorities:
        # One parameter each (compiled once, never an expanding IN).
        ranks = [bindparam(f"priority_{rank}", rank, type_=SmallInteger) for rank in sorted(shape.priorities)]
        conditions.append(TASKS.c.priority.in_(ranks))
    for i in range(shape.tags):
        tagged = (
            select(TASK_TAGS.c.task_id)
            .join(TAGS, TAGS.c.id == TASK_TAGS.c.tag_id)
            .where(TASK_TAGS.c.task_id == TASKS.c.id)
            .where(TAGS.c.user_id == bindparam("owner_id"))
            .where(TAGS.c.name_folded == bindparam(f"tag_{i}", type_=String))
        )
        # OFFSET 0 keeps PostgreSQL from turning the test into a join over every tagged task.
        conditions.append((tagged.offset(literal_column("0")) if shape.walk else tagged).exists())
    timestamp = DateTime(timezone=True)
    if shape.due_before:
        conditions.append(TASKS.c.due_at <= bindparam("due_before", type_=timestamp))
    if shape.due_after:
        conditions.append(TASKS.c.due_at >= bindparam("due_after", type_=timestamp))
    if shape.overdue is not None:
        overdue = and_(TASKS.c.due_at < bindparam("now", type_=timestamp), TASKS.c.completed == false())
        conditions.append(overdue if shape.overdue else not_(func.coalesce(overdue, false())))
    if shape.remind_before:
        conditions.append(TASKS.c.remind_at <= bindparam("remind_before", type_=timestamp))
    for i in range(shape.words):
        word = bindparam(f"word_{i}", type_=String)
        conditions.append(
            or_(
                TASKS.c.title_folded.like(word, escape="\\"),
                TASKS.c.description_folded.like(word, escape="\\"),
            )
        )
    return conditions


def _after(sort: TaskSort, order: SortOrder, after: Literal["value", "null"]) -> Any:
    """Strictly after the cursor's task in this sort and order (ties broken by id, tasks
    without a due date last): a range of the sort's index."""
    column, task_id = TASKS.c[_SORT_COLUMNS[sort].name], TASKS.c.id
    value = bindparam("after_value", type_=column.type)
    last = bindparam("after_id", type_=Integer)
    forward = order == "asc"
    if after == "null":  # among the undated, last of all
        return and_(column.is_(None), task_id > last if forward else task_id < last)
    beyond = (
        tuple_(column, task_id) > tuple_(value, last)
        if forward
        else tuple_(column, task_id) < tuple_(value, last)
    )
    return or_(beyond, column.is_(None)) if sort == "due" else beyond


def _ordering(sort: TaskSort, order: SortOrder, table: Any = TASKS) -> list[Any]:
    column, tie_breaker = table.c[_SORT_COLUMNS[sort].name], table.c.id
    if sort == "due":
        # Tasks without a due date last, in both orders.
        if order == "desc":
            return [column.desc().nulls_last(), tie_breaker.desc()]
        return [column.asc().nulls_last(), tie_breaker]
    return [column.desc(), tie_breaker.desc()] if order == "desc" else [column, tie_breaker]


@cache
def list_query(status: TaskStatus, sort: TaskSort, order: SortOrder, shape: ListShape | None = None) -> Query:
    """One page of the owner's matching tasks. Filtered by status alone, each row carries
    the total of matching tasks, from the user's counters (kept by triggers).

    The page is chosen first and its tasks' tags read after: PostgreSQL would otherwise
    read the tags of every task an OFFSET skips (276 ms at offset 10,000, against 2 ms).
    """
    shape = shape or ListShape(status=status)
    columns = [*PUBLIC_COLUMNS, TASKS.c.title_sort] if sort == "title" else PUBLIC_COLUMNS
    page = select(*columns).where(*matching(shape)).order_by(*_ordering(sort, order))
    if shape.after is not None:
        page = page.where(_after(sort, order, shape.after))
    if replace(shape, after=None) == ListShape(status=shape.status):
        page = page.add_columns(_counted_total(shape.status).label("total"))
    # Named `tasks`, as the tags' subquery expects (`tables.TASK_TAG_NAMES`).
    chosen = page.limit(bindparam("limit")).offset(bindparam("offset")).subquery("tasks")
    return Query(select(*chosen.c, TASK_TAG_NAMES).order_by(*_ordering(sort, order, chosen)))


@cache
def total_query(shape: ListShape) -> Query:
    """The total of matching tasks (from the counters for a status alone, else counted),
    with how many tasks the user has: `page` decides from both how to read the page."""
    owned = func.coalesce(
        select(USERS.c.task_count).where(USERS.c.id == bindparam("owner_id")).scalar_subquery(), 0
    )
    if shape == ListShape(status=shape.status):
        return Query(select(_counted_total(shape.status).label("total"), owned.label("owned")))
    if shape == ListShape(status="all", tags=1) or shape == ListShape(status="all", tags=1, walk=True):
        # One tag alone: its links, counted in their index (every link is to the owner's task).
        tag_id = (
            select(TAGS.c.id)
            .where(TAGS.c.user_id == bindparam("owner_id"))
            .where(TAGS.c.name_folded == bindparam("tag_0", type_=String))
            .scalar_subquery()
        )
        links = select(func.count()).select_from(TASK_TAGS).where(TASK_TAGS.c.tag_id == tag_id)
        return Query(select(links.scalar_subquery().label("total"), owned.label("owned")))
    counted = select(func.count()).select_from(TASKS).where(*matching(shape)).scalar_subquery()
    return Query(select(counted.label("total"), owned.label("owned")))


# A tag filter matching at least this share of the user's tasks reads the page by
# walking the sort's index, testing each task (a few hundred tests for a page);
# a rarer one gathers its tasks through the tag's links, then sorts them.
WALK_SHARE = 0.05


def _counted_total(status: TaskStatus) -> Any:
    counted = {
        "all": USERS.c.task_count,
        "completed": USERS.c.completed_count,
        "pending": USERS.c.task_count - USERS.c.completed_count,
    }[status]
    return func.coalesce(select(counted).where(USERS.c.id == bindparam("owner_id")).scalar_subquery(), 0)
