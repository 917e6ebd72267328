"""Resilience over real loopback TCP: the client's typed errors under faults
injected by txgeerpc.testing.FaultProxy between it and a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from txgeerpc import Client, Server, connect
from txgeerpc.errors import CallTimeout, ConnectionShutdown, UnexpectedDisconnect
from txgeerpc.examples import Args, register_examples
from txgeerpc.testing import FaultProxy

from .test_sockets import until, wait_until_closed


@asynccontextmanager
async def proxied(scheme: str = "tcp") -> AsyncIterator[tuple[Server, FaultProxy, Client]]:
    """An example server, a FaultProxy in front of it and a client connected
    through the proxy; all closed, and nothing left, when the block ends."""
    server = Server(reactor)
    register_examples(server)
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await endpoint.listen(server.port_factory())
    target = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
    proxy = FaultProxy(reactor, target)
    address = await proxy.start()
    client = await connect(reactor, f"{scheme}@{address}", connect_timeout=5)
    try:
        yield server, proxy, client
    finally:
        await client.close()
        await proxy.stop()
        await wait_until_closed(server)
        await port.stopListening()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("scheme", ["tcp", "http"])
async def test_calls_pass_through_the_proxy(scheme: str) -> None:
    async with proxied(scheme) as (_, proxy, client):
        calls = [client.call("Arith.Multiply", Args(n, n), timeout=10) for n in range(32)]
        outcomes: Any = await DeferredList(calls)
        assert [value for _, value in outcomes] == [n * n for n in range(32)]
        assert proxy.faults.connections == 1


@pytest_twisted.ensureDeferred
async def test_a_blackholed_reply_times_out_and_leaves_nothing_pending() -> None:
    async with proxied() as (server, proxy, client):
        assert await client.call("Arith.Echo", "before", timeout=10) == "before"
        proxy.faults.to_client.blackhole = True
        started = reactor.seconds()  # type: ignore[attr-defined]
        with pytest.raises(CallTimeout):
            await client.call("Arith.Echo", "lost", timeout=0.2)
        # Within its timeout (the upper bound only catches a hang, on a busy machine).
        assert 0.2 <= reactor.seconds() - started < 5  # type: ignore[attr-defined]
        assert client.pending == 0
        assert server.services["Arith"].methods["Echo"].stats.calls == 2


@pytest_twisted.ensureDeferred
async def test_a_reset_mid_call_fails_it_with_unexpected_disconnect() -> None:
    async with proxied() as (server, proxy, client):
        pending = [client.call("Foo.Sleep", Args(30), timeout=60) for _ in range(3)]
        await until(lambda: server.services["Foo"].methods["Sleep"].stats.in_flight == 3)
        proxy.faults.reset()
        outcomes: Any = await DeferredList(pending, consumeErrors=True)
        for ok, failure in outcomes:
            assert not ok and failure.check(UnexpectedDisconnect)
        with pytest.raises(ConnectionShutdown):
            await client.call("Foo.Sum", Args())
        await wait_until_closed(server)


@pytest_twisted.ensureDeferred
async def test_a_reply_cut_mid_frame_is_never_delivered_in_part() -> None:
    async with proxied() as (_, proxy, client):
        assert await client.call("Arith.Echo", "warm", timeout=10) == "warm"
        text = "x" * 5000
        proxy.faults.to_client.cut_after = 2500
        with pytest.raises(UnexpectedDisconnect):
            await client.call("Arith.Echo", text, timeout=10)
        assert client.pending == 0


@pytest_twisted.ensureDeferred
async def test_latency_delays_but_does_not_break() -> None:
    async with proxied() as (_, proxy, client):
        proxy.faults.to_server.latency = 0.05
        proxy.faults.to_client.latency = 0.05
        started = reactor.seconds()  # type: ignore[attr-defined]
        calls = [client.call("Arith.Echo", f"late {n}", timeout=10) for n in range(10)]
        outcomes: Any = await DeferredList(calls)
        assert [value for _, value in outcomes] == [f"late {n}" for n in range(10)]
        assert reactor.seconds() - started >= 0.1  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_pause_holds_calls_and_a_slow_reader_still_delivers() -> None:
    async with proxied() as (_, proxy, client):
        proxy.faults.pause()
        held = client.call("Arith.Echo", "held", timeout=10)
        with pytest.raises(CallTimeout):
            await client.call("Arith.Echo", "too late", timeout=0.1)
        assert not held.called
        proxy.faults.resume()
        assert await held == "held"
        proxy.faults.to_client.slow_reader(500, interval=0.01)
        text = "s" * 3000
        assert await client.call("Arith.Echo", text, timeout=10) == text
        assert client.pending == 0
