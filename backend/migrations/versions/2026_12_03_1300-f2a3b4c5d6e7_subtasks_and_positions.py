"""subtasks and the order people choose: `tasks.parent_id` and `tasks.position`

- `parent_id`: the task a subtask is under (same person, same list; ON DELETE CASCADE: purging
  a tombstone takes its subtasks' tombstones). A subtask does not recur of its own (CHECK
  `subtask_not_recurring`): it comes round with its parent, whose next occurrence gets copies.
- `position`: a task's place among its siblings (same list, same parent), a fractional-indexing
  key compared bytewise (the C collation on PostgreSQL). A new task goes last: its key is
  `'r'` and its change number in 18 decimal digits, a valid key greater than any key the owner's
  tasks had before it (see `store/positions.py`). On PostgreSQL a BEFORE INSERT trigger, named
  to fire after `tasks_number_change` (triggers fire by name), writes it from the change number
  that trigger has just taken, under the counter's lock: concurrent creates never share a key,
  and a server of the version before (a rolling deploy) gets keys too. On SQLite, one process
  whose version is the migrations', the insert computes it (`task_statements`).
- Existing tasks keep their creation order: keys from their rank in their list, which is at
  most the owner's change count. Not a change a sync client must fetch: numbering off.
- `subtask_count`, `open_subtask_count`: a task's direct subtasks (not deleted), and those not
  completed, kept by triggers as subtasks are added, completed, reopened, deleted or moved: a
  page reads two columns, not two subqueries per task (LIST was 0.83 of the API before with
  the subqueries, TOGGLE 0.85 with the cascade's trigger firing for every completion: `make
  bench --against 82c5291`). A count that changes is a change of the parent (its version, its
  number, its `task.updated`): its JSON changed, and a client holding it must hear so. A
  tombstone's counts are left alone.
- Subtasks follow their task, in the same statement whatever wrote it (triggers, on both
  databases): a task completed completes its open subtasks, deleted deletes them (tombstones),
  moved to another list moves them. Each is a change of the subtask (numbered, with its event).
  On PostgreSQL each statement in a trigger function reads a fresh snapshot: a subtask another
  transaction committed while this one waited for the counter is seen.
- Indexes: (list_id, position, id), a list in its order; (parent_id, position, id), a task's
  subtasks in theirs, their counts and the cascades; (user_id, position, id), every list at once.

Revision ID: f2a3b4c5d6e7
Revises: e1f2a3b4c5d6
Create Date: 2026-12-03 13:00:00
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "f2a3b4c5d6e7"
down_revision: str | None = "e1f2a3b4c5d6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSITION = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")
_INDEXES = {
    "ix_tasks_list_id_position_id": ["list_id", "position", "id"],
    "ix_tasks_parent_id_position_id": ["parent_id", "position", "id"],
    "ix_tasks_user_id_position_id": ["user_id", "position", "id"],
}
# A task's subtasks at every level (not deleted; a cycle cannot be written, UNION would end one).
_SUBTREE = (
    "id IN (WITH RECURSIVE subtree(id) AS ("
    "SELECT id FROM tasks WHERE parent_id = NEW.id AND deleted_at IS NULL "
    "UNION SELECT tasks.id FROM tasks JOIN subtree ON tasks.parent_id = subtree.id WHERE tasks.deleted_at IS NULL"
    ") SELECT id FROM subtree)"
)
_COMPLETE = (
    "UPDATE tasks SET completed = true, completed_at = NEW.completed_at, updated_at = NEW.updated_at, "
    f"version = version + 1 WHERE NOT completed AND deleted_at IS NULL AND {_SUBTREE}"
)
_DELETE = (
    "UPDATE tasks SET deleted_at = NEW.deleted_at, updated_at = NEW.updated_at, version = version + 1 "
    f"WHERE deleted_at IS NULL AND {_SUBTREE}"
)
_MOVE = (
    "UPDATE tasks SET list_id = NEW.list_id, updated_at = NEW.updated_at, version = version + 1 "
    f"WHERE list_id <> NEW.list_id AND deleted_at IS NULL AND {_SUBTREE}"
)


# A parent's counts, by how much (`total`, `open`: SQL expressions); a tombstone's are left.
def _recount(parent: str, total: str, open_: str) -> str:
    return (
        f"UPDATE tasks SET subtask_count = subtask_count + ({total}), "
        f"open_subtask_count = open_subtask_count + ({open_}), version = version + 1 "
        f"WHERE id = {parent} AND deleted_at IS NULL"
    )


# What a row adds to its parent's counts, before (OLD) and after (NEW) a change.
_WAS, _WAS_OPEN = "(OLD.deleted_at IS NULL)", "(OLD.deleted_at IS NULL AND NOT OLD.completed)"
_IS, _IS_OPEN = "(NEW.deleted_at IS NULL)", "(NEW.deleted_at IS NULL AND NOT NEW.completed)"
_SQLITE_UP = [
    # Only a task with subtasks has anything to cascade to: the others pay nothing.
    f"""CREATE TRIGGER tasks_complete_subtasks AFTER UPDATE OF completed ON tasks
