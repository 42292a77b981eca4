"""Webhooks, against real servers and a real receiver: every event POSTed as a CloudEvent that
the `standardwebhooks` library verifies; retried after 500s, timeouts and a restart, in each
user's order, then given up as documented; the request a Dapr sidecar's publish API takes."""

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from backend.auth.tokens import issue_token
from backend.config import Settings
from tests.conftest import BACKENDS, SECRET, fresh_database, fresh_postgres_database, migrate, run_sql
from tests.processes import Server, free_port, running_server, server_env

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes...!").decode()
ARRIVES_WITHIN = 10.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def verified(self) -> dict[str, Any]:
        """The body, once the signature checks out (raises otherwise)."""
        event: dict[str, Any] = Webhook(WEBHOOK_SECRET).verify(self.body, self.headers)
        return event


@dataclass
class Receiver:
    """An HTTP server that records each request and answers as `answer` says: a status, or
    "hang" (no answer until the sender has given up waiting)."""

    port: int
    answer: Callable[[int], int | str] = lambda _: 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def wait_for(self, count: int, within: float = ARRIVES_WITHIN) -> list[Received]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} webhooks arrived: {self.received}")

    def answered(self) -> list[Received]:
        """What arrived and was answered 2xx."""
        with self.lock:
            return [r for i, r in enumerate(self.received) if self.answer(i) in range(200, 300)]


@contextmanager
def receiving(
    answer: Callable[[int], int | str] = lambda _: 200, port: int | None = None
) -> Iterator[Receiver]:
    receiver = Receiver(port or free_port(), answer)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with receiver.lock:
                index = len(receiver.received)
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
            reply = receiver.answer(index)
            if reply == "hang":
                time.sleep(2)  # WEBHOOK_TIMEOUT_SECONDS is 1 here
                reply = 200
            assert isinstance(reply, int)
            self.send_response(reply)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def webhook_env(url: str, receiver_url: str, **settings: str) -> dict[str, str]:
    return server_env(
        url,
        WEBHOOK_URL=receiver_url,
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_TIMEOUT_SECONDS="1",
        WEBHOOK_RETRY_BASE_SECONDS="0.2",
        **settings,
    )


def write(server: Server, user: str, method: str, path: str = "", **body: Any) -> dict[str, Any]:
    response = httpx.request(
        method,
        f"{server.base_url}/api/{user}/tasks{path}",
        json=body or None,
        headers={"Authorization": f"Bearer {issue_token(SECRET, user)}"},
        timeout=30,
    )
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.status_code != 204 else {}


def queued(url: str) -> int:
    return int(run_sql(url, "SELECT count(*) FROM webhook_deliveries")[0][0])


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        migrate(url)
        yield url


def test_every_event_is_posted_as_a_signed_cloud_event(database: str, tmp_path: Path) -> None:
    with (
        receiving() as receiver,
        running_server(webhook_env(database, receiver.url), tmp_path / "s.log") as server,
    ):
        task = write(server, "hook-ana", "POST", title="Water the plants")
        write(server, "hook-ana", "PATCH", f"/{task['id']}/complete")
        write(server, "hook-ana", "DELETE", f"/{task['id']}")
        posts = receiver.wait_for(3)

    events = [post.verified() for post in posts]
    assert [e["type"] for e in events] == ["todo.task.created", "todo.task.completed", "todo.task.deleted"]
    assert [e["sequence"] for e in events] == [
        "00000000000000000001",
        "00000000000000000002",
        "00000000000000000003",
    ]
    for post, event in zip(posts, events, strict=True):
        assert post.path == "/hooks"
        assert post.headers["content-type"] == "application/cloudevents+json"
        assert post.headers["webhook-id"] == event["id"]
        assert event["specversion"] == "1.0"
        assert event["source"] == "http://localhost:8000"
        assert event["userid"] == "hook-ana"
        assert event["subject"] == str(task["id"])
    # A body changed on the way fails the check.
    forged = Received(posts[0].path, posts[0].headers, posts[0].body.replace(b'"hook-ana"', b'"hook-bob"'))
    assert forged.body != posts[0].body
    with pytest.raises(WebhookVerificationError, match="signature"):
        forged.verified()
    assert queued(database) == 0


def test_500s_and_timeouts_are_tried_again_and_a_users_order_is_kept(database: str, tmp_path: Path) -> None:
    answers: dict[int, int | str] = {0: 500, 1: "hang", 2: 503}
    with (
        receiving(lambda index: answers.get(index, 200)) as receiver,
        running_server(webhook_env(database, receiver.url), tmp_path / "s.log") as server,
    ):
        first = write(server, "hook-ben", "POST", title="first")
        write(server, "hook-ben", "POST", title="second")
        posts = receiver.wait_for(5, within=20)
    ids = [post.headers["webhook-id"] for post in posts]
    # The first event four times (500, no answer, 503, 200), the same id each time; the
    # second only after the first was taken.
    assert ids == ["hook-ben-1"] * 4 + ["hook-ben-2"]
    assert all(post.verified()["subject"] == str(first["id"]) for post in posts[:4])
    assert queued(database) == 0


