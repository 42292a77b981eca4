"""The request deadline: a 503 on time, whatever the request is stuck on, and nothing after it."""

import asyncio
import json
import time
from typing import Any

import pytest

from backend.edge.middleware import DeadlineMiddleware

pytestmark = pytest.mark.anyio

SCOPE = {"type": "http", "method": "GET", "path": "/api/alice/tasks", "headers": []}


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
    request = asyncio.ensure_future(DeadlineMiddleware(stuck, seconds=0.2)(SCOPE, receive, send))
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
    await DeadlineMiddleware(quick, seconds=0.2)(SCOPE, receive, send)
    assert send.status() == 200
    await asyncio.sleep(0.3)  # the deadline's timer was cancelled: nothing more arrives
    assert len(send.messages) == 2


async def test_a_response_already_started_is_cut_short_not_replaced() -> None:
    async def slow_body(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(3600)

    send = Recorder()
    await asyncio.wait_for(DeadlineMiddleware(slow_body, seconds=0.2)(SCOPE, receive, send), 2)
    assert send.status() == 200
    assert [m["type"] for _, m in send.messages] == ["http.response.start"]


async def test_an_error_of_the_app_itself_still_propagates() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await DeadlineMiddleware(broken, seconds=5)(SCOPE, receive, Recorder())
