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
    """An HTTP server that records each request and answers each person's n-th as their
    script says (200 unless told): a status, or "hang" (no answer until the sender's
    WEBHOOK_TIMEOUT_SECONDS, 1 here, has passed)."""

    port: int
    path: str = "/hooks"
    default: int = 200
    scripts: dict[str, Callable[[int], int | str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def of(self, user: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if json.loads(r.body)["userid"] == user]

    def wait_for(self, user: str, count: int, within: float = ARRIVES_WITHIN) -> list[Received]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(found := self.of(user)) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{len(self.of(user))} of {count} webhooks of {user} arrived")

    def answer(self, body: bytes) -> int | str:
        user = json.loads(body)["userid"]
        script = self.scripts.get(user)
        return self.default if script is None else script(len(self.of(user)) - 1)


@contextmanager
def receiving(port: int | None = None, path: str = "/hooks", default: int = 200) -> Iterator[Receiver]:
    receiver = Receiver(port or free_port(), path, default)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with receiver.lock:
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
            reply = receiver.answer(body)
            if reply == "hang":
                time.sleep(2)
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


def queued(url: str, user: str | None = None) -> int:
    where = "" if user is None else f" WHERE user_id = '{user}'"
    return int(run_sql(url, f"SELECT count(*) FROM webhook_deliveries{where}")[0][0])


@dataclass
class Hooked:
    """A server whose events go to two URLs: a receiver, and a stand-in Dapr sidecar."""

    server: Server
    database: str
    receiver: Receiver
    sidecar: Receiver


@pytest.fixture(scope="module", params=BACKENDS)
def hooked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooked]:
    """One server per database for the module: each test has people of its own."""
    directory = tmp_path_factory.mktemp("webhooks")
    with (
        fresh_database(request.param, directory) as url,
        receiving() as receiver,
        receiving(path="/v1.0/publish/pubsub/task-events", default=204) as sidecar,
    ):
        migrate(url)
        env = webhook_env(
            url, f"{receiver.url},{sidecar.url}", WEBHOOK_MAX_ATTEMPTS="3", METRICS_ENABLED="true"
        )
        with running_server(env, directory / "server.log") as server:
            yield Hooked(server, url, receiver, sidecar)


def test_every_event_is_posted_as_a_signed_cloud_event(hooked: Hooked) -> None:
    server, receiver = hooked.server, hooked.receiver
    task = write(server, "hook-ana", "POST", title="Water the plants")
    write(server, "hook-ana", "PATCH", f"/{task['id']}/complete")
    write(server, "hook-ana", "DELETE", f"/{task['id']}")
    posts = receiver.wait_for("hook-ana", 4)

    events = [post.verified() for post in posts]
    # The person's first write made their Inbox: its event comes first.
    assert [e["type"] for e in events] == [
        "todo.list.created",
        "todo.task.created",
        "todo.task.completed",
        "todo.task.deleted",
    ]
    assert [e["sequence"] for e in events] == [
        "00000000000000000001",
        "00000000000000000002",
        "00000000000000000003",
        "00000000000000000004",
    ]
    assert (events[0]["subject"], events[0]["data"]["name"]) == (str(task["list_id"]), "Inbox")
    for post, event in zip(posts, events, strict=True):
        assert post.path == "/hooks"
        if event["type"].startswith("todo.list."):
            continue
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
    hooked.sidecar.wait_for("hook-ana", 4)
    time.sleep(0.3)
    assert queued(hooked.database, "hook-ana") == 0


def test_500s_and_timeouts_are_tried_again_and_a_users_order_is_kept(hooked: Hooked) -> None:
    answers: dict[int, int | str] = {0: 500, 1: "hang"}  # then 200, the last of 3 tries
    hooked.receiver.scripts["hook-ben"] = lambda index: answers.get(index, 200)
    first = write(hooked.server, "hook-ben", "POST", title="first")
    write(hooked.server, "hook-ben", "POST", title="second")
    posts = hooked.receiver.wait_for("hook-ben", 5, within=20)
    ids = [post.headers["webhook-id"] for post in posts]
    # The first event (the Inbox's creation, by the first write) three times (500, no answer,
    # 200), the same id each time; the others only after the first was taken.
    assert ids == ["hook-ben-1"] * 3 + ["hook-ben-2", "hook-ben-3"]
    assert all(post.verified()["subject"] == str(first["list_id"]) for post in posts[:3])
    assert posts[3].verified()["subject"] == str(first["id"])
    # The other endpoint took them at once, on its own queue.
    assert [p.headers["webhook-id"] for p in hooked.sidecar.wait_for("hook-ben", 3)] == [
        "hook-ben-1",
        "hook-ben-2",
        "hook-ben-3",
    ]
    time.sleep(0.3)
    assert queued(hooked.database, "hook-ben") == 0


def test_a_delivery_is_given_up_after_webhook_max_attempts(hooked: Hooked) -> None:
    def given_up() -> float:
        metrics = httpx.get(f"{hooked.server.base_url}/metrics").text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith('todo_api_webhook_deliveries_total{outcome="given_up"}')
        )
        return float(line.split()[-1])

    before = given_up()
    hooked.receiver.scripts["hook-dee"] = lambda _: 500
    write(hooked.server, "hook-dee", "POST", title="nobody takes this")
    # Two events (the Inbox's creation, the task's), each tried three times, in order.
    hooked.receiver.wait_for("hook-dee", 6, within=20)
    time.sleep(1.5)  # a fourth try would have come by now (0.2 s, then 0.8 s apart, +-25 %)
    assert len(hooked.receiver.of("hook-dee")) == 6  # WEBHOOK_MAX_ATTEMPTS each
    assert queued(hooked.database, "hook-dee") == 0
    assert given_up() == before + 2
    (line,) = [
        line
        for line in hooked.server.log_lines()
        if line.get("message") == "a webhook delivery was given up" and line.get("event") == "hook-dee-1"
    ]
    assert (line["attempts"], line["error"], line["url"]) == (3, "status 500", hooked.receiver.url)


