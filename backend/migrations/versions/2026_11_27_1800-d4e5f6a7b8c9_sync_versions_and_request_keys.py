"""sync, versions and request keys: task versions, change counters, tombstones, idempotency keys

- `tasks.version` (1, +1 on every change, set by the API's statements) is the ETag.
- `tasks.change_seq` is the owner's change counter (`change_counters.seq`) when the
  task last changed. Triggers take it inside the writing transaction: the counter
  row stays locked until that transaction ends, so one user's changes get numbers
  in the order they commit, and a sync that has read up to number n has seen every
  change numbered n or less (see `store/changes.py`). Existing tasks are numbered by
  id, per user.
- `tasks.deleted_at` makes deletion soft: a tombstone, kept for sync until purged;
  the counters and the tag links treat it as gone at once.
- `idempotency_keys` keeps each request key with the answer stored with its effect.
- Renaming or deleting a tag bumps the version (and so the number) of its tasks,
  whose representation it changes.
- On SQLite, `tasks` is rebuilt with AUTOINCREMENT (ids are never reused), and its
  triggers are created again.

Revision ID: d4e5f6a7b8c9
Revises: c3d4e5f6a7b8
Create Date: 2026-11-27 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4e5f6a7b8c9"
down_revision: str | None = "c3d4e5f6a7b8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NUMBER_EXISTING = """
UPDATE tasks SET change_seq = numbered.n FROM (
    SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS n FROM tasks
) AS numbered WHERE tasks.id = numbered.id
"""
_SEED_COUNTERS = (
    "INSERT INTO change_counters (user_id, seq) SELECT user_id, max(change_seq) FROM tasks GROUP BY user_id"
)

# --- PostgreSQL ------------------------------------------------------------------------

_POSTGRESQL_UP = [
    # Counting, now with tombstones: a deleted task stops counting when it is deleted,
    # and its purge (a real DELETE) changes nothing more.
    """
CREATE OR REPLACE FUNCTION count_tasks_per_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE users SET task_count = task_count + 1, completed_count = completed_count + NEW.completed::int
        WHERE id = NEW.user_id;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.deleted_at IS NULL THEN
            UPDATE users SET task_count = task_count - 1, completed_count = completed_count - OLD.completed::int
            WHERE id = OLD.user_id;
        END IF;
    ELSIF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
        UPDATE users SET task_count = task_count - 1, completed_count = completed_count - OLD.completed::int
        WHERE id = NEW.user_id;
    ELSIF NEW.deleted_at IS NULL AND NEW.completed IS DISTINCT FROM OLD.completed THEN
        UPDATE users SET completed_count = completed_count + NEW.completed::int - OLD.completed::int
        WHERE id = NEW.user_id;
    END IF;
    RETURN NULL;
END
$$""",
    "DROP TRIGGER tasks_count_per_user ON tasks",
    """
CREATE TRIGGER tasks_count_per_user AFTER INSERT OR DELETE OR UPDATE OF completed, deleted_at ON tasks
FOR EACH ROW EXECUTE FUNCTION count_tasks_per_user()""",
    """
CREATE FUNCTION number_task_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_counters AS counter (user_id, seq) VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET seq = counter.seq + 1
    RETURNING seq INTO NEW.change_seq;
    RETURN NEW;
END
$$""",
    """
CREATE TRIGGER tasks_number_change BEFORE INSERT OR UPDATE ON tasks
FOR EACH ROW EXECUTE FUNCTION number_task_change()""",
    """
CREATE FUNCTION unlink_deleted_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_tags WHERE task_id = NEW.id;
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER tasks_unlink_deleted AFTER UPDATE OF deleted_at ON tasks
FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL) EXECUTE FUNCTION unlink_deleted_task()""",
    """
CREATE FUNCTION touch_tagged_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks SET version = version + 1
    WHERE id IN (SELECT task_id FROM task_tags WHERE tag_id = (CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END));
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$""",
    """
CREATE TRIGGER tags_touch_on_rename AFTER UPDATE OF name ON tags
FOR EACH ROW EXECUTE FUNCTION touch_tagged_tasks()""",
    """
CREATE TRIGGER tags_touch_on_delete BEFORE DELETE ON tags
FOR EACH ROW EXECUTE FUNCTION touch_tagged_tasks()""",
]

_POSTGRESQL_DOWN = [
    "DROP TRIGGER tags_touch_on_delete ON tags",
    "DROP TRIGGER tags_touch_on_rename ON tags",
    "DROP FUNCTION touch_tagged_tasks()",
    "DROP TRIGGER tasks_unlink_deleted ON tasks",
    "DROP FUNCTION unlink_deleted_task()",
    "DROP TRIGGER tasks_number_change ON tasks",
    "DROP FUNCTION number_task_change()",
    "DROP TRIGGER tasks_count_per_user ON tasks",
    """
