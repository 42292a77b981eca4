"""On PostgreSQL the list's new variants are index scans: the very statements the API sends,
EXPLAINed for a user with 20,000 tasks among other users' (`make bench` prints EXPLAIN
ANALYZE for a user with 100,000)."""

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from backend.store import conversations, events, lists, reminders, task_tree, webhooks
from backend.store.changes import SYNC_QUERIES
from backend.store.database import Query
from backend.store.task_filters import TaskFilters, list_query
from backend.store.task_statements import STATS_IN_LIST, create_with_user
from tests.conftest import fresh_postgres_database, libpq_url, migrate

SEED = [
    "INSERT INTO users (id, created_at) SELECT 'user' || u, now() FROM generate_series(0, 9) u",
    "INSERT INTO users (id, created_at) VALUES ('u', now())",
    # Other users' tasks, then ours: titles of common words and one rare one.
    """INSERT INTO tasks (user_id, title, title_folded, completed, created_at, updated_at, priority, due_at)
       SELECT 'user' || (i % 10), 'task ' || i, 'task ' || i, i % 3 = 0, now(), now(), i % 4,
              CASE WHEN i % 5 = 0 THEN NULL ELSE now() + (i % 365) * interval '1 day' END
       FROM generate_series(1, 20000) i""",
    """INSERT INTO tasks (user_id, title, title_folded, description_folded, completed, created_at, updated_at,
                          priority, due_at)
       SELECT 'u', 'task ' || i, CASE WHEN i = 777 THEN 'quarterly zebrafish report' ELSE 'task ' || i END,
              'notes ' || i, i % 3 = 0, now(), now(), i % 4,
              CASE WHEN i % 5 = 0 THEN NULL ELSE now() + (i % 365) * interval '1 day' END
       FROM generate_series(1, 20000) i""",
    "INSERT INTO tags (user_id, name, name_folded) "
    "SELECT 'u', 'tag' || t, 'tag' || t FROM generate_series(0, 49) t",
    """INSERT INTO task_tags (task_id, tag_id)
       SELECT tasks.id, tags.id FROM tasks JOIN tags ON tags.user_id = tasks.user_id
       WHERE tasks.user_id = 'u' AND tasks.id % 50 = tags.id % 50""",
    # Reminders on one task in 40, due from 50 minutes ago to 50 minutes ahead.
    "UPDATE tasks SET remind_at = now() + (id % 100 - 50) * interval '1 minute' WHERE id % 40 = 0",
    # A webhook endpoint with every event still to deliver (the trigger queues only for
    # endpoints that exist when the event does).
    "INSERT INTO webhook_endpoints (id, url, active, seen_at) "
    "VALUES (1, 'http://hooks.example', true, now())",
    "INSERT INTO webhook_deliveries (endpoint_id, user_id, sequence, next_attempt_at) "
    "SELECT 1, user_id, sequence, now() - interval '1 second' FROM events",
    # 2,000 conversations of 20 messages each (every other one answering the one before),
    # 200 of them ours.
    """INSERT INTO conversations (id, user_id, title, created_at, updated_at)
       SELECT c, CASE WHEN c % 10 = 0 THEN 'u' ELSE 'user' || (c % 10) END, 'chat ' || c,
              now(), now() - c * interval '1 minute'
       FROM generate_series(1, 2000) c""",
    """INSERT INTO messages (id, conversation_id, user_id, role, content, reply_to, idempotency_key,
                             created_at)
       SELECT m, conversations.id, conversations.user_id,
              CASE WHEN m % 2 = 1 THEN 'user' ELSE 'assistant' END, 'message ' || m,
              CASE WHEN m % 2 = 0 THEN m - 1 END, CASE WHEN m % 2 = 1 THEN 'key' || m END, now()
       FROM generate_series(1, 40000) m JOIN conversations ON conversations.id = (m - 1) / 20 + 1""",
    # A person whose tasks are in lists: 1,000 in each of 20.
    "INSERT INTO users (id, created_at) VALUES ('v', now())",
    "INSERT INTO task_lists (user_id, name, name_folded, position, inbox, created_at, updated_at) "
    "VALUES ('v', 'Inbox', 'inbox', 'a0', true, now(), now())",
    # 200 lists for every person (2,211 in all, the Inboxes the tasks above made included).
    "INSERT INTO task_lists (user_id, name, name_folded, position, created_at, updated_at) "
    "SELECT users.id, 'list ' || l, 'list ' || l, 'b' || lpad(l::text, 3, '0'), now(), now() "
    "FROM users, generate_series(1, 200) l",
    """INSERT INTO tasks (user_id, title, title_folded, completed, created_at, updated_at, list_id)
       SELECT 'v', 'task ' || i, 'task ' || i, i % 3 = 0, now(), now(), task_lists.id
       FROM generate_series(1, 20000) i
       JOIN task_lists ON task_lists.user_id = 'v' AND task_lists.name = 'list ' || (i % 20 + 1)""",
    # One of their tasks in ten is a subtask of the task 20 before it (in the same list).
    """UPDATE tasks SET parent_id = (SELECT parent.id FROM tasks AS parent
                                   WHERE parent.user_id = 'v' AND parent.id = tasks.id - 20)
       WHERE user_id = 'v' AND id % 10 = 0""",
    "ANALYZE",
]


