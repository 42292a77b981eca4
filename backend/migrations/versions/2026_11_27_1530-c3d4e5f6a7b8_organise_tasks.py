"""organise tasks: priority, due and reminder dates, recurrence, tags, search

Adds the organising columns to `tasks` (every existing task gets the defaults:
priority none, no dates, no recurrence, UTC, and its title and description
case-folded for search), the `tags` and `task_tags` tables, and on PostgreSQL
the pg_trgm extension with trigram indexes for search.

Two kinds of triggers, on both databases:
- `task_tag_sets` is a view whose INSTEAD OF INSERT trigger replaces a task's
  tags with a JSON list of `[name, folded name]` pairs: it creates the tags that
  do not exist yet and links exactly those, so setting a task's tags is one
  statement (SQLite cannot write in a WITH clause);
- inserting a task with `previous_occurrence_id` (the next occurrence of a
  recurring task) points its predecessor's `next_occurrence_id` at it and copies
  the predecessor's tags, in the same statement.

On SQLite, rebuilding `tasks` (batch mode, for the foreign keys and the check)
drops its triggers, so the counting triggers are created again here.

Revision ID: c3d4e5f6a7b8
Revises: b72e3b487703
Create Date: 2026-11-27 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3d4e5f6a7b8"
down_revision: str | None = "b72e3b487703"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As revision b72e3b487703 created them (a migration keeps its own copy: that one may change).
_SQLITE_COUNTING_TRIGGERS = {
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

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_TAG_SETS_VIEW = "CREATE VIEW task_tag_sets AS SELECT task_id, CAST(NULL AS VARCHAR(255)) AS user_id, CAST(NULL AS TEXT) AS names FROM task_tags"

_POSTGRESQL = [
    """
CREATE FUNCTION set_task_tags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Each statement sees what the ones before it (and other transactions) committed:
    -- a tag another request just created is found, never created twice.
    DELETE FROM task_tags WHERE task_id = NEW.task_id AND tag_id NOT IN (
        SELECT tags.id FROM tags, json_array_elements(NEW.names::json) AS wanted
        WHERE tags.user_id = NEW.user_id AND tags.name_folded = wanted->>1);
    INSERT INTO tags (user_id, name, name_folded)
        SELECT NEW.user_id, wanted->>0, wanted->>1 FROM json_array_elements(NEW.names::json) AS wanted
        ON CONFLICT (user_id, name_folded) DO NOTHING;
    INSERT INTO task_tags (task_id, tag_id)
        SELECT NEW.task_id, tags.id FROM tags, json_array_elements(NEW.names::json) AS wanted
        WHERE tags.user_id = NEW.user_id AND tags.name_folded = wanted->>1
        ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$""",
    """
CREATE TRIGGER task_tag_sets_insert INSTEAD OF INSERT ON task_tag_sets
FOR EACH ROW EXECUTE FUNCTION set_task_tags()""",
    """
CREATE FUNCTION link_next_occurrence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks SET next_occurrence_id = NEW.id WHERE id = NEW.previous_occurrence_id;
    INSERT INTO task_tags (task_id, tag_id)
        SELECT NEW.id, tag_id FROM task_tags WHERE task_id = NEW.previous_occurrence_id;
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER tasks_link_next_occurrence AFTER INSERT ON tasks
FOR EACH ROW WHEN (NEW.previous_occurrence_id IS NOT NULL) EXECUTE FUNCTION link_next_occurrence()""",
]

_SQLITE = [
    """
CREATE TRIGGER task_tag_sets_insert INSTEAD OF INSERT ON task_tag_sets BEGIN
    DELETE FROM task_tags WHERE task_id = NEW.task_id AND tag_id NOT IN (
        SELECT tags.id FROM tags, json_each(NEW.names) AS wanted
        WHERE tags.user_id = NEW.user_id AND tags.name_folded = json_extract(wanted.value, '$[1]'));
    INSERT INTO tags (user_id, name, name_folded)
        SELECT NEW.user_id, json_extract(wanted.value, '$[0]'), json_extract(wanted.value, '$[1]')
        FROM json_each(NEW.names) AS wanted WHERE true
        ON CONFLICT (user_id, name_folded) DO NOTHING;
    INSERT OR IGNORE INTO task_tags (task_id, tag_id)
        SELECT NEW.task_id, tags.id FROM tags, json_each(NEW.names) AS wanted
        WHERE tags.user_id = NEW.user_id AND tags.name_folded = json_extract(wanted.value, '$[1]');
END""",
    """
CREATE TRIGGER tasks_link_next_occurrence AFTER INSERT ON tasks
WHEN NEW.previous_occurrence_id IS NOT NULL BEGIN
    UPDATE tasks SET next_occurrence_id = NEW.id WHERE id = NEW.previous_occurrence_id;
    INSERT INTO task_tags (task_id, tag_id)
        SELECT NEW.id, tag_id FROM task_tags WHERE task_id = NEW.previous_occurrence_id;
