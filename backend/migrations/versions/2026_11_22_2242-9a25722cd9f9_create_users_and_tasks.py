"""create users and tasks

Revision ID: 9a25722cd9f9
Revises:
Create Date: 2026-11-22 22:42:48.477156
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9a25722cd9f9"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tasks_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tasks_user_id_created_at_id"), ["user_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tasks_user_id_title_id"), ["user_id", "title", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tasks_user_id_updated_at_id"), ["user_id", "updated_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_user_id_updated_at_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_user_id_title_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_user_id_created_at_id"))

    op.drop_table("tasks")
    op.drop_table("users")
