"""Reading and writing tasks, always scoped to their owner.

Every statement that touches one task matches `OWNED`, so a task of another
user is indistinguishable from one that does not exist. Statements are
SQLAlchemy Core with named parameters, built once per shape (the variants of
the list and of updates on first use) and compiled once per process: see
`database.Query`. Rows come back as dicts (`tables.TaskRow` for a task).
The statements are `task_statements`', the list's filters `task_filters`', and the
successor a recurring occurrence's completion creates is `flows`'.

How many statements each write sends (`tests/test_statements.py` holds them to it):
- a plain create is one on PostgreSQL (the user's row in a WITH clause) and two in
  a transaction on SQLite; giving it tags adds one, in the same transaction; a person's very
  first write finds no Inbox and writes nothing, then makes the Inbox, the user's row and the
  task in one transaction (three statements more, once per person);
- a subtask's create locks the counter and reads its parent's chain first (`task_tree`);
- a single-task update is one statement; giving it tags adds one, in a transaction;
  setting its recurrence, due date or time zone makes it transactional, so that a rule
  that would never occur again is rolled back;
- completing an occurrence of a recurring task is one statement that declines
  (it will not complete it alone), then the completion and the next occurrence's
  insert, in one transaction: the next occurrence exists if and only if the
  completion committed.
A write that matches no row (412 or 404) explains itself with one more statement, on
the same connection: never a second one while holding the first (see `database`).

On PostgreSQL every write locks the owner's change counter before any task or tag
(`tables.COUNTER_LOCKED`): one lock order for all of a user's writes, so none deadlock.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from backend.auth.tokens import TokenClaims
from backend.domain import recurrence
from backend.domain.cursors import Cursor
from backend.domain.recurrence import zone
from backend.models import (
    PRIORITY_RANK,
    TAG_SEPARATOR,
    SortOrder,
    TaskCreate,
    TaskMove,
    TaskReplace,
    TaskSort,
    TaskUpdate,
    fold,
    folded_text,
    utc_now,
)
from backend.store import task_tree
from backend.store.database import CheckViolationError, Connection, Database, Row
from backend.store.flows import create_successor
from backend.store.lists import CREATE_INBOX, OWNS_LIST
from backend.store.tables import TaskRow
from backend.store.task_errors import (
    ParentNotFound,
    PreconditionFailed,
    RecurrenceNeedsDueDate,
    RecurrenceNeverOccurs,
    SubtaskRecurs,
    TaskLimitReached,
    TaskListNotFound,
    TaskNotFound,
)
from backend.store.task_filters import WALK_SHARE, ListShape, TaskFilters, list_query, total_query
from backend.store.task_statements import (
    DELETE_COMPLETED,
    GET,
    SET_TAGS,
    STATS,
    STATS_IN_LIST,
    VERSION,
    UpdateShape,
    create_with_user,
    delete_query,
    insert_task,
    record_user,
    update_query,
)
from backend.store.task_tree import LOCK_COUNTER, parent_of_new_task

logger = logging.getLogger("backend.store")

# MAX_TASKS_PER_USER=0: no cap (a bound no counter reaches).
NO_CAP = 2**62

# The versions an If-Match header allows; None: no condition (no header, or `*`).
Versions = frozenset[int] | None


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: Sequence[TaskRow]
    total: int
    more: bool = False  # after a cursor: whether tasks follow this page


def _tag_pairs(tags: Sequence[str]) -> str:
    """The JSON list of [name, folded name] pairs the `task_tag_sets` trigger reads."""
    return json.dumps([[name, fold(name)] for name in tags])


def _as_given(row: TaskRow, tags: Sequence[str]) -> TaskRow:
    """The row, its tags those it is being given: each in its stored spelling if the tag
    exists already (read by the same statement), else as sent."""
    stored = {fold(name): name for name in (row.get("tags") or "").split(TAG_SEPARATOR) if name}
    row["tags"] = TAG_SEPARATOR.join(stored.get(fold(name), name) for name in tags) or None
    return row


def _task(row: Row | None) -> TaskRow | None:
    """A row of `TASK_COLUMNS`, typed as such."""
    return cast(TaskRow | None, row)


@dataclass(frozen=True, slots=True)
class _Update:
    """One update of one task, as the statements take it."""

    task_id: int
    columns: frozenset[str]
    parameters: dict[str, Any]
    toggle: bool
    tags: list[str] | None
    expected: Versions
    now: datetime

    @property
    def completes(self) -> bool:
        return self.toggle or self.parameters.get("new_completed") is True

    @property
    def reschedules(self) -> bool:
        """A new rule, due date or zone: it must still come round again, checked on the row as
        written, in a transaction that a rule that never would rolls back."""
        return bool(self.columns & {"due_at", "recurrence", "time_zone"})

    @property
    def versions(self) -> int:
        return len(self.expected or ())


async def _completed_with_subtasks(connection: Connection, task: TaskRow, update: _Update) -> TaskRow:
    """The row as it is once its open subtasks were completed with it: the database's triggers
    did that, and recounted them (a change of the task: its version), after the statement's
    RETURNING was read. Read again, only then."""
    if update.completes and task["completed"] and task["open_subtask_count"]:
        again = _task(await connection.fetch_one(GET, owner_id=task["user_id"], task_id=task["id"]))
        if again is not None:
            return {**again, "recurrence_anchor": task.get("recurrence_anchor")}
    return task


class OwnedTasks:
    """One user's tasks. Every method is scoped to `owner`: handlers get this object
    (from `api.rest.dependencies.get_owned_tasks`) and have no other way to reach a task."""

    __slots__ = ("db", "max_tasks", "owner")

    def __init__(self, db: Database, owner: TokenClaims, *, max_tasks: int = 0) -> None:
        self.db = db
        self.owner = owner
        self.max_tasks = max_tasks  # 0: no cap

    def within(self, db: Database) -> "OwnedTasks":
        """The same tasks, every statement on `db` (one open transaction: see
        `api.rest.idempotency.answer`)."""
        return OwnedTasks(db, self.owner, max_tasks=self.max_tasks)

    async def create(self, data: TaskCreate) -> TaskRow:
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
        if data.parent_id is not None:
            if data.recurrence is not None:
                raise SubtaskRecurs("recurrence")
            return _as_given(
                await self.db.atomic(lambda connection: self._subtask(connection, data, values, known)),
                data.tags,
            )
        in_list = data.list_id is not None
        values["new_list_id"] = data.list_id
        values["new_parent_id"] = None
        one_statement = self.db.writes_in_with

        async def attempt() -> TaskRow | None:
            if one_statement and not tags:
                # On a remote database such as Neon each round trip is a millisecond
                # or more, and the user's row stays locked for less time.
                return _task(await self.db.fetch_one(create_with_user(known, 0, in_list), **values))
            return await self.db.atomic(
                lambda connection: self._insert(connection, values, known, data.tags, in_list=in_list)
            )

        task = await attempt()
        if task is None and not in_list and one_statement:
            # Perhaps the person's first write (it wrote nothing): their Inbox, then the user and
            # the task, in one transaction, so a task that fails leaves neither behind (two first
            # writes racing make one Inbox).
            async def first_write(connection: Connection) -> TaskRow | None:
                await connection.execute(CREATE_INBOX, owner_id=owner.subject, now=now)
                return await self._insert(connection, values, known, data.tags, in_list=False)

            task = await self.db.atomic(first_write)
        if task is None:
            if (
                in_list
                and await self.db.fetch_one(OWNS_LIST, owner_id=owner.subject, list_id=data.list_id) is None
            ):
                raise TaskListNotFound()
            raise TaskLimitReached(self.max_tasks)
        return _as_given(task, data.tags)

    async def _insert(
        self,
        connection: Connection,
        values: dict[str, Any],
        known: frozenset[str],
        tags: Sequence[str],
        *,
        in_list: bool,
    ) -> TaskRow | None:
        """The user's row, the task and its tags, on `connection` (in a transaction). Where a
        statement may write in its WITH clause (PostgreSQL), the user's upsert and the insert are
        one statement; elsewhere (SQLite), two. None: the cap, or no such list of the owner's."""
        if self.db.writes_in_with:
            created = _task(await connection.fetch_one(create_with_user(known, len(tags), in_list), **values))
        else:
            await connection.execute(record_user(known), **values)
            created = _task(await connection.fetch_one(insert_task(len(tags), in_list), **values))
            if created is None and not in_list:
                # Perhaps the person's first write: their Inbox, in the same transaction.
                await connection.execute(CREATE_INBOX, owner_id=self.owner.subject, now=values["now"])
                created = _task(await connection.fetch_one(insert_task(len(tags), in_list), **values))
        if created is not None and tags:
            await connection.execute(
                SET_TAGS, task_id=created["id"], owner_id=self.owner.subject, tag_names=_tag_pairs(tags)
            )
        return created

    async def _subtask(
        self, connection: Connection, data: TaskCreate, values: dict[str, Any], known: frozenset[str]
    ) -> TaskRow:
        """A new subtask, last under its parent, in the parent's list: checked and written with the
        owner's counter locked (`task_tree`), so the parent cannot be deleted or moved between."""
        assert data.parent_id is not None
        owner_id = self.owner.subject
        if await connection.fetch_one(LOCK_COUNTER, owner_id=owner_id) is None:
            raise ParentNotFound()  # no task written yet: no parent either
        values["new_list_id"] = await parent_of_new_task(connection, owner_id, data.parent_id, data.list_id)
        values["new_parent_id"] = data.parent_id
        created = await self._insert(connection, values, known, data.tags, in_list=True)
        if created is None:
            raise TaskLimitReached(self.max_tasks)  # the list is the parent's, held: only the cap
        return created

    async def move(self, task_id: int, target: TaskMove, *, expected: Versions = None) -> TaskRow:
        """Put the task under `target.parent_id` (or at the top) of `target.list_id` (or its parent's
        list, or its own), after `target.after_id` (or first): one transaction, one row written (and
        its subtasks, when it changes list), with a rare rebalance of its new siblings' keys."""
        if expected is not None and not expected:  # If-Match named weak tags only
            await self.db.using(lambda connection: self._explain_no_row(connection, task_id, expected))
        return await self.db.atomic(
            lambda connection: task_tree.move(
                connection, self.owner.subject, task_id, target, expected, utc_now()
            )
        )

    async def get(self, task_id: int) -> TaskRow:
        task = _task(await self.db.fetch_one(GET, owner_id=self.owner.subject, task_id=task_id))
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
        shape: ListShape,
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
            return TaskPage(tasks=cast(list[TaskRow], rows), total=counted["total"])
        rows = await self.db.fetch_all(
            list_query(filters.status, sort, order, shape), limit=limit, offset=offset, **parameters
        )
        if rows and filters.only_status:
            total: int = rows[0].pop("total")
            return TaskPage(tasks=cast(list[TaskRow], rows), total=total)
        # Filtered beyond the status (or an empty page, which carries no row): count.
        counted = await self.db.fetch_one(total_query(replace(shape, after=None)), **parameters)
        for row in rows:
            row.pop("total", None)
        return TaskPage(tasks=cast(list[TaskRow], rows), total=counted["total"] if counted else 0)

    async def stats(self, time_zone: str, list_id: int | None = None) -> Row:
        """Counts of the owner's tasks (in one list of theirs, if given); `due_today` is today's
        date in `time_zone`."""
        now = utc_now()
        # Local midnight to local midnight (a day of 23 or 25 hours when the clocks change).
        day_starts = now.astimezone(zone(time_zone)).replace(hour=0, minute=0, second=0, microsecond=0)
        day_ends = day_starts + timedelta(days=1)
        row = await self.db.fetch_one(
            STATS if list_id is None else STATS_IN_LIST,
            owner_id=self.owner.subject,
            list_id=list_id,
            now=now,
            day_starts=day_starts.astimezone(UTC),
            day_ends=day_ends.astimezone(UTC),
        )
        assert row is not None  # an aggregate always answers one row
        return row

    async def delete_completed(self) -> int:
        """Delete every completed task of the owner, in one statement; how many there were."""
        return await self.db.execute(DELETE_COMPLETED, owner_id=self.owner.subject, now=utc_now())

    async def replace(self, task_id: int, data: TaskReplace, *, expected: Versions = None) -> TaskRow:
        values = data.model_dump(exclude={"tags"})
        # Unchanged when omitted: completed (or null, as PUT always took it) and the
        # organising fields. The description becomes null when omitted, as it always did.
        for name in ("completed", "priority", "due_at", "remind_at", "recurrence", "time_zone"):
            if name not in data.model_fields_set or (name == "completed" and data.completed is None):
                del values[name]
        return await self._update(task_id, values, tags=data.tags, expected=expected)

    async def update(self, task_id: int, data: TaskUpdate, *, expected: Versions = None) -> TaskRow:
        values = data.model_dump(exclude_unset=True, exclude={"tags"})
        tags = data.tags if "tags" in data.model_fields_set else None
        return await self._update(task_id, values, tags=tags, expected=expected)

    async def set_completion(
        self, task_id: int, completed: bool | None, *, expected: Versions = None
    ) -> TaskRow:
        """Set `completed`, or flip it when `completed` is None."""
        if completed is None:
            return await self._update(task_id, {}, toggle=True, expected=expected)
        return await self._update(task_id, {"completed": completed}, expected=expected)

    async def delete(self, task_id: int, *, expected: Versions = None) -> None:
        """Delete the task: a tombstone stays for sync (SYNC_RETENTION_DAYS)."""
        parameters = self._conditions(task_id, expected)
        query = delete_query(len(expected or ()))

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
            found = await connection.fetch_one(VERSION, owner_id=self.owner.subject, task_id=task_id)
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
    ) -> TaskRow:
        """One statement when it can (no tags, no new schedule, not completing a recurring
        occurrence), else a transaction; a stored rule that needs a due date is a 422 either way."""
        # Within the body; against what is stored, the database's check decides.
        if values.get("recurrence") is not None and "due_at" in values and values["due_at"] is None:
            raise RecurrenceNeedsDueDate()
        if "priority" in values:
            values["priority"] = PRIORITY_RANK[values["priority"]]
        parameters = {
            **self._conditions(task_id, expected),
            **{f"new_{column}": value for column, value in values.items()},
            **{f"fold_{i}": fold(tag) for i, tag in enumerate(tags or ())},
        }
        folded = folded_text(values.get("title", ""), values.get("description"))
        if "title" in values:
            parameters["new_title_folded"] = folded["title_folded"]
            parameters["new_title_sort"] = folded["title_sort"]
        if "description" in values:
            parameters["new_description_folded"] = folded["description_folded"]
        now = parameters["now"] = utc_now()
        update = _Update(task_id, frozenset(values), parameters, toggle, tags, expected, now)
        try:
            # Inside a transaction already (a keyed write's), one statement first would save
            # nothing and could cost one more: the transactional path at once.
            if tags is None and not update.reschedules and not self.db.in_transaction:
                task = await self.db.using(lambda connection: self._in_one_statement(connection, update))
                if task is not None:
                    return task
            return await self.db.atomic(lambda connection: self._in_transaction(connection, update))
        except CheckViolationError as error:
            if error.constraint.endswith("recurrence_has_due_at"):
                raise RecurrenceNeedsDueDate() from None
            if error.constraint.endswith("subtask_not_recurring"):
                raise SubtaskRecurs("recurrence") from None
            raise

    async def _in_one_statement(self, connection: Connection, update: _Update) -> TaskRow | None:
        """The update alone, declining to complete a recurring occurrence (that needs the
        transaction, for its successor's insert): None when it declined."""
        if update.expected is not None and not update.expected:  # If-Match named weak tags only
            await self._explain_no_row(connection, update.task_id, update.expected)
        shape = UpdateShape(
            update.columns, update.toggle, decline_recurring=update.completes, versions=update.versions
        )
        task = _task(await connection.fetch_one(update_query(shape), **update.parameters))
        if task is not None:
            return await _completed_with_subtasks(connection, task, update)
        if update.expected is not None or not update.completes:
            # A stale (or missing) task is answered here, on this connection: a storm of stale
            # completions opens no transaction. Only a recurring occurrence's completion goes
            # on to the transaction.
            found = await connection.fetch_one(VERSION, owner_id=self.owner.subject, task_id=update.task_id)
            if found is None:
                raise TaskNotFound()
            if update.expected is not None and found["version"] not in update.expected:
                raise PreconditionFailed(found["version"])
        return None

    async def _in_transaction(self, connection: Connection, update: _Update) -> TaskRow:
        """The update, its tags, the check that a new schedule still occurs, and the successor
        of a completed recurring occurrence (`flows`), committed together or not at all."""
        if update.expected is not None and not update.expected:
            await self._explain_no_row(connection, update.task_id, update.expected)
        shape = UpdateShape(
            update.columns,
            update.toggle,
            tags=None if update.tags is None else len(update.tags),
            versions=update.versions,
        )
        task = _task(await connection.fetch_one(update_query(shape), **update.parameters))
        if task is None:
            await self._explain_no_row(connection, update.task_id, update.expected)
        assert task is not None
        task = await _completed_with_subtasks(connection, task, update)
        if (
            update.reschedules
            and task["recurrence"] is not None
            and task["due_at"] is not None
            and not recurrence.has_occurrence_after(task["recurrence"], task["due_at"], task["time_zone"])
        ):
            raise RecurrenceNeverOccurs()
        if update.tags is not None:
            await connection.execute(
                SET_TAGS,
                task_id=update.task_id,
                owner_id=self.owner.subject,
                tag_names=_tag_pairs(update.tags),
            )
            task = _as_given(task, update.tags)
        if update.completes and task["completed_at"] == update.now and task["next_occurrence_id"] is None:
            task["next_occurrence_id"] = await create_successor(
                connection, self.owner.subject, task, update.now
            )
        return task
