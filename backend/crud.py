"""Reading and writing tasks, always scoped to their owner.

Every statement that touches one task matches `_OWNED`, so a task of another
user is indistinguishable from one that does not exist. Each write is a single
statement that returns the row (but create on SQLite: two, in one transaction):
atomic under concurrent requests, and no re-read.

Statements are SQLAlchemy Core with named parameters, built once (the variants
of the list and of updates on first use) and compiled once per process: see
`db.Query`. Rows come back as plain dicts.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, delete, func, insert, not_, or_, select, update
from sqlalchemy.dialects import postgresql

from backend.db import Database, Query, Row
from backend.errors import Conflict, NotFound
from backend.models import (
    SortOrder,
    TaskCreate,
    TaskReplace,
    TaskSort,
    TaskStatus,
    TaskUpdate,
    metadata,
    utc_now,
)
from backend.security import TokenClaims


class TaskNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no task with this id belongs to this user")


class TaskLimitReached(Conflict):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this user already has {limit} tasks, the most one user may keep (MAX_TASKS_PER_USER); "
            "delete some to add more"
        )


TASKS: Table = metadata.tables["tasks"]
USERS: Table = metadata.tables["users"]

_OWNED: ColumnElement[bool] = (TASKS.c.id == bindparam("task_id")) & (
    TASKS.c.user_id == bindparam("owner_id")
)
_GET = Query(select(TASKS).where(_OWNED))
_DELETE = Query(delete(TASKS).where(_OWNED).returning(TASKS.c.id))
# The new task's row, or none when the user already keeps `max_tasks` (their
# counter, kept by triggers, is one primary-key lookup away).
_NEW_TASK = select(
    bindparam("owner_id", type_=TASKS.c.user_id.type),
    bindparam("new_title", type_=TASKS.c.title.type),
    bindparam("new_description", type_=TASKS.c.description.type),
    bindparam("new_completed", type_=TASKS.c.completed.type),
    bindparam("now", type_=TASKS.c.created_at.type),
    bindparam("now", type_=TASKS.c.updated_at.type),
).where(
    func.coalesce(select(USERS.c.task_count).where(USERS.c.id == bindparam("owner_id")).scalar_subquery(), 0)
    < bindparam("max_tasks")
)
_INSERT_TASK = (
    insert(TASKS)
    .from_select(["user_id", "title", "description", "completed", "created_at", "updated_at"], _NEW_TASK)
    .returning(*TASKS.c)
)
_INSERT = Query(_INSERT_TASK)
# MAX_TASKS_PER_USER=0: no cap (a bound no counter reaches).
NO_CAP = 2**62


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: Sequence[Row]
    total: int


@cache
def _upsert_user(known: frozenset[str]) -> postgresql.Insert:
    """Insert the user; if they exist, update the `known` profile columns, only when changed."""
    # postgresql.insert compiles for SQLite too: both speak ON CONFLICT.
    statement = postgresql.insert(USERS).values(
        id=bindparam("owner_id"),
        email=bindparam("user_email"),
        name=bindparam("user_name"),
        created_at=bindparam("now"),
    )
    if not known:
        return statement.on_conflict_do_nothing(index_elements=["id"])
    return statement.on_conflict_do_update(
        index_elements=["id"],
        set_={column: statement.excluded[column] for column in sorted(known)},
        # Skip the write (and its row lock) when nothing changed, the usual case.
        where=or_(
            *(USERS.c[column].is_distinct_from(statement.excluded[column]) for column in sorted(known))
        ),
    )


@cache
def _record_user(known: frozenset[str]) -> Query:
    return Query(_upsert_user(known))


@cache
def _create_with_user(known: frozenset[str]) -> Query:
    """The user's upsert and the task's insert as one statement (the upsert in a WITH
    clause): atomic without a transaction, and one round trip instead of four."""
    return Query(_INSERT_TASK.add_cte(_upsert_user(known).cte("recorded_user")))


_SORT_COLUMNS: dict[TaskSort, Any] = {
    "created": TASKS.c.created_at,
    "updated": TASKS.c.updated_at,
    "title": TASKS.c.title,
}


def default_order(sort: TaskSort) -> SortOrder:
    """Newest first for dates, alphabetical for titles."""
    return "asc" if sort == "title" else "desc"


@cache
def list_query(status: TaskStatus, sort: TaskSort, order: SortOrder) -> Query:
    """One page of the owner's tasks, each row carrying the total of matching tasks."""
    matching = select(TASKS).where(TASKS.c.user_id == bindparam("owner_id"))
    if status != "all":
        matching = matching.where(TASKS.c.completed == (status == "completed"))
    column, tie_breaker = _SORT_COLUMNS[sort], TASKS.c.id
    ordering = (column.desc(), tie_breaker.desc()) if order == "desc" else (column, tie_breaker)
    # The total comes from the user's counters (kept by triggers), in the same
    # statement: no count(*) over the user's tasks, however many there are.
    total = _matching_total(status).label("total")
    page = matching.add_columns(total).order_by(*ordering)
    return Query(page.limit(bindparam("limit")).offset(bindparam("offset")))