def test_a_dapr_sidecars_publish_endpoint_takes_the_events_as_they_are(hooked: Hooked) -> None:
    """Dapr's publish API (POST /v1.0/publish/<pubsub>/<topic>) takes a body of content type
    application/cloudevents+json as the CloudEvent itself, unwrapped, and answers 204."""
    write(hooked.server, "hook-eve", "POST", title="to Kafka")
    _inbox, post = hooked.sidecar.wait_for("hook-eve", 2)
    time.sleep(0.5)
    assert post.path == "/v1.0/publish/pubsub/task-events"
    assert post.headers["content-type"] == "application/cloudevents+json"
    event = json.loads(post.body)
    assert {"specversion", "id", "source", "type", "datacontenttype", "data"} <= set(event)
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["title"] == "to Kafka"
    assert len(hooked.sidecar.of("hook-eve")) == 2  # 204 is a delivery: no retry


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        migrate(url)
        yield url


def test_a_delivery_outlives_a_server_restart(database: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: the first tries are refused
    env = webhook_env(database, f"http://127.0.0.1:{port}/hooks")
    with running_server(env, tmp_path / "first.log") as server:
        write(server, "hook-cy", "POST", title="while the receiver is down")
        time.sleep(1)
    assert queued(database) == 2  # the Inbox's creation and the task's
    assert any(line.get("message", "").startswith("a webhook delivery failed") for line in server.log_lines())
    with receiving(port=port) as receiver, running_server(env, tmp_path / "second.log"):
        _inbox, post = receiver.wait_for("hook-cy", 2)
        time.sleep(0.5)
    assert post.verified()["data"]["title"] == "while the receiver is down"
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
                for user in users:
                    receiver.wait_for(user, 6)  # each one's Inbox, then five tasks
                time.sleep(1)  # a duplicate would have had time to come
    assert len(receiver.received) == 36
    by_user: dict[str, list[int]] = {}
    for post in receiver.received:
        event = post.verified()
        by_user.setdefault(event["userid"], []).append(int(event["sequence"]))
    assert by_user == {user: [1, 2, 3, 4, 5, 6] for user in users}


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
