"""count tasks per user

Keeps `users.task_count` and `users.completed_count` current with triggers on
`tasks`, in the same transaction as every write, so listing needs no count(*).

On SQLite, a later batch migration that rebuilds `tasks` drops these triggers:
such a migration must create them again (see `_SQLITE_TRIGGERS`).

Revision ID: b72e3b487703
Revises: 9a25722cd9f9
Create Date: 2026-11-22 23:43:34.248629
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b72e3b487703"
down_revision: str | None = "9a25722cd9f9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRESQL_FUNCTION = """
CREATE FUNCTION count_tasks_per_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE users SET task_count = task_count + 1, completed_count = completed_count + NEW.completed::int
        WHERE id = NEW.user_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE users SET task_count = task_count - 1, completed_count = completed_count - OLD.completed::int
        WHERE id = OLD.user_id;
    ELSIF NEW.completed IS DISTINCT FROM OLD.completed THEN
        UPDATE users SET completed_count = completed_count + NEW.completed::int - OLD.completed::int
        WHERE id = NEW.user_id;
    END IF;
    RETURN NULL;
END
$$
"""
_POSTGRESQL_TRIGGER = """
CREATE TRIGGER tasks_count_per_user AFTER INSERT OR DELETE OR UPDATE OF completed ON tasks
FOR EACH ROW EXECUTE FUNCTION count_tasks_per_user()
"""
_SQLITE_TRIGGERS = {
    "tasks_count_insert": """
        CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
            UPDATE users SET task_count = task_count + 1, completed_count = completed_count + NEW.completed
            WHERE id = NEW.user_id;
        END""",
    "tasks_count_delete": """
        CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
            UPDATE users SET task_count = task_count - 1, completed_count = completed_count - OLD.completed
            WHERE id = OLD.user_id;
        END""",
    "tasks_count_completed": """
        CREATE TRIGGER tasks_count_completed AFTER UPDATE OF completed ON tasks
        WHEN NEW.completed <> OLD.completed BEGIN
            UPDATE users SET completed_count = completed_count + NEW.completed - OLD.completed
            WHERE id = NEW.user_id;
        END""",
}


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_count", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("completed_count", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE users SET "
        "task_count = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id), "
        "completed_count = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id AND tasks.completed)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRESQL_FUNCTION)
        op.execute(_POSTGRESQL_TRIGGER)
    else:
        for trigger in _SQLITE_TRIGGERS.values():
            op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tasks_count_per_user ON tasks")
        op.execute("DROP FUNCTION count_tasks_per_user()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("completed_count")
        batch_op.drop_column("task_count")
