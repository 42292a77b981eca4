"""Where one request's time goes: the app called in-process over ASGI, a layer at a time.

    uv run python -m bench.request_layers postgresql://postgres@127.0.0.1:5432/DB

Needs a migrated, empty database. Prints microseconds per request, sequential,
for /health (framework and middleware), a 403 (plus token verification), a GET
(plus the database), and the same GET with the query replaced by its result
(no connection, no statement).
"""

import secrets
import sys
import time
from datetime import timedelta
from typing import Any

import uvloop

from backend.app import create_app
from backend.auth.tokens import TokenClaims, issue_token
from backend.config import Settings
from backend.store.tasks import OwnedTasks

SECRET = secrets.token_urlsafe(32)
ROUNDS = 3000


async def call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def timed(name: str, app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> None:
    for _ in range(200):
        await call(app, "GET", path, headers)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        status = await call(app, "GET", path, headers)
    print(f"{name:50s} {(time.perf_counter() - started) / ROUNDS * 1e6:7.0f} us  (status {status})")


async def main(url: str) -> None:
    # The per-user rate limit off, as `make bench` runs the API: a 429 is not the work measured.
    app = create_app(
        Settings(_env_file=None, database_url=url, better_auth_secret=SECRET, rate_limit_per_second=0)
    )
    token = issue_token(SECRET, "alice", lifetime=timedelta(hours=1))
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
    await call(app, "POST", "/api/alice/tasks", headers, b'{"title": "measured"}')
    await timed("/health", app, "/health", [])
    await timed("403: token verified, path refused", app, "/api/bob/tasks/1", headers)
    await timed("GET one task", app, "/api/alice/tasks/1", headers)
    row = await OwnedTasks(app.state.database, TokenClaims("alice")).get(1)

    async def without_query(*_args: object) -> object:
        return row

    real, OwnedTasks.get = OwnedTasks.get, without_query  # type: ignore[method-assign,assignment]
    await timed("GET one task, the query replaced by its row", app, "/api/alice/tasks/1", headers)
    OwnedTasks.get = real  # type: ignore[method-assign]
    await app.state.database.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
