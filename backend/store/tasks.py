"""Reading and writing tasks, always scoped to their owner.

Every statement that touches one task matches `OWNED`, so a task of another
user is indistinguishable from one that does not exist. Statements are
SQLAlchemy Core with named parameters, built once per shape (the variants of
the list and of updates on first use) and compiled once per process: see
`db.Query`. Rows come back as plain dicts.

How many statements each write sends (`tests/test_statements.py` holds them to it):
- a plain create is one on PostgreSQL (the user's row in a WITH clause) and two in
  a transaction on SQLite; giving it tags adds one, in the same transaction;
- a single-task update is one statement; giving it tags adds one, in a transaction;
  setting its recurrence, due date or time zone makes it transactional, so that a rule
  that would never occur again is rolled back;
- completing an occurrence of a recurring task is one statement that declines
  (it will not complete it alone), then the completion and the next occurrence's
  insert, in one transaction: the next occurrence exists if and only if the
  completion committed.
A write that matches no row (412 or 404) explains itself with one more statement, on
the same connection: never a second one while holding the first (see `db`).

On PostgreSQL every write locks the owner's change counter before any task or tag
(`sql.COUNTER_LOCKED`): one lock order for all of a user's writes, so none deadlock.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from http import HTTPStatus
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    SmallInteger,
    String,
    and_,
    bindparam,
    case,
    false,
    func,
    insert,
    literal_column,
    not_,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql

from backend.auth.tokens import TokenClaims
from backend.domain import recurrence
from backend.domain.cursors import Cursor
from backend.domain.recurrence import zone
from backend.errors import Conflict, NotFound, ProblemError, Unprocessable
from backend.models import (
    PRIORITY_RANK,
    TAG_SEPARATOR,
    SortOrder,
    TaskCreate,
    TaskReplace,
    TaskSort,
    TaskStatus,
    TaskUpdate,
    fold,
    folded_text,
    search_fold,
    utc_now,
)
from backend.store.database import CheckViolationError, Connection, Database, Query, Row
from backend.store.tables import (
    COUNTER_LOCKED,
    OWNED,
    PUBLIC_COLUMNS,
    TAGS,
    TASK_COLUMNS,
    TASK_TAG_NAMES,
    TASK_TAG_SETS,
    TASK_TAGS,
    TASKS,
    USERS,
    existing_tag_names,
)

logger = logging.getLogger("backend.store")

# MAX_TASKS_PER_USER=0: no cap (a bound no counter reaches).
NO_CAP = 2**62

# The versions an If-Match header allows; None: no condition (no header, or `*`).
Versions = frozenset[int] | None


class TaskNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no task with this id belongs to this user")


class TaskLimitReached(Conflict):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this user already has {limit} tasks, the most one user may keep (MAX_TASKS_PER_USER); "
            "delete some to add more"
        )


class RecurrenceNeedsDueDate(Unprocessable):
    def __init__(self) -> None:
        message = "a task with a recurrence needs a due_at"
        super().__init__(
            f"the request is invalid: {message}",
            errors=[{"loc": ["body", "due_at"], "msg": message, "type": "value_error"}],
        )


class RecurrenceNeverOccurs(Unprocessable):
    def __init__(self) -> None:
        message = (
            "the rule has no occurrence after due_at (within the years searched): "
            "it would never come round again"
        )
        super().__init__(
            f"the request is invalid: {message}",
            errors=[{"loc": ["body", "recurrence"], "msg": message, "type": "value_error"}],
        )


_GET = Query(select(*TASK_COLUMNS).where(OWNED))
_VERSION = Query(select(TASKS.c.version).where(OWNED))
_NOW = bindparam("now", type_=DateTime(timezone=True))


def _expected(versions: int) -> Any:
    """The task's version is one of `expected_0` … (If-Match), checked in the write itself."""
    return TASKS.c.version.in_([bindparam(f"expected_{i}", type_=Integer) for i in range(versions)])


