"""At most two SQL statements per request, on every route.

Counted as they are sent: by SQLAlchemy's cursor events on SQLite, and by the
connection on PostgreSQL (where statements go to asyncpg directly). Transaction
control is listed but not counted as work: only create on SQLite opens a transaction.
"""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from tests.conftest import Caller

pytestmark = pytest.mark.anyio


@pytest.fixture
def statements(app: FastAPI) -> Iterator[list[str]]:
    executed: list[str] = []
    listeners = app.state.database.statement_listeners
    listeners.append(executed.append)
    yield executed
    listeners.remove(executed.append)


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


def work(statements: list[str]) -> list[str]:
    return [statement for statement in statements if not statement.startswith(TRANSACTION_CONTROL)]


async def test_every_route_needs_at_most_two_statements(
    app: FastAPI, alice: Caller, alice_task: dict[str, Any], statements: list[str]
) -> None:
    writes_in_with = app.state.database.writes_in_with
    task = f"/{alice_task['id']}"
    calls = [
        ("POST", "", {"title": "new"}),
        ("GET", "", None),
        ("GET", "?status=completed&sort=title&limit=1&offset=1", None),
        ("GET", "?offset=1000", None),  # past the end: the page, then the count
        ("GET", task, None),
        ("PUT", task, {"title": "replaced"}),
        ("PATCH", task, {"description": "patched"}),
        ("PATCH", f"{task}/complete", None),
        ("PATCH", f"{task}/complete", {"completed": True}),
        ("GET", "/999999", None),  # a miss costs the same
        ("DELETE", task, None),
    ]
    for method, path, body in calls:
        statements.clear()
        response = await alice.request(method, path, json=body)
        assert response.status_code < 500
        assert 1 <= len(work(statements)) <= 2, (method, path, statements)
        # Only create on SQLite needs a transaction; PostgreSQL writes the user's row and
        # the task in one statement. Every other route is one statement, or reads.
        opened = statements[0] == "BEGIN" or statements[0].startswith("BEGIN ")
        assert opened == (method == "POST" and not writes_in_with), (method, path, statements)


async def test_reads_and_single_task_writes_are_one_statement(
    alice: Caller, alice_task: dict[str, Any], statements: list[str]
) -> None:
    task = f"/{alice_task['id']}"
    for method, path, body in [
        ("GET", "", None),
        ("GET", task, None),
        ("PATCH", task, {"title": "t"}),
        ("PATCH", f"{task}/complete", None),
        ("DELETE", task, None),
    ]:
        statements.clear()
        await alice.request(method, path, json=body)
        assert statements == work(statements)
        assert len(statements) == 1, (method, path, statements)
