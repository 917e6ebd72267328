"""
The registry's and etcd's seams are zope interfaces (``txgeerpc.interfaces``),
and every implementation provides them; the registry package's public names.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import txgeerpc.registry
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.etcd import (
    Etcd,
    EtcdClient,
    EtcdDiscovery,
    EtcdRegistration,
    EtcdStore,
    Watch,
)
from txgeerpc.interfaces import IDiscovery, IEtcd, IEtcdWatch, IRegistration, IRegistryStore
from txgeerpc.registry import (
    Answer,
    Heartbeat,
    MemoryStore,
    RegistryDiscovery,
)
from txgeerpc.testing import FakeEtcd

from ._helpers import checked_clock

URL = "http://registry.test/_geerpc_/registry"


def _answer(*args: Any) -> Any:
    return succeed(Answer(200, {}))


class ProvidesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.etcd = FakeEtcd(self.clock)

    def test_discoveries(self) -> None:
        for discovery in (
            StaticDiscovery(["tcp@a:1"]),
            RegistryDiscovery(self.clock, _answer, URL),
            EtcdDiscovery(self.etcd, self.clock),
        ):
            self.assertTrue(verifyObject(IDiscovery, discovery), discovery)

    def test_registrations(self) -> None:
        heartbeat = Heartbeat(self.clock, _answer, URL, "tcp@a:1")
        on_etcd = EtcdRegistration(self.etcd, "tcp@a:1", self.clock)
        for registration in (heartbeat, on_etcd):
            self.assertTrue(verifyObject(IRegistration, registration), registration)
            registration.advertise = "tcp@b:2"  # what twistd geerpc does with port 0
            self.assertEqual(registration.advertise, "tcp@b:2")
        self.assertEqual(on_etcd.address, "tcp@b:2")  # one value, two names

    def test_registry_stores(self) -> None:
        for store in (MemoryStore(), EtcdStore(self.etcd, timeout=10)):
            self.assertTrue(verifyObject(IRegistryStore, store), store)

    def test_the_fake_etcd_and_its_watch(self) -> None:
        self.assertTrue(verifyObject(IEtcd, self.etcd))
        watch = self.etcd.watch_prefix(b"/p/", 1, lambda events, revision: None)
        self.assertTrue(verifyObject(IEtcdWatch, watch))
        watch.stop()

    def test_the_etcd_client_and_its_watch(self) -> None:
        reactor = MemoryReactorClock()
        client = EtcdClient(reactor, "http://127.0.0.1:2379", watch_probe=0)
        self.assertTrue(verifyObject(IEtcd, client))
        watch = client.watch_prefix(b"/p/", 1, lambda events, revision: None)
        self.assertTrue(verifyObject(IEtcdWatch, watch))
        watch.stop()
        self.successResultOf(watch.done)
        self.successResultOf(client.close())

    def test_the_old_etcd_names_are_the_interfaces(self) -> None:
        self.assertIs(Etcd, IEtcd)
        self.assertIs(Watch, IEtcdWatch)


class ExportsTests(SynchronousTestCase):
    def test_every_public_name_is_there(self) -> None:
        for name in txgeerpc.registry.__all__:
            self.assertTrue(hasattr(txgeerpc.registry, name), name)
        public = {name for name in vars(txgeerpc.registry) if not name.startswith("_")}
        self.assertEqual(public - set(txgeerpc.registry.__all__), set())
