"""A local OpenAI-compatible model server for the tests: `POST /v1/chat/completions` answers
with the next recorded answer (text, or tool calls), streamed as OpenAI streams it (chunks
of `chat.completion.chunk`, tool-call arguments split across chunks, a usage chunk when
asked, `data: [DONE]`); and remembers every request it was sent. It stands in for
OpenAI, Ollama or vLLM at OPENAI_BASE_URL, so the API's real client path is exercised.

When nothing is scripted it answers "ok", so a fuzzer may send any number of messages.
"""

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.processes import free_port


@dataclass
class Answer:
    """One recorded answer: text, or tool calls (name, arguments); after `delay` seconds."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delay: float = 0
    chunk_delay: float = 0  # between the text's chunks
    status: int = 200  # an error status answers {"error": ...} instead


def text(content: str, delay: float = 0) -> Answer:
    return Answer(text=content, delay=delay)


def calls(*tool_calls: tuple[str, dict[str, Any]]) -> Answer:
    return Answer(tool_calls=list(tool_calls))


class ModelStub:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])])

    def script(self, *answers: Answer) -> None:
        with self.lock:
            self.answers.extend(answers)

    def _next(self) -> Answer:
        with self.lock:
            return self.answers.pop(0) if self.answers else text("ok")

    async def complete(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with self.lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
        answer = self._next()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.status != 200:
            return JSONResponse(
                {"error": {"message": "recorded failure", "type": "server_error"}}, status_code=answer.status
            )
        if not body.get("stream"):  # the API always streams (`Runner.run_streamed`)
            return JSONResponse({"error": {"message": "this stub only streams"}}, status_code=400)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _chunks(answer, body.get("model", "stub"), usage), media_type="text/event-stream"
        )


_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{index}_{name}",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
        }
        for index, (name, arguments) in enumerate(answer.tool_calls)
    ]


async def _chunks(answer: Answer, model: str, usage: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    # The text in pieces of a few characters, as a model writes it.
    for start in range(0, len(answer.text), 4):
        yield chunk({"content": answer.text[start : start + 4]})
        await asyncio.sleep(answer.chunk_delay)
    for index, call in enumerate(_tool_calls(answer)):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": arguments[:half]},
                    }
                ]
            }
        )
        yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]})
    yield chunk({}, "tool_calls" if answer.tool_calls else "stop")
    if usage:
        final = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": _USAGE,
        }
        yield b"data: " + orjson.dumps(final) + b"\n\n"
    yield b"data: [DONE]\n\n"


@contextmanager
def model_stub() -> Iterator[tuple[ModelStub, str]]:
    """The stub, served on a free port in a thread of this process; its base URL (…/v1)."""
    stub = ModelStub()
    port = free_port()
    config = uvicorn.Config(
        stub.app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the model stub did not start")
        time.sleep(0.02)
    try:
        yield stub, f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
