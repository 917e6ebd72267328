"""The heartbeat's and discovery's HTTP requests (``agent_request``) against a
registry on a real 127.0.0.1 socket: answers, the body cap, the timeout."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txgeerpc._one_port import mount
from txgeerpc.discovery import RegistryDiscovery
from txgeerpc.errors import RegistryAnswerTooLarge, RegistryTimeout
from txgeerpc.heartbeat import agent_request
from txgeerpc.registry import MemoryStore, RegistryResource

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
