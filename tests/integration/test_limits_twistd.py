"""
Deadlines and admission control on a real ``twistd geerpc``, measured from
outside the server process (sockets, /proc/PID/status):

- connections that sent an Option, or one HTTP keep-alive request, and then
  nothing are closed by the idle deadlines;
- idle connections beyond the limits cannot lock new clients out, even with
  the process at a low descriptor limit (the defaults are sized from it);
- large requests held one byte short share one memory budget and are closed
  by the message deadline, while small calls go on being answered.

Every process is stopped by PID and every socket closed in ``finally``.
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._processes import start, stop, wait_for
from txgeerpc._wire import Header
from txgeerpc.codec import default_registry

JSON_OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/json",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}\n'
)
GOB_OPTION = JSON_OPTION.replace(b"application/json", b"application/gob")
MiB = 1024 * 1024


@contextmanager
def geerpc(
    tmp_path: Path, *args: str, max_descriptors: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    process = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=0.0.0.0",
        *args,
        max_descriptors=max_descriptors,
    )
    try:
        address = wait_for(process, rb"serving .* on tcp@127\.0\.0\.1:(\d+)")
        yield process, int(address)
    finally:
        stop(process)


@contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def dial(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def json_call(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> float:
    """One JSON-codec ``Foo.Sum`` call on a new connection; its latency."""
    began = time.monotonic()
    with dial(port, source, timeout) as sock:
        sock.sendall(
            JSON_OPTION + b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n{"Num1":2,"Num2":3}\n'
        )
        reply = b""
        while reply.count(b"\n") < 2:
            chunk = sock.recv(4096)
            assert chunk, f"closed before the reply: {reply!r}"
            reply += chunk
    assert reply == b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n5\n', reply
    return time.monotonic() - began


def wait_closed(socks: list[socket.socket], deadline: float) -> list[float]:
    """Read each socket until the server closes it (EOF or reset); when each
    closed, in seconds from now.  Fails if some are open at ``deadline``."""
    began = time.monotonic()
    closed_after: list[float] = []
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    try:
        while len(closed_after) < len(socks):
            left = deadline - (time.monotonic() - began)
            assert left > 0, f"{len(socks) - len(closed_after)} connections still open"
            for key, _ in selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b"" if not isinstance(sock, BlockingIOError) else b"x"
                if not data:
                    selector.unregister(sock)
                    closed_after.append(time.monotonic() - began)
    finally:
        selector.close()
    return closed_after


def debug_limits(port: int) -> dict[str, int]:
    with dial(port) as sock:
        sock.sendall(b"GET /debug/geerpc?format=json HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    limits: dict[str, int] = json.loads(answer.split(b"\r\n\r\n", 1)[1])["limits"]
    return limits


def status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def test_idle_connections_after_the_option_or_an_http_request_are_closed(
    tmp_path: Path,
) -> None:
    # Before: 600 such connections were all still open 20 s later (the web
    # side keeps twisted.web's 12-hour idle timeout).
    with geerpc(tmp_path, "--idle-timeout", "1", "--http-idle-timeout", "1") as (_, port):
        with sockets() as opened:
            for _ in range(150):
                sock = dial(port)
                opened.append(sock)
                sock.sendall(GOB_OPTION)
            for _ in range(150):
                sock = dial(port)
                opened.append(sock)
                # A cheap page: what is measured is the idle timeout after
                # it, not 150 renderings of the debug page queued before it.
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            closed = wait_closed(opened, deadline=6.0)
            assert max(closed) < 4.0, max(closed)
            limits = debug_limits(port)
            assert limits["idle_timeout"] == 150, limits
            assert limits["http_idle_timeout"] == 150, limits


def test_idle_connections_beyond_the_limits_do_not_lock_new_clients_out(
    tmp_path: Path,
) -> None:
    # Before: at a 1,024-descriptor limit, 1,012 idle connections locked every
    # new client out (0/25 served) until they closed.  Here the limit is 128,
    # so the default limits are 64 connections in all and 32 per peer.
    with geerpc(tmp_path, max_descriptors=128) as (_, port), sockets() as hogs:
        for host in range(2, 7):  # 5 peers x 40: over both limits
            for _ in range(40):
                sock = dial(port, f"127.0.0.{host}")
                hogs.append(sock)
                sock.sendall(GOB_OPTION)
        latencies = [json_call(port, "127.0.0.1", timeout=5.0) for _ in range(25)]
        assert max(latencies) < 1.0, latencies
        limits = debug_limits(port)
        assert limits["refused_per_peer"] == 5 * (40 - 32), limits
        assert limits["evicted_idle"] >= 5 * 32 - 64, limits


def test_partial_requests_share_one_memory_budget_and_a_deadline(tmp_path: Path) -> None:
    # Before: 50 connections each holding a 4 MiB body minus its last byte held
    # +200 MB, with no time limit.
    budget = 16 * MiB
    encoder = default_registry.get("application/gob").new_encoder()
    request = encoder.encode(Header("Arith.Echo", 1, ""), "a" * (4 * MiB - 64))
    held = GOB_OPTION + request[:-1]
    args = ["--max-message-size", str(4 * MiB), "--receive-budget", str(budget)]
    with geerpc(tmp_path, *args, "--message-timeout", "3") as (process, port):
        json_call(port)
        baseline = status(process.pid, "VmRSS")
        with sockets() as hogs:
            for _ in range(50):
                hogs.append(dial(port))
            sent = _send_what_is_taken(hogs, held)
            assert sent.count(len(held)) >= budget // (4 * MiB), sent
            answered = [json_call(port) for _ in range(5)]  # small calls do not wait
            closed = wait_closed(hogs, deadline=8.0)
            peak = status(process.pid, "VmHWM") - baseline
            # The budget, plus 128 KiB per waiting connection, plus slack: the
            # peak varies from run to run (22 to 33 MiB measured over 6 runs, on
            # this tree and on the one before issues 15-18); without the budget
            # it is over 200 MiB.
            assert peak < budget + 50 * 128 * 1024 + 12 * MiB, peak / MiB
            assert max(answered) < 1.0, answered
            assert max(closed) < 5.0, closed
        assert debug_limits(port)["message_timeout"] == 50


def _send_what_is_taken(socks: list[socket.socket], data: bytes) -> list[int]:
    """Send ``data`` on every socket as far as the server takes it (until no
    socket can take more for half a second); bytes sent on each."""
    sent = [0] * len(socks)
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_WRITE, index)
    try:
        while selector.get_map():
            ready = selector.select(0.5)
            if not ready:
                break
            for key, _ in ready:
                index = key.data
                try:
                    sent[index] += socks[index].send(data[sent[index] : sent[index] + 65536])
                except BlockingIOError:
                    continue
                if sent[index] == len(data):
                    selector.unregister(socks[index])
    finally:
        selector.close()
    return sent
