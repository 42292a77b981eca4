"""The server's edge against the real process: bounded heads, a head timeout, a connection
cap, WebSocket upgrades refused, and no response ever naming another host.

Each attack is bounded in time and traffic, and sent to loopback only.
"""

import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from backend.auth.tokens import issue_token
from tests.attacks import (
    raw_request,
    read_response,
    rss_kib,
    send_large_header,
    slowloris,
    status_of,
)
from tests.conftest import SECRET, fresh_database
from tests.processes import TODO_API, Server, cli, free_port, running_server, server_env

HEADER_TIMEOUT = 2
MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("edge")
    with fresh_database("sqlite", directory) as database_url:
        env = server_env(
            database_url,
            HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
            MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        )
        cli(env, "migrate")
        with running_server(env, directory / "server.log") as running:
            yield running


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def health_latencies(server: Server, seconds: float) -> list[float]:
    """Another client's /health round trips, in seconds, over `seconds`."""
    latencies = []
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            assert http.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    return latencies


# --- heads ------------------------------------------------------------------------------


def test_a_1_mb_header_is_refused_with_431_and_memory_stays_flat(server: Server) -> None:
    before = rss_kib(server.process.pid)
    flood = send_large_header(port_of(server), 1024 * 1024)
    # (The kernel's socket buffers take the whole megabyte whatever the server does.)
    assert status_of(flood.response) == 431
    assert b"application/problem+json" in flood.response
    assert b"x-request-id:" in flood.response
    assert rss_kib(server.process.pid) - before < 10 * 1024


def test_a_64_mb_header_trickle_is_cut_off_at_the_limit(server: Server) -> None:
    before = rss_kib(server.process.pid)
    done: list[float] = []
    attack = threading.Thread(
        target=lambda: done.append(send_large_header(port_of(server), 64 * 1024 * 1024, pause=0.001).seconds)
    )
    attack.start()
    latencies = health_latencies(server, 1.0)
    attack.join(timeout=30)
    assert done, "the trickle was not cut off"
    assert done[0] < 5
    assert rss_kib(server.process.pid) - before < 10 * 1024
    assert statistics.median(latencies) < 0.05


def test_a_whole_large_head_in_one_read_is_refused_too(server: Server) -> None:
    # Headers that end in the same read as they start, each line small.
    lines = b"".join(b"X-Many-%d: %s\r\n" % (i, b"c" * 100) for i in range(400))
    response = raw_request(port_of(server), b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"\r\n")
    assert status_of(response) == 431


def test_a_body_larger_than_the_header_limit_is_not_mistaken_for_a_head(server: Server) -> None:
    token = issue_token(SECRET, "alice")
    body = b'{"title": "big", "description": "' + b"d" * 999 + b'"}'
    body += b" " * 30_000  # trailing whitespace is still JSON, and well past 16 KiB
    head = (
        f"POST /api/alice/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    assert status_of(raw_request(port_of(server), head + body)) == 201


def test_a_slowloris_is_closed_within_the_timeout_while_others_are_served(server: Server) -> None:
    closed_after: list[float | None] = []
    attack = threading.Thread(
        target=lambda: closed_after.append(
            slowloris(port_of(server), interval=0.5, give_up_after=HEADER_TIMEOUT + 8)
        )
    )
    attack.start()
    latencies = health_latencies(server, 1.5)
    attack.join()
    assert closed_after[0] is not None, "the slow head was never timed out"
    assert HEADER_TIMEOUT - 0.5 <= closed_after[0] <= HEADER_TIMEOUT + 1.5
    assert statistics.median(latencies) < 0.05


def test_a_silent_connection_is_closed_within_the_timeout(server: Server) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=HEADER_TIMEOUT + 5) as sock:
        assert sock.recv(1024) == b""  # closed by the server, nothing said
    assert time.monotonic() - started <= HEADER_TIMEOUT + 1.5