END""",
]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "tags",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("name_folded", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tags_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("user_id", "name_folded", name=op.f("uq_tags_user_id_name_folded")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.SmallInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("recurrence", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False)
        )
        batch_op.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("previous_occurrence_id", ID, nullable=True))
        batch_op.add_column(sa.Column("next_occurrence_id", ID, nullable=True))
        batch_op.add_column(
            sa.Column("title_folded", sa.String(length=800), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("description_folded", sa.String(length=4000), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_tasks_previous_occurrence_id_tasks"),
            "tasks",
            ["previous_occurrence_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_tasks_next_occurrence_id_tasks"),
            "tasks",
            ["next_occurrence_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_tasks_previous_occurrence_id"), ["previous_occurrence_id"]
        )
        batch_op.create_check_constraint(
            op.f("ck_tasks_recurrence_has_due_at"), "recurrence IS NULL OR due_at IS NOT NULL"
        )
        batch_op.create_index(
            batch_op.f("ix_tasks_user_id_due_at_id"), ["user_id", "due_at", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tasks_user_id_priority_id"), ["user_id", "priority", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tasks_user_id_remind_at"), ["user_id", "remind_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tasks_next_occurrence_id"), ["next_occurrence_id"], unique=False)
    op.create_table(
        "task_tags",
        sa.Column("task_id", ID, nullable=False),
        sa.Column("tag_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], name=op.f("fk_task_tags_tag_id_tags"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_tags_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "tag_id", name=op.f("pk_task_tags")),
    )
    op.create_index(op.f("ix_task_tags_tag_id_task_id"), "task_tags", ["tag_id", "task_id"], unique=False)
    _fold_existing_text()
    if postgresql:
        op.execute(
            "CREATE INDEX ix_tasks_user_id_due_at_desc_id ON tasks (user_id, due_at DESC NULLS LAST, id DESC)"
        )
        op.execute("CREATE INDEX ix_tasks_title_folded_trgm ON tasks USING gin (title_folded gin_trgm_ops)")
        op.execute(
            "CREATE INDEX ix_tasks_description_folded_trgm ON tasks USING gin (description_folded gin_trgm_ops)"
        )
        op.execute(_TAG_SETS_VIEW)
        for statement in _POSTGRESQL:
            op.execute(statement)
    else:
        # The rebuild of `tasks` dropped its triggers.
        for name, trigger in _SQLITE_COUNTING_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(trigger)
        op.execute(_TAG_SETS_VIEW)
        for statement in _SQLITE:
            op.execute(statement)


def _fold_existing_text() -> None:
    """Case-fold every existing title and description as the API does (Python's casefold),
    in batches, so that search finds tasks written before this migration."""
    connection = op.get_bind()
    tasks = sa.table(
        "tasks",
        sa.column("id", sa.BigInteger()),
        sa.column("title", sa.String()),
        sa.column("description", sa.String()),
        sa.column("title_folded", sa.String()),
        sa.column("description_folded", sa.String()),
    )
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(tasks.c.id, tasks.c.title, tasks.c.description)
            .where(tasks.c.id > last_id)
            .order_by(tasks.c.id)
            .limit(5000)
        ).all()
        if not rows:
            return
        connection.execute(
            sa.update(tasks)
            .where(tasks.c.id == sa.bindparam("task_id"))
            .values(
                title_folded=sa.bindparam("folded_title"),
                description_folded=sa.bindparam("folded_description"),
            ),
            [
                {
                    "task_id": row.id,
                    "folded_title": row.title.casefold(),
                    "folded_description": None if row.description is None else row.description.casefold(),
                }
                for row in rows
            ],
        )
        last_id = rows[-1].id


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("DROP TRIGGER tasks_link_next_occurrence ON tasks")
        op.execute("DROP FUNCTION link_next_occurrence()")
        op.execute("DROP TRIGGER task_tag_sets_insert ON task_tag_sets")
        op.execute("DROP FUNCTION set_task_tags()")
        op.execute("DROP INDEX ix_tasks_description_folded_trgm")
        op.execute("DROP INDEX ix_tasks_title_folded_trgm")
        op.execute("DROP INDEX ix_tasks_user_id_due_at_desc_id")
    else:
        op.execute("DROP TRIGGER tasks_link_next_occurrence")
        op.execute("DROP TRIGGER task_tag_sets_insert")
    op.execute("DROP VIEW task_tag_sets")
    op.drop_index(op.f("ix_task_tags_tag_id_task_id"), table_name="task_tags")
    op.drop_table("task_tags")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_next_occurrence_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_user_id_remind_at"))
        batch_op.drop_index(batch_op.f("ix_tasks_user_id_priority_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_user_id_due_at_id"))
        batch_op.drop_constraint(op.f("ck_tasks_recurrence_has_due_at"), type_="check")
        batch_op.drop_constraint(batch_op.f("uq_tasks_previous_occurrence_id"), type_="unique")
        batch_op.drop_constraint(batch_op.f("fk_tasks_next_occurrence_id_tasks"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_tasks_previous_occurrence_id_tasks"), type_="foreignkey")
        batch_op.drop_column("description_folded")
        batch_op.drop_column("title_folded")
        batch_op.drop_column("next_occurrence_id")
        batch_op.drop_column("previous_occurrence_id")
        batch_op.drop_column("completed_at")
        batch_op.drop_column("time_zone")
        batch_op.drop_column("recurrence")
        batch_op.drop_column("remind_at")
        batch_op.drop_column("due_at")
        batch_op.drop_column("priority")
    op.drop_table("tags")
    if not postgresql:
        for name, trigger in _SQLITE_COUNTING_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(trigger)
    # pg_trgm stays: other objects in the database may use it.
