"""Hedged requests over real loopback TCP: two servers in this process, one
of them slow; the XClient's hedges keep p99 near the fast server's and the
slow server's handlers are cancelled."""

from __future__ import annotations

import random

import pytest_twisted
from twisted.internet import reactor

from txgeerpc import Server, connect
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.selection import RandomSelect
from txgeerpc.xclient import Hedge, XClient

from ..test_hedge import Work, p99
from .test_sockets import listen, until, wait_until_closed

CALLS = 30


@pytest_twisted.ensureDeferred
async def test_hedged_p99_stays_near_the_fast_servers_and_slow_handlers_are_cancelled() -> None:
    work = {"fast": Work(reactor, 0.0), "slow": Work(reactor, 3.0)}
    servers = {}
    ports = []
    addresses = []
    for name in ("fast", "slow"):
        servers[name] = Server(reactor)
        servers[name].register(work[name])
        port, address = await listen(servers[name])
        ports.append(port)
        addresses.append(address)
    xclient = XClient(
        StaticDiscovery(addresses),
        lambda address: connect(reactor, address, connect_timeout=5),
        reactor,
        selector=RandomSelect(random.Random(3)),
        idempotent=["Work.Do"],
        hedge=Hedge(after=0.05),
    )
    slow = servers["slow"].services["Work"].methods["Do"].stats
    try:
        latencies = []
        for n in range(CALLS):
            started = reactor.seconds()  # type: ignore[attr-defined]
            assert await xclient.call("Work.Do", n, timeout=10) == n
            latencies.append(reactor.seconds() - started)  # type: ignore[attr-defined]
        # The slow server takes 3 s; hedged after 0.05 s, no call waits for it
        # (the bound is loose for a busy machine, far below 3 s).
        assert p99(latencies) < 1.0
        assert slow.calls >= 5  # (of 30, chosen at random)
        # Every call that went to the slow server first was hedged, won by the
        # copy on the fast one, and cancelled on the slow server.
        assert xclient.hedges_sent == xclient.hedges_won == slow.calls
        assert xclient.hedges_cancelled == slow.calls
        await until(lambda: slow.in_flight == 0)
        assert work["slow"].cancelled == slow.cancelled == slow.calls
    finally:
        await xclient.close()
        for name in ("fast", "slow"):
            await wait_until_closed(servers[name])
        for port in ports:
            await port.stopListening()
