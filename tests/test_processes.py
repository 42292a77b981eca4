"""Server processes as they run in production: shutdown, several at once, and what they log."""

import asyncio
import re
import signal
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from backend.auth.tokens import issue_token
from tests.conftest import SECRET, libpq_url, postgres_admin_url
from tests.faults import fault_proxy
from tests.processes import blocking, server_env, serving

pytestmark = pytest.mark.anyio


def our_connections(database_url: str) -> int:
    with psycopg.connect(libpq_url(postgres_admin_url())) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'todo-api'",
            (make_url(database_url).database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_closes_the_pool(
    postgres_url: str, tmp_path: Path
) -> None:
    url = make_url(postgres_url)
    auth = {"Authorization": f"Bearer {issue_token(SECRET, 'alice')}"}
    with fault_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        async with serving(server_env(proxied), tmp_path / "server.log") as server:
            async with httpx.AsyncClient(base_url=server.base_url, headers=auth, timeout=30) as http:
                assert (await http.post("/api/alice/tasks", json={"title": "one"})).status_code == 201
                assert our_connections(postgres_url) >= 1

                proxy.slow(0.4)  # every round-trip to the database now takes 0.4 s
                in_flight = asyncio.create_task(http.get("/api/alice/tasks"))
                await asyncio.sleep(0.3)
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)

                with pytest.raises(httpx.ConnectError):
                    await httpx.AsyncClient(timeout=2).get(f"{server.base_url}/health")
                response = await in_flight
                assert response.status_code == 200
                assert [task["title"] for task in response.json()] == ["one"]
                proxy.restore()

            assert await blocking(server.stop), server.log_path.read_text()
    assert our_connections(postgres_url) == 0


async def test_two_processes_on_one_database_serve_one_user_consistently(
    postgres_url: str, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {issue_token(SECRET, 'alice')}"}
    env = server_env(postgres_url)
    async with (
        serving(env, tmp_path / "a.log") as first,
        serving(env, tmp_path / "b.log") as second,
        httpx.AsyncClient(base_url=first.base_url, headers=auth) as a,
        httpx.AsyncClient(base_url=second.base_url, headers=auth) as b,
    ):
        created = (await a.post("/api/alice/tasks", json={"title": "shared"})).json()
        task_url = f"/api/alice/tasks/{created['id']}"
        assert (await b.get(task_url)).json() == created

        toggles = [a, b] * 5
        results = await asyncio.gather(*(client.patch(f"{task_url}/complete") for client in toggles))
        assert all(result.status_code == 200 for result in results)
        assert (await a.get(task_url)).json()["completed"] is False  # ten flips

        assert (await b.patch(task_url, json={"description": "from b"})).json()["description"] == "from b"
        assert (await a.get(task_url)).json()["description"] == "from b"
        listed_a, listed_b = (
            (await a.get("/api/alice/tasks")).json(),
            (await b.get("/api/alice/tasks")).json(),
        )
        assert listed_a == listed_b
        assert (await b.delete(task_url)).status_code == 204
        assert (await a.get(task_url)).status_code == 404


async def test_no_secret_or_token_ever_reaches_the_logs(postgres_url: str, tmp_path: Path) -> None:
    good = issue_token(SECRET, "alice", email="alice@example.com")
    wrong_secret = issue_token("another-secret-that-is-long-enough-0123456789", "alice")
    expired = issue_token(SECRET, "alice", lifetime=-timedelta(hours=1))
    tokens = [good, wrong_secret, expired, good + "tampered"]
    async with serving(server_env(postgres_url, LOG_LEVEL="debug"), tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            for token in tokens:
                headers = {"Authorization": f"Bearer {token}"}
                await http.get("/api/alice/tasks", headers=headers)
                await http.get("/api/bob/tasks", headers=headers)
                await http.post("/api/alice/tasks", headers=headers, json={"title": "x", "password": SECRET})
                await http.post(
                    "/api/alice/tasks", headers=headers, content=f'{{"title": "{SECRET}"'.encode()
                )
                await http.get("/api/alice/tasks/999999", headers=headers)
                await http.get(f"/api/alice/tasks?token={token}", headers=headers)
            await http.get("/health", headers={"X-Request-ID": good})
        assert await blocking(server.stop)
    log = server.log_path.read_text()
    access = [line for line in server.log_lines() if line.get("logger") == "backend.access"]
    assert len(access) >= 25  # the run did log its requests
    assert SECRET not in log
    for token in tokens:
        for part in token.split("."):
            assert part not in log, "a token (or part of one) was logged"
    assert "alice@example.com" not in log
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}", log), "something shaped like a JWT was logged"
