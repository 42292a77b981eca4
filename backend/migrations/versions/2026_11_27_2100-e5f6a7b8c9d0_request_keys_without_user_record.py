"""request keys without a user record: drop `idempotency_keys.user_id`'s foreign key

A request key belongs to the token's subject, who need not have a row in `users` yet:
that row is written by a first task, and a keyed write that creates none (clearing
the completed tasks of someone who has no tasks) could not store its answer. Keys
need no cascade either: they are purged `IDEMPOTENCY_KEY_HOURS` after their request.

Revision ID: e5f6a7b8c9d0
Revises: d4e5f6a7b8c9
Create Date: 2026-11-27 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e5f6a7b8c9d0"
down_revision: str | None = "d4e5f6a7b8c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_idempotency_keys_user_id_users"), type_="foreignkey")


def downgrade() -> None:
    # Keys of callers without a user record cannot keep the constraint: they go first.
    op.execute("DELETE FROM idempotency_keys WHERE user_id NOT IN (SELECT id FROM users)")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_idempotency_keys_user_id_users"), "users", ["user_id"], ["id"], ondelete="CASCADE"
        )
