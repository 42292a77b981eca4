"""The one edge layer (`edge.middleware.EdgeMiddleware`) called directly: a bug's 500, and a
bug after the answer started, which can only drop the connection."""

from typing import Any

import pytest

from backend.edge.middleware import EdgeMiddleware
from tests.test_deadline import SCOPE, Recorder, receive

pytestmark = pytest.mark.anyio


async def test_an_error_of_the_app_is_a_500_problem_with_the_edge_headers_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    send = Recorder()
    await EdgeMiddleware(broken)(dict(SCOPE), receive, send)
    assert send.status() == 500
    headers = dict(send.messages[0][1]["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert len(headers[b"x-request-id"]) == 32
    assert b"a bug" not in send.messages[1][1]["body"]
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)


async def test_an_error_after_the_answer_started_drops_the_connection() -> None:
    async def half_answered(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("a bug")

    send = Recorder()
    with pytest.raises(RuntimeError, match="a bug"):
        await EdgeMiddleware(half_answered)(dict(SCOPE), receive, send)
    assert [message["type"] for _, message in send.messages] == ["http.response.start"]
