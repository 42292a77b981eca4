"""tasks written without a list go to their owner's Inbox (PostgreSQL)

During a rolling deploy the servers of the version before lists keep writing tasks after
`d0e1f2a3b4c5` has run, without a `list_id`; so do a hand-written insert and a tool that knows
nothing of lists. A BEFORE INSERT trigger, only for a task without one (`WHEN`: the API's own
inserts, which always name a list, pay nothing), puts it in its owner's Inbox, making the Inbox
if need be: every task is in a list whatever wrote it. SQLite serves one process, whose
version is the migrations': nothing writes a task without a list there.

Revision ID: e1f2a3b4c5d6
Revises: d0e1f2a3b4c5
Create Date: 2026-12-03 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e1f2a3b4c5d6"
down_revision: str | None = "d0e1f2a3b4c5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UP = [
    """
CREATE FUNCTION place_task_in_inbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_lists (user_id, name, name_folded, position, inbox, created_at, updated_at, version)
        VALUES (NEW.user_id, 'Inbox', 'inbox', 'a0', true, now(), now(), 1)
        ON CONFLICT (user_id) WHERE inbox DO NOTHING;
    -- A statement of its own: it sees an Inbox another transaction has just committed.
    SELECT id INTO NEW.list_id FROM task_lists WHERE user_id = NEW.user_id AND inbox;
    RETURN NEW;
END
$$""",
    """
CREATE TRIGGER tasks_into_inbox BEFORE INSERT ON tasks
FOR EACH ROW WHEN (NEW.list_id IS NULL) EXECUTE FUNCTION place_task_in_inbox()""",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tasks_into_inbox ON tasks")
        op.execute("DROP FUNCTION place_task_in_inbox()")