def test_connections_beyond_the_cap_get_a_quick_503_while_open_ones_keep_working(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as normal:
        assert normal.get("/health").status_code == 200  # its keep-alive connection is open
        silent = [socket.create_connection(("127.0.0.1", port_of(server))) for _ in range(MAX_CONNECTIONS)]
        try:
            time.sleep(0.2)
            for _ in range(5):
                started = time.monotonic()
                response = raw_request(port_of(server), b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert status_of(response) == 503
                assert b"retry-after: 1" in response.lower()
                assert time.monotonic() - started < 1
            assert normal.get("/health").status_code == 200
        finally:
            for sock in silent:
                sock.close()
        time.sleep(0.2)
        with httpx.Client(base_url=server.base_url, timeout=5) as fresh:
            assert fresh.get("/health").status_code == 200  # and the cap is lifted once they are gone


def test_a_request_that_is_not_http_is_a_400_problem(server: Server) -> None:
    response = raw_request(port_of(server), b"\x16\x03\x01 not http at all\r\n\r\n")
    assert status_of(response) == 400
    assert b"application/problem+json" in response


# --- what responses name ----------------------------------------------------------------


def test_a_foreign_host_never_appears_in_a_response_header(server: Server) -> None:
    token = issue_token(SECRET, "alice")
    headers = {"Authorization": f"Bearer {token}", "Host": "evil.example"}
    with httpx.Client(base_url=server.base_url, timeout=5, headers=headers) as http:
        for title in ("one", "two", "three"):
            created = http.post("/api/alice/tasks", json={"title": title})
            assert created.status_code == 201
        responses = [
            created,
            http.get("/api/alice/tasks", params={"limit": 1, "offset": 1}),
            http.get("/api/alice/tasks/"),  # no redirect to the slash-less path
            http.get("/api/me/tasks", params={"limit": 1}),
            http.get("/nowhere"),
        ]
    assert responses[1].headers["link"]
    assert responses[2].status_code == 404
    for response in responses:
        assert response.status_code != 307
        assert "evil.example" not in str(response.headers).lower()


def test_a_websocket_upgrade_is_answered_as_http_and_its_target_never_logged(server: Server) -> None:
    secret_query = "access_token=eyJub3QtYS1yZWFsLXRva2VuIn0"
    response = raw_request(
        port_of(server),
        (
            f"GET /api/alice/tasks?{secret_query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ).encode(),
    )
    assert status_of(response) == 401  # not 101: no switch, the API answers as it would any GET
    assert b"connection: close" in response.lower()
    time.sleep(0.2)
    log = server.log_path.read_text()
    assert secret_query not in log
    assert "access_token" not in log
    assert "WebSocket" not in log


@pytest.mark.parametrize("user_id", ["中文", "a b", 'x>; rel="evil"', "tab\there", "bell\x07"])
def test_any_sub_gets_a_correct_list_with_a_link_that_leads_to_the_next_page(
    server: Server, user_id: str
) -> None:
    auth = {"Authorization": f"Bearer {issue_token(SECRET, user_id)}"}
    base = f"/api/{quote(user_id, safe='')}/tasks"
    logged_before = len(access_lines(server))
    with httpx.Client(base_url=server.base_url, timeout=5, headers=auth) as http:
        for title in ("first", "second"):
            assert http.post(base, json={"title": title}).status_code == 201
        page = http.get(base, params={"limit": 1})
        assert page.status_code == 200
        assert [task["title"] for task in page.json()] == ["second"]
        link = page.headers["link"]
        assert link.count("<") == 1
        target, _, relation = link.partition(">; ")
        assert relation == 'rel="next"'
        following = http.get(str(page.url.join(target.removeprefix("<"))))
        assert [task["title"] for task in following.json()] == ["first"]
        assert following.headers["x-total-count"] == "2"
        assert page.url.join(target.removeprefix("<")).path == f"/api/{user_id}/tasks"
    # The log records what the client received (a dropped connection was once logged as 200).
    deadline = time.monotonic() + 5
    while len(access_lines(server)) < logged_before + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [line["status"] for line in access_lines(server)[logged_before:]] == [201, 201, 200, 200]


def access_lines(server: Server) -> list[dict[str, object]]:
    return [line for line in server.log_lines() if line.get("logger") == "backend.access"]


def test_head_is_answered_wherever_get_is(server: Server) -> None:
    auth = {"Authorization": f"Bearer {issue_token(SECRET, 'heady')}"}
    with httpx.Client(base_url=server.base_url, timeout=5, headers=auth) as http:
        task = http.post("/api/heady/tasks", json={"title": "h"}).json()
        for path in ("/health", "/ready", "/api/heady/tasks", f"/api/heady/tasks/{task['id']}", "/docs"):
            get, head = http.get(path), http.head(path)
            assert head.status_code == get.status_code == 200, path
            assert head.content == b""
            assert head.headers["content-length"] == get.headers["content-length"]
        assert http.head("/api/heady/tasks").headers["x-total-count"] == "1"


# --- starting up --------------------------------------------------------------------------


def test_serving_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = server_env(f"sqlite:///{tmp_path / 'x.db'}")
        result = subprocess.run(
            [TODO_API, "serve", "--port", str(port), "--migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use (another server running?); "
        f"stop it, or choose another port: make run PORT={port + 1}"
    ]
    assert not (tmp_path / "x.db").exists(), "it did something before saying so"


def test_a_connection_beyond_the_cap_that_says_nothing_is_closed_after_a_second(server: Server) -> None:
    silent = [socket.create_connection(("127.0.0.1", port_of(server))) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as extra:
            response = read_response(extra)
        assert status_of(response) == 503
        assert time.monotonic() - started < 2
    finally:
        for sock in silent:
            sock.close()
