"""Operations of several steps, each run inside the transaction of the write that starts it.

Today one: completing an occurrence of a recurring task creates its successor, the next
occurrence, just after it among its siblings and with pending copies of its subtasks, in the
completion's transaction, so the successor exists if and only if the completion committed.
"""

import logging
from datetime import datetime

from backend.domain import recurrence
from backend.store.database import Connection
from backend.store.tables import TaskRow
from backend.store.task_statements import NEXT_OCCURRENCE
from backend.store.task_tree import copy_subtasks, next_to

logger = logging.getLogger("backend.store")


async def create_successor(connection: Connection, owner_id: str, task: TaskRow, now: datetime) -> int | None:
    """Insert the occurrence after `task` (just completed, on `connection`), if its series has one
    left: the first occurrence after now and after its due date, its time of day and day of month
    taken from the series' anchor; its id."""
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
        NEXT_OCCURRENCE,
        owner_id=owner_id,
        task_id=task["id"],
        now=now,
        next_due_at=following.due_at,
        next_remind_at=remind_at,
        next_recurrence=following.rule,
        next_position=await next_to(connection, owner_id, task),
    )
    assert row is not None  # the task is ours: we just completed it
    next_id: int = row["id"]
    if task["subtask_count"]:
        await copy_subtasks(connection, owner_id, task["id"], next_id, now)
    return next_id