@cache
def _total_query(status: TaskStatus) -> Query:
    return Query(select(_matching_total(status).label("total")))


def _matching_total(status: TaskStatus) -> Any:
    counted = {
        "all": USERS.c.task_count,
        "completed": USERS.c.completed_count,
        "pending": USERS.c.task_count - USERS.c.completed_count,
    }[status]
    return func.coalesce(select(counted).where(USERS.c.id == bindparam("owner_id")).scalar_subquery(), 0)


@cache
def _update_query(columns: frozenset[str], toggle: bool = False) -> Query:
    """Set `columns` (from parameters named `new_<column>`), or flip `completed`, and return the row."""
    values: dict[str, Any] = {column: bindparam(f"new_{column}") for column in sorted(columns)}
    if toggle:
        values["completed"] = not_(TASKS.c.completed)
    return Query(
        update(TASKS).where(_OWNED).values(**values, updated_at=bindparam("now")).returning(*TASKS.c)
    )


class OwnedTasks:
    """One user's tasks. Every method is scoped to `owner`: handlers get this object
    (from `dependencies.get_owned_tasks`) and have no other way to reach a task."""

    __slots__ = ("db", "max_tasks", "owner")

    def __init__(self, db: Database, owner: TokenClaims, *, max_tasks: int = 0) -> None:
        self.db = db
        self.owner = owner
        self.max_tasks = max_tasks  # 0: no cap

    async def create(self, data: TaskCreate) -> Row:
        """Create the user's row on their first write (keeping email and name current), then the
        task, unless the user already keeps `max_tasks`.

        On PostgreSQL concurrent creates each count the tasks committed before them,
        so a burst at the cap may pass it by the number of creates in flight; on
        SQLite writes take turns, and the cap is exact.
        """
        owner = self.owner
        known = frozenset(column for column, value in (("email", owner.email), ("name", owner.name)) if value)
        values = {
            "owner_id": owner.subject,
            "user_email": owner.email,
            "user_name": owner.name,
            "new_title": data.title,
            "new_description": data.description,
            "new_completed": data.completed,
            "now": utc_now(),
            "max_tasks": self.max_tasks or NO_CAP,
        }
        if self.db.writes_in_with:
            # On a remote database such as Neon each round trip is a millisecond
            # or more, and the user's row stays locked for less time.
            task = await self.db.fetch_one(_create_with_user(known), **values)
        else:
            async with self.db.transaction() as connection:
                await connection.execute(_record_user(known), **values)
                task = await connection.fetch_one(_INSERT, **values)
        if task is None:
            raise TaskLimitReached(self.max_tasks)
        return task

    async def get(self, task_id: int) -> Row:
        task = await self.db.fetch_one(_GET, owner_id=self.owner.subject, task_id=task_id)
        if task is None:
            raise TaskNotFound()
        return task

    async def page(
        self, *, status: TaskStatus, sort: TaskSort, order: SortOrder, limit: int, offset: int
    ) -> TaskPage:
        owner_id = self.owner.subject
        rows = await self.db.fetch_all(
            list_query(status, sort, order), owner_id=owner_id, limit=limit, offset=offset
        )
        if rows:
            return TaskPage(tasks=rows, total=rows[0].pop("total"))
        # An empty page carries no row, and so no total: ask for it alone.
        total = await self.db.fetch_one(_total_query(status), owner_id=owner_id)
        return TaskPage(tasks=[], total=total["total"] if total else 0)

    async def replace(self, task_id: int, data: TaskReplace) -> Row:
        values = data.model_dump()
        if data.completed is None:
            del values["completed"]  # unchanged when omitted
        return await self._update(task_id, values)

    async def update(self, task_id: int, data: TaskUpdate) -> Row:
        return await self._update(task_id, data.model_dump(exclude_unset=True))

    async def set_completion(self, task_id: int, completed: bool | None) -> Row:
        """Set `completed`, or flip it when `completed` is None, in one statement."""
        if completed is None:
            return await self._update(task_id, {}, toggle=True)
        return await self._update(task_id, {"completed": completed})

    async def delete(self, task_id: int) -> None:
        if await self.db.fetch_one(_DELETE, owner_id=self.owner.subject, task_id=task_id) is None:
            raise TaskNotFound()

    async def _update(self, task_id: int, values: dict[str, Any], *, toggle: bool = False) -> Row:
        task = await self.db.fetch_one(
            _update_query(frozenset(values), toggle),
            owner_id=self.owner.subject,
            task_id=task_id,
            now=utc_now(),
            **{f"new_{column}": value for column, value in values.items()},
        )
        if task is None:
            raise TaskNotFound()
        return task