@cache
def _delete_query(versions: int) -> Query:
    """Deletion leaves a tombstone (for sync) that no other route sees."""
    statement = update(TASKS).where(OWNED, COUNTER_LOCKED)
    if versions:
        statement = statement.where(_expected(versions))
    values = {"deleted_at": _NOW, "updated_at": _NOW, "version": TASKS.c.version + 1}
    return Query(statement.values(**values).returning(TASKS.c.id))


_DELETE_COMPLETED = Query(
    update(TASKS)
    .where(COUNTER_LOCKED)
    .where(TASKS.c.user_id == bindparam("owner_id"))
    .where(TASKS.c.completed == true())
    .where(TASKS.c.deleted_at.is_(None))
    .values(deleted_at=_NOW, updated_at=_NOW, version=TASKS.c.version + 1)
)


class PreconditionFailed(ProblemError):
    """The task is not at a version the write was conditioned on (If-Match, expected_version)."""

    status = HTTPStatus.PRECONDITION_FAILED

    def __init__(self, current_version: int) -> None:
        super().__init__(
            f"the task has changed since the version in If-Match (it is at version {current_version} now); "
            "read it again (its ETag), then retry"
        )
        self.current_version = current_version


# --- creating ------------------------------------------------------------------------


def _new_task(count: int) -> Any:
    """The new task's row, or none when the user already keeps `max_tasks` (their
    counter, kept by triggers, is one primary-key lookup away)."""
    values = select(
        bindparam("owner_id", type_=String),
        bindparam("new_title", type_=String),
        bindparam("new_description", type_=String),
        bindparam("new_completed", type_=Boolean),
        bindparam("now", type_=DateTime(timezone=True)),
        bindparam("now", type_=DateTime(timezone=True)),
        bindparam("new_priority", type_=SmallInteger),
        bindparam("new_due_at", type_=DateTime(timezone=True)),
        bindparam("new_remind_at", type_=DateTime(timezone=True)),
        bindparam("new_recurrence", type_=String),
        bindparam("new_time_zone", type_=String),
        bindparam("new_completed_at", type_=DateTime(timezone=True)),
        bindparam("new_title_folded", type_=String),
        bindparam("new_title_sort", type_=String),
        bindparam("new_description_folded", type_=String),
        bindparam("new_recurrence_anchor", type_=DateTime(timezone=True)),
    ).where(
        func.coalesce(
            select(USERS.c.task_count).where(USERS.c.id == bindparam("owner_id")).scalar_subquery(), 0
        )
        < bindparam("max_tasks", type_=Integer)
    )
    columns = [
        "user_id",
        "title",
        "description",
        "completed",
        "created_at",
        "updated_at",
        "priority",
        "due_at",
        "remind_at",
        "recurrence",
        "time_zone",
        "completed_at",
        "title_folded",
        "title_sort",
        "description_folded",
        "recurrence_anchor",
    ]
    # A new task has no tags of its own yet: the ones it is being given, as first spelled.
    returned = [*PUBLIC_COLUMNS, existing_tag_names(count)] if count else PUBLIC_COLUMNS
    return insert(TASKS).from_select(columns, values).returning(*returned)


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
def _insert(tags: int) -> Query:
    return Query(_new_task(tags))


@cache
def _create_with_user(known: frozenset[str], tags: int) -> Query:
    """The user's upsert and the task's insert as one statement (the upsert in a WITH
    clause): atomic without a transaction, and one round trip instead of four."""
    return Query(_new_task(tags).add_cte(_upsert_user(known).cte("recorded_user")))


_SET_TAGS = Query(
    insert(TASK_TAG_SETS).values(
        task_id=bindparam("task_id"), user_id=bindparam("owner_id"), names=bindparam("tag_names")
    )
)

# --- updating ------------------------------------------------------------------------

_COMPLETING_A_RECURRING_OCCURRENCE = and_(
    TASKS.c.recurrence.is_not(None), TASKS.c.next_occurrence_id.is_(None), TASKS.c.completed == false()
)


