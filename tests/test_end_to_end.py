"""The real thing: `todo-api migrate`, `todo-api token` and `todo-api serve` as separate processes."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, SECRET
from tests.processes import Server, fresh_server


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with fresh_server(request.param, tmp_path) as server:
        yield server


def test_a_full_flow_against_the_real_server(server: Server) -> None:
    token = server.token("e2e-user", "--email", "e2e@example.com", "--minutes", "5")
    other = server.token("someone-else")
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        health = http.get("/health")
        assert health.json() == {"status": "ok"}
        assert "server" not in health.headers  # the server software is not advertised
        assert "date" in health.headers
        assert http.get("/api/e2e-user/tasks").status_code == 401

        created = http.post("/api/e2e-user/tasks", json={"title": "Write the e2e test"}, headers=auth)
        assert created.status_code == 201
        task = created.json()
        # A reference relative to the request's URL, resolved as a client would.
        location = str(created.url.join(created.headers["location"]))
        assert location == f"{server.base_url}/api/e2e-user/tasks/{task['id']}"

        assert http.get(location, headers=auth).json() == task
        toggled = http.patch(f"{location}/complete", headers=auth).json()
        assert toggled["completed"] is True
        updated = http.patch(location, json={"description": "with a real server"}, headers=auth).json()
        assert updated["description"] == "with a real server"
        replaced = http.put(location, json={"title": "Ship it"}, headers=auth).json()
        assert (replaced["title"], replaced["description"], replaced["completed"]) == ("Ship it", None, True)

        listing = http.get("/api/e2e-user/tasks", params={"status": "completed"}, headers=auth)
        assert [t["id"] for t in listing.json()] == [task["id"]]
        assert listing.headers["x-total-count"] == "1"

        assert http.get(location, headers={"Authorization": f"Bearer {other}"}).status_code == 403
        assert (
            http.get(
                f"/api/someone-else/tasks/{task['id']}", headers={"Authorization": f"Bearer {other}"}
            ).status_code
            == 404
        )

        assert http.delete(location, headers=auth).status_code == 204
        gone = http.get(location, headers=auth)
        assert gone.status_code == 404
        assert gone.headers["content-type"] == "application/problem+json"

        traced = http.get("/health", headers={"X-Request-ID": "trace-me-42"})
        assert traced.headers["x-request-id"] == "trace-me-42"
        docs = http.get("/docs")
        assert docs.status_code == 200

    # One structured line per request, with the route template, never the token or the user id.
    assert server.stop()
    access = [line for line in server.log_lines() if line.get("logger") == "backend.access"]
    assert len(access) == 15
    assert {line["route"] for line in access} >= {
        "/api/{user_id}/tasks",
        "/api/{user_id}/tasks/{task_id}",
        "/api/{user_id}/tasks/{task_id}/complete",
        "/health",
    }
    assert all({"method", "route", "status", "duration_ms", "request_id"} <= set(line) for line in access)
    assert any(line["request_id"] == "trace-me-42" for line in access)
    text = server.log_path.read_text()
    assert token not in text
    assert SECRET not in text
    assert "e2e-user" not in text