CREATE OR REPLACE FUNCTION count_tasks_per_user() RETURNS trigger LANGUAGE plpgsql AS $$
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
$$""",
    """
CREATE TRIGGER tasks_count_per_user AFTER INSERT OR DELETE OR UPDATE OF completed ON tasks
FOR EACH ROW EXECUTE FUNCTION count_tasks_per_user()""",
]

# --- SQLite ----------------------------------------------------------------------------

# What rebuilding `tasks` drops: all of its triggers, as they are after this revision.
_SQLITE_TASK_TRIGGERS = {
    "tasks_count_insert": """
        CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
            UPDATE users SET task_count = task_count + 1, completed_count = completed_count + NEW.completed
            WHERE id = NEW.user_id;
        END""",
    "tasks_count_delete": """
        CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks WHEN OLD.deleted_at IS NULL BEGIN
            UPDATE users SET task_count = task_count - 1, completed_count = completed_count - OLD.completed
            WHERE id = OLD.user_id;
        END""",
    "tasks_count_completed": """
        CREATE TRIGGER tasks_count_completed AFTER UPDATE OF completed ON tasks
        WHEN NEW.completed <> OLD.completed AND NEW.deleted_at IS NULL BEGIN
            UPDATE users SET completed_count = completed_count + NEW.completed - OLD.completed
            WHERE id = NEW.user_id;
        END""",
    "tasks_count_deleted": """
        CREATE TRIGGER tasks_count_deleted AFTER UPDATE OF deleted_at ON tasks
        WHEN NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL BEGIN
            UPDATE users SET task_count = task_count - 1, completed_count = completed_count - OLD.completed
            WHERE id = NEW.user_id;
            DELETE FROM task_tags WHERE task_id = NEW.id;
        END""",
    "tasks_link_next_occurrence": """
        CREATE TRIGGER tasks_link_next_occurrence AFTER INSERT ON tasks
        WHEN NEW.previous_occurrence_id IS NOT NULL BEGIN
            UPDATE tasks SET next_occurrence_id = NEW.id WHERE id = NEW.previous_occurrence_id;
            INSERT INTO task_tags (task_id, tag_id)
                SELECT NEW.id, tag_id FROM task_tags WHERE task_id = NEW.previous_occurrence_id;
        END""",
    # SQLite's triggers cannot set NEW: the number is written by a second update, which
    # (changing change_seq) does not number itself again.
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
_SQLITE_TAG_TRIGGERS = {
    "tags_touch_on_rename": """
        CREATE TRIGGER tags_touch_on_rename AFTER UPDATE OF name ON tags BEGIN
            UPDATE tasks SET version = version + 1
            WHERE id IN (SELECT task_id FROM task_tags WHERE tag_id = NEW.id);
        END""",
    "tags_touch_on_delete": """
        CREATE TRIGGER tags_touch_on_delete BEFORE DELETE ON tags BEGIN
            UPDATE tasks SET version = version + 1
            WHERE id IN (SELECT task_id FROM task_tags WHERE tag_id = OLD.id);
        END""",
}
# The task triggers as revision c3d4e5f6a7b8 left them, for the downgrade.
_SQLITE_PREVIOUS_TASK_TRIGGERS = {
    "tasks_count_insert": _SQLITE_TASK_TRIGGERS["tasks_count_insert"],
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
    "tasks_link_next_occurrence": _SQLITE_TASK_TRIGGERS["tasks_link_next_occurrence"],
}


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "change_counters",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_change_counters")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("location", sa.String(length=2048), nullable=True),
        sa.Column("etag", sa.String(length=32), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_idempotency_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False)
    with op.batch_alter_table(
        "tasks", schema=None, recreate="always" if not postgresql else "auto",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch_op:  # fmt: skip
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_tasks_user_id_change_seq"), ["user_id", "change_seq"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tasks_deleted_at"), ["deleted_at"], unique=False)
    # Number what exists, before the numbering triggers do it for every change.
    op.execute(_NUMBER_EXISTING)
    op.execute(_SEED_COUNTERS)
    if postgresql:
        for statement in _POSTGRESQL_UP:
            op.execute(statement)
    else:
        for name, trigger in _SQLITE_TASK_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(trigger)
        for trigger in _SQLITE_TAG_TRIGGERS.values():
            op.execute(trigger)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    # Tombstones were deleted tasks: they go now (the triggers in place do not count them).
    op.execute("DELETE FROM tasks WHERE deleted_at IS NOT NULL")
    if postgresql:
        for statement in _POSTGRESQL_DOWN:
            op.execute(statement)
    else:
        for name in (*_SQLITE_TASK_TRIGGERS, *_SQLITE_TAG_TRIGGERS):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_deleted_at"))
        batch_op.drop_index(batch_op.f("ix_tasks_user_id_change_seq"))
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("change_seq")
        batch_op.drop_column("version")
    if not postgresql:
        for name, trigger in _SQLITE_PREVIOUS_TASK_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(trigger)
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("change_counters")
