"""One port, real sockets: raw GeeRPC, GeeRPC over HTTP CONNECT and plain HTTP
on the same 127.0.0.1 port."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from txgeerpc import Server, connect
from txgeerpc.examples import Args, register_examples

from .test_sockets import until, wait_until_closed


@pytest_twisted.ensureDeferred
async def test_every_protocol_on_one_port() -> None:
    server = Server(reactor)
    register_examples(server)
    factory = server.port_factory()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    hostport = f"127.0.0.1:{port.getHost().port}"
    try:
        raw = await connect(reactor, f"tcp@{hostport}", connect_timeout=5)
        over_http = await connect(reactor, f"http@{hostport}", connect_timeout=5)
        assert await raw.call("Foo.Sum", Args(1, 2), timeout=5) == 3
        assert await over_http.call("Foo.Sum", Args(3, 4), timeout=5) == 7
        assert server.connections == 2
        await raw.close()
        await over_http.close()
        await wait_until_closed(server)

        pool = HTTPConnectionPool(reactor, persistent=True)
        agent = Agent(reactor, pool=pool)
        refused = await agent.request(b"GET", f"http://{hostport}/_geeprc_".encode())
        assert refused.code == 405
        assert await readBody(refused) == b"405 must CONNECT\n"

        page = await agent.request(
            b"GET",
            f"http://{hostport}/debug/geerpc".encode(),
            Headers({b"accept": [b"application/json"]}),
        )
        assert page.code == 200
        data = json.loads(await readBody(page))
        foo = next(service for service in data["services"] if service["name"] == "Foo")
        total = next(method for method in foo["methods"] if method["name"] == "Sum")
        assert total["calls"] == 2
        await pool.closeCachedConnections()
        await until(lambda: not factory.open)  # the server side has seen them go
    finally:
        await port.stopListening()