@dataclass
class Database:
    url: str


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    with fresh_postgres_database() as url:
        migrate(url)
        with psycopg.connect(libpq_url(url), autocommit=True) as connection:
            for statement in SEED:
                connection.execute(statement)
        yield Database(url)


def plan(database: Database, filters: TaskFilters, sort: Any, order: Any, **after: Any) -> str:
    """EXPLAIN of the API's own list statement, sent by asyncpg with its own parameters, as
    the API does; `after_value` and `after_id` make it a cursor's page."""
    shape = replace(filters.shape(), after="value") if after else filters.shape()
    query = list_query(filters.status, sort, order, shape)
    parameters = {
        "owner_id": "u",
        "limit": 100,
        "offset": 0,
        **filters.parameters(datetime.now(UTC)),
        **after,
    }
    return explain(database, query, parameters)


def explain(database: Database, query: Query, parameters: dict[str, Any]) -> str:
    async def explained() -> str:
        connection = await asyncpg.connect(libpq_url(database.url))
        try:
            rows = await connection.fetch(f"EXPLAIN {query.sql}", *query.arguments(parameters))
        finally:
            await connection.close()
        return "\n".join(row[0] for row in rows)

    return asyncio.run(explained())


@pytest.mark.parametrize(
    ("sort", "order", "index"),
    [
        ("due", "asc", "ix_tasks_user_id_due_at_id"),
        ("due", "desc", "ix_tasks_user_id_due_at_desc_id"),
        ("priority", "desc", "ix_tasks_user_id_priority_id"),
        ("priority", "asc", "ix_tasks_user_id_priority_id"),
    ],
)
def test_the_new_sorts_read_an_index_in_order(database: Database, sort: str, order: str, index: str) -> None:
    explained = plan(database, TaskFilters(), sort, order)
    assert index in explained, explained
    assert "Sort" not in explained.split("->")[0] or "Incremental" in explained, explained


def test_a_selective_search_uses_the_trigram_index(database: Database) -> None:
    explained = plan(database, TaskFilters(words=("zebrafish",)), "created", "desc")
    assert "ix_tasks_title_folded_trgm" in explained, explained
    assert "Seq Scan on tasks" not in explained, explained


def test_a_tag_filter_reads_the_tags_links_by_index(database: Database) -> None:
    explained = plan(database, TaskFilters(tags=("tag7",)), "created", "desc")
    assert "Seq Scan on task_tags" not in explained, explained
    assert "Seq Scan on tasks" not in explained, explained
    assert "task_tags" in explained, explained


def test_a_priority_filter_and_overdue_use_an_index(database: Database) -> None:
    for filters in (TaskFilters(priorities=frozenset({"high"})), TaskFilters(overdue=True)):
        explained = plan(database, filters, "created", "desc")
        assert "Seq Scan on tasks" not in explained, explained


@pytest.mark.parametrize("full", [False, True], ids=["after-a-position", "from-scratch"])
def test_a_sync_reads_the_owners_changes_by_index_in_change_order(database: Database, full: bool) -> None:
    query = SYNC_QUERIES[full]
    explained = explain(database, query, {"owner_id": "u", "since": 19_000, "limit": 101})
    assert "ix_tasks_user_id_change_seq" in explained, explained
    # The page is a range of the index, in order; the one Sort, above it, orders the page's
    # rows (at most `limit`) after they are joined to the owner's counter, read with them.
    assert "Sort" not in explained[explained.index("Limit") :], explained


@pytest.mark.parametrize(
    ("sort", "value"), [("created", datetime.now(UTC)), ("due", datetime.now(UTC)), ("title", "task 5")]
)
def test_a_cursors_page_is_a_range_of_the_sorts_index(database: Database, sort: str, value: Any) -> None:
    explained = plan(database, TaskFilters(), sort, "asc", after_value=value, after_id=10_000)
    assert "Seq Scan on tasks" not in explained, explained
    assert "Index" in explained, explained


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        ("_DUE_OWNERS", "ix_tasks_armed_reminders"),
        ("_MISSED", "ix_tasks_armed_reminders"),
        ("_FIRE", "ix_tasks_user_id_remind_at"),  # one owner's due reminders
    ],
)
def test_the_reminder_scans_are_index_ranges(database: Database, statement: str, index: str) -> None:
    """The scheduler's scans across every user read the partial index that holds only the
    reminders still to fire; firing one owner's reads that owner's; never a walk of all tasks."""
    now = datetime.now(UTC)
    parameters = {
        "now": now,
        "oldest": now - timedelta(hours=1),
        "since": now - timedelta(days=3650),
        "limit": 100,
        "owner_id": "u",
    }
    explained = explain(database, getattr(reminders, statement), parameters)
    assert index in explained, explained
    assert "Seq Scan on tasks" not in explained, explained