WHEN NEW.completed AND NOT OLD.completed AND NEW.subtask_count > 0 BEGIN {_COMPLETE}; END""",
    f"""CREATE TRIGGER tasks_delete_subtasks AFTER UPDATE OF deleted_at ON tasks
WHEN NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL AND NEW.subtask_count > 0 BEGIN {_DELETE}; END""",
    f"""CREATE TRIGGER tasks_move_subtasks AFTER UPDATE OF list_id ON tasks
WHEN NEW.list_id IS NOT OLD.list_id AND NEW.subtask_count > 0 BEGIN {_MOVE}; END""",
    f"""CREATE TRIGGER tasks_count_subtasks_insert AFTER INSERT ON tasks
WHEN NEW.parent_id IS NOT NULL AND NEW.deleted_at IS NULL BEGIN
    {_recount("NEW.parent_id", "1", "NOT NEW.completed")};
END""",
    f"""CREATE TRIGGER tasks_count_subtasks_update AFTER UPDATE OF parent_id, completed, deleted_at ON tasks
WHEN OLD.parent_id IS NOT NULL OR NEW.parent_id IS NOT NULL BEGIN
    {_recount("OLD.parent_id", f"-{_WAS}", f"-{_WAS_OPEN}")}
        AND OLD.parent_id IS NOT NEW.parent_id AND {_WAS};
    {_recount("NEW.parent_id", _IS, _IS_OPEN)} AND OLD.parent_id IS NOT NEW.parent_id AND {_IS};
    {_recount("NEW.parent_id", f"{_IS} - {_WAS}", f"{_IS_OPEN} - {_WAS_OPEN}")}
        AND OLD.parent_id IS NEW.parent_id AND ({_IS} <> {_WAS} OR {_IS_OPEN} <> {_WAS_OPEN});
END""",
]
_PG_UP = [
    f"""
CREATE FUNCTION cascade_to_subtasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
        {_DELETE};
        RETURN NULL;
    END IF;
    IF NEW.completed AND NOT OLD.completed THEN
        {_COMPLETE};
    END IF;
    IF NEW.list_id IS DISTINCT FROM OLD.list_id THEN
        {_MOVE};
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER tasks_cascade_to_subtasks AFTER UPDATE OF completed, deleted_at, list_id ON tasks
FOR EACH ROW WHEN (
    NEW.subtask_count > 0 AND (
        (NEW.completed AND NOT OLD.completed)
        OR (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL)
        OR NEW.list_id IS DISTINCT FROM OLD.list_id
    )
) EXECUTE FUNCTION cascade_to_subtasks()""",
    f"""
CREATE FUNCTION count_subtasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_recount("NEW.parent_id", "1", "(NOT NEW.completed)::int")};
    ELSIF OLD.parent_id IS NOT DISTINCT FROM NEW.parent_id THEN
        IF {_IS} <> {_WAS} OR {_IS_OPEN} <> {_WAS_OPEN} THEN
            {_recount("NEW.parent_id", f"{_IS}::int - {_WAS}::int", f"{_IS_OPEN}::int - {_WAS_OPEN}::int")};
        END IF;
    ELSE
        IF OLD.parent_id IS NOT NULL AND {_WAS} THEN
            {_recount("OLD.parent_id", "-1", f"-{_WAS_OPEN}::int")};
        END IF;
        IF NEW.parent_id IS NOT NULL AND {_IS} THEN
            {_recount("NEW.parent_id", "1", f"{_IS_OPEN}::int")};
        END IF;
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER tasks_count_subtasks_insert AFTER INSERT ON tasks
FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL AND NEW.deleted_at IS NULL) EXECUTE FUNCTION count_subtasks()""",
    """
