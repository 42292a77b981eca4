"""The edge's attacks against candidate servers for the same app: `python -m bench.edge [name ...]`.

Each candidate serves `backend.app:create_app` on a SQLite database; each
attack is bounded in time and traffic and sent to loopback only. The figures in
"The edge" in docs/operating.md came from this script (Granian measured from a
scratch install: `uv pip install granian`; it is not a dependency). Throughput
came from `make bench`'s GET and CREATE with each candidate serving the API.
"""

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.attacks import raw_request, rss_kib, send_large_header, slowloris, status_of

BIN = Path(sys.executable).parent
UVICORN = (
    "import uvicorn; uvicorn.run('backend.app:create_app', factory=True, port={port}, log_level='warning', "
    "access_log=False, server_header=False, ws='none', {extra})"
)
CANDIDATES: dict[str, Callable[[int], list[str]]] = {
    "uvicorn+httptools": lambda port: [
        sys.executable, "-c", UVICORN.format(port=port, extra="http='httptools'")
    ],
    "uvicorn+h11": lambda port: [
        sys.executable, "-c",
        UVICORN.format(port=port, extra="http='h11', h11_max_incomplete_event_size=16384"),
    ],
    "uvicorn+httptools+edge": lambda port: [str(BIN / "todo-api"), "serve", "--port", str(port)],
    "granian": lambda port: [
        str(BIN / "granian"), "--interface", "asgi", "--factory", "backend.app:create_app",
        "--port", str(port), "--workers", "1", "--http", "1", "--no-ws", "--loop", "uvloop",
        "--http1-header-read-timeout", "10000", "--http1-buffer-size", "16384", "--log-level", "warning",
    ],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(
    name: str, database_url: str, log: Path, open_files: int | None = None
) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": "edge-" * 8,
        "RATE_LIMIT_PER_SECOND": "0",
    }
    command = CANDIDATES[name](port)
    if open_files is not None:  # prlimit execs the server: the pid stays the server's
        command = ["prlimit", f"--nofile={open_files}:{open_files}", "--", *command]
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        for _ in range(150):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(20)


def health_median_ms(port: int, seconds: float) -> float:
    latencies = []
    with httpx.Client(timeout=10) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            http.get(f"http://127.0.0.1:{port}/health")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    return round(statistics.median(latencies) * 1000, 1)


def probe(port: int) -> str:
    started = time.monotonic()
    try:
        response = raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        outcome = f"status {status_of(response)}" if response else "no answer"
    except OSError as error:
        outcome = type(error).__name__
    return f"{outcome} in {time.monotonic() - started:.2f} s"


def attack(name: str, database_url: str, directory: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    log = directory / f"{name}.log"
    with serve(name, database_url, log) as (port, pid):
        found["/health median, idle"] = f"{health_median_ms(port, 1)} ms"
        flood = send_large_header(port, 16 * 1024 * 1024, piece=16 * 1024 * 1024)
        found["one 16 MB header"] = f"status {status_of(flood.response)} in {flood.seconds:.2f} s"
        before_rss, before_cpu = rss_kib(pid), cpu_seconds(pid)
        result: list[float] = []
        thread = threading.Thread(
            target=lambda: result.append(send_large_header(port, 48 * 1024 * 1024).seconds)
        )
        thread.start()
        during = health_median_ms(port, 3)
        thread.join(60)
        found["48 MB header in 64 KiB pieces"] = (
            f"{result[0]:.2f} s, server CPU {cpu_seconds(pid) - before_cpu:.2f} s, "
            f"RSS {(rss_kib(pid) - before_rss) // 1024:+d} MB, another client's /health {during} ms"
        )
        closed = slowloris(port, interval=2, give_up_after=25)
        found["a header line every 2 s"] = (
            "open after 25 s" if closed is None else f"closed at {closed:.1f} s"
        )
        upgrade = raw_request(
            port,
            b"GET /api/alice/tasks?access_token=SECRET-QUERY HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        time.sleep(0.3)
        found["WebSocket upgrade"] = (
            f"status {status_of(upgrade)}, target logged: {'SECRET-QUERY' in log.read_text()}"
        )
    with serve(name, database_url, log, open_files=1024) as (port, _):
        silent = []
        for _ in range(1100):
            try:
                silent.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(2)
        found["1,100 silent connections, file limit 1,024: new client after 2 s"] = probe(port)
        time.sleep(10)
        found["... after 12 s"] = probe(port)
        for sock in silent:
            sock.close()
    return found


def main() -> int:
    names = sys.argv[1:] or list(CANDIDATES)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        database_url = f"sqlite:///{directory / 'edge.db'}"
        subprocess.run(
            [str(BIN / "todo-api"), "migrate"], env={**os.environ, "DATABASE_URL": database_url}, check=True
        )
        for name in names:
            print(json.dumps({name: attack(name, database_url, directory)}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
