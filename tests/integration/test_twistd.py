"""
The README's demo, for real: ``twistd -n geerpc`` in a subprocess, then
``python -m txgeerpc call``.  Every process started here is stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._processes import TWISTD, output
from tests._processes import environment as _environment
from tests._processes import start as _start
from tests._processes import stop as _stop
from tests._processes import wait_for as _wait_for


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    process = _start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1")
    try:
        yield _wait_for_address(process), process
    finally:
        _stop(process)


def _wait_for_address(process: subprocess.Popen[bytes]) -> str:
    """Read the startup log until it says where it listens."""
    return _wait_for(process, rb"serving .* on (tcp@127\.0\.0\.1:\d+)")


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", *argv],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_readme_demo(demo_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    address, process = demo_server
    result = _cli("call", address, "Arith.Multiply", '{"Num1":6,"Num2":7}')  # gob
    assert (result.returncode, result.stdout, result.stderr) == (0, "42\n", "")

    extension = _cli("call", address, "Foo.Sum", '{"Num1":6,"Num2":7}', "--codec", "json")
    assert (extension.returncode, extension.stdout, extension.stderr) == (0, "13\n", "")

    # The method's Go types guide the gob argument: uint64, base64 []byte, complex.
    record = '{"Name":"r","ID":18446744073709551615,"Data":"AAH/","Z":[1.5,-2],"Tags":["t"]}'
    echoed_record = _cli("call", address, "Records.Echo", record)
    assert echoed_record.returncode == 0, echoed_record.stderr
    reply = json.loads(echoed_record.stdout)
    assert (reply["ID"], reply["Data"], reply["Z"], reply["Tags"]) == (
        2**64 - 1,
        "AAH/",
        [1.5, -2.0],
        ["t"],
    )

    over_http = _cli("call", address.replace("tcp@", "http@"), "Foo.Sum", '{"Num1":1,"Num2":2}')
    assert (over_http.returncode, over_http.stdout, over_http.stderr) == (0, "3\n", "")

    listed = _cli("list", address)
    assert listed.returncode == 0, listed.stderr
    assert "Foo\n  Sleep(Args) -> int\n  Sum(Args) -> int\n" in listed.stdout
    assert "Records\n  Echo(Record) -> Record\n" in listed.stdout

    mismatch = _cli("call", address, "Foo.Sum", '{"Num1":"six"}')
    assert (mismatch.returncode, mismatch.stdout) == (2, "")
    assert mismatch.stderr == 'error: argument.Num1: expected an integer, got "six"\n'

    failed = _cli("call", address, "Arith.Divide", '{"Num1":6,"Num2":0}', "--codec", "json")
    assert (failed.returncode, failed.stdout, failed.stderr) == (1, "", "error: divide by zero\n")

    timed_out = _cli("call", address, "Foo.Sleep", '{"Num1":5}', "--handle-timeout", "0.1")
    assert timed_out.returncode == 1
    assert timed_out.stderr == "error: rpc server: request handle timeout: expect within 100ms\n"

    echoed = _cli("call", address, "Arith.Echo", '"héllo"')
    assert echoed.stdout == '"héllo"\n'

    # SIGTERM shuts down cleanly (twistd then re-raises the signal to report it).
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=15) == -signal.SIGTERM
    assert b"Server Shut Down." in output(process)


def test_port_in_use_fails_startup(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile=-",
                "geerpc",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=tmp_path,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on tcp:{port}:interface=127.0.0.1" in result.stdout + result.stderr


def test_cli_errors_without_server() -> None:
    refused = _cli("call", "tcp@127.0.0.1:1", "Foo.Sum", "{}")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: rpc client: connect failed")
    bad_json = _cli("call", "tcp@127.0.0.1:1", "Foo.Sum", "{nope")
    assert bad_json.returncode == 2
    assert "ARG_JSON is not valid JSON" in bad_json.stderr
    bad_address = _cli("call", "nowhere", "Foo.Sum", "{}")
    assert bad_address.returncode == 1
    assert "wrong format 'nowhere'" in bad_address.stderr
    no_registry = _cli("call", "http://127.0.0.1:1/_geerpc_/registry", "Foo.Sum", "{}")
    assert (no_registry.returncode, no_registry.stderr) == (
        1,
        "error: rpc discovery: cannot reach the registry at http://127.0.0.1:1/_geerpc_/registry\n",
    )
    helped = _cli("call", "--help")
    assert helped.returncode == 0 and "twistd -n geerpc" in helped.stdout


def _registry(url: str, method: str, server: str | None = None) -> tuple[int, str]:
    """One registry request; (status, X-Geerpc-Servers)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method=method)
    if server is not None:
        request.add_header("X-Geerpc-Server", server)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("X-Geerpc-Servers", "")
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_demo_embeds_a_registry(demo_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    address, _ = demo_server
    url = f"http://{address.removeprefix('tcp@')}/_geerpc_/registry"
    assert _registry(url, "GET") == (200, "")
    assert _registry(url, "POST", "tcp@127.0.0.1:7002")[0] == 200
    assert _registry(url, "POST", "a,b")[0] == 400
    assert _registry(url, "GET") == (200, "tcp@127.0.0.1:7002")


def test_standalone_registry_and_heartbeats(tmp_path: Path) -> None:
    registry = _start(
        tmp_path,
        "geerpc-registry",
        *("--listen", "tcp:0:interface=127.0.0.1", "--timeout", "60", "--max-entries", "2"),
    )
    try:
        port = _wait_for(registry, rb"Site starting on (\d+)")
        url = f"http://127.0.0.1:{port}/_geerpc_/registry"
        assert _registry(url, "POST", "http@127.0.0.1:1234")[0] == 200
        assert _registry(url, "POST")[0] == 500  # no header, as the reference
        assert _registry(url, "PUT")[0] == 405
        assert _registry(url + "/x", "POST", "tcp@127.0.0.1:9")[0] == 404  # as Go's mux
        assert _registry(url, "GET") == (200, "http@127.0.0.1:1234")
        assert _registry(url, "DELETE", "http@127.0.0.1:1234")[0] == 200

        # A server heartbeats from its start and deregisters on a clean stop.
        server = _start(
            tmp_path,
            "geerpc",
            *("--listen", "tcp:0:interface=127.0.0.1"),
            # Port 0: the port the listener gets.
            *("--registry", url, "--advertise", "tcp@127.0.0.1:0"),
        )
        try:
            listening = _wait_for_address(server)
            advertised = _wait_for(server, rb"heartbeat: (\S+) registered at")
            assert advertised == listening
            assert _registry(url, "GET") == (200, advertised)
            # The CLI takes the registry's URL instead of an address.
            through = _cli("call", url, "Foo.Sum", '{"Num1":2,"Num2":3}')
            assert (through.returncode, through.stdout, through.stderr) == (0, "5\n", "")
            # A dead server still listed: the CLI passes over it whenever it
            # picks it first (half the time: 4 calls all pass by luck 1 in 16).
            dead = "tcp@127.0.0.1:1"
            assert _registry(url, "POST", dead)[0] == 200
            assert _registry(url, "POST", "tcp@127.0.0.1:2")[0] == 503  # --max-entries 2
            for command in [("call", url, "Foo.Sum", '{"Num1":2,"Num2":3}')] * 3 + [("list", url)]:
                result = _cli(*command)
                assert result.returncode == 0, result.stderr
                note = f"note: {dead}: rpc client: connect failed"
                assert result.stderr == "" or result.stderr.startswith(note), result.stderr
                assert result.stdout.startswith("5\n" if command[0] == "call" else "Arith\n")
            assert _registry(url, "DELETE", dead)[0] == 200
        finally:
            os.kill(server.pid, signal.SIGTERM)
            assert server.wait(timeout=15) == -signal.SIGTERM
            assert b"deregistered" in output(server)
            _stop(server)
        assert _registry(url, "GET") == (200, "")
    finally:
        _stop(registry)
