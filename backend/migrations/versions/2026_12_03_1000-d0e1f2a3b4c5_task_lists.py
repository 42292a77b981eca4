"""task lists: every person's Inbox and the lists they make; every task in one

- `task_lists`: a person's lists, `name` unique per person case-insensitively among the lists
  not deleted, one `inbox` each (a partial unique index), ordered by `position` (a
  fractional-indexing key, compared bytewise: the C collation on PostgreSQL); a deleted list
  is a tombstone (`deleted_at`) while its tasks' tombstones are kept.
- `tasks.list_id`: the list a task is in (ON DELETE CASCADE: a list purged takes its tombstoned
  tasks), with an index on (list_id, created_at, id).
- Every person with tasks gets their Inbox, and every task goes into its owner's Inbox. Not a
  change a sync client must fetch (none of them knows lists yet): done with the numbering
  triggers off, so no task is renumbered and no event written.

Revision ID: d0e1f2a3b4c5
Revises: c9d0e1f2a3b4
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "d0e1f2a3b4c5"
down_revision: str | None = "c9d0e1f2a3b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FIRST_POSITION = "a0"  # fractional_indexing.generate_key_between(None, None)


@contextmanager
def _unnumbered() -> Iterator[None]:
    """Updates no sync client needs to see: the numbering trigger off around them."""
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_number_change")
        yield
        op.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_number_change")
    else:
        # Dropped and made again exactly as it is (its text read back from the schema).
        definition = connection.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'tasks_number_update'")
        ).scalar_one()
        op.execute("DROP TRIGGER tasks_number_update")
        yield
        op.execute(definition)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "task_lists",
        sa.Column("id", _ID, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_folded", sa.String(length=400), nullable=False),
        sa.Column(
            "position",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("inbox", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_lists")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_task_lists_deleted_at"), "task_lists", ["deleted_at"], unique=False)
    op.create_index(
        op.f("ix_task_lists_user_id_position_id"), "task_lists", ["user_id", "position", "id"], unique=False
    )
    op.create_index(
        "uq_task_lists_user_id_inbox",
        "task_lists",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("inbox"),
        sqlite_where=sa.text("inbox"),
    )
    op.create_index(
        "uq_task_lists_user_id_name_folded",
        "task_lists",
        ["user_id", "name_folded"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )
    if dialect == "postgresql":
        op.add_column("tasks", sa.Column("list_id", sa.BigInteger(), nullable=True))
        op.create_foreign_key(
            op.f("fk_tasks_list_id_task_lists"),
            "tasks",
            "task_lists",
            ["list_id"],
            ["id"],
            ondelete="CASCADE",
        )
    else:
        # Plain ALTER TABLE (a batch rebuild of `tasks` would drop its triggers); SQLite takes a
        # REFERENCES clause on a column added with no default.
        op.execute(
            "ALTER TABLE tasks ADD COLUMN list_id INTEGER "
            "CONSTRAINT fk_tasks_list_id_task_lists REFERENCES task_lists (id) ON DELETE CASCADE"
        )
    op.create_index(
        op.f("ix_tasks_list_id_created_at_id"), "tasks", ["list_id", "created_at", "id"], unique=False
    )
    now = "now()" if dialect == "postgresql" else "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    op.execute(
        "INSERT INTO task_lists (user_id, name, name_folded, position, inbox, created_at, updated_at, version) "
        f"SELECT DISTINCT user_id, 'Inbox', 'inbox', '{FIRST_POSITION}', true, {now}, {now}, 1 FROM tasks"
    )
    with _unnumbered():
        op.execute(
            "UPDATE tasks SET list_id = "
            "(SELECT id FROM task_lists WHERE task_lists.user_id = tasks.user_id AND task_lists.inbox)"
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_tasks_list_id_created_at_id"), table_name="tasks")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("fk_tasks_list_id_task_lists"), "tasks", type_="foreignkey")
    op.execute("ALTER TABLE tasks DROP COLUMN list_id")
    op.drop_index("uq_task_lists_user_id_name_folded", table_name="task_lists")
    op.drop_index("uq_task_lists_user_id_inbox", table_name="task_lists")
    op.drop_index(op.f("ix_task_lists_user_id_position_id"), table_name="task_lists")
    op.drop_index(op.f("ix_task_lists_deleted_at"), table_name="task_lists")
    op.drop_table("task_lists")
