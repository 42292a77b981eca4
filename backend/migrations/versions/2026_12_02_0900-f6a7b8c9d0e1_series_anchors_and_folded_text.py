"""series anchors and folded text: recurrence_anchor, title_sort, search text in NFKC

- `tasks.recurrence_anchor`: the due date a recurring series started from, whose local
  time of day (and day of the month) every next occurrence keeps. Existing recurring
  tasks are anchored at their due date.
- `tasks.title_sort`: the title sort's key (the folded title's first 100 characters),
  with the index `(user_id, title_sort, id)` in place of `(user_id, title, id)`: the title
  sort is now case-insensitive.
- `title_folded` and `description_folded` are folded again, now also into Unicode's NFKC
  form (search finds `éclair` however it was typed), cut to their columns' sizes.
- On PostgreSQL, due and reminder dates stored as -infinity or infinity (asyncpg's spelling
  of the first and last instants Python knows, which the API now refuses) move one
  microsecond inward, so their owners' lists read again.

Revision ID: f6a7b8c9d0e1
Revises: e5f6a7b8c9d0
Create Date: 2026-12-02 09:00:00
"""

import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "f6a7b8c9d0e1"
down_revision: str | None = "e5f6a7b8c9d0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


# The folding as of this revision (a migration keeps its own copy: the API's may change).
def _search_fold(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _casefold(text: str) -> str:
    return text.casefold()


_TASKS = sa.table(
    "tasks",
    sa.column("id", sa.BigInteger()),
    sa.column("title", sa.String()),
    sa.column("description", sa.String()),
    sa.column("title_folded", sa.String()),
    sa.column("description_folded", sa.String()),
    sa.column("title_sort", sa.String()),
)


# The numbering trigger as revision d4e5f6a7b8c9 made it on SQLite (a migration keeps its own copy).
_SQLITE_NUMBER_UPDATE = """
        CREATE TRIGGER tasks_number_update AFTER UPDATE ON tasks WHEN NEW.change_seq = OLD.change_seq BEGIN
            INSERT INTO change_counters (user_id, seq) VALUES (NEW.user_id, 1)
                ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
            UPDATE tasks SET change_seq = (SELECT seq FROM change_counters WHERE user_id = NEW.user_id)
                WHERE id = NEW.id;
        END"""


@contextmanager
def _unnumbered() -> Iterator[None]:
    """Updates that change nothing a client sees, left out of the change counter: otherwise
    every task would look changed, and every sync client would fetch them all again."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_number_change")
        yield
        op.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_number_change")
    else:
        op.execute("DROP TRIGGER tasks_number_update")
        yield
        op.execute(_SQLITE_NUMBER_UPDATE)


def _refold(fold: Callable[[str], str], *, with_sort_key: bool) -> None:
    """Fold every title and description again, in batches of BATCH tasks."""
    connection = op.get_bind()
    values = {
        "title_folded": sa.bindparam("folded_title"),
        "description_folded": sa.bindparam("folded_description"),
    }
    if with_sort_key:
        values["title_sort"] = sa.bindparam("sort_key")
    statement = sa.update(_TASKS).where(_TASKS.c.id == sa.bindparam("task_id")).values(**values)
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(_TASKS.c.id, _TASKS.c.title, _TASKS.c.description)
            .where(_TASKS.c.id > last_id)
            .order_by(_TASKS.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        batch = []
        for row in rows:
            title = fold(row.title)
            batch.append(
                {
                    "task_id": row.id,
                    "folded_title": title[:800],
                    "folded_description": None if row.description is None else fold(row.description)[:4000],
                    "sort_key": title[:100],
                }
            )
        connection.execute(statement, batch)
        last_id = rows[-1].id


_TASK_DATES = sa.table(
    "tasks",
    sa.column("due_at", sa.DateTime(timezone=True)),
    sa.column("remind_at", sa.DateTime(timezone=True)),
)
_FIRST_STORED = datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
_LAST_STORED = datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # asyncpg stored the first and last instants Python knows as -infinity and infinity, and
        # read them back without a time zone: the owner's list failed. One microsecond inward.
        for column in (_TASK_DATES.c.due_at, _TASK_DATES.c.remind_at):
            for stored, kept in (("-infinity", _FIRST_STORED), ("infinity", _LAST_STORED)):
                infinite = sa.literal_column(f"'{stored}'::timestamptz")
                op.execute(sa.update(_TASK_DATES).where(column == infinite).values({column: kept}))
    op.add_column("tasks", sa.Column("title_sort", sa.String(length=100), server_default="", nullable=False))
    op.add_column("tasks", sa.Column("recurrence_anchor", sa.DateTime(timezone=True), nullable=True))
    with _unnumbered():
        op.execute("UPDATE tasks SET recurrence_anchor = due_at WHERE recurrence IS NOT NULL")
        _refold(_search_fold, with_sort_key=True)
    op.create_index(
        op.f("ix_tasks_user_id_title_sort_id"), "tasks", ["user_id", "title_sort", "id"], unique=False
    )
    op.drop_index(op.f("ix_tasks_user_id_title_id"), table_name="tasks")


def downgrade() -> None:
    op.create_index(op.f("ix_tasks_user_id_title_id"), "tasks", ["user_id", "title", "id"], unique=False)
    op.drop_index(op.f("ix_tasks_user_id_title_sort_id"), table_name="tasks")
    with _unnumbered():
        _refold(_casefold, with_sort_key=False)
    # Plain ALTER TABLE (SQLite 3.35+): a batch rebuild of `tasks` would drop its triggers.
    op.execute("ALTER TABLE tasks DROP COLUMN recurrence_anchor")
    op.execute("ALTER TABLE tasks DROP COLUMN title_sort")