@dataclass(frozen=True, slots=True)
class _UpdateShape:
    columns: frozenset[str]
    toggle: bool = False
    # Decline (update nothing) when the update would complete an occurrence of a
    # recurring task: that takes a transaction, with the next occurrence's insert.
    decline_recurring: bool = False
    tags: int | None = None  # how many tags the task is being given, or None to leave them
    versions: int = 0  # how many versions If-Match allows (0: no condition)


@cache
def _update_query(shape: _UpdateShape) -> Query:
    """Set `columns` (from parameters named `new_<column>`), or flip `completed`, and return the row."""
    values: dict[str, Any] = {column: bindparam(f"new_{column}") for column in sorted(shape.columns)}
    now = bindparam("now", type_=DateTime(timezone=True))
    if "title" in shape.columns:
        values["title_folded"] = bindparam("new_title_folded")
        values["title_sort"] = bindparam("new_title_sort")
    if "description" in shape.columns:
        values["description_folded"] = bindparam("new_description_folded")
    if shape.toggle:
        values["completed"] = not_(TASKS.c.completed)
        values["completed_at"] = case((TASKS.c.completed == false(), now), else_=None)
    elif "completed" in shape.columns:
        completed = bindparam("new_completed", type_=Boolean)
        # Set when the task becomes completed, kept while it stays so, cleared when reopened.
        values["completed_at"] = case(
            (and_(completed, TASKS.c.completed == false()), now),
            (not_(completed), None),
            else_=TASKS.c.completed_at,
        )
    series = shape.columns & {"due_at", "recurrence", "time_zone"}
    if series:
        # Setting the due date, the rule or the zone (to something else) starts the series
        # anew from the due date: the anchor its times of day and days of month come from.
        new_due = bindparam("new_due_at") if "due_at" in series else TASKS.c.due_at
        changed = or_(
            *(TASKS.c[column].is_distinct_from(bindparam(f"new_{column}")) for column in sorted(series))
        )
        values["recurrence_anchor"] = case((changed, new_due), else_=TASKS.c.recurrence_anchor)
    statement = update(TASKS).where(OWNED, COUNTER_LOCKED)
    if shape.decline_recurring:
        statement = statement.where(not_(_COMPLETING_A_RECURRING_OCCURRENCE))
    if shape.versions:
        statement = statement.where(_expected(shape.versions))
    values["version"] = TASKS.c.version + 1
    # The task's tags; or, when it is being given new ones, their stored spellings.
    tags = TASK_TAG_NAMES if shape.tags is None else existing_tag_names(shape.tags)
    # The anchor too, which completing a recurring occurrence reads (it is not public).
    returned = [*PUBLIC_COLUMNS, tags, TASKS.c.recurrence_anchor]
    return Query(statement.values(**values, updated_at=now).returning(*returned))


_NEXT_OCCURRENCE = Query(
    insert(TASKS)
    .from_select(
        [
            "user_id",
            "title",
            "description",
            "completed",
            "created_at",
            "updated_at",
            "priority",
            "due_at",
            "remind_at",
            "recurrence",
            "time_zone",
            "title_folded",
            "title_sort",
            "description_folded",
            "recurrence_anchor",
            "previous_occurrence_id",
        ],
        select(
            TASKS.c.user_id,
            TASKS.c.title,
            TASKS.c.description,
            false(),
            bindparam("now", type_=DateTime(timezone=True)),
            bindparam("now", type_=DateTime(timezone=True)),
            TASKS.c.priority,
            bindparam("next_due_at", type_=DateTime(timezone=True)),
            bindparam("next_remind_at", type_=DateTime(timezone=True)),
            bindparam("next_recurrence", type_=String),
            TASKS.c.time_zone,
            TASKS.c.title_folded,
            TASKS.c.title_sort,
            TASKS.c.description_folded,
            TASKS.c.recurrence_anchor,
            TASKS.c.id,
        ).where(OWNED),
    )
    .returning(TASKS.c.id)
)

# --- listing -------------------------------------------------------------------------

_SORT_COLUMNS: dict[TaskSort, Any] = {
    "created": TASKS.c.created_at,
    "updated": TASKS.c.updated_at,
    # Case-insensitively (`Apple, banana, cherry`), by the folded title and its index.
    "title": TASKS.c.title_sort,
    "due": TASKS.c.due_at,
    "priority": TASKS.c.priority,
}


