"""events and reminders: every numbered change of a task is an event, written by trigger

- `events`: one row per change of a user's tasks, keyed by the user and the change's
  number (`tasks.change_seq`), written by a trigger in the statement that makes the
  change: a rolled-back write leaves none, a committed one always has its own. Its type
  says what the change did: `task.created`, `task.updated`, `task.completed`,
  `task.reopened`, `task.deleted`, or `reminder.due` (the change that set `reminded_at`).
  Old events are purged by the server after SYNC_RETENTION_DAYS (`occurred_at`'s index).
- `tasks.reminded_at`: when the task's reminder fired (read-only in its JSON), and the
  partial index `ix_tasks_armed_reminders` on `remind_at` over the reminders still to fire,
  which the scheduler scans across users.

On SQLite the numbering triggers themselves write the event (they alone see the change's
OLD and NEW rows and its number); on PostgreSQL an AFTER trigger beside the numbering one.

Revision ID: a7b8c9d0e1f2
Revises: f6a7b8c9d0e1
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7b8c9d0e1f2"
down_revision: str | None = "f6a7b8c9d0e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The reminders still to fire (a migration keeps its own copy of the condition).
_ARMED = (
    "remind_at IS NOT NULL AND NOT completed AND deleted_at IS NULL "
    "AND (reminded_at IS NULL OR reminded_at < remind_at)"
)

# What a change did, from the task before (OLD) and after (NEW) it: the first that holds.
_UPDATE_TYPE = """CASE
    WHEN NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN 'task.deleted'
    WHEN NEW.reminded_at IS NOT NULL AND (OLD.reminded_at IS NULL OR NEW.reminded_at <> OLD.reminded_at)
        THEN 'reminder.due'
    WHEN NEW.completed AND NOT OLD.completed THEN 'task.completed'
    WHEN OLD.completed AND NOT NEW.completed THEN 'task.reopened'
    ELSE 'task.updated'
END"""

_POSTGRESQL_UP = [
    f"""
CREATE FUNCTION record_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
    VALUES (
        NEW.user_id,
        NEW.change_seq,
        CASE WHEN TG_OP = 'INSERT' THEN 'task.created' ELSE {_UPDATE_TYPE} END,
        NEW.id,
        now()
    );
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER tasks_record_insert AFTER INSERT ON tasks
FOR EACH ROW EXECUTE FUNCTION record_task_event()""",
    # Only numbered changes: the numbering trigger is disabled around updates that change
    # nothing a client sees (data migrations), and so is this one then.
    """
CREATE TRIGGER tasks_record_update AFTER UPDATE ON tasks
FOR EACH ROW WHEN (NEW.change_seq IS DISTINCT FROM OLD.change_seq) EXECUTE FUNCTION record_task_event()""",
]

_POSTGRESQL_DOWN = [
    "DROP TRIGGER tasks_record_update ON tasks",
    "DROP TRIGGER tasks_record_insert ON tasks",
    "DROP FUNCTION record_task_event()",
]

# SQLite: the numbering triggers, as revisions d4e5f6a7b8c9 (insert) and f6a7b8c9d0e1
# (update) made them, and as this one makes them (a migration keeps its own copies).
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
_SQLITE_COUNTER = "(SELECT seq FROM change_counters WHERE user_id = NEW.user_id)"
_SQLITE_BEFORE = {
    "tasks_number_insert": """
        CREATE TRIGGER tasks_number_insert AFTER INSERT ON tasks BEGIN
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE tasks SET change_seq = (SELECT seq FROM change_counters WHERE user_id = NEW.user_id)
                WHERE id = NEW.id;
        END""",
    "tasks_number_update": """
        CREATE TRIGGER tasks_number_update AFTER UPDATE ON tasks WHEN NEW.change_seq = OLD.change_seq BEGIN
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE tasks SET change_seq = (SELECT seq FROM change_counters WHERE user_id = NEW.user_id)
                WHERE id = NEW.id;
        END""",
}
_SQLITE_AFTER = {
    "tasks_number_insert": f"""
        CREATE TRIGGER tasks_number_insert AFTER INSERT ON tasks BEGIN
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE tasks SET change_seq = {_SQLITE_COUNTER} WHERE id = NEW.id;
            INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
                VALUES (NEW.user_id, {_SQLITE_COUNTER}, 'task.created', NEW.id, {_SQLITE_NOW});
        END""",
    "tasks_number_update": f"""
        CREATE TRIGGER tasks_number_update AFTER UPDATE ON tasks WHEN NEW.change_seq = OLD.change_seq BEGIN
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE tasks SET change_seq = {_SQLITE_COUNTER} WHERE id = NEW.id;
            INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
                VALUES (NEW.user_id, {_SQLITE_COUNTER}, {_UPDATE_TYPE}, NEW.id, {_SQLITE_NOW});
        END""",
}


def _replace_sqlite_triggers(triggers: dict[str, str]) -> None:
    for name, definition in triggers.items():
        op.execute(f"DROP TRIGGER {name}")
        op.execute(definition)


def upgrade() -> None:
    # A plain ALTER TABLE (not a batch rebuild, which would drop the SQLite triggers).
    op.add_column("tasks", sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_tasks_armed_reminders",
        "tasks",
        ["remind_at"],
        unique=False,
        postgresql_where=sa.text(_ARMED),
        sqlite_where=sa.text(_ARMED),
    )
    op.create_table(
        "events",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "sequence", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_occurred_at"), "events", ["occurred_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRESQL_UP:
            op.execute(statement)
    else:
        _replace_sqlite_triggers(_SQLITE_AFTER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRESQL_DOWN:
            op.execute(statement)
    else:
        _replace_sqlite_triggers(_SQLITE_BEFORE)
    op.drop_index(op.f("ix_events_occurred_at"), table_name="events")
    op.drop_table("events")
    op.drop_index("ix_tasks_armed_reminders", table_name="tasks")
    op.execute("ALTER TABLE tasks DROP COLUMN reminded_at")
