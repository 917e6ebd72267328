"""
``python -m txgeerpc`` as a user runs it: each case is the real command in a
subprocess, against real servers on 127.0.0.1 port 0 (a ``twistd geerpc``,
an echo server, an HTTP server that never answers), asserting its exit
status and its one-line message.  Also the typed stubs: generated from the
running server, checked with ``mypy --strict``, identical to the committed
``examples/examples_client.py``, and used by ``examples/typed_client.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests._processes import ROOT, environment, start, stop, wait_for

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``twistd geerpc`` serving the example services; its address."""
    process = start(
        tmp_path_factory.mktemp("geerpc"), "geerpc", "--listen", "tcp:0:interface=127.0.0.1"
    )
    try:
        yield wait_for(process, rb"serving .* on (tcp@127\.0\.0\.1:\d+)")
    finally:
        stop(process)


def _cli(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", *argv],
        env=environment(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


class _SilentHTTP(BaseHTTPRequestHandler):
    """An HTTP server: it waits for a request line that never comes."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[int]:
    listener = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    listener.daemon_threads = True
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener.server_address[1]
    finally:
        listener.shutdown()
        listener.server_close()
        thread.join(timeout=15)


@pytest.fixture
def http_server() -> Iterator[int]:
    listener = ThreadingHTTPServer(("127.0.0.1", 0), _SilentHTTP)
    listener.daemon_threads = True
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener.server_address[1]
    finally:
        listener.shutdown()
        listener.server_close()
        thread.join(timeout=15)


def test_an_echo_server_is_not_geerpc(echo_server: int) -> None:
    address = f"tcp@127.0.0.1:{echo_server}"
    started = time.monotonic()
    result = _cli("call", address, "Foo.Sum", "{}")
    assert time.monotonic() - started < 10  # the connect timeout
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {address} does not speak GeeRPC (connection lost")
    assert "Describe" not in result.stderr


def test_an_http_server_is_not_geerpc_within_the_connect_timeout(http_server: int) -> None:
    address = f"tcp@127.0.0.1:{http_server}"
    started = time.monotonic()
    result = _cli("call", address, "Foo.Sum", "{}", "--connect-timeout", "1.5")
    assert time.monotonic() - started < 10  # not --timeout's 30 s
    assert (result.returncode, result.stderr) == (
        1,
        f"error: {address} does not speak GeeRPC: no answer within 1.5s (the connect timeout)\n",
    )


def test_address_typos_get_a_did_you_mean(http_server: int) -> None:
    hostport = f"127.0.0.1:{http_server}"
    for typo in (f"tcp://{hostport}", hostport):
        result = _cli("call", typo, "Foo.Sum", "{}")
        assert (result.returncode, result.stderr) == (
            2,
            f"error: {typo!r} is not an address: did you mean tcp@{hostport}?\n",
        )
    result = _cli("call", f"http://{hostport}", "Foo.Sum", "{}")
    assert result.returncode == 2
    assert f"did you mean http@{hostport} (a server over HTTP CONNECT)" in result.stderr


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    announcing = start(
        tmp_path,
        "geerpc",
        *("--listen", "tcp:0:interface=127.0.0.1"),
        *("--service", "tests.integration._announcing_service:Announce"),
    )
    try:
        server = wait_for(announcing, rb"serving .* on (tcp@127\.0\.0\.1:\d+)")
        process = subprocess.Popen(
            [sys.executable, "-m", "txgeerpc", "call", server, "Announce.Wait", "60"],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(announcing, rb"announce: waiting 60 s")  # the call is running
            os.kill(process.pid, signal.SIGINT)
            stdout, stderr = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    finally:
        stop(announcing)
    assert (process.returncode, stdout, stderr) == (130, "", "interrupted\n")


def test_the_argument_from_stdin_or_a_file(server: str, tmp_path: Path) -> None:
    piped = _cli("call", server, "Foo.Sum", "-", stdin='{"Num1":2,"Num2":9}')
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "11\n", "")
    argument = tmp_path / "args.json"
    argument.write_text('{"Num1":2,"Num2":5}')
    read = _cli("call", server, "Foo.Sum", f"@{argument}")
    assert (read.returncode, read.stdout, read.stderr) == (0, "7\n", "")
    missing = _cli("call", server, "Foo.Sum", f"@{tmp_path / 'nope.json'}")
    assert missing.returncode == 2
    assert "cannot read the argument from @" in missing.stderr


def test_a_missing_argument_is_an_error(server: str) -> None:
    result = _cli("call", server, "Foo.Sum")
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "error: Foo.Sum takes an argument (Sum(Args) -> int): give ARG_JSON "
        "(null for the zero value, - for stdin, @FILE for a file)\n",
    )
    zero = _cli("call", server, "Foo.Sum", "null")
    assert (zero.returncode, zero.stdout) == (0, "0\n")


def test_a_too_large_argument_is_refused_before_sending(server: str, tmp_path: Path) -> None:
    argument = tmp_path / "big.json"
    argument.write_text(json.dumps("a" * 5_000_000))
    result = _cli("call", server, "Arith.Echo", f"@{argument}")
    assert (result.returncode, result.stderr) == (
        2,
        "error: the argument is too large: 5000084 bytes encoded, over the limit of 4194304 "
        "bytes (--max-message-size); nothing was sent\n",
    )
    # The server is untouched (and a smaller one goes through).
    small = _cli("call", server, "Arith.Echo", '"a"')
    assert (small.returncode, small.stdout) == (0, '"a"\n')


def test_servers_on_an_empty_registry_says_so(server: str) -> None:
    url = f"http://{server.removeprefix('tcp@')}/_geerpc_/registry"  # the demo embeds one
    result = _cli("servers", url)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"error: no servers: {url} lists none\n",
    )


def test_describe_prints_json_schema_and_go(server: str) -> None:
    result = _cli("describe", server, "Foo.Sum", "--json")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["argument"]["$defs"]["Args"]["properties"]["Num1"]["type"] == "integer"
    assert described["reply"]["type"] == "integer"
    assert described["go"] == (
        "type Args struct {\n\tNum1 int\n\tNum2 int\n}\n\n"
        "func (t *Foo) Sum(argument Args, reply *int) error\n"
    )
    text = _cli("describe", server, "Records.Keys")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("Records.Keys: Keys(dict[str, int]) -> list[str]\n")
    assert "func (t *Records) Keys(argument map[string]int, reply *[]string) error\n" in (
        text.stdout
    )
    unknown = _cli("describe", server, "Foo.Nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no method Foo.Nope (there are: Arith.Divide, ")


def test_stubs_are_mypy_strict_clean_and_committed(server: str, tmp_path: Path) -> None:
    result = _cli("stubs", server, "--class-name", "ExamplesClient")
    assert (result.returncode, result.stderr) == (0, "")
    # The committed module is what the server describes today: never stale.
    assert result.stdout == (EXAMPLES / "examples_client.py").read_text()
    (tmp_path / "examples_client.py").write_text(result.stdout)
    shutil.copy(EXAMPLES / "typed_client.py", tmp_path)
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "examples_client.py",
            "typed_client.py",
        ],
        cwd=tmp_path,
        env={**environment(), "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_typed_client_example(server: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "typed_client.py"), server],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "Foo.Sum: 13\n"
        "Arith.Multiply: 42\n"
        "Records.Echo: r 18446744073709551615 Point(X=1, Y=2) (1.5-2j)\n"
        "Records.Keys: ['a', 'b']\n"
        "Arith.Divide: error divide by zero\n"
    )