def sort_value(sort: TaskSort, row: Row) -> Any:
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

    @property
    def only_status(self) -> bool:
        """Nothing but the status: the total comes from the user's counters."""
        return self == TaskFilters(status=self.status)

    def shape(self) -> "_ListShape":
        return _ListShape(
            status=self.status,
            priorities=frozenset(PRIORITY_RANK[name] for name in self.priorities),
            tags=len(self.tags),
            due_before=self.due_before is not None,
            due_after=self.due_after is not None,
            overdue=self.overdue,
            remind_before=self.remind_before is not None,
            words=len(self.words),
        )

    def parameters(self, now: datetime) -> dict[str, Any]:
        # In UTC, as stored: SQLite compares date-times as text, offsets unread.
        values: dict[str, Any] = {
            "due_before": _in_utc(self.due_before),
            "due_after": _in_utc(self.due_after),
            "remind_before": _in_utc(self.remind_before),
            "now": now,
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
class _ListShape:
    status: TaskStatus
    priorities: frozenset[int] = field(default_factory=frozenset)
    tags: int = 0
    due_before: bool = False
    due_after: bool = False
    overdue: bool | None = None
    remind_before: bool = False
    words: int = 0
    # Tags matching a large share of the user's tasks: walk the sort's index and test
    # each task, rather than gather every tagged task and sort them (see `page`).
    walk: bool = False
    # Keyset paging: after a cursor's sort value and id ("value"), or, sorting by due
    # date, after a task without one ("null").
    after: Literal["value", "null"] | None = None


def _matching(shape: _ListShape) -> list[Any]:
    """The WHERE clause of the owner's tasks that match the filters."""
    conditions: list[Any] = [TASKS.c.user_id == bindparam("owner_id"), TASKS.c.deleted_at.is_(None)]
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
def list_query(
    status: TaskStatus, sort: TaskSort, order: SortOrder, shape: _ListShape | None = None
) -> Query:
    """One page of the owner's matching tasks. Filtered by status alone, each row carries
    the total of matching tasks, from the user's counters (kept by triggers).

    The page is chosen first and its tasks' tags read after: PostgreSQL would otherwise
    read the tags of every task an OFFSET skips (276 ms at offset 10,000, against 2 ms).
    """
    shape = shape or _ListShape(status=status)
    columns = [*PUBLIC_COLUMNS, TASKS.c.title_sort] if sort == "title" else PUBLIC_COLUMNS
    page = select(*columns).where(*_matching(shape)).order_by(*_ordering(sort, order))
    if shape.after is not None:
        page = page.where(_after(sort, order, shape.after))
    if replace(shape, after=None) == _ListShape(status=shape.status):
        page = page.add_columns(_counted_total(shape.status).label("total"))
    # Named `tasks`, as the tags' subquery expects (`sql.TASK_TAG_NAMES`).
    chosen = page.limit(bindparam("limit")).offset(bindparam("offset")).subquery("tasks")
    return Query(select(*chosen.c, TASK_TAG_NAMES).order_by(*_ordering(sort, order, chosen)))


@cache
def total_query(shape: _ListShape) -> Query:
    """The total of matching tasks (from the counters for a status alone, else counted),
    with how many tasks the user has: `page` decides from both how to read the page."""
    owned = func.coalesce(
        select(USERS.c.task_count).where(USERS.c.id == bindparam("owner_id")).scalar_subquery(), 0
    )
    if shape == _ListShape(status=shape.status):
        return Query(select(_counted_total(shape.status).label("total"), owned.label("owned")))
    if shape == _ListShape(status="all", tags=1) or shape == _ListShape(status="all", tags=1, walk=True):
        # One tag alone: its links, counted in their index (every link is to the owner's task).
        tag_id = (
            select(TAGS.c.id)
            .where(TAGS.c.user_id == bindparam("owner_id"))
            .where(TAGS.c.name_folded == bindparam("tag_0", type_=String))
            .scalar_subquery()
        )
        links = select(func.count()).select_from(TASK_TAGS).where(TASK_TAGS.c.tag_id == tag_id)
        return Query(select(links.scalar_subquery().label("total"), owned.label("owned")))
    counted = select(func.count()).select_from(TASKS).where(*_matching(shape)).scalar_subquery()
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


# --- stats ---------------------------------------------------------------------------


def _pending(condition: Any = None) -> Any:
    pending = TASKS.c.completed == false()
    return func.count().filter(pending if condition is None else and_(pending, condition))


_STATS = Query(
    select(
        func.count().label("total"),
        func.count().filter(TASKS.c.completed == true()).label("completed"),
        _pending(TASKS.c.due_at < bindparam("now", type_=DateTime(timezone=True))).label("overdue"),
        _pending(
            and_(
                TASKS.c.due_at >= bindparam("day_starts", type_=DateTime(timezone=True)),
                TASKS.c.due_at < bindparam("day_ends", type_=DateTime(timezone=True)),
            )
        ).label("due_today"),
        *(_pending(TASKS.c.priority == rank).label(name) for name, rank in PRIORITY_RANK.items()),
    )
    .where(TASKS.c.user_id == bindparam("owner_id"))
    .where(TASKS.c.deleted_at.is_(None))
)


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: Sequence[Row]
    total: int
    more: bool = False  # after a cursor: whether tasks follow this page


def _tag_pairs(tags: Sequence[str]) -> str:
    """The JSON list of [name, folded name] pairs the `task_tag_sets` trigger reads."""
    return json.dumps([[name, fold(name)] for name in tags])


def _as_given(row: Row, tags: Sequence[str]) -> Row:
    """The row, its tags those it is being given: each in its stored spelling if the tag
    exists already (read by the same statement), else as sent."""
    stored = {fold(name): name for name in (row.get("tags") or "").split(TAG_SEPARATOR) if name}
    row["tags"] = TAG_SEPARATOR.join(stored.get(fold(name), name) for name in tags) or None
    return row


class OwnedTasks:
    """One user's tasks. Every method is scoped to `owner`: handlers get this object
    (from `dependencies.get_owned_tasks`) and have no other way to reach a task."""

    __slots__ = ("db", "max_tasks", "owner")

    def __init__(self, db: Database, owner: TokenClaims, *, max_tasks: int = 0) -> None:
        self.db = db
        self.owner = owner
        self.max_tasks = max_tasks  # 0: no cap

    def within(self, db: Database) -> "OwnedTasks":
        """The same tasks, every statement on `db` (one open transaction: see `writes.answer`)."""
        return OwnedTasks(db, self.owner, max_tasks=self.max_tasks)

    async def create(self, data: TaskCreate) -> Row:
        """Create the user's row on their first write (keeping email and name current), then the
        task and its tags, unless the user already keeps `max_tasks`.

        On PostgreSQL concurrent creates each count the tasks committed before them,
        so a burst at the cap may pass it by the number of creates in flight; on
        SQLite writes take turns, and the cap is exact.
        """
        if data.recurrence is not None:
            if data.due_at is None:
                raise RecurrenceNeedsDueDate()
            if not recurrence.has_occurrence_after(data.recurrence, data.due_at, data.time_zone):
                raise RecurrenceNeverOccurs()
        owner = self.owner
        known = frozenset(column for column, value in (("email", owner.email), ("name", owner.name)) if value)
        now = utc_now()
        values = {
            "owner_id": owner.subject,
            "user_email": owner.email,
            "user_name": owner.name,
            "new_title": data.title,
            "new_description": data.description,
            "new_completed": data.completed,
            "new_priority": PRIORITY_RANK[data.priority],
            "new_due_at": data.due_at,
            "new_remind_at": data.remind_at,
            "new_recurrence": data.recurrence,
            "new_time_zone": data.time_zone,
            "new_completed_at": now if data.completed else None,
            **{f"new_{column}": text for column, text in folded_text(data.title, data.description).items()},
            "new_recurrence_anchor": data.due_at if data.recurrence is not None else None,
            "now": now,
            "max_tasks": self.max_tasks or NO_CAP,
            **{f"fold_{i}": fold(tag) for i, tag in enumerate(data.tags)},
        }
        tags = len(data.tags)
        if self.db.writes_in_with and not tags:
            # On a remote database such as Neon each round trip is a millisecond
            # or more, and the user's row stays locked for less time.
            task = await self.db.fetch_one(_create_with_user(known, 0), **values)
        else:

            async def create(connection: Connection) -> Row | None:
                if self.db.writes_in_with:
                    created = await connection.fetch_one(_create_with_user(known, tags), **values)
                else:
                    await connection.execute(_record_user(known), **values)
                    created = await connection.fetch_one(_insert(tags), **values)
                if created is not None and tags:
                    await connection.execute(
                        _SET_TAGS,
                        task_id=created["id"],
                        owner_id=owner.subject,
                        tag_names=_tag_pairs(data.tags),
                    )
                return created

            task = await self.db.atomic(create)
        if task is None:
            raise TaskLimitReached(self.max_tasks)
        return _as_given(task, data.tags)

    async def get(self, task_id: int) -> Row:
        task = await self.db.fetch_one(_GET, owner_id=self.owner.subject, task_id=task_id)
        if task is None:
            raise TaskNotFound()
        return task

    async def page(
        self,
        *,
        filters: TaskFilters,
        sort: TaskSort,
        order: SortOrder,
        limit: int,
        offset: int,
        cursor: Cursor | None = None,
    ) -> TaskPage:
        """A page by offset, or after a cursor (keyset: `offset` is then 0). The total
        counts every matching task either way."""
        owner_id = self.owner.subject
        shape = filters.shape()
        parameters = {"owner_id": owner_id, **filters.parameters(utc_now())}
        if cursor is not None:
            shape = replace(shape, after="null" if cursor.value is None else "value")
            parameters.update(after_value=cursor.value, after_id=cursor.task_id)
            # One more than the page: whether any follow (an offset's total cannot say).
            page = await self._page(shape, filters, sort, order, limit + 1, 0, parameters)
            return replace(page, tasks=page.tasks[:limit], more=len(page.tasks) > limit)
        return await self._page(shape, filters, sort, order, limit, offset, parameters)

    async def _page(
        self,
        shape: "_ListShape",
        filters: TaskFilters,
        sort: TaskSort,
        order: SortOrder,
        limit: int,
        offset: int,
        parameters: dict[str, Any],
    ) -> TaskPage:
        if filters.tags:
            # The count first: how common the tags are decides how to read the page
            # (PostgreSQL cannot tell at planning time how many tasks a tag has).
            counted = await self.db.fetch_one(total_query(replace(shape, after=None)), **parameters)
            assert counted is not None  # an aggregate always answers one row
            walk = counted["total"] >= WALK_SHARE * counted["owned"]
            rows = await self.db.fetch_all(
                list_query(filters.status, sort, order, replace(shape, walk=walk)),
                limit=limit,
                offset=offset,
                **parameters,
            )
            return TaskPage(tasks=rows, total=counted["total"])
        rows = await self.db.fetch_all(
            list_query(filters.status, sort, order, shape), limit=limit, offset=offset, **parameters
        )
        if rows and filters.only_status:
            return TaskPage(tasks=rows, total=rows[0].pop("total"))
        # Filtered beyond the status (or an empty page, which carries no row): count.
        total = await self.db.fetch_one(total_query(replace(shape, after=None)), **parameters)
        for row in rows:
            row.pop("total", None)
        return TaskPage(tasks=rows, total=total["total"] if total else 0)

    async def stats(self, time_zone: str) -> Row:
        """Counts of the owner's tasks; `due_today` is today's date in `time_zone`."""
        now = utc_now()
        # Local midnight to local midnight (a day of 23 or 25 hours when the clocks change).
        day_starts = now.astimezone(zone(time_zone)).replace(hour=0, minute=0, second=0, microsecond=0)
        day_ends = day_starts + timedelta(days=1)
        row = await self.db.fetch_one(
            _STATS,
            owner_id=self.owner.subject,
            now=now,
            day_starts=day_starts.astimezone(UTC),
            day_ends=day_ends.astimezone(UTC),
        )
        assert row is not None  # an aggregate always answers one row
        return row

    async def delete_completed(self) -> int:
        """Delete every completed task of the owner, in one statement; how many there were."""
        return await self.db.execute(_DELETE_COMPLETED, owner_id=self.owner.subject, now=utc_now())

    async def replace(self, task_id: int, data: TaskReplace, *, expected: Versions = None) -> Row:
        values = data.model_dump(exclude={"tags"})
        # Unchanged when omitted: completed (or null, as PUT always took it) and the
        # organising fields. The description becomes null when omitted, as it always did.
        for name in ("completed", "priority", "due_at", "remind_at", "recurrence", "time_zone"):
            if name not in data.model_fields_set or (name == "completed" and data.completed is None):
                del values[name]
        return await self._update(task_id, values, tags=data.tags, expected=expected)

    async def update(self, task_id: int, data: TaskUpdate, *, expected: Versions = None) -> Row:
        values = data.model_dump(exclude_unset=True, exclude={"tags"})
        tags = data.tags if "tags" in data.model_fields_set else None
        return await self._update(task_id, values, tags=tags, expected=expected)

    async def set_completion(self, task_id: int, completed: bool | None, *, expected: Versions = None) -> Row:
        """Set `completed`, or flip it when `completed` is None."""
        if completed is None:
            return await self._update(task_id, {}, toggle=True, expected=expected)
        return await self._update(task_id, {"completed": completed}, expected=expected)

    async def delete(self, task_id: int, *, expected: Versions = None) -> None:
        """Delete the task: a tombstone stays for sync (SYNC_RETENTION_DAYS)."""
        parameters = self._conditions(task_id, expected)
        query = _delete_query(len(expected or ()))

        async def delete(connection: Connection) -> None:
            if expected is not None and not expected:  # If-Match named no version (weak tags only)
                await self._explain_no_row(connection, task_id, expected)
            if await connection.fetch_one(query, now=utc_now(), **parameters) is None:
                await self._explain_no_row(connection, task_id, expected)

        await self.db.using(delete)

    def _conditions(self, task_id: int, expected: Versions) -> dict[str, Any]:
        versions = {f"expected_{i}": version for i, version in enumerate(sorted(expected or ()))}
        return {"owner_id": self.owner.subject, "task_id": task_id, **versions}

    async def _explain_no_row(self, connection: Connection, task_id: int, expected: Versions) -> None:
        """A write matched no row: the task is not the user's (404), or, under If-Match, it
        is but its version is not among those expected (412). Always raises. Asked on the
        writing connection: never a second one while holding it."""
        if expected is not None:
            found = await connection.fetch_one(_VERSION, owner_id=self.owner.subject, task_id=task_id)
            if found is not None:
                raise PreconditionFailed(found["version"])
        raise TaskNotFound()

    async def _update(
        self,
        task_id: int,
        values: dict[str, Any],
        *,
        toggle: bool = False,
        tags: list[str] | None = None,
        expected: Versions = None,
    ) -> Row:
        # Within the body; against what is stored, the database's check decides.
        if values.get("recurrence") is not None and "due_at" in values and values["due_at"] is None:
            raise RecurrenceNeedsDueDate()
        if "priority" in values:
            values["priority"] = PRIORITY_RANK[values["priority"]]
        now = utc_now()
        parameters = {
            **self._conditions(task_id, expected),
            "now": now,
            **{f"new_{column}": value for column, value in values.items()},
            **{f"fold_{i}": fold(tag) for i, tag in enumerate(tags or ())},
        }
        folded = folded_text(values.get("title", ""), values.get("description"))
        if "title" in values:
            parameters["new_title_folded"] = folded["title_folded"]
            parameters["new_title_sort"] = folded["title_sort"]
        if "description" in values:
            parameters["new_description_folded"] = folded["description_folded"]
        columns = frozenset(values)
        versions = len(expected or ())
        completes = toggle or values.get("completed") is True
        # A new rule, due date or zone must still come round again: checked on the row as
        # written, in the transaction, which a rule that never would rolls back.
        reschedules = bool(columns & {"due_at", "recurrence", "time_zone"})

        async def one_statement(connection: Connection) -> Row | None:
            """The update alone, declining to complete a recurring occurrence (that needs
            the transaction, for the next occurrence's insert): None when it declined."""
            if expected is not None and not expected:  # If-Match named no version (weak tags only)
                await self._explain_no_row(connection, task_id, expected)
            shape = _UpdateShape(columns, toggle, decline_recurring=completes, versions=versions)
            task = await connection.fetch_one(_update_query(shape), **parameters)
            if task is None and (expected is not None or not completes):
                # A stale (or missing) task is answered here, on this connection: a storm of
                # stale completions opens no transaction. Only a recurring occurrence's
                # completion goes on to the transaction.
                found = await connection.fetch_one(_VERSION, owner_id=self.owner.subject, task_id=task_id)
                if found is None:
                    raise TaskNotFound()
                if expected is not None and found["version"] not in expected:
                    raise PreconditionFailed(found["version"])
            return task

        async def in_transaction(connection: Connection) -> Row:
            if expected is not None and not expected:
                await self._explain_no_row(connection, task_id, expected)
            shape = _UpdateShape(columns, toggle, tags=None if tags is None else len(tags), versions=versions)
            task = await connection.fetch_one(_update_query(shape), **parameters)
            if task is None:
                await self._explain_no_row(connection, task_id, expected)
            assert task is not None
            if (
                reschedules
                and task["recurrence"] is not None
                and task["due_at"] is not None
                and not recurrence.has_occurrence_after(task["recurrence"], task["due_at"], task["time_zone"])
            ):
                raise RecurrenceNeverOccurs()
            if tags is not None:
                await connection.execute(
                    _SET_TAGS, task_id=task_id, owner_id=self.owner.subject, tag_names=_tag_pairs(tags)
                )
                task = _as_given(task, tags)
            if completes and task["completed_at"] == now and task["next_occurrence_id"] is None:
                task["next_occurrence_id"] = await self._next_occurrence(connection, task, now)
            return task

        try:
            if tags is None and not reschedules and not self.db.in_transaction:
                task = await self.db.using(one_statement)
                if task is not None:
                    return task
            return await self.db.atomic(in_transaction)
        except CheckViolationError as error:
            if error.constraint.endswith("recurrence_has_due_at"):
                raise RecurrenceNeedsDueDate() from None
            raise

    async def _next_occurrence(self, connection: Connection, task: Row, now: datetime) -> int | None:
        """Insert the occurrence after `task` (just completed), if its series has one left."""
        if task["recurrence"] is None or task["due_at"] is None:
            return None
        try:
            following = recurrence.next_occurrence(
                task["recurrence"],
                task["due_at"],
                task["time_zone"],
                anchor=task.get("recurrence_anchor"),
                now=now,
            )
        except recurrence.InvalidRecurrenceError:
            # A rule stored before the ranges were checked (BYMONTHDAY=32, say): its series ends.
            logger.warning(
                "a stored recurrence rule is no longer valid; its series ends", extra={"task": task["id"]}
            )
            return None
        if following is None:
            return None
        remind_at = None
        if task["remind_at"] is not None:
            try:
                remind_at = following.due_at + (task["remind_at"] - task["due_at"])
            except OverflowError:
                remind_at = None  # a reminder before the start of time: none
        row = await connection.fetch_one(
            _NEXT_OCCURRENCE,
            owner_id=self.owner.subject,
            task_id=task["id"],
            now=now,
            next_due_at=following.due_at,
            next_remind_at=remind_at,
            next_recurrence=following.rule,
        )
        assert row is not None  # the task is ours: we just completed it
        next_id: int = row["id"]
        return next_id
