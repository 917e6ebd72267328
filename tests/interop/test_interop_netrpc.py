"""
txgeerpc against programs written with Go's standard ``net/rpc``,
``net/rpc/jsonrpc`` and ``net/http`` only (``netrpcpeer``), over real TCP on
127.0.0.1, both directions, all three transports (docs/protocol.md 14):

- Go client -> txgeerpc one-port server: ``rpc.Dial`` (gob, no Option),
  ``rpc.DialHTTP`` (``CONNECT /_goRPC_``) and ``jsonrpc.Dial``, at the same
  time as a Go GeeRPC client on the same port: every reply, the error replies,
  and 64 concurrent calls on each connection;
- txgeerpc client -> Go server: ``netrpc@``, ``netrpc+http@`` and
  ``jsonrpc@``, with the library (error replies, Go's own error texts, a
  concurrent batch) and with ``python -m txgeerpc call``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessExitedAlready

from txgeerpc import connect
from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args

from ._netrpcpeer import EXPECTED, SCHEMES, TRANSPORTS, NetrpcServer
from ._reactor_go import (
    GO_KILL_TIMEOUT,
    _clean_reactor_and_children,  # noqa: F401 - the autouse fixture, applied here
    _Collector,
    check_basic,
    go_client_lines,
    txgeerpc_server,
)

BATCH = 64


async def _netrpc_client(binary: Path, address: str, transport: str) -> list[dict[str, Any]]:
    """Run ``netrpcpeer client`` under the reactor (killed by its PID after
    GO_KILL_TIMEOUT); it must succeed; its JSON lines."""
    argv = [str(binary), "client", "-addr", address, "-transport", transport]
    argv += ["-batch", str(BATCH)]
    collector = _Collector(b"")
    process = reactor.spawnProcess(  # type: ignore[attr-defined]
        collector, argv[0], argv, env=dict(os.environ)
    )

    def kill() -> None:
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    killer = reactor.callLater(GO_KILL_TIMEOUT, kill)  # type: ignore[attr-defined]
    try:
        reason = await collector.ended
    finally:
        if killer.active():
            killer.cancel()
        if not collector.ended.called:
            kill()
            await collector.ended
    out, err = bytes(collector.stdout), bytes(collector.stderr)
    described = f"{transport}: stdout {out!r} stderr {err!r}"
    assert getattr(reason, "exitCode", None) == 0, described
    return [json.loads(line) for line in bytes(collector.stdout).decode().splitlines() if line]


def _check(lines: list[dict[str, Any]], transport: str) -> None:
    got = [(line["case"], line["reply"], line["error"]) for line in lines[:-1]]
    assert got == EXPECTED, transport
    assert lines[-1]["case"] == "batch"
    assert lines[-1]["replies"] == [1001 * i for i in range(BATCH)], transport


@pytest_twisted.ensureDeferred
async def test_go_netrpc_clients_against_one_txgeerpc_port(
    netrpcpeer: Path, geepeer_jsonv2: Path
) -> None:
    """Go's net/rpc gob, net/rpc over HTTP and JSON-RPC clients, and a Go
    GeeRPC client, all at once on one port: each gets its exact replies."""
    async with txgeerpc_server(one_port=True) as served:
        runs = [
            Deferred.fromCoroutine(_netrpc_client(netrpcpeer, served.address, transport))
            for transport in TRANSPORTS
        ]
        geerpc = go_client_lines(geepeer_jsonv2, served.address, "basic")
        runs.append(Deferred.fromCoroutine(geerpc))
        *netrpc_lines, geerpc_lines = await gatherResults(runs)
    for transport, lines in zip(TRANSPORTS, netrpc_lines, strict=True):
        _check(lines, transport)
    check_basic(geerpc_lines)
    assert served.tracker.accepted == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_txgeerpc_client_against_go_netrpc_server(netrpcpeer: Path, transport: str) -> None:
    """connect() to netrpc@, netrpc+http@ and jsonrpc@: replies, Go's error
    texts (the connection goes on after them) and a concurrent batch."""
    with NetrpcServer(netrpcpeer) as addresses:
        client = await connect(
            reactor, f"{SCHEMES[transport]}@{addresses[transport]}", connect_timeout=5
        )
        try:
            assert client.speaks_extension is False
            assert await client.call("Foo.Sum", Args(1, 2), timeout=10) == 3
            assert await client.call("Arith.Echo", "héllo, 世界 ✓", timeout=10) == "héllo, 世界 ✓"
            for method, argument, text in [
                ("Arith.Divide", Args(1, 0), "divide by zero"),
                ("Arith.Fail", "custom failure 100%", "custom failure 100%"),
                ("Foo.Nope", Args(), "rpc: can't find method Foo.Nope"),
                ("Nope.Sum", Args(), "rpc: can't find service Nope.Sum"),
            ]:
                with pytest.raises(RemoteError) as caught:
                    await client.call(method, argument, timeout=10)
                assert caught.value.message == text
            replies = await gatherResults(
                [client.call("Foo.Sum", Args(i, 1000 * i), timeout=10) for i in range(BATCH)]
            )
            assert replies == [1001 * i for i in range(BATCH)]
            assert await client.call("Arith.Multiply", Args(6, 7), timeout=10) == 42
        finally:
            await client.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", "call", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_against_go_netrpc_server(netrpcpeer: Path) -> None:
    """``python -m txgeerpc call`` to each of the three: a reply and an error."""
    with NetrpcServer(netrpcpeer) as addresses:
        for transport in TRANSPORTS:
            target = f"{SCHEMES[transport]}@{addresses[transport]}"
            summed = _cli(target, "Foo.Sum", '{"Num1":6,"Num2":7}')
            assert (summed.returncode, summed.stdout, summed.stderr) == (0, "13\n", ""), target
            failed = _cli(target, "Arith.Divide", '{"Num1":1}')
            assert (failed.returncode, failed.stdout, failed.stderr) == (
                1,
                "",
                "error: divide by zero\n",
            ), target


def test_health_of_go_netrpc_servers(netrpcpeer: Path) -> None:
    """``python -m txgeerpc health`` counts a Go net/rpc server that answers
    "rpc: can't find service" as serving, on each of the three."""
    with NetrpcServer(netrpcpeer) as addresses:
        for transport in TRANSPORTS:
            target = f"{SCHEMES[transport]}@{addresses[transport]}"
            health = subprocess.run(
                [sys.executable, "-m", "txgeerpc", "health", target],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert (health.returncode, health.stderr) == (0, ""), (target, health)
            assert health.stdout.startswith("serving"), target
