"""
Framed mode against a real ``twistd geerpc`` (docs/protocol.md 13.11): a
message announcing 4 GiB is refused on its prefix, before anything is
allocated (the server's RSS, read from ``/proc/PID/status`` outside it, does
not move), with an error the client sees; the CLI prints the same answers
framed, compressed or not.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._processes import environment, start, stop, wait_for
from txgeerpc._framed import PREFIX, FramedDecoder, FramedEncoder
from txgeerpc._wire import EMPTY_STRUCT, Header, Option
from txgeerpc.codec import default_registry
from txgeerpc.errors import RemoteMessageTooLarge

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """A ``twistd geerpc`` with a 1 MiB message limit: (pid, port)."""
    process = start(
        tmp_path_factory.mktemp("geerpc"),
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--max-message-size",
        str(MiB),
    )
    try:
        port = int(wait_for(process, rb"serving .* on tcp@127\.0\.0\.1:(\d+)"))
        yield process.pid, port
    finally:
        stop(process)


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def _lookup(name: str) -> object:
    return default_registry.get(name, aliases=False)


def _framed_connection(port: int) -> tuple[socket.socket, FramedDecoder]:
    """A raw socket that asked for framed mode and switched; the decoder of
    what the server sends after its hello."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    option = Option(codec_type="application/json", extension=1, framed=True).to_json()
    switch = (
        default_registry.get("json")
        .new_encoder()
        .encode(
            Header("_txgeerpc.Framed", 0, "", 0, {"txgeerpc-compression": "none"}), EMPTY_STRUCT
        )
    )
    sock.sendall(option + switch)
    hello = b""
    while b"}\n{}\n" not in hello:
        chunk = sock.recv(4096)
        assert chunk, hello
        hello += chunk
    assert b'"txgeerpc-framed":"1"' in hello, hello
    decoder = FramedDecoder(_lookup, 16 * MiB, after_plain=True)  # type: ignore[arg-type]
    decoder.feed(hello.split(b"}\n{}\n", 1)[1])
    return sock, decoder


def _reply(sock: socket.socket, decoder: FramedDecoder) -> tuple[Header, object]:
    while (message := decoder.next_message()) is None:
        chunk = sock.recv(65536)
        assert chunk, "closed before the reply"
        decoder.feed(chunk)
    header = decoder.decode_header(message)
    body = decoder.next_message()
    return header, (None if header[2] else decoder.decode_body(body))


def test_a_message_announcing_4_gib_is_refused_before_any_allocation(
    server: tuple[int, int],
) -> None:
    pid, port = server
    encoder = FramedEncoder(_lookup, "application/json")  # type: ignore[arg-type]
    sock, decoder = _framed_connection(port)
    with sock:
        sock.sendall(encoder.encode(Header("Foo.Sum", 1, ""), {"Num1": 2, "Num2": 3}))
        assert _reply(sock, decoder)[1] == 5
        before = _status(pid, "VmRSS")
        header = b'{"ServiceMethod":"Arith.Echo","Seq":2,"Error":""}'
        sock.sendall(PREFIX.pack(2, 0, len(header), 2**32 - 1) + header)
        refused, _ = _reply(sock, decoder)
        # The client's side of it: the text names the limit, and the client
        # maps it to a typed error.
        assert refused[1] == 2
        assert refused[2] == (
            f"body of {2**32 - 1} bytes exceeds the maximum message size of {MiB} bytes"
        )
        assert RemoteMessageTooLarge.matches(refused[2])
        assert RemoteMessageTooLarge(refused[2]).limit == MiB
        # 64 MiB of the announced body: skipped as it arrives, never held.
        block = b"z" * MiB
        for _ in range(64):
            sock.sendall(block)
        # A new connection's call is answered after the server read all that.
        other, other_decoder = _framed_connection(port)
        with other:
            other.sendall(encoder.encode(Header("Foo.Sum", 3, ""), {"Num1": 1, "Num2": 1}))
            assert _reply(other, other_decoder)[1] == 2
        grown = _status(pid, "VmRSS") - before
        assert grown < 4 * MiB, f"the server's RSS grew by {grown / MiB:.1f} MiB"


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", *argv],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_prints_the_same_answers_framed_and_compressed(
    server: tuple[int, int], tmp_path: Path
) -> None:
    _, port = server
    address = f"tcp@127.0.0.1:{port}"
    text = tmp_path / "text.json"
    text.write_text('"' + "ab" * 4000 + '"')
    answers = set()
    for extra in (
        [],
        ["--framed", "--compress", "zstd"],
        ["--codec", "json", "--framed", "--compress", "lz4"],
    ):
        done = _cli("call", address, "Arith.Echo", f"@{text}", *extra)
        assert done.returncode == 0, (extra, done.stderr)
        answers.add(done.stdout)
    assert answers == {'"' + "ab" * 4000 + '"\n'}, answers


def test_the_cli_sees_a_body_over_the_servers_limit_as_one_line(
    server: tuple[int, int], tmp_path: Path
) -> None:
    _, port = server
    text = tmp_path / "big.json"
    text.write_text('"' + "a" * (MiB + 10) + '"')
    done = _cli(
        "call",
        f"tcp@127.0.0.1:{port}",
        "Arith.Echo",
        f"@{text}",
        "--framed",
        "--max-message-size",
        str(4 * MiB),
    )
    assert done.returncode != 0
    assert f"exceeds the maximum message size of {MiB} bytes" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
