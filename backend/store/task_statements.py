"""The statements that read and write one user's tasks, built once per shape and compiled once
per process (`database.Query`). Every statement that touches one task matches `OWNED`, and every
write locks the owner's change counter first (`COUNTER_LOCKED`). The list's filters and sort
are `task_filters`'; the store that sends these, `tasks.OwnedTasks`.
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    SmallInteger,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql

from backend.models import PRIORITY_RANK
from backend.store.database import Query
from backend.store.tables import (
    COUNTER_LOCKED,
    LAST_POSITION,
    OWNED,
    PUBLIC_COLUMNS,
    TASK_COLUMNS,
    TASK_LISTS,
    TASK_TAG_NAMES,
    TASK_TAG_SETS,
    TASKS,
    USERS,
    existing_tag_names,
)

GET = Query(select(*TASK_COLUMNS).where(OWNED))
VERSION = Query(select(TASKS.c.version).where(OWNED))
NOW = bindparam("now", type_=DateTime(timezone=True))


def _expected(versions: int) -> Any:
    """The task's version is one of `expected_0` … (If-Match), checked in the write itself."""
    return TASKS.c.version.in_([bindparam(f"expected_{i}", type_=Integer) for i in range(versions)])


@cache
def delete_query(versions: int) -> Query:
    """Deletion leaves a tombstone (for sync) that no other route sees."""
    statement = update(TASKS).where(OWNED, COUNTER_LOCKED)
    if versions:
        statement = statement.where(_expected(versions))
    values = {"deleted_at": NOW, "updated_at": NOW, "version": TASKS.c.version + 1}
    return Query(statement.values(**values).returning(TASKS.c.id))


DELETE_COMPLETED = Query(
    update(TASKS)
    .where(COUNTER_LOCKED)
    .where(TASKS.c.user_id == bindparam("owner_id"))
    .where(TASKS.c.completed == true())
    .where(TASKS.c.deleted_at.is_(None))
    .values(deleted_at=NOW, updated_at=NOW, version=TASKS.c.version + 1)
)


# --- creating ------------------------------------------------------------------------


def _target_list(given: bool) -> Any:
    """Where a new task goes: the owner's list `new_list_id` (not deleted), or their Inbox.
    A primary-key lookup, or one of the Inbox's unique index. A list given is held FOR KEY
    SHARE: a deletion of it (FOR UPDATE) waits for this create, or this for it and then sees
    the list gone (`store.lists`). The Inbox is never deleted: no lock for it (about 4 % of a
    create in the A/B bench)."""
    statement = select(TASK_LISTS.c.id).where(TASK_LISTS.c.user_id == bindparam("owner_id", type_=String))
    if not given:
        return statement.where(TASK_LISTS.c.inbox == true()).scalar_subquery()
    return (
        statement.where(TASK_LISTS.c.id == bindparam("new_list_id", type_=BigInteger))
        .where(TASK_LISTS.c.deleted_at.is_(None))
        .with_for_update(read=True, key_share=True)
        .scalar_subquery()
    )


def _new_task(count: int, in_list: bool) -> Any:
    """The new task's row, or none when the user already keeps `max_tasks` (their
    counter, kept by triggers, is one primary-key lookup away), or its list is not theirs
    (or the owner has no Inbox yet)."""
    target = _target_list(in_list)
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
        target,
        bindparam("new_parent_id", type_=BigInteger),
        LAST_POSITION,
    ).where(
        func.coalesce(
            select(USERS.c.task_count).where(USERS.c.id == bindparam("owner_id")).scalar_subquery(), 0
        )
        < bindparam("max_tasks", type_=Integer),
        target.is_not(None),
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
        "list_id",
        "parent_id",
        "position",
    ]
    # A new task has no tags of its own yet (the ones it is being given, as first spelled), and
    # no subtasks.
    returned = [*PUBLIC_COLUMNS, existing_tag_names(count)]
    return insert(TASKS).from_select(columns, values).returning(*returned)


@cache
def _upsert_user(known: frozenset[str], only_with_inbox: bool = False) -> postgresql.Insert:
    """Insert the user; if they exist, update the `known` profile columns, only when changed.
    `only_with_inbox`: nothing unless they have their Inbox (see `create_with_user`)."""
    # postgresql.insert compiles for SQLite too: both speak ON CONFLICT.
    row = select(
        bindparam("owner_id", type_=String),
        bindparam("user_email", type_=String),
        bindparam("user_name", type_=String),
        bindparam("now", type_=DateTime(timezone=True)),
    )
    if only_with_inbox:
        row = row.where(
            exists().where(TASK_LISTS.c.user_id == bindparam("owner_id", type_=String), TASK_LISTS.c.inbox)
        )
    statement = postgresql.insert(USERS).from_select(["id", "email", "name", "created_at"], row)
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
def record_user(known: frozenset[str]) -> Query:
    return Query(_upsert_user(known))


@cache
def insert_task(tags: int, in_list: bool) -> Query:
    return Query(_new_task(tags, in_list))


@cache
def create_with_user(known: frozenset[str], tags: int, in_list: bool) -> Query:
    """The user's upsert and the task's insert as one statement (in a WITH clause): atomic
    without a transaction, and one round trip instead of two. A person's first write finds no
    Inbox and writes nothing, not even the user's row; `OwnedTasks.create` then makes the Inbox
    and the task in one transaction (the Inbox's change numbered first)."""
    return Query(_new_task(tags, in_list).add_cte(_upsert_user(known, True).cte("recorded_user")))


SET_TAGS = Query(
    insert(TASK_TAG_SETS).values(
        task_id=bindparam("task_id"), user_id=bindparam("owner_id"), names=bindparam("tag_names")
    )
)

# --- updating ------------------------------------------------------------------------

_COMPLETING_A_RECURRING_OCCURRENCE = and_(
    TASKS.c.recurrence.is_not(None), TASKS.c.next_occurrence_id.is_(None), TASKS.c.completed == false()
)


@dataclass(frozen=True, slots=True)
class UpdateShape:
    columns: frozenset[str]
    toggle: bool = False
    # Decline (update nothing) when the update would complete an occurrence of a
    # recurring task: that takes a transaction, with the next occurrence's insert.
    decline_recurring: bool = False
    tags: int | None = None  # how many tags the task is being given, or None to leave them
    versions: int = 0  # how many versions If-Match allows (0: no condition)


@cache
def update_query(shape: UpdateShape) -> Query:
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


NEXT_OCCURRENCE = Query(
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
            "list_id",
            "position",
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
            TASKS.c.list_id,
            # Just after the occurrence it follows, or (None) last.
            func.coalesce(bindparam("next_position", type_=String), LAST_POSITION),
        ).where(OWNED),
    )
    .returning(TASKS.c.id)
)


# --- stats ---------------------------------------------------------------------------


def _pending(condition: Any = None) -> Any:
    pending = TASKS.c.completed == false()
    return func.count().filter(pending if condition is None else and_(pending, condition))


_STATS = (
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
STATS = Query(_STATS)
STATS_IN_LIST = Query(_STATS.where(TASKS.c.list_id == bindparam("list_id", type_=BigInteger)))