@pytest.mark.parametrize(
    ("statement", "indexes"),
    [
        (events._AFTER, ["pk_events", "pk_tasks"]),  # a stream's or a feed's read
        (events._POSITION, ["pk_change_counters", "pk_events"]),  # where a stream starts
        (webhooks._CLAIM, ["ix_webhook_deliveries_endpoint_id_next_attempt_at", "pk_webhook_deliveries"]),
        (webhooks._DELIVERED, ["pk_webhook_deliveries"]),
        (webhooks._RETRY, ["pk_webhook_deliveries"]),
    ],
)
def test_event_reads_and_webhook_claims_are_index_ranges(
    database: Database, statement: Query, indexes: list[str]
) -> None:
    """Streams read one person's events after a position, the webhook sender claims the heads
    of each person's queue: with 40,000 events and as many deliveries queued, each is an
    index range, never a walk of a table."""
    now = datetime.now(UTC)
    parameters = {
        "owner_id": "u",
        "after": 19_900,
        "limit": 100,
        "endpoint": 1,
        "now": now,
        "lease_until": now + timedelta(seconds=15),
        "seq": 5,
        "retry_at": now,
    }
    explained = explain(database, statement, parameters)
    for index in indexes:
        assert index in explained, explained
    # (A task's tags are named from the person's few tags as every task read names them.)
    for table in ("events", "tasks", "webhook_deliveries", "change_counters"):
        assert f"Seq Scan on {table}" not in explained, explained


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        (conversations._LOCK, "pk_conversations"),  # a turn takes the conversation's lease
        (conversations._TAKE_LEASE, "pk_conversations"),
        (conversations._GIVE_LEASE, "pk_conversations"),
        (conversations._HISTORY, "ix_messages_conversation_id_id"),  # the model's window
        (conversations._BY_KEY, "uq_messages_user_id_idempotency_key"),  # a retry's message
        (conversations._REPLY_TO, "uq_messages_reply_to"),  # and its answer
        (conversations._LIST, "ix_conversations_user_id_updated_at_id"),
        (conversations._COUNT, "ix_conversations_user_id_updated_at_id"),
        (conversations._GET, "pk_conversations"),
        (conversations._MESSAGES, "ix_messages_conversation_id_id"),
        (conversations._DELETE, "pk_conversations"),
    ],
)
def test_the_chat_statements_are_index_lookups(database: Database, statement: Query, index: str) -> None:
    """With 2,000 conversations and 40,000 messages, a turn's statements and the conversation
    routes read by index, never a walk of either table."""
    parameters = {
        "owner_id": "u",
        "conversation_id": 1990,
        "message_id": 39_781,
        "before": 39_781,
        "after": 0,
        "limit": 40,
        "offset": 0,
        "idempotency_key": "key39781",
        "until": datetime.now(UTC),
        "now": datetime.now(UTC),
    }
    explained = explain(database, statement, parameters)
    assert index in explained, explained
    for table in ("conversations", "messages"):
        assert f"Seq Scan on {table}" not in explained, explained


