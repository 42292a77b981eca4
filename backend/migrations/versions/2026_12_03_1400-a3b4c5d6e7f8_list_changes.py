"""list changes for sync and events: lists numbered with their owner's tasks

- `task_lists.change_seq`: the owner's change counter when the list last changed, taken by the
  same numbering as tasks (`number_task_change` on PostgreSQL, triggers on SQLite), so one
  sync position covers both and a list's change commits in order with the tasks'. Indexed
  with the owner, as tasks' are.
- Each numbered list change writes its event (`list.created`, `list.updated`, `list.deleted`)
  with its webhook deliveries and, on PostgreSQL, the stream's NOTIFY, as a task's does:
  numbers still have no gaps. The event's `task_id` column holds the list's id (its type
  says which); the events table is unchanged.
- An update that changes nothing a client sees (the Inbox's locking upsert, `SET inbox = true`)
  is not a change: it takes no number. On PostgreSQL an insert is numbered by its AFTER trigger,
  once the row is in: a BEFORE trigger fires before ON CONFLICT is decided, and the upserts that
  make or lock the Inbox (and two first writes racing to make it) left a number with no event
  (`tests/test_faults.py` found the gap).
- Existing lists are each changed once (their version + 1), numbered, with their event: a client
  syncing from a position it already holds learns of them on its next sync.

Revision ID: a3b4c5d6e7f8
Revises: f2a3b4c5d6e7
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a3b4c5d6e7f8"
down_revision: str | None = "f2a3b4c5d6e7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TYPE = """CASE
    WHEN NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN 'list.deleted'
    ELSE 'list.updated'
END"""
# What a client sees of a list changed: a numbered change (the Inbox's `inbox = true` upsert and
# the numbering's own write of `change_seq` are not).
_SEEN = (
    "(OLD.name, OLD.position, OLD.deleted_at, OLD.version) "
    "IS DISTINCT FROM (NEW.name, NEW.position, NEW.deleted_at, NEW.version)"
)
_PG_UP = [
    f"""
CREATE TRIGGER task_lists_number_update BEFORE UPDATE ON task_lists
FOR EACH ROW WHEN ({_SEEN}) EXECUTE FUNCTION number_task_change()""",
    f"""
CREATE FUNCTION record_list_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    number bigint := NEW.change_seq;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO change_counters AS counter (user_id, seq) VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET seq = counter.seq + 1
        RETURNING seq INTO number;
        UPDATE task_lists SET change_seq = number WHERE id = NEW.id;
    END IF;
    INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
    VALUES (
        NEW.user_id,
        number,
        CASE WHEN TG_OP = 'INSERT' THEN 'list.created' ELSE {_TYPE} END,
        NEW.id,
        now()
    );
    INSERT INTO webhook_deliveries (endpoint_id, user_id, sequence, attempts, next_attempt_at)
        SELECT id, NEW.user_id, number, 0, now() FROM webhook_endpoints WHERE active;
    IF EXISTS (SELECT 1 FROM event_listeners WHERE user_id = NEW.user_id) THEN
        PERFORM pg_notify('todo_api_events', NEW.user_id);
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER task_lists_record_insert AFTER INSERT ON task_lists
FOR EACH ROW EXECUTE FUNCTION record_list_event()""",
    f"""
CREATE TRIGGER task_lists_record_update AFTER UPDATE ON task_lists
FOR EACH ROW WHEN ({_SEEN}) EXECUTE FUNCTION record_list_event()""",
]
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
_SQLITE_COUNTER = "(SELECT seq FROM change_counters WHERE user_id = NEW.user_id)"


def _sqlite_numbering(event_type: str) -> str:
    return f"""
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE task_lists SET change_seq = {_SQLITE_COUNTER} WHERE id = NEW.id;
            INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
                VALUES (NEW.user_id, {_SQLITE_COUNTER}, {event_type}, NEW.id, {_SQLITE_NOW});
            INSERT INTO webhook_deliveries (endpoint_id, user_id, sequence, attempts, next_attempt_at)
                SELECT id, NEW.user_id, {_SQLITE_COUNTER}, 0, {_SQLITE_NOW} FROM webhook_endpoints WHERE active;"""


_SQLITE_UP = [
    f"""
        CREATE TRIGGER task_lists_number_insert AFTER INSERT ON task_lists BEGIN{_sqlite_numbering("'list.created'")}
        END""",
    f"""
        CREATE TRIGGER task_lists_number_update AFTER UPDATE ON task_lists
        WHEN NEW.change_seq = OLD.change_seq AND (
            NEW.name IS NOT OLD.name OR NEW.position IS NOT OLD.position
            OR NEW.deleted_at IS NOT OLD.deleted_at OR NEW.version IS NOT OLD.version
        ) BEGIN{_sqlite_numbering(_TYPE)}
        END""",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("task_lists", sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False))
    op.create_index(
        op.f("ix_task_lists_user_id_change_seq"), "task_lists", ["user_id", "change_seq"], unique=False
    )
    for statement in _PG_UP if dialect == "postgresql" else _SQLITE_UP:
        op.execute(statement)
    op.execute("UPDATE task_lists SET version = version + 1 WHERE deleted_at IS NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger in ("task_lists_record_update", "task_lists_record_insert", "task_lists_number_update"):
            op.execute(f"DROP TRIGGER {trigger} ON task_lists")
        op.execute("DROP FUNCTION record_list_event()")
    else:
        op.execute("DROP TRIGGER task_lists_number_update")
        op.execute("DROP TRIGGER task_lists_number_insert")
    op.drop_index(op.f("ix_task_lists_user_id_change_seq"), table_name="task_lists")
    op.drop_column("task_lists", "change_seq")
