"""
The etcd test harness (``tests/_etcd.py``) against real ``etcd`` processes:
one member takes a put and answers a range through its JSON gateway; three
members share what is written through any of them, and the two left answer
after one is killed.  SynchronousTestCases, so both pytest and trial run them;
each test stops every process it started.
"""

from __future__ import annotations

import base64
import socket

from twisted.trial.unittest import SynchronousTestCase

from tests._etcd import EtcdCluster, b64, free_ports


class FreePortsTests(SynchronousTestCase):
    def test_distinct_and_bindable(self) -> None:
        ports = free_ports(6)
        self.assertEqual(len(set(ports)), 6)
        for port in ports:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))


class SingleMemberTests(SynchronousTestCase):
    def test_put_then_range(self) -> None:
        cluster = EtcdCluster.start(members=1)
        self.addCleanup(cluster.stop)
        (member,) = cluster.members
        self.assertEqual(cluster.endpoints, [member.client_url])
        self.assertRegex(member.client_url, r"^http://127\.0\.0\.1:\d+$")

        put = member.request("/v3/kv/put", {"key": b64(b"/harness/a"), "value": b64(b"1")})
        found = member.request("/v3/kv/range", {"key": b64(b"/harness/a")})

        self.assertEqual(found["header"]["revision"], put["header"]["revision"])
        (kv,) = found["kvs"]
        self.assertEqual(base64.b64decode(kv["key"]), b"/harness/a")
        self.assertEqual(base64.b64decode(kv["value"]), b"1")
        self.assertIsNone(member.get(b"/harness/none"))

    def test_stop_twice(self) -> None:
        cluster = EtcdCluster.start(members=1)
        self.addCleanup(cluster.stop)
        directory = cluster.members[0].data_dir.parent.parent
        cluster.stop()
        cluster.stop()
        self.assertIsNotNone(cluster.members[0].process.poll())
        self.assertFalse(directory.exists())  # its own temporary directory
        self.assertIn("received signal; shutting down", cluster.members[0].output())


class ThreeMemberTests(SynchronousTestCase):
    def test_shared_writes_and_a_killed_member(self) -> None:
        cluster = EtcdCluster.start(members=3)
        self.addCleanup(cluster.stop)
        first, second, third = cluster.members
        self.assertEqual(len(set(cluster.endpoints)), 3)

        first.put(b"/harness/a", b"through 0")
        self.assertEqual(third.get(b"/harness/a"), b"through 0")

        first.kill()
        self.assertIsNotNone(first.process.poll())
        # Should the leader have died, the other two elect a new one first.
        cluster.wait_ready()
        second.put(b"/harness/b", b"through 1")
        third.put(b"/harness/c", b"through 2")
        self.assertEqual(third.get(b"/harness/b"), b"through 1")
        self.assertEqual(second.get(b"/harness/c"), b"through 2")
