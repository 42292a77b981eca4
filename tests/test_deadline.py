"""The request deadline: a 503 on time, whatever the request is stuck on, and nothing after it;
and a bug's 500 from the same guard (`edge.middleware.EdgeMiddleware`)."""

import asyncio
import json
import time
from typing import Any

import pytest

from backend.edge.middleware import EdgeMiddleware

pytestmark = pytest.mark.anyio

SCOPE = {"type": "http", "method": "GET", "path": "/api/alice/tasks", "headers": []}


def within_deadline(app: Any, seconds: float) -> EdgeMiddleware:
    """The edge with only a deadline set (no hosts, CORS origins or metrics)."""
    return EdgeMiddleware(app, deadline_seconds=seconds)


class Recorder:
    """An ASGI `send` that keeps what it was sent, and when."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.messages: list[tuple[float, dict[str, Any]]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append((time.monotonic() - self.started, message))

    def status(self) -> int | None:
        starts = [m for _, m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


async def receive() -> dict[str, Any]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


async def test_a_request_past_its_deadline_gets_a_503_even_while_its_cleanup_hangs() -> None:
    cleanup_done = asyncio.Event()

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            # Cleanup that hangs (a stalled connection, say), then tries to answer.
            await asyncio.shield(asyncio.sleep(1.0))
            await send({"type": "http.response.start", "status": 500, "headers": []})
            cleanup_done.set()

    send = Recorder()
    request = asyncio.ensure_future(within_deadline(stuck, seconds=0.2)(SCOPE, receive, send))
    await asyncio.sleep(0.5)
    assert not cleanup_done.is_set()
    # Answered at the deadline, not when the cleanup ends.
    assert send.status() == 503
    sent_at, start = send.messages[0]
    assert 0.2 <= sent_at < 0.45
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"].isdigit()
    body = json.loads(send.messages[1][1]["body"])
    assert body["status"] == 503
    assert "0.2 seconds" in body["detail"]

    await asyncio.wait_for(request, 3)  # the middleware ends once the cleanup does, without raising
    assert cleanup_done.is_set()
    assert [m["type"] for _, m in send.messages] == ["http.response.start", "http.response.body"]


async def test_a_request_within_its_deadline_is_untouched() -> None:
    async def quick(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    send = Recorder()
    await within_deadline(quick, seconds=0.2)(SCOPE, receive, send)
    assert send.status() == 200
    await asyncio.sleep(0.3)  # the deadline's timer was cancelled: nothing more arrives
    assert len(send.messages) == 2


async def test_a_response_already_started_is_cut_short_not_replaced() -> None:
    async def slow_body(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(3600)

    send = Recorder()
    await asyncio.wait_for(within_deadline(slow_body, seconds=0.2)(SCOPE, receive, send), 2)
    assert send.status() == 200
    assert [m["type"] for _, m in send.messages] == ["http.response.start"]


async def test_an_error_of_the_app_itself_is_a_500_problem_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    send = Recorder()
    await within_deadline(broken, seconds=5)(SCOPE, receive, send)
    assert send.status() == 500
    assert "a bug" not in send.messages[1][1]["body"].decode()
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)


async def test_an_error_after_the_answer_started_drops_the_connection() -> None:
    async def half_answered(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("a bug")

    send = Recorder()
    with pytest.raises(RuntimeError, match="a bug"):
        await within_deadline(half_answered, seconds=5)(SCOPE, receive, send)
    assert [m["type"] for _, m in send.messages] == ["http.response.start"]
