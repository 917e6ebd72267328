"""
The etcd test harness (``tests/_etcd.py``) against real ``etcd`` processes:
one member takes a put and answers a range through its JSON gateway; three
members share what is written through any of them, and the two left answer
after one is killed; an etcd outlives no test process, even a SIGKILLed one.
SynchronousTestCases, so both pytest and trial run them; each test stops
every process it started.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests._etcd import EtcdCluster, b64, free_ports
from tests._processes import ROOT

#: Starts a cluster, says the PID of its etcd, and dies without a word.
_ORPHAN = """
import os, signal, sys
from pathlib import Path
from tests._etcd import EtcdCluster
cluster = EtcdCluster.start(Path(sys.argv[1]), members=1)
print(cluster.members[0].process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped yet, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


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


class OrphanTests(SynchronousTestCase):
    def test_etcd_dies_with_a_sigkilled_test_process(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("PR_SET_PDEATHSIG is Linux's")
        directory = Path(tempfile.mkdtemp(prefix="txgeerpc-test-"))
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        test_process = subprocess.run(
            [sys.executable, "-c", _ORPHAN, str(directory)],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(test_process.returncode, -signal.SIGKILL, test_process.stderr)
        pid = int(test_process.stdout)

        def kill_it() -> None:  # should this test fail: leave no etcd behind either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

        self.addCleanup(kill_it)
        deadline = time.monotonic() + 10
        pause = threading.Event()
        while _alive(pid) and time.monotonic() < deadline:
            pause.wait(0.05)
        self.assertFalse(_alive(pid), f"etcd {pid} outlived the process that started it")


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
