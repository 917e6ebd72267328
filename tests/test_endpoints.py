from __future__ import annotations

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.endpoints import client_endpoint, split_address, split_host_port
from txgeerpc.errors import InvalidAddress


class AddressTests(SynchronousTestCase):
    def test_split(self) -> None:
        self.assertEqual(split_address("tcp@127.0.0.1:7001"), ("tcp", "127.0.0.1:7001"))
        # Unlike Go, a unix path may contain '@'.
        self.assertEqual(split_address("unix@/tmp/a@b"), ("unix", "/tmp/a@b"))
        for bad in ("127.0.0.1:7001x", "@x", "tcp@"):
            self.assertRaises(InvalidAddress, split_address, bad)

    def test_host_port(self) -> None:
        self.assertEqual(split_host_port("[::1]:80"), ("::1", 80))
        self.assertEqual(split_host_port("localhost:7001"), ("localhost", 7001))
        self.assertEqual(split_host_port("[fe80::1%eth0]:80"), ("fe80::1%eth0", 80))
        # Go dials an empty host as this machine (and registers ":port" so).
        self.assertEqual(split_host_port(":80"), ("localhost", 80))
        for bad in ("nohost", "h:port", "h:70000", "h:0"):
            self.assertRaises(InvalidAddress, split_host_port, bad)

    def test_endpoints(self) -> None:
        reactor = MemoryReactor()
        # IP literals are dialled directly (a refusal is seen at once), names resolved.
        self.assertIsInstance(client_endpoint(reactor, "tcp@127.0.0.1:1"), TCP4ClientEndpoint)
        self.assertIsInstance(client_endpoint(reactor, "tcp@[::1]:1"), TCP6ClientEndpoint)
        self.assertIsInstance(client_endpoint(reactor, "tcp@localhost:1"), HostnameEndpoint)
        self.assertIsInstance(client_endpoint(reactor, "unix@/tmp/s"), UNIXClientEndpoint)
        self.assertIsInstance(client_endpoint(reactor, "unix:path=/tmp/s"), UNIXClientEndpoint)
        with self.assertRaises(InvalidAddress) as raised:
            client_endpoint(reactor, "udp@127.0.0.1:1")
        self.assertIn("unsupported protocol", str(raised.exception))
        self.assertRaises(InvalidAddress, client_endpoint, reactor, "nonsense")
