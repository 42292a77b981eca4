"""The real thing: `todo-api migrate`, `todo-api token` and `todo-api serve` as separate processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, SECRET, fresh_database

# The entry point installed beside this interpreter, as `make` installs it.
TODO_API = str(Path(sys.executable).parent / "todo-api")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[str]
    log_path: Path

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [TODO_API, *args], env=self.env, capture_output=True, text=True, timeout=60, check=True
        )
        return result.stdout.strip()

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with fresh_database(request.param, tmp_path) as database_url:
        env = {**os.environ, "DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET}
        subprocess.run([TODO_API, "migrate"], env=env, check=True, timeout=60, capture_output=True)
        port = free_port()
        log_path = tmp_path / "server.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [TODO_API, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=tmp_path,
            )
        server = Server(f"http://127.0.0.1:{port}", env, process, log_path)
        try:
            wait_until_ready(server)
            yield server
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited early:\n{server.log_path.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not become ready:\n{server.log_path.read_text()}")


def test_a_full_flow_against_the_real_server(server: Server) -> None:
    token = server.cli("token", "--user-id", "e2e-user", "--email", "e2e@example.com", "--minutes", "5")
    other = server.cli("token", "--user-id", "someone-else")
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/api/e2e-user/tasks").status_code == 401

        created = http.post("/api/e2e-user/tasks", json={"title": "Write the e2e test"}, headers=auth)
        assert created.status_code == 201
        task = created.json()
        location = created.headers["location"]
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
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=15)
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
