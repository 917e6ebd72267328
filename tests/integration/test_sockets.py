"""End to end over real 127.0.0.1 TCP and unix sockets."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol

from txgeerpc import Client, Server, connect
from txgeerpc.errors import CallTimeout, ConnectionShutdown, RemoteError, UnexpectedDisconnect
from txgeerpc.examples import Args, register_examples


async def until(condition: Callable[[], bool]) -> None:
    """Let the reactor run (a few ms at a time, at most a second) until
    ``condition`` holds: connection teardown is delivered asynchronously."""
    for _ in range(200):
        if condition():
            return
        waiter: Deferred[None] = Deferred()
        reactor.callLater(0.005, waiter.callback, None)  # type: ignore[attr-defined]
        await waiter
    raise AssertionError("condition still false after 1 s")


async def wait_until_closed(server: Server) -> None:
    """Let the reactor deliver connection teardown to the server side."""
    await until(lambda: server.connections == 0)


async def listen(server: Server) -> tuple[IListeningPort, str]:
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await endpoint.listen(server.factory())
    return port, f"tcp@127.0.0.1:{port.getHost().port}"


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[tuple[Server, IListeningPort, Client]]:
    """An example server on 127.0.0.1 and a client connected to it; both are
    closed, and the server has seen the connection go, when the block ends."""
    server = Server(reactor, **settings)
    register_examples(server)
    port, address = await listen(server)
    client = await connect(reactor, address, connect_timeout=5)
    try:
        yield server, port, client
    finally:
        await client.close()
        await wait_until_closed(server)
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_examples_over_tcp_with_concurrency() -> None:
    async with serving() as (server, _, client):
        calls = [client.call("Arith.Multiply", Args(n, n), timeout=10) for n in range(64)]
        sleeper = client.call("Foo.Sleep", Args(0, 9), timeout=10)
        results = await gatherResults(calls)
        assert results == [n * n for n in range(64)]
        assert await sleeper == 9
        with pytest.raises(RemoteError, match=r"^divide by zero$"):
            await client.call("Arith.Divide", Args(1, 0), timeout=10)
        with pytest.raises(RemoteError, match="can't find method Nope"):
            await client.call("Foo.Nope", Args(), timeout=10)
        assert await client.call("Arith.Echo", "after errors", timeout=10) == "after errors"
        stats = server.services["Arith"].methods["Multiply"].stats
        assert (stats.calls, stats.in_flight) == (64, 0)


@pytest_twisted.ensureDeferred
async def test_timeouts_over_tcp() -> None:
    async with serving(handle_timeout=0.2) as (_, _, client):
        with pytest.raises(RemoteError, match=r"expect within 200ms$"):
            await client.call("Foo.Sleep", Args(5), timeout=10)
        with pytest.raises(CallTimeout):
            await client.call("Foo.Sleep", Args(1), timeout=0.05)
        assert client.pending == 0
        assert await client.call("Foo.Sum", Args(1, 2), timeout=10) == 3


@pytest_twisted.ensureDeferred
async def test_unix_socket() -> None:
    server = Server(reactor)
    register_examples(server)
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "geerpc.sock")
    port = await UNIXServerEndpoint(reactor, path).listen(server.factory())
    client = await connect(reactor, f"unix@{path}")
    try:
        assert await client.call("Arith.Echo", "over unix", timeout=10) == "over unix"
    finally:
        await client.close()
        await wait_until_closed(server)
        await port.stopListening()
        os.rmdir(directory)


@pytest_twisted.ensureDeferred
async def test_server_going_away_fails_pending_calls_at_once() -> None:
    server = Server(reactor)
    register_examples(server)
    port, address = await listen(server)
    client = await connect(reactor, address)
    pending = [client.call("Foo.Sleep", Args(30), timeout=60) for _ in range(3)]
    await client.call("Foo.Sum", Args(), timeout=10)  # the sleeps are running now
    for connection in list(server.factory().connections):
        connection.transport.abortConnection()
    outcomes: Any = await DeferredList(pending, consumeErrors=True)
    for ok, failure in outcomes:
        assert not ok and failure.check(UnexpectedDisconnect)
    with pytest.raises(ConnectionShutdown):
        await client.call("Foo.Sum", Args())
    await wait_until_closed(server)
    await port.stopListening()


class _Garbage(Protocol):
    def __init__(self, payload: bytes, done: Deferred[bytes]) -> None:
        self.payload = payload
        self.done = done
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_garbage_peer_is_closed_and_others_keep_working() -> None:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    async with serving() as (_, port, client):
        closed: Deferred[bytes] = Deferred()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        await connectProtocol(endpoint, _Garbage(b"\x16\x03\x01 not an option", closed))
        assert await closed == b""
        assert await client.call("Foo.Sum", Args(2, 3), timeout=10) == 5
