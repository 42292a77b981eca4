"""Every error is application/problem+json; the database being away is 503, bugs are a bare 500."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from backend.main import create_app
from tests.conftest import Caller, assert_problem, make_settings, sign_in

pytestmark = pytest.mark.anyio


async def test_unknown_route_is_a_404_problem(client: AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404)
    assert_problem(await client.get("/api/alice/nothing"), 404)


async def test_wrong_method_is_a_405_problem_with_allow(client: AsyncClient) -> None:
    response = await client.delete("/health")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"


async def test_405_allows_every_method_of_the_path(client: AsyncClient) -> None:
    collection = await client.delete("/api/alice/tasks")
    assert_problem(collection, 405)
    assert collection.headers["allow"] == "GET, POST"
    one = await client.post("/api/alice/tasks/1")
    assert one.headers["allow"] == "DELETE, GET, PATCH, PUT"


async def test_a_body_that_is_not_utf8_is_a_400_problem(client: AsyncClient) -> None:
    from backend.security import issue_token
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
    await app.state.engine.dispose()


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
    await app.state.engine.dispose()


async def test_a_failed_request_rolls_back_everything_it_wrote(app: FastAPI, alice: Caller) -> None:
    """The database dependency owns the transaction: a handler that writes and then fails leaves no trace."""
    from backend import crud
    from backend.dependencies import CurrentUser, DatabaseDep
    from backend.models import TaskCreate

    async def create_then_fail(user: CurrentUser, db: DatabaseDep) -> None:
        await crud.create_task(db, user, TaskCreate(title="half-done"))
        raise RuntimeError("failure after the write")

    app.add_api_route("/api/{user_id}/create-then-fail", create_then_fail, methods=["POST"])
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post(f"/api/{alice.user_id}/create-then-fail", headers=alice.headers)
    assert_problem(response, 500)

    async with app.state.engine.connect() as connection:
        users = (await connection.exec_driver_sql("SELECT count(*) FROM users")).scalar_one()
        tasks = (await connection.exec_driver_sql("SELECT count(*) FROM tasks")).scalar_one()
    assert (users, tasks) == (0, 0)