def _list_of_ours(database: Database) -> int:
    async def find() -> int:
        connection = await asyncpg.connect(libpq_url(database.url))
        try:
            found: int = await connection.fetchval(
                "SELECT id FROM task_lists WHERE user_id = 'v' AND name = 'list 7'"
            )
        finally:
            await connection.close()
        return found

    return asyncio.run(find())


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        (lists._LIST, "ix_task_lists_user_id_position_id"),  # the lists, with their counts
        (lists._GET, "pk_task_lists"),
        # A create's count and last place: any index led by the person.
        (
            lists._SURVEY,
            (
                "ix_task_lists_user_id_position_id",
                "uq_task_lists_user_id_name_folded",
                "ix_task_lists_user_id_change_seq",
            ),
        ),
        (lists._LOCK, "pk_task_lists"),
        (lists._NAMED, "uq_task_lists_user_id_name_folded"),
        (lists._POSITION_OF, "pk_task_lists"),  # a move's neighbours
        (lists._NEXT_UP, "ix_task_lists_user_id_position_id"),
        (lists._FIRST, "ix_task_lists_user_id_position_id"),
        (lists._MOVE_TASKS, "ix_tasks_list_id_created_at_id"),
        (lists._DELETE_TASKS, "ix_tasks_list_id_created_at_id"),
        (STATS_IN_LIST, "ix_tasks_list_id_created_at_id"),
        (create_with_user(frozenset(), 0, True), "pk_task_lists"),  # a create into a list
        (create_with_user(frozenset(), 0, False), "uq_task_lists_user_id_inbox"),  # into the Inbox
    ],
)
def test_the_list_statements_read_by_index(
    database: Database, statement: Query, index: str | tuple[str, ...]
) -> None:
    """With 201 lists a person and 1,000 tasks a list, every list statement and a list's
    tasks and counts read by index: never a walk of the lists or of the tasks."""
    list_id = _list_of_ours(database)
    now = datetime.now(UTC)
    parameters = {
        "owner_id": "v",
        "list_id": list_id,
        "from_list_id": list_id,
        "target_id": list_id,
        "new_list_id": list_id,
        "folded": "list 7",
        "moved_id": list_id,
        "lower": "b007",
        "now": now,
        "day_starts": now,
        "day_ends": now,
        "max_tasks": 100_000,
        **dict.fromkeys(
            (
                "user_email",
                "user_name",
                "new_title",
                "new_description",
                "new_completed",
                "new_priority",
                "new_due_at",
                "new_remind_at",
                "new_recurrence",
                "new_time_zone",
                "new_completed_at",
                "new_title_folded",
                "new_title_sort",
                "new_description_folded",
                "new_recurrence_anchor",
                "new_parent_id",
            )
        ),
    }
    explained = explain(database, statement, parameters)
    assert any(name in explained for name in ((index,) if isinstance(index, str) else index)), explained
    for table in ("task_lists", "tasks"):
        assert f"Seq Scan on {table}" not in explained, explained


def _tree_of_ours(database: Database) -> tuple[int, int, int]:
    """A list of person v's, a task of theirs in it with subtasks, and one of those subtasks."""

    async def find() -> tuple[int, int, int]:
        connection = await asyncpg.connect(libpq_url(database.url))
        try:
            row = await connection.fetchrow(
                "SELECT list_id, parent_id, id FROM tasks WHERE user_id = 'v' AND parent_id IS NOT NULL "
                "ORDER BY id LIMIT 1"
            )
        finally:
            await connection.close()
        assert row is not None
        return row["list_id"], row["parent_id"], row["id"]

    return asyncio.run(find())


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        # A list in its order, a task's subtasks in theirs, a list's top level.
        ("list", "ix_tasks_list_id_position_id"),
        ("subtasks", "ix_tasks_parent_id_position_id"),
        ("top", "ix_tasks_list_id_position_id"),
        # A move's reads and its write; a task's chain and height.
        (task_tree.CHAIN, "pk_tasks"),
        (task_tree.HEIGHT, "ix_tasks_parent_id_position_id"),
        (task_tree._TOP.after, "pk_tasks"),
        (task_tree._TOP.next_up, "ix_tasks_list_id_position_id"),
        (task_tree._TOP.first, "ix_tasks_list_id_position_id"),
        (task_tree._UNDER.after, "pk_tasks"),
        (task_tree._UNDER.next_up, "ix_tasks_parent_id_position_id"),
        (task_tree._UNDER.first, "ix_tasks_parent_id_position_id"),
        (task_tree._PUT, "pk_tasks"),
        (task_tree.NEXT_SIBLING, "ix_tasks_list_id_position_id"),
    ],
)
def test_the_tree_statements_read_by_index(database: Database, statement: Query | str, index: str) -> None:
    """With 1,000 tasks a list, one in ten a subtask: a list in its order, a level of the tree,
    and every statement of a move read by index."""
    list_id, parent_id, child_id = _tree_of_ours(database)
    if isinstance(statement, str):
        filters = {
            "list": TaskFilters(list_id=list_id),
            "subtasks": TaskFilters(parent=parent_id),
            "top": TaskFilters(list_id=list_id, parent="none"),
        }[statement]
        shape = filters.shape()
        query = list_query(filters.status, "position", "asc", shape)
        parameters = {"owner_id": "v", "limit": 100, "offset": 0, **filters.parameters(datetime.now(UTC))}
        explained = explain(database, query, parameters)
        assert index in explained, explained
        assert (
            "Sort" not in explained.split("SubPlan")[0].split("->  Limit")[-1] or "Incremental" in explained
        )
        return
    parameters = {
        "owner_id": "v",
        "task_id": parent_id,
        "start_id": child_id,
        "moved_id": child_id,
        "after_id": child_id,
        "to_list_id": list_id,
        "to_parent_id": parent_id,
        "list_id": list_id,
        "lower": "r",
        "new_position": "r5",
        "now": datetime.now(UTC),
    }
    explained = explain(database, statement, parameters)
    assert index in explained, explained
    assert "Seq Scan on tasks" not in explained, explained
