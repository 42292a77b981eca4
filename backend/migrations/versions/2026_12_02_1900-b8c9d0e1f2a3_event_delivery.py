"""event delivery: NOTIFY for the live stream, a queue of webhook deliveries

- PostgreSQL: `record_task_event` also sends the owner's id on the channel
  `todo_api_events` (`pg_notify`), which PostgreSQL delivers to every listening session when
  (and only if) the transaction commits, once per owner and transaction however many rows it
  changed, but only for an owner with an open stream somewhere (`event_listeners`): NOTIFY
  takes a lock at commit that cost 30 % of PostgreSQL's write throughput when sent for every
  change (pgbench, 16 clients of single-row updates: 2,330 -> 1,630 a second). As written,
  with nobody streaming, 2,060 against a7b8c9d0e1f2's 2,390 (medians of 8 alternating
  rounds; the listener check and the webhook insert from an empty table are the difference).
  Each process's event stream listens on one connection of its own and reads
  the owner's new events by number (`store/notifications.py`). SQLite (one process) is told
  in-process.
- `event_listener_processes` and `event_listeners`: the processes with open streams (alive
  as of `seen_at`) and the people they hold streams of.
- `webhook_endpoints`: the URLs of WEBHOOK_URL, registered by the servers configured with
  them; `webhook_deliveries`: each event still to be delivered to each active endpoint,
  queued by the events trigger (on SQLite, the numbering triggers that write the event) in
  the change's own transaction, so a delivery exists exactly when its event does. With no
  endpoint the insert selects from an empty table and queues nothing.

Revision ID: b8c9d0e1f2a3
Revises: a7b8c9d0e1f2
Create Date: 2026-12-02 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8c9d0e1f2a3"
down_revision: str | None = "a7b8c9d0e1f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a change did (a migration keeps its own copy of a7b8c9d0e1f2's).
_UPDATE_TYPE = """CASE
    WHEN NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN 'task.deleted'
    WHEN NEW.reminded_at IS NOT NULL AND (OLD.reminded_at IS NULL OR NEW.reminded_at <> OLD.reminded_at)
        THEN 'reminder.due'
    WHEN NEW.completed AND NOT OLD.completed THEN 'task.completed'
    WHEN OLD.completed AND NOT NEW.completed THEN 'task.reopened'
    ELSE 'task.updated'
END"""


def _record_task_event(deliver: bool) -> str:
    delivery = (
        """
    INSERT INTO webhook_deliveries (endpoint_id, user_id, sequence, attempts, next_attempt_at)
        SELECT id, NEW.user_id, NEW.change_seq, 0, now() FROM webhook_endpoints WHERE active;
    IF EXISTS (SELECT 1 FROM event_listeners WHERE user_id = NEW.user_id) THEN
        PERFORM pg_notify('todo_api_events', NEW.user_id);
    END IF;"""
        if deliver
        else ""
    )
    return f"""
CREATE OR REPLACE FUNCTION record_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
    VALUES (
        NEW.user_id,
        NEW.change_seq,
        CASE WHEN TG_OP = 'INSERT' THEN 'task.created' ELSE {_UPDATE_TYPE} END,
        NEW.id,
        now()
    );{delivery}
    RETURN NULL;
END
$$"""


# SQLite: the numbering triggers as a7b8c9d0e1f2 made them, and with the delivery queued.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
_SQLITE_COUNTER = "(SELECT seq FROM change_counters WHERE user_id = NEW.user_id)"
_SQLITE_DELIVERY = f"""
            INSERT INTO webhook_deliveries (endpoint_id, user_id, sequence, attempts, next_attempt_at)
                SELECT id, NEW.user_id, {_SQLITE_COUNTER}, 0, {_SQLITE_NOW} FROM webhook_endpoints WHERE active;"""


def _sqlite_triggers(deliver: bool) -> dict[str, str]:
    delivery = _SQLITE_DELIVERY if deliver else ""
    return {
        "tasks_number_insert": f"""
        CREATE TRIGGER tasks_number_insert AFTER INSERT ON tasks BEGIN
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE tasks SET change_seq = {_SQLITE_COUNTER} WHERE id = NEW.id;
            INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
                VALUES (NEW.user_id, {_SQLITE_COUNTER}, 'task.created', NEW.id, {_SQLITE_NOW});{delivery}
        END""",
        "tasks_number_update": f"""
        CREATE TRIGGER tasks_number_update AFTER UPDATE ON tasks WHEN NEW.change_seq = OLD.change_seq BEGIN
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE tasks SET change_seq = {_SQLITE_COUNTER} WHERE id = NEW.id;
            INSERT INTO events (user_id, sequence, type, task_id, occurred_at)
                VALUES (NEW.user_id, {_SQLITE_COUNTER}, {_UPDATE_TYPE}, NEW.id, {_SQLITE_NOW});{delivery}
        END""",
    }


def _replace_sqlite_triggers(triggers: dict[str, str]) -> None:
    for name, definition in triggers.items():
        op.execute(f"DROP TRIGGER {name}")
        op.execute(definition)


def upgrade() -> None:
    op.create_table(
        "event_listener_processes",
        sa.Column("process_id", sa.String(length=32), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("process_id", name=op.f("pk_event_listener_processes")),
    )
    op.create_table(
        "event_listeners",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("process_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "process_id", name=op.f("pk_event_listeners")),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sa.UniqueConstraint("url", name=op.f("uq_webhook_endpoints_url")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "user_id", "sequence", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_endpoint_id_next_attempt_at"),
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at"],
        unique=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_record_task_event(deliver=True))
    else:
        _replace_sqlite_triggers(_sqlite_triggers(deliver=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_record_task_event(deliver=False))
    else:
        _replace_sqlite_triggers(_sqlite_triggers(deliver=False))
    op.drop_index(op.f("ix_webhook_deliveries_endpoint_id_next_attempt_at"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("event_listeners")
    op.drop_table("event_listener_processes")
