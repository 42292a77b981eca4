"""Raw-socket clients that misbehave the way an attacker does, bounded in time and traffic.

Used by `test_edge.py` against the real server process; each returns what it saw
rather than asserting, so the same functions measure any server.
"""

import socket
import time
from dataclasses import dataclass
from pathlib import Path

PIECE = 64 * 1024


def rss_kib(pid: int) -> int:
    """The resident memory of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def connect(port: int, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything the server sends until it closes the connection or goes quiet."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and _complete(received):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


@dataclass
class HeaderFlood:
    sent: int  # bytes the server took before it stopped us (or all of them)
    response: bytes
    seconds: float


def send_large_header(port: int, size: int, *, piece: int = PIECE, pause: float = 0.0) -> HeaderFlood:
    """One header of `size` bytes, sent in `piece`-sized writes (a trickle with `pause`)."""
    started = time.monotonic()
    sent = 0
    with connect(port) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
            filler = b"a" * piece
            while sent < size:
                sock.sendall(filler)
                sent += piece
                if pause:
                    time.sleep(pause)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused: the server closed the connection on us
        response = read_response(sock)
    return HeaderFlood(sent=sent, response=response, seconds=time.monotonic() - started)


def slowloris(port: int, *, interval: float, give_up_after: float) -> float | None:
    """Send one header line every `interval` seconds, never ending the head: the seconds
    until the server closed the connection, or None if it was still open at `give_up_after`."""
    started = time.monotonic()
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(interval)
        line = 0
        while time.monotonic() - started < give_up_after:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
                return time.monotonic() - started  # an answer (408) means it is closing
            except TimeoutError:
                pass
            except ConnectionResetError:
                return time.monotonic() - started
            try:
                line += 1
                sock.sendall(f"X-Line-{line}: {'b' * 10}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
    return None


def raw_request(port: int, request: bytes, timeout: float = 5) -> bytes:
    with connect(port, timeout) as sock:
        sock.sendall(request)
        return read_response(sock, timeout)
