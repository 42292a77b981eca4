"""Migrations build the schema the models describe, on both databases, and undo it."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from backend.models import metadata, schema_of
from backend.store.positions import FIRST_POSITION
from backend.store.schema import alembic_config
from tests.conftest import BACKENDS, fresh_database, migrate, run_sql, sync_url


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_builds_exactly_what_the_models_describe(empty_database: str) -> None:
    migrate(empty_database)
    engine = create_engine(sync_url(empty_database))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                # The PostgreSQL-only indexes (search, descending due dates) are not SQLite's.
                opts={"compare_type": True, "include_object": schema_of(connection.dialect.name)},
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrade_then_downgrade_leaves_an_empty_database(empty_database: str) -> None:
    migrate(empty_database)
    assert {"users", "tasks", "alembic_version"} <= tables(empty_database)
    command.downgrade(alembic_config(empty_database), "base")
    assert tables(empty_database) <= {"alembic_version"}
    migrate(empty_database)  # and back up again
    assert {"users", "tasks"} <= tables(empty_database)


def test_alembic_check_finds_nothing_to_generate(empty_database: str) -> None:
    migrate(empty_database)
    command.check(alembic_config(empty_database))  # raises if autogenerate would write a migration


def test_the_list_query_uses_the_owner_index_on_postgresql(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        migrate(url)
        engine = create_engine(sync_url(url))
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("INSERT INTO users (id, created_at) VALUES ('u', now())")
                connection.exec_driver_sql(
                    "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) "
                    "SELECT 'u', 'task ' || i, mod(i, 2) = 0, now(), now() FROM generate_series(1, 2000) i"
                )
                connection.exec_driver_sql("ANALYZE tasks")
                connection.exec_driver_sql("SET enable_seqscan = off")
                # The title sort's key is `title_sort`, the folded title's first characters.
                for column in ("created_at", "updated_at", "title_sort"):
                    plan = "\n".join(
                        row[0]
                        for row in connection.exec_driver_sql(
                            "EXPLAIN SELECT * FROM tasks WHERE user_id = 'u' "
                            f"ORDER BY {column} DESC, id DESC LIMIT 100"
                        )
                    )
                    assert f"ix_tasks_user_id_{column}_id" in plan, plan
                    assert "Sort" not in plan, plan  # rows come in index order
        finally:
            engine.dispose()


def test_upgrading_a_populated_database_keeps_every_task(empty_database: str) -> None:
    """Tasks written under the previous schema survive the organising migration unchanged,
    with the new fields at their defaults; and downgrading keeps them too."""
    migrate(empty_database, "b72e3b487703")
    run_sql(
        empty_database,
        "INSERT INTO users (id, email, created_at) "
        "VALUES ('old-user', 'o@example.com', '2026-11-01 10:00:00')",
    )
    run_sql(
        empty_database,
        "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) VALUES "
        "('old-user', 'Ärger melden', 'STRASSE fegen', false, '2026-11-01 10:00:00', '2026-11-02 10:00:00'), "
        "('old-user', 'done', NULL, true, '2026-11-01 11:00:00', '2026-11-01 12:00:00')",
    )
    columns = "id, user_id, title, description, completed, created_at, updated_at"
    before = run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id")

    migrate(empty_database)
    assert run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id") == before
    defaults = run_sql(
        empty_database,
        "SELECT priority, due_at, remind_at, recurrence, time_zone, completed_at, next_occurrence_id, "
        "title_folded, description_folded FROM tasks ORDER BY id",
    )
    assert [tuple(row) for row in defaults] == [
        (0, None, None, None, "UTC", None, None, "ärger melden", "strasse fegen"),
        (0, None, None, None, "UTC", None, None, "done", None),
    ]
    # The counters' triggers still count (SQLite rebuilt the table).
    run_sql(
        empty_database,
        "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) "
        "VALUES ('old-user', 'new', true, '2026-11-03 10:00:00', '2026-11-03 10:00:00')",
    )
    assert run_sql(empty_database, "SELECT task_count, completed_count FROM users") == [(3, 2)]

    command.downgrade(alembic_config(empty_database), "b72e3b487703")
    assert run_sql(empty_database, f"SELECT {columns} FROM tasks WHERE id <= 2 ORDER BY id") == before
    run_sql(empty_database, "DELETE FROM tasks WHERE title = 'new'")
    assert run_sql(empty_database, "SELECT task_count, completed_count FROM users") == [(2, 1)]


def test_series_anchors_and_folded_text_are_filled_in_for_existing_tasks(empty_database: str) -> None:
    """Revision f6a7b8c9d0e1 on tasks written before it: recurring ones anchored at their due
    date, titles given their sort key, search text folded again (NFKC); every task otherwise
    unchanged, and the change counter not bumped (no sync client sees a change)."""
    migrate(empty_database, "e5f6a7b8c9d0")
    run_sql(empty_database, "INSERT INTO users (id, created_at) VALUES ('u', '2026-11-01 10:00:00')")
    run_sql(
        empty_database,
        "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at, due_at, "
        "recurrence, time_zone, title_folded, description_folded) VALUES "
        "('u', 'Banana', 'cre\u0300me', false, '2026-11-01 10:00:00', '2026-11-01 10:00:00', "
        "'2026-12-01 09:00:00', 'FREQ=DAILY', 'Europe/Berlin', 'banana', 'cre\u0300me'), "
        "('u', 'apple', NULL, false, '2026-11-01 11:00:00', '2026-11-01 11:00:00', NULL, NULL, 'UTC', "
        "'apple', NULL)",
    )
    columns = "id, title, description, completed, due_at, recurrence, version, change_seq, updated_at"
    before = run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id")

    migrate(empty_database, "f6a7b8c9d0e1")  # this revision (the lists' number their own changes)
    assert run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id") == before
    after = run_sql(
        empty_database,
        "SELECT title_sort, title_folded, description_folded, recurrence_anchor IS NOT NULL, "
        "recurrence_anchor = due_at FROM tasks ORDER BY id",
    )
    assert [tuple(row) for row in after] == [
        ("banana", "banana", "cr\u00e8me", True, True),
        ("apple", "apple", None, False, None),
    ]
    # The numbering still numbers what clients change.
    run_sql(empty_database, "UPDATE tasks SET title = 'Cherry' WHERE title = 'apple'")
    assert run_sql(empty_database, "SELECT max(change_seq) FROM tasks") == [(3,)]
    command.downgrade(alembic_config(empty_database), "e5f6a7b8c9d0")
    assert run_sql(empty_database, "SELECT title, title_folded FROM tasks ORDER BY id") == [
        ("Banana", "banana"),
        ("Cherry", "cherry"),  # folded again, as the API before this revision folds
    ]


def test_every_existing_task_goes_into_its_owners_inbox(empty_database: str) -> None:
    """Revision d0e1f2a3b4c5 on tasks written before it: each person with tasks gets one Inbox,
    every task (tombstones too) is put in its owner's, and nothing else changes: no task is
    renumbered or given an event (no sync client or webhook sees a change)."""
    migrate(empty_database, "c9d0e1f2a3b4")
    for user in ("ann", "ben"):
        run_sql(
            empty_database, f"INSERT INTO users (id, created_at) VALUES ('{user}', '2026-11-01 10:00:00')"
        )
        run_sql(
            empty_database,
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at, title_folded) VALUES "
            f"('{user}', 'one', false, '2026-11-01 10:00:00', '2026-11-01 10:00:00', 'one'), "
            f"('{user}', 'two', true, '2026-11-01 11:00:00', '2026-11-01 11:00:00', 'two')",
        )
    run_sql(empty_database, "UPDATE tasks SET deleted_at = '2026-11-02 10:00:00' WHERE title = 'two'")
    columns = "id, user_id, title, completed, version, change_seq, updated_at, deleted_at"
    before = run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id")
    events = run_sql(empty_database, "SELECT count(*) FROM events")

    migrate(empty_database, "e1f2a3b4c5d6")  # the lists' revisions (a3b4c5d6e7f8 numbers the lists)
    assert run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id") == before
    assert run_sql(empty_database, "SELECT count(*) FROM events") == events
    inboxes = run_sql(
        empty_database, "SELECT user_id, id, name, position FROM task_lists WHERE inbox ORDER BY user_id"
    )
    assert [(user, name, position) for user, _, name, position in inboxes] == [
        ("ann", "Inbox", FIRST_POSITION),
        ("ben", "Inbox", FIRST_POSITION),
    ]
    inbox_of = {user: list_id for user, list_id, _, _ in inboxes}
    placed = run_sql(empty_database, "SELECT user_id, list_id FROM tasks ORDER BY id")
    assert [list_id for _, list_id in placed] == [inbox_of[user] for user, _ in placed]
    # The numbering still numbers what clients change.
    run_sql(empty_database, "UPDATE tasks SET title = 'uno' WHERE user_id = 'ann' AND title = 'one'")
    assert run_sql(empty_database, "SELECT max(change_seq) FROM tasks WHERE user_id = 'ann'") == [
        (4,)
    ]  # 2 creates, a delete
    command.downgrade(alembic_config(empty_database), "c9d0e1f2a3b4")
    assert run_sql(empty_database, "SELECT count(*) FROM tasks") == [(4,)]


def test_existing_tasks_keep_their_order_and_lists_become_changes_sync_sees(empty_database: str) -> None:
    """Revisions f2a3b4c5d6e7 and a3b4c5d6e7f8 on data written before them: each task gets a
    position from its rank in its list (creation order), without a change of its own; each
    list is changed once, numbered after its owner's tasks, with its event; a new task then
    goes last, and a subtask's deletion follows its parent's."""
    migrate(empty_database, "e1f2a3b4c5d6")
    run_sql(empty_database, "INSERT INTO users (id, created_at) VALUES ('ann', '2026-11-01 10:00:00')")
    run_sql(
        empty_database,
        "INSERT INTO task_lists (user_id, name, name_folded, position, inbox, created_at, updated_at) "
        "VALUES ('ann', 'Inbox', 'inbox', 'a0', true, '2026-11-01 10:00:00', '2026-11-01 10:00:00')",
    )
    for hour, title in ((12, "third"), (10, "first"), (11, "second")):
        run_sql(
            empty_database,
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at, title_folded, list_id) "
            f"SELECT 'ann', '{title}', false, '2026-11-01 {hour}:00:00', '2026-11-01 {hour}:00:00', "
            f"'{title}', id FROM task_lists",
        )
    columns = "id, title, version, change_seq, updated_at"
    before = run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id")
    counter = run_sql(empty_database, "SELECT seq FROM change_counters WHERE user_id = 'ann'")[0][0]

    migrate(empty_database)
    assert run_sql(empty_database, f"SELECT {columns} FROM tasks ORDER BY id") == before
    ordered = run_sql(empty_database, "SELECT title, position FROM tasks ORDER BY position")
    assert [title for title, _ in ordered] == ["first", "second", "third"]
    assert [position for _, position in ordered] == [f"r{rank:018d}" for rank in (1, 2, 3)]
    # The Inbox: changed once, numbered next, with its event.
    assert run_sql(empty_database, "SELECT version, change_seq FROM task_lists WHERE user_id = 'ann'") == [
        (2, counter + 1)
    ]
    assert run_sql(
        empty_database, f"SELECT type FROM events WHERE user_id = 'ann' AND sequence = {counter + 1}"
    ) == [("list.updated",)]
    # What the API would write next: a task last (on PostgreSQL the trigger places it).
    inbox = run_sql(empty_database, "SELECT id FROM task_lists WHERE user_id = 'ann'")[0][0]
    if empty_database.startswith("postgresql"):
        run_sql(
            empty_database,
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at, title_folded, list_id) "
            f"VALUES ('ann', 'fourth', false, now(), now(), 'fourth', {inbox})",
        )
        assert run_sql(empty_database, "SELECT title FROM tasks ORDER BY position DESC LIMIT 1") == [
            ("fourth",)
        ]
    # A subtask follows its parent's deletion, in the same statement.
    run_sql(
        empty_database,
        "UPDATE tasks SET parent_id = (SELECT id FROM tasks WHERE title = 'first') WHERE title = 'second'",
    )
    run_sql(empty_database, "UPDATE tasks SET deleted_at = updated_at WHERE title = 'first'")
    assert run_sql(empty_database, "SELECT title FROM tasks WHERE deleted_at IS NOT NULL ORDER BY title") == [
        ("first",),
        ("second",),
    ]
