"""
:class:`~txgeerpc.zookeeper.ZooKeeperClient` and the pieces on it against a
real standalone ZooKeeper (shared by this module):

- digest authentication and ACLs: nodes created by an authenticated client
  can be listed and read by anyone, changed by nobody else (``NoAuthError``,
  also for a wrong password);
- a registered server's node, deleted by hand, is created again (the
  registration watches it); a registry entry registered directly is not
  rewritten by a heartbeat, and ``deregister`` removes it (the server puts
  it back);
- a store's purge deletes only entries older than the timeout;
- no thread of kazoo's or the client's outlives ``close()``, and a client
  never used starts none.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tests._zookeeper import ZooKeeperEnsemble
from tests.integration.test_cluster import ReactorBaseline
from txgeerpc.errors import ZooKeeperError, ZooKeeperUnavailable
from txgeerpc.zookeeper import (
    ZooKeeperClient,
    ZooKeeperRegistration,
    ZooKeeperStore,
    check_prefix,
    normalize_hosts,
)
from txgeerpc.zookeeper._keys import address_of, node_name


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


async def _until(condition: Any, what: str, timeout: float = 10.0) -> None:
    start = reactor.seconds()  # type: ignore[attr-defined]
    while not condition():
        assert reactor.seconds() - start < timeout, f"not within {timeout}s: {what}"  # type: ignore[attr-defined]
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_digest_auth_and_acls(zookeeper: ZooKeeperEnsemble) -> None:
    baseline = ReactorBaseline()
    before = _threads()
    owner = ZooKeeperClient(reactor, zookeeper.hosts, username="geerpc", password="s3cret")
    anonymous = ZooKeeperClient(reactor, zookeeper.hosts)
    wrong = ZooKeeperClient(reactor, zookeeper.hosts, username="geerpc", password="nope")
    try:
        path = "/acl/servers/tcp@127.0.0.1:1"
        assert await owner.create(path, b"v", ephemeral=True)
        assert await anonymous.children("/acl/servers") == ["tcp@127.0.0.1:1"]
        found = await anonymous.get(path)
        assert found is not None and found[0] == b"v"
        for other in (anonymous, wrong):
            with pytest.raises(ZooKeeperError) as refused:
                await other.set(path, b"mine")
            assert refused.value.kind == "NoAuthError", refused.value
            with pytest.raises(ZooKeeperError):
                await other.create("/acl/servers/tcp@127.0.0.1:2", b"")
        assert await owner.set(path, b"w")
        assert await owner.delete(path)
    finally:
        for client in (owner, anonymous, wrong):
            await client.close()
        await baseline.settled()
    assert _threads() <= before, _threads() - before


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_registration_watches_its_node_and_the_store_leaves_it_alone(
    zookeeper: ZooKeeperEnsemble,
) -> None:
    baseline = ReactorBaseline()
    before = _threads()
    prefix = "/watched/servers/"
    server = ZooKeeperClient(reactor, zookeeper.hosts, session_timeout=2)
    registry = ZooKeeperClient(reactor, zookeeper.hosts)
    registration = ZooKeeperRegistration(server, "tcp@127.0.0.1:7", reactor, prefix=prefix)
    store = ZooKeeperStore(registry, timeout=1, prefix=prefix)
    try:
        registration.startService()
        await _until(lambda: registration.registrations == 1, "registered")
        path = registration.path
        assert await registry.delete(path)  # by hand
        await _until(lambda: registration.registrations == 2, "registered again")
        # What twistd geerpc's /metrics exports (txgeerpc_registry_heartbeats_total...).
        assert registration.counts == {"heartbeats": 2, "heartbeat_failures": 0}
        found = await registry.get(path)
        assert found is not None and found[1].ephemeral_owner == server.session_id
        # A heartbeat for it changes nothing (its session keeps it).
        assert await store.heartbeat("tcp@127.0.0.1:7", reactor.seconds()) is False  # type: ignore[attr-defined]
        assert await registry.get(path) == found
        # A registry entry: purged once older than the timeout, not before.
        now = reactor.seconds()  # type: ignore[attr-defined]
        assert await store.heartbeat("tcp@127.0.0.1:8", now - 0.5) is True
        assert await store.heartbeat("tcp@127.0.0.1:9", now - 5) is True
        assert [e.address for e in await store.live(now)] == ["tcp@127.0.0.1:7", "tcp@127.0.0.1:8"]
        assert await store.purge(now) == ["tcp@127.0.0.1:9"]
        # What the registry's metrics read (txgeerpc_registry_*).
        assert store.counts == {"entries": 2, "joins": 2, "leaves": 0, "expiries": 1, "refused": 0}
        assert sorted(await registry.children(prefix.rstrip("/"))) == [
            "tcp@127.0.0.1:7",
            "tcp@127.0.0.1:8",
        ]
        # deregister deletes even a directly registered node; the server puts it back.
        assert await store.deregister("tcp@127.0.0.1:7") is True
        await _until(lambda: registration.registrations == 3, "put back")
        await registration.stopService()
        assert await registry.get(path) is None
        assert await store.deregister("tcp@127.0.0.1:8") is True
        assert (store.counts["leaves"], store.counts["joins"]) == (2, 2)
    finally:
        await registration.stopService()
        await server.close()
        await registry.close()
        await baseline.settled()
    assert _threads() <= before, _threads() - before


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_unreachable_requests_fail_in_time_and_close_stops_everything() -> None:
    before = _threads()
    unused = ZooKeeperClient(reactor, "127.0.0.1:1")
    assert _threads() == before  # nothing started before the first request
    await unused.close()
    client = ZooKeeperClient(reactor, "127.0.0.1:1", request_timeout=0.3)
    try:
        with pytest.raises(ZooKeeperUnavailable):
            await client.children("/geerpc/servers")
    finally:
        await client.close()
    with pytest.raises(ZooKeeperUnavailable):
        await client.children("/geerpc/servers")  # closed
    assert _threads() <= before, _threads() - before


class NamesTests(SynchronousTestCase):
    def test_hosts(self) -> None:
        self.assertEqual(normalize_hosts(" a:1, b:2 "), "a:1,b:2")
        self.assertEqual(normalize_hosts(["a:1", "b:2/chroot"]), "a:1,b:2/chroot")
        for bad in ("", "a", "a:x", ":1", "a:70000"):
            self.assertRaises(ValueError, normalize_hosts, bad)

    def test_prefix(self) -> None:
        self.assertEqual(check_prefix("/geerpc/servers"), "/geerpc/servers/")
        for bad in ("geerpc/", "/", "", "//x"):
            self.assertRaises(ValueError, check_prefix, bad)

    def test_node_names_round_trip(self) -> None:
        for address in ("tcp@127.0.0.1:7001", "unix@/run/geerpc%1.sock", "tcp@[::1]:7"):
            name = node_name(address)
            self.assertNotIn("/", name)
            self.assertEqual(address_of(name), address)
        self.assertIsNone(address_of("not-an-address"))