def test_a_delivery_outlives_a_server_restart(database: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: the first tries are refused
    env = webhook_env(database, f"http://127.0.0.1:{port}/hooks")
    with running_server(env, tmp_path / "first.log") as server:
        write(server, "hook-cy", "POST", title="while the receiver is down")
        time.sleep(1)
    assert queued(database) == 1
    assert any(line.get("message", "").startswith("a webhook delivery failed") for line in server.log_lines())
    with receiving(port=port) as receiver, running_server(env, tmp_path / "second.log"):
        (post,) = receiver.wait_for(1)
        time.sleep(0.5)
    assert post.verified()["data"]["title"] == "while the receiver is down"
    assert queued(database) == 0


def test_a_delivery_is_given_up_after_webhook_max_attempts(database: str, tmp_path: Path) -> None:
    env = webhook_env(database, "", WEBHOOK_MAX_ATTEMPTS="3", METRICS_ENABLED="true")
    with receiving(lambda _: 500) as receiver:
        env["WEBHOOK_URL"] = receiver.url
        with running_server(env, tmp_path / "s.log") as server:
            write(server, "hook-dee", "POST", title="nobody takes this")
            receiver.wait_for(3)
            time.sleep(1.5)  # a fourth try would have come by now (0.2 s, then 0.8 s apart)
            metrics = httpx.get(f"{server.base_url}/metrics").text
    assert len(receiver.received) == 3
    assert queued(database) == 0
    assert 'todo_api_webhook_deliveries_total{outcome="given_up"} 1.0' in metrics
    assert 'todo_api_webhook_deliveries_total{outcome="failed"} 2.0' in metrics
    (given_up,) = [
        line for line in server.log_lines() if line.get("message") == "a webhook delivery was given up"
    ]
    assert (given_up["event"], given_up["attempts"], given_up["error"]) == ("hook-dee-1", 3, "status 500")


def test_a_dapr_sidecars_publish_endpoint_takes_the_events_as_they_are(database: str, tmp_path: Path) -> None:
    """Dapr's publish API (POST /v1.0/publish/<pubsub>/<topic>) takes a body of content type
    application/cloudevents+json as the CloudEvent itself, unwrapped, and answers 204."""
    with receiving(lambda _: 204) as sidecar:
        url = f"http://127.0.0.1:{sidecar.port}/v1.0/publish/pubsub/task-events"
        with running_server(webhook_env(database, url), tmp_path / "s.log") as server:
            write(server, "hook-eve", "POST", title="to Kafka")
            (post,) = sidecar.wait_for(1)
            time.sleep(0.5)
    assert post.path == "/v1.0/publish/pubsub/task-events"
    assert post.headers["content-type"] == "application/cloudevents+json"
    event = json.loads(post.body)
    assert {"specversion", "id", "source", "type", "datacontenttype", "data"} <= set(event)
    assert event["datacontenttype"] == "application/json"
    assert isinstance(event["data"], dict)
    assert len(sidecar.received) == 1  # 204 is a delivery: no retry
    assert queued(database) == 0


def test_two_servers_deliver_each_event_once_in_each_users_order(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        migrate(url)
        with receiving() as receiver:
            env = webhook_env(url, receiver.url)
            with (
                running_server(env, tmp_path / "a.log") as first,
                running_server(env, tmp_path / "b.log") as second,
            ):
                users = [f"hook-many-{i}" for i in range(6)]
                for round_ in range(5):
                    for index, user in enumerate(users):
                        write(first if (round_ + index) % 2 else second, user, "POST", title=f"{round_}")
                posts = receiver.wait_for(30)
                time.sleep(1)  # a duplicate would have had time to come
    assert len(receiver.received) == 30
    by_user: dict[str, list[int]] = {}
    for post in posts:
        event = post.verified()
        by_user.setdefault(event["userid"], []).append(int(event["sequence"]))
    assert by_user == {user: [1, 2, 3, 4, 5] for user in users}


def test_webhook_settings_are_checked_at_start() -> None:
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET is not"):
        Settings(better_auth_secret=SECRET, webhook_url=["https://example.com/hooks"])
    with pytest.raises(ValidationError, match=r"Standard Webhooks secret|at least 24 bytes"):
        Settings(
            better_auth_secret=SECRET, webhook_url=["https://example.com/hooks"], webhook_secret="whsec_abc"
        )
    with pytest.raises(ValidationError, match="not an http"):
        Settings(better_auth_secret=SECRET, webhook_url="ftp://example.com", webhook_secret=WEBHOOK_SECRET)
    settings = Settings(
        better_auth_secret=SECRET,
        webhook_url="https://a.example/hooks, https://b.example/hooks",
        webhook_secret=WEBHOOK_SECRET,
    )
    assert settings.webhook_url == ["https://a.example/hooks", "https://b.example/hooks"]
