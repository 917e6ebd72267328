"""
``geepeer pipeload``, the cheap pipelined load generator of
benchmarks/bench_calls.py's workers rows: it speaks the GeeRPC wire to
geepeer's own Go server and to a txgeerpc server, keeps several calls in
flight per connection (windows of uneven sizes, so a Seq matched to the wrong
slot is caught), and a wrong reply or an error reply fails the run instead of
being counted.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from txgeerpc import Server
from txgeerpc.examples import Args, ExampleError, Foo

from ._geepeer import running_server
from ._reactor_go import (
    GoRun,
    _clean_reactor_and_children,  # noqa: F401 - the autouse fixture, applied here
    _TrackingFactory,
    run_go,
    txgeerpc_server,
)

# 8 calls over 3 connections: windows of 3, 3 and 2 slots.
LOAD = ["-in-flight", "8", "-conns", "3", "-duration", "200ms", "-warmup", "50"]
LOAD += ["-wide-option", "-markers", "-latencies", "-call-timeout", "10s"]


def check_result(stdout: bytes, in_flight: int = 8, conns: int = 3) -> dict[str, Any]:
    """OPEN, CLOSED, then the result: calls counted in the window, each with
    its latency."""
    lines = stdout.decode().splitlines()
    assert lines[:2] == ["OPEN", "CLOSED"], lines[:3]
    result: dict[str, Any] = json.loads(lines[2])
    assert len(lines) == 3
    assert result["calls"] > 0
    assert len(result["latencies_ns"]) == result["calls"]
    assert 0 < result["p50_us"] <= result["p99_us"]
    assert 0.19 < result["seconds"] < 5
    assert (result["in_flight"], result["conns"]) == (in_flight, conns)
    return result


def test_pipeload_against_the_go_server(geepeer_classic: Path) -> None:
    with running_server(geepeer_classic) as address:
        result = subprocess.run(
            [str(geepeer_classic), "pipeload", "-addr", address, *LOAD],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    check_result(result.stdout)


async def run_pipeload(binary: Path, address: str, *extra: str) -> GoRun:
    """``geepeer pipeload`` against ``address`` without blocking the reactor;
    killed by its PID if still running after GO_KILL_TIMEOUT seconds."""
    return await run_go([str(binary), "pipeload", "-addr", address, *LOAD, *extra])


@pytest_twisted.ensureDeferred
async def test_pipeload_against_txgeerpc(geepeer_classic: Path) -> None:
    """Arith.Multiply and (with -payload) Arith.Echo of a 300-byte string:
    every connection dialled once, every call answered and checked."""
    for extra in ([], ["-payload", "300"]):
        async with txgeerpc_server() as served:
            run = await run_pipeload(geepeer_classic, served.address, *extra)
        assert not run.killed and run.exit_code == 0, run.describe()
        check_result(run.stdout)
        assert served.tracker.accepted == 3


class LateArith:
    """Arith.Multiply that goes wrong from its 100th call on (after the first
    call of each connection, when the calls are pipelined): one off (a load
    generator that counts replies without reading them would not notice), or
    failing (an error reply)."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.calls = 0

    def Multiply(self, args: Args) -> int:
        self.calls += 1
        if self.calls < 100:
            return args.Num1 * args.Num2
        if self.fails:
            raise ExampleError("late failure")
        return args.Num1 * args.Num2 - 1


@asynccontextmanager
async def serving(*services: tuple[object, str]) -> AsyncIterator[str]:
    """A txgeerpc server of just ``services`` ((object, name) pairs) on
    127.0.0.1:0; its address; on exit, its connections closed, not listening."""
    server = Server(reactor)
    for obj, name in services:
        server.register(obj, name=name)
    tracker = _TrackingFactory(server.factory())
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(tracker)
    try:
        yield f"127.0.0.1:{port.getHost().port}"
    finally:
        try:
            await tracker.all_closed()
        finally:
            await port.stopListening()


@pytest.mark.parametrize(
    ("fails", "stderr"),
    [
        (False, b"geepeer pipeload: Arith.Multiply: unexpected reply 41\n"),
        (True, b"geepeer pipeload: Arith.Multiply: late failure\n"),
    ],
    ids=["wrong-reply", "error-reply"],
)
@pytest_twisted.ensureDeferred
async def test_pipeload_fails_on_a_late_bad_reply(
    geepeer_classic: Path, fails: bool, stderr: bytes
) -> None:
    async with serving((LateArith(fails), "Arith")) as address:
        run = await run_pipeload(geepeer_classic, address)
    assert not run.killed and run.exit_code == 1, run.describe()
    assert run.stderr == stderr, run.describe()
    assert b"{" not in run.stdout  # no result printed


@pytest_twisted.ensureDeferred
async def test_pipeload_fails_when_the_first_call_fails(geepeer_classic: Path) -> None:
    async with serving((Foo(reactor), "Foo")) as address:
        run = await run_pipeload(geepeer_classic, address)
    assert not run.killed and run.exit_code == 1, run.describe()
    assert b"first call: Arith.Multiply: rpc server: can't find service Arith" in run.stderr
