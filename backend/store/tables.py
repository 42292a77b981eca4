"""SQL shared by the stores: the tables, a task's public columns with its tags, the lock
every write takes first, and the few expressions whose spelling differs between
PostgreSQL and SQLite."""

from datetime import datetime
from typing import Any, NotRequired, TypedDict

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    literal_column,
    null,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import expression
from sqlalchemy.sql.compiler import SQLCompiler

from backend.models import TAG_SEPARATOR, metadata
from backend.store.positions import NUMBERED_DIGITS, NUMBERED_HEAD

TASKS: Table = metadata.tables["tasks"]
USERS: Table = metadata.tables["users"]
TAGS: Table = metadata.tables["tags"]
TASK_TAGS: Table = metadata.tables["task_tags"]
CHANGE_COUNTERS: Table = metadata.tables["change_counters"]
TASK_LISTS: Table = metadata.tables["task_lists"]

# The view whose INSTEAD OF INSERT trigger sets a task's tags from a JSON list of
# [name, folded name] pairs (see the migration). Not in the models' metadata: it is
# a view, which Alembic's comparison would take for a missing table.
TASK_TAG_SETS = Table(
    "task_tag_sets",
    MetaData(),
    Column("task_id", Integer),
    Column("user_id", String),
    Column("names", Text),
)

# One of the owner's tasks, not deleted: a tombstone is gone from every route but sync's.
OWNED: ColumnElement[bool] = (
    (TASKS.c.id == bindparam("task_id"))
    & (TASKS.c.user_id == bindparam("owner_id"))
    & TASKS.c.deleted_at.is_(None)
)


class counter_locked(expression.FunctionElement[bool]):
    """True, once the owner's change counter is locked: on PostgreSQL, a condition that
    takes the counter's row lock before the statement touches any task or tag.

    Every write to a user's tasks takes that lock anyway (the numbering trigger), but only
    after the row it changes. A write holding the counter and wanting a task row (a tag's
    rename touching its tasks, clearing completed tasks) then deadlocked with one holding
    that row and wanting the counter. Taking the counter first, in every write, is one
    order for all. Uncorrelated, the subquery runs once, before the scan (an InitPlan and a
    one-time filter: see tests/test_query_plans.py). SQLite writes one at a time: nothing
    to lock.
    """

    type = Boolean()
    inherit_cache = True


@compiles(counter_locked, "postgresql")
def _lock_the_counter(element: counter_locked, compiler: SQLCompiler, **kw: Any) -> str:
    owner = compiler.process(element.clauses, **kw)
    return (
        "(SELECT count(*) FROM (SELECT 1 FROM change_counters "  # noqa: S608 - no input in it
        f"WHERE change_counters.user_id = {owner} FOR UPDATE) AS locked_counter) >= 0"
    )


@compiles(counter_locked, "sqlite")
def _nothing_to_lock(element: counter_locked, compiler: SQLCompiler, **kw: Any) -> str:
    return "1 = 1"


COUNTER_LOCKED = counter_locked(bindparam("owner_id", type_=String))


class last_position(expression.FunctionElement[str]):
    """A new task's position, last among its siblings (`positions.numbered`): on PostgreSQL the
    `tasks_place_last` trigger writes it from the change number it takes under the counter's
    lock (NULL here asks for that); on SQLite, whose writes take turns, the key of the change
    number the insert is about to take."""

    type = String()
    inherit_cache = True


@compiles(last_position, "postgresql")
def _placed_by_the_trigger(element: last_position, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(NULL AS VARCHAR)"


@compiles(last_position, "sqlite")
def _numbered_here(element: last_position, compiler: SQLCompiler, **kw: Any) -> str:
    owner = compiler.process(element.clauses, **kw)
    return (
        f"('{NUMBERED_HEAD}' || printf('%0{NUMBERED_DIGITS}d', coalesce("  # noqa: S608 - no input in it
        f"(SELECT seq FROM change_counters WHERE change_counters.user_id = {owner}), 0) + 1))"
    )


LAST_POSITION = last_position(bindparam("owner_id", type_=String))


class tag_names(expression.FunctionElement[str]):
    """Names joined by the unit separator (which no tag name may contain)."""

    type = String()
    inherit_cache = True


@compiles(tag_names, "postgresql")
def _string_agg(element: tag_names, compiler: SQLCompiler, **kw: Any) -> str:
    return f"string_agg({compiler.process(element.clauses, **kw)}, chr(31))"


@compiles(tag_names, "sqlite")
def _group_concat(element: tag_names, compiler: SQLCompiler, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)}, char(31))"


assert chr(31) == TAG_SEPARATOR


class _TaskTagNames(expression.ColumnElement[str]):
    """A task's tags in one column: a subquery correlated with `tasks`, written out with
    every column qualified. (SQLAlchemy renders RETURNING on SQLite without table names,
    and an unqualified `id` inside the subquery would be the tag's, not the task's.)"""

    type = String()
    inherit_cache = True


@compiles(_TaskTagNames)
def _task_tag_names(element: _TaskTagNames, compiler: SQLCompiler, **kw: Any) -> str:
    names = compiler.process(tag_names(literal_column("tags.name")), **kw)
    return (
        f"(SELECT {names} FROM task_tags JOIN tags ON tags.id = task_tags.tag_id "  # noqa: S608 - no input in it
        "WHERE task_tags.task_id = tasks.id)"
    )


TASK_TAG_NAMES = _TaskTagNames().label("tags")

# What a task looks like to a client (the folded text and the link back are ours).
PUBLIC_COLUMNS = [
    TASKS.c[name]
    for name in (
        "id",
        "user_id",
        "title",
        "description",
        "completed",
        "created_at",
        "updated_at",
        "priority",
        "due_at",
        "remind_at",
        "reminded_at",
        "recurrence",
        "time_zone",
        "completed_at",
        "next_occurrence_id",
        "version",
        "list_id",
        "parent_id",
        "position",
        "subtask_count",
        "open_subtask_count",
    )
]
TASK_COLUMNS = [*PUBLIC_COLUMNS, TASK_TAG_NAMES]


class TaskRow(TypedDict):
    """A task as the statements return it (`TASK_COLUMNS`): a misspelt key is a type error."""

    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime
    priority: int  # its rank (`PRIORITY_RANK`); the JSON shows the name
    due_at: datetime | None
    remind_at: datetime | None
    reminded_at: datetime | None
    recurrence: str | None
    time_zone: str
    completed_at: datetime | None
    next_occurrence_id: int | None
    version: int
    list_id: int | None  # set on every task the API writes (see `models.Task`)
    parent_id: int | None
    position: str | None  # set on every insert (see `models.Task`)
    subtask_count: int
    open_subtask_count: int
    tags: str | None  # the names joined by TAG_SEPARATOR, in order
    recurrence_anchor: NotRequired[datetime | None]  # returned by updates, never shown


# The one place the two lists could drift apart: checked when the module loads.
assert set(TaskRow.__required_keys__) == {column.name for column in TASK_COLUMNS}, "TaskRow != TASK_COLUMNS"


def existing_tag_names(count: int) -> Any:
    """The stored spellings of the owner's tags among `fold_0` … `fold_<count-1>`: a task
    being given those tags shows them as first spelled."""
    if not count:
        return cast(null(), String).label("tags")
    return (
        select(tag_names(TAGS.c.name))
        .where(TAGS.c.user_id == bindparam("owner_id"))
        .where(TAGS.c.name_folded.in_([bindparam(f"fold_{i}", type_=String) for i in range(count)]))
        .scalar_subquery()
        .label("tags")
    )