CREATE TRIGGER tasks_count_subtasks_update AFTER UPDATE OF parent_id, completed, deleted_at ON tasks
FOR EACH ROW WHEN (OLD.parent_id IS NOT NULL OR NEW.parent_id IS NOT NULL) EXECUTE FUNCTION count_subtasks()""",
    """
CREATE FUNCTION place_task_last() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.position := 'r' || lpad(NEW.change_seq::text, 18, '0');
    RETURN NEW;
END
$$""",
    """
CREATE TRIGGER tasks_place_last BEFORE INSERT ON tasks
FOR EACH ROW WHEN (NEW.position IS NULL) EXECUTE FUNCTION place_task_last()""",
]


@contextmanager
def _unnumbered() -> Iterator[None]:
    """Updates no sync client needs to see: the numbering trigger off around them."""
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_number_change")
        yield
        op.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_number_change")
    else:
        definition = connection.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'tasks_number_update'")
        ).scalar_one()
        op.execute("DROP TRIGGER tasks_number_update")
        yield
        op.execute(definition)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.add_column("tasks", sa.Column("parent_id", sa.BigInteger(), nullable=True))
        op.create_foreign_key(
            op.f("fk_tasks_parent_id_tasks"), "tasks", "tasks", ["parent_id"], ["id"], ondelete="CASCADE"
        )
        op.create_check_constraint(
            op.f("ck_tasks_subtask_not_recurring"), "tasks", "parent_id IS NULL OR recurrence IS NULL"
        )
    else:
        # Plain ALTER TABLE (a batch rebuild of `tasks` would drop its triggers).
        op.execute(
            "ALTER TABLE tasks ADD COLUMN parent_id INTEGER "
            "CONSTRAINT fk_tasks_parent_id_tasks REFERENCES tasks (id) ON DELETE CASCADE "
            "CONSTRAINT ck_tasks_subtask_not_recurring CHECK (parent_id IS NULL OR recurrence IS NULL)"
        )
    op.add_column("tasks", sa.Column("position", _POSITION, nullable=True))
    for column in ("subtask_count", "open_subtask_count"):
        op.add_column("tasks", sa.Column(column, sa.Integer(), server_default="0", nullable=False))
    digits = "lpad(rank::text, 18, '0')" if dialect == "postgresql" else "printf('%018d', rank)"
    with _unnumbered():
        op.execute(
            f"UPDATE tasks SET position = (SELECT 'r' || {digits} FROM ("
            "SELECT id, row_number() OVER (PARTITION BY list_id ORDER BY created_at, id) AS rank "
            "FROM tasks) AS ranked WHERE ranked.id = tasks.id)"
        )
    # Each key stays below the next new task's (a counter that had not yet counted every task,
    # were there one, is brought up to the count).
    op.execute(
        "UPDATE change_counters SET seq = (SELECT count(*) FROM tasks WHERE tasks.user_id = change_counters.user_id) "
        "WHERE seq < (SELECT count(*) FROM tasks WHERE tasks.user_id = change_counters.user_id)"
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, "tasks", columns, unique=False)
    for statement in _PG_UP if dialect == "postgresql" else _SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER tasks_count_subtasks_update ON tasks")
        op.execute("DROP TRIGGER tasks_count_subtasks_insert ON tasks")
        op.execute("DROP FUNCTION count_subtasks()")
        op.execute("DROP TRIGGER tasks_cascade_to_subtasks ON tasks")
        op.execute("DROP FUNCTION cascade_to_subtasks()")
        op.execute("DROP TRIGGER tasks_place_last ON tasks")
        op.execute("DROP FUNCTION place_task_last()")
    else:
        for name in (
            "tasks_complete_subtasks",
            "tasks_delete_subtasks",
            "tasks_move_subtasks",
            "tasks_count_subtasks_insert",
            "tasks_count_subtasks_update",
        ):
            op.execute(f"DROP TRIGGER {name}")
    for name in _INDEXES:
        op.drop_index(name, table_name="tasks")
    op.execute("ALTER TABLE tasks DROP COLUMN position")
    op.execute("ALTER TABLE tasks DROP COLUMN subtask_count")
    op.execute("ALTER TABLE tasks DROP COLUMN open_subtask_count")
    if dialect == "postgresql":
        op.drop_constraint(op.f("ck_tasks_subtask_not_recurring"), "tasks", type_="check")
        op.drop_constraint(op.f("fk_tasks_parent_id_tasks"), "tasks", type_="foreignkey")
    op.execute("ALTER TABLE tasks DROP COLUMN parent_id")
