"""The event stream at scale: one worker holding STREAMS open streams of one person, on
PostgreSQL. Reports the worker's resident memory before and with the streams, and for each
of WRITES writes the time from the write's answer to its event at each stream: p50 and p99
over every (write, stream), and p50 and p99 of the time for a write to reach all of them.

    make bench-streams  (or: uv run python -m bench.streams --streams 1000 --writes 30)
"""

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from backend.auth.tokens import issue_token
from bench.run import SECRET, bench_database, rss_mb, serve

USER = "bench-stream"


async def open_stream(
    host: str, port: int, token: str, arrived: dict[int, list[float]]
) -> asyncio.StreamWriter:
    """A raw stream (a thousand httpx clients would measure httpx): records when each event
    id arrives."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/{USER}/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    assert b" 200 " in status, status

    async def read() -> None:
        while line := await reader.readline():
            if line.startswith(b"id: "):
                arrived.setdefault(int(line[4:]), []).append(time.perf_counter())

    asyncio.get_running_loop().create_task(read())
    return writer


async def run(base: str, streams: int, writes: int, process: "subprocess.Popen[bytes]") -> dict[str, float]:
    host, port = base.removeprefix("http://").split(":")
    token = issue_token(SECRET, USER, lifetime=timedelta(hours=1))
    arrived: dict[int, list[float]] = {}
    writers = [await open_stream(host, int(port), token, arrived) for _ in range(streams)]
    await asyncio.sleep(2)  # every stream has read its position
    held = rss_mb(process)
    per_stream: list[float] = []
    to_all: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        for index in range(writes):
            response = await http.post(f"/api/{USER}/tasks", json={"title": f"write {index}"})
            answered = time.perf_counter()
            assert response.status_code == 201, response.text
            sequence = index + 1
            deadline = time.monotonic() + 30
            # Polls only to know when to go on: each arrival's time is taken by its reader.
            while len(arrived.get(sequence, [])) < streams and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            times = arrived.get(sequence, [])
            assert len(times) == streams, f"write {sequence} reached {len(times)} of {streams} streams"
            per_stream.extend((moment - answered) * 1000 for moment in times)
            to_all.append((max(times) - answered) * 1000)
            await asyncio.sleep(0.2)
    for writer in writers:
        writer.close()

    def quantile(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[int(q * 100) - 1], 1)

    return {
        "rss_mb": held,
        "per_stream_p50_ms": quantile(per_stream, 0.5),
        "per_stream_p99_ms": quantile(per_stream, 0.99),
        "to_all_p50_ms": quantile(to_all, 0.5),
        "to_all_p99_ms": quantile(to_all, 0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=30)
    args = parser.parse_args()
    # Each stream is a connection and a file descriptor, in this process and the server's.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.streams * 4)), hard))
    os.environ.update(
        STREAMS_PER_USER=str(args.streams), MAX_CONNECTIONS=str(args.streams + 100), LOG_LEVEL="warning"
    )
    with bench_database() as url, tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "DATABASE_URL": url}
        subprocess.run([str(Path(sys.executable).parent / "todo-api"), "migrate"], env=env, check=True)
        with serve("api", url, 1, Path(scratch) / "api.log") as (base, process):
            before = rss_mb(process)
            figures = asyncio.run(run(base, args.streams, args.writes, process))
            with_streams = figures["rss_mb"]
    print(f"one worker, {args.streams} open streams of one person, {args.writes} writes (PostgreSQL)")
    print(f"RSS: {before} MB idle, {with_streams} MB with the streams (+{with_streams - before:.1f} MB)")
    print(
        f"write answered -> event at a stream: p50 {figures['per_stream_p50_ms']} ms, "
        f"p99 {figures['per_stream_p99_ms']} ms"
    )
    print(
        f"write answered -> event at all {args.streams}: p50 {figures['to_all_p50_ms']} ms, "
        f"p99 {figures['to_all_p99_ms']} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
