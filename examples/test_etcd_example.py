# test_etcd_example.py
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.etcd import EtcdDiscovery, EtcdRegistration
from txgeerpc.testing import FakeEtcd


class DiscoveryTests(SynchronousTestCase):
    def test_a_lost_lease_is_registered_again(self):
        clock = Clock()
        etcd = FakeEtcd(clock)
        discovery = EtcdDiscovery(etcd, clock)
        discovery.startService()
        server = EtcdRegistration(etcd, "tcp@127.0.0.1:7001", clock, ttl=10)
        server.startService()
        self.assertEqual(discovery.servers(), ["tcp@127.0.0.1:7001"])  # pushed by the watch
        etcd.available = False  # etcd unreachable: the lease cannot be renewed
        clock.advance(10)
        etcd.available = True
        self.assertEqual(discovery.servers(), [])  # its lease expired
        clock.advance(server.period)  # the server notices and registers again
        self.assertEqual(discovery.servers(), ["tcp@127.0.0.1:7001"])
        server.stopService()  # revokes its lease
        self.assertEqual(discovery.servers(), [])
        discovery.stopService()
        etcd.close()
