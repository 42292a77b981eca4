"""Every error is application/problem+json; the database being away is 503, bugs are a bare 500."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from backend.app import create_app
from tests.conftest import Caller, assert_problem, make_settings, run_sql, sign_in

pytestmark = pytest.mark.anyio


async def test_unknown_route_is_a_404_problem(client: AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404)
    assert_problem(await client.get("/api/alice/nothing"), 404)


async def test_wrong_method_is_a_405_problem_with_allow(client: AsyncClient) -> None:
    response = await client.delete("/health")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"  # HEAD wherever GET (RFC 9110)


async def test_405_allows_every_method_of_the_path(client: AsyncClient) -> None:
    collection = await client.put("/api/alice/tasks")  # DELETE clears the completed ones
    assert_problem(collection, 405)
    assert collection.headers["allow"] == "DELETE, GET, HEAD, POST"
    one = await client.post("/api/alice/tasks/1")
    assert one.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT"


async def test_a_body_that_is_not_utf8_is_a_400_problem(client: AsyncClient) -> None:
    from backend.auth.tokens import issue_token
    from tests.conftest import SECRET

    response = await client.post(
        "/api/alice/tasks",
        content=b"\xff\xfe{",
        headers={
            "Authorization": f"Bearer {issue_token(SECRET, 'alice')}",
            "Content-Type": "application/json",
        },
    )
    assert "UTF-8" in assert_problem(response, 400)["detail"]


async def test_health_needs_no_auth_and_no_database(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_answers_when_the_database_does(client: AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_request_id_is_echoed_or_generated(client: AsyncClient) -> None:
    assert (await client.get("/health", headers={"X-Request-ID": "abc-123"})).headers[
        "x-request-id"
    ] == "abc-123"
    generated = (await client.get("/health")).headers["x-request-id"]
    assert len(generated) == 32
    # Anything that is not a plain token is replaced, never echoed into logs and headers.
    hostile = (await client.get("/health", headers={"X-Request-ID": "a b\tc" + "x" * 200})).headers[
        "x-request-id"
    ]
    assert "x" * 200 not in hostile
    assert " " not in hostile


UNREACHABLE = {
    "postgresql": "postgresql://postgres@127.0.0.1:1/nowhere",
    "sqlite": "sqlite:////nonexistent-directory/todo.db",
}


@pytest.fixture(params=sorted(UNREACHABLE))
async def unreachable_client(request: pytest.FixtureRequest) -> AsyncIterator[AsyncClient]:
    app = create_app(make_settings(UNREACHABLE[request.param]))
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
        yield client
    await app.state.database.close()


async def test_an_unreachable_database_is_503_with_retry_after(unreachable_client: AsyncClient) -> None:
    alice = sign_in(unreachable_client, "alice")
    for method, path, body in [("GET", "", None), ("POST", "", {"title": "x"}), ("GET", "/1", None)]:
        response = await alice.request(method, path, json=body)
        problem = assert_problem(response, 503)
        assert response.headers["retry-after"].isdigit()
        assert "database" in problem["detail"]
        assert "127.0.0.1" not in response.text
        assert "nonexistent" not in response.text

    ready = await unreachable_client.get("/ready")
    assert_problem(ready, 503)
    assert (await unreachable_client.get("/health")).status_code == 200


async def test_a_bug_is_a_500_problem_without_internals(settings: Any) -> None:
    app: FastAPI = create_app(settings)

    async def broken() -> None:
        raise RuntimeError("secret internals: /srv/app.py line 3")

    app.add_api_route("/broken", broken)
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/broken")
    problem = assert_problem(response, 500)
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert problem["detail"] == "an unexpected error occurred"
    await app.state.database.close()


# A database-side failure on inserting a task, after the user's row is written.
REFUSE_TASKS = {
    "postgresql": [
        "CREATE FUNCTION refuse_tasks() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
        "CREATE TRIGGER refuse_tasks BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION refuse_tasks()",
    ],
    "sqlite": [
        "CREATE TRIGGER refuse_tasks BEFORE INSERT ON tasks BEGIN SELECT RAISE(ABORT, 'injected'); END"
    ],
}
ALLOW_TASKS = {
    "postgresql": ["DROP TRIGGER refuse_tasks ON tasks", "DROP FUNCTION refuse_tasks()"],
    "sqlite": ["DROP TRIGGER refuse_tasks"],
}


async def test_a_create_that_fails_halfway_leaves_nothing_behind(app: FastAPI, alice: Caller) -> None:
    """Create writes the user's row, then the task (in one statement on PostgreSQL, one
    transaction on SQLite): if the task's insert fails, the user's row goes with it."""
    url = app.state.settings.database_url
    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    for statement in REFUSE_TASKS[backend]:
        run_sql(url, statement)
    try:
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post(
                f"/api/{alice.user_id}/tasks", headers=alice.headers, json={"title": "x"}
            )
    finally:
        for statement in ALLOW_TASKS[backend]:
            run_sql(url, statement)
    problem = assert_problem(response, 500)
    assert problem["detail"] == "an unexpected error occurred"
    assert "injected" not in response.text

    assert run_sql(url, "SELECT count(*) FROM users") == [(0,)]
    assert run_sql(url, "SELECT count(*) FROM tasks") == [(0,)]
    # And the same request succeeds once the database accepts tasks again.
    assert (await alice.request("POST", json={"title": "x"})).status_code == 201
