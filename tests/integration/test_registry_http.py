"""The heartbeat's and discovery's HTTP requests (``agent_request``) against a
registry on a real 127.0.0.1 socket: answers, the body cap, the timeout; and
the registry's own cap on request bodies (413)."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txgeerpc import Server
from txgeerpc._web import QuietSite, mount
from txgeerpc.errors import RegistryAnswerTooLarge, RegistryTimeout
from txgeerpc.etcd import EtcdClient
from txgeerpc.registry import MemoryStore, RegistryDiscovery, RegistryResource, agent_request

from .test_sockets import until

PATH = "/_geerpc_/registry"


class Hung(Resource):
    """Never answers (until the client gives up)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        return NOT_DONE_YET


class Huge(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return b"x" * 300_000


@pytest_twisted.ensureDeferred
async def test_heartbeat_and_listing_requests_over_a_socket() -> None:
    store = MemoryStore(timeout=30)
    root = Resource()
    mount(root, PATH, RegistryResource(store, reactor))
    hung = Hung()
    root.putChild(b"hung", hung)
    root.putChild(b"huge", Huge())
    connections = WrappingFactory(Site(root))  # .protocols: the open ones
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(connections)
    base = f"http://127.0.0.1:{port.getHost().port}"
    request = agent_request(reactor, max_body=100_000)
    try:
        beat = await request(b"POST", base + PATH, {b"X-Geerpc-Server": b"tcp@:7001"}, 5)
        assert (beat.status, beat.headers[b"x-geerpc-timeout"], beat.body) == (200, b"30", b"")

        listing = await request(b"GET", base + PATH, {b"Accept": b"application/json"}, 5)
        assert listing.headers[b"x-geerpc-servers"] == b"tcp@:7001"
        assert [entry["address"] for entry in json.loads(listing.body)["servers"]] == ["tcp@:7001"]

        discovery = RegistryDiscovery(reactor, request, base + PATH)
        discovery.startService()
        await discovery.ready()
        assert discovery.servers() == ["tcp@:7001"]
        discovery.stopService()

        with pytest.raises(RegistryAnswerTooLarge):
            await request(b"GET", base + "/huge", {}, 5)

        with pytest.raises(RegistryTimeout):
            await request(b"GET", base + "/hung", {}, 0.2)
        assert len(hung.requests) == 1
        # Giving up closed the connection: the registry side sees it go.
        closed: Deferred[None] = hung.requests[0].notifyFinish()
        closed.addErrback(lambda _: None)
        await closed
        await until(lambda: not connections.protocols)
    finally:
        await port.stopListening()


class _Raw(Protocol):
    """Sends one request; collects the answer until the server closes."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.received)


async def _send(port: int, request: bytes) -> bytes:
    """``request`` on a new connection; all the server answered before it
    closed the connection (within 5 s, or the test fails)."""
    raw = _Raw(request)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
    answered = raw.closed
    answered.addTimeout(5, reactor)  # the server must close by itself, promptly
    return await answered


@pytest_twisted.ensureDeferred
async def test_a_large_body_gets_413_at_once_and_is_closed() -> None:
    """Both of txgeerpc's sites (``twistd geerpc-registry``'s and the one-port
    site of ``twistd geerpc``): a POST announcing 1 MiB is answered 413 and
    closed before its body is sent, and when the whole 1 MiB is sent too;
    nothing is registered."""
    store = MemoryStore(timeout=30)
    root = Resource()
    mount(root, PATH, RegistryResource(store, reactor))
    standalone = WrappingFactory(QuietSite(root))
    server = Server(reactor)
    one_port = server.port_factory()
    mount(one_port.site.resource, PATH, RegistryResource(store, reactor))
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: r\r\nX-Geerpc-Server: tcp@127.0.0.1:7001\r\n"
        f"Content-Length: {1024 * 1024}\r\n\r\n"
    ).encode()
    factories: list[tuple[Any, Collection[object]]] = [
        (standalone, standalone.protocols),  # the open connections, updated in place
        (one_port, one_port.open),
    ]
    for factory, connections in factories:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        try:
            for request in (head, head + b"x" * (1024 * 1024)):
                answer = await _send(port.getHost().port, request)
                assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer
                assert answer.endswith(b"(the limit is 65536 bytes)\n"), answer
            assert store.entries(0) == []
            await until(lambda connections=connections: not connections)
        finally:
            await port.stopListening()


class _FakeGateway(Resource):
    """Answers any etcd gateway request as a range counting nothing."""

    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"header": {"revision": "1"}, "count": "0"}'


@pytest_twisted.ensureDeferred
async def test_no_log_line_per_connection() -> None:
    """The registry clients' requests and the etcd client's log nothing per
    connection (Twisted's "Starting factory"/"Stopping factory"), where a
    plain Agent does."""
    store = MemoryStore(timeout=30)
    root = Resource()
    mount(root, PATH, RegistryResource(store, reactor))
    root.putChild(b"v3", _FakeGateway())
    connections = WrappingFactory(QuietSite(root))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(connections)
    base = f"http://127.0.0.1:{port.getHost().port}"
    logged: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event))

    def factory_lines() -> list[str]:
        return [line for line in logged if " factory " in line]

    globalLogPublisher.addObserver(observer)
    try:
        request = agent_request(reactor)
        beat = await request(b"POST", base + PATH, {b"X-Geerpc-Server": b"tcp@:7001"}, 5)
        assert beat.status == 200
        etcd = EtcdClient(reactor, base)
        try:
            assert await etcd.count_prefix(b"/p/") == 0
        finally:
            await etcd.close()
        await until(lambda: not connections.protocols)
        assert factory_lines() == [], factory_lines()

        # The lines this is about, from a plain Agent: the check can see them.
        response = await Agent(reactor).request(b"GET", (base + PATH).encode())
        await treq.content(response)
        await until(lambda: any("Stopping factory" in line for line in factory_lines()))
        assert any("Starting factory" in line for line in factory_lines()), logged
    finally:
        globalLogPublisher.removeObserver(observer)
        await port.stopListening()
