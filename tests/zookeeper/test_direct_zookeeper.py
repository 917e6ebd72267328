"""
Direct registration and discovery on a real ZooKeeper, with real processes:
two ``twistd geerpc --zookeeper HOSTS --advertise tcp@127.0.0.1:0
--zookeeper-session-timeout 2`` servers, and a
:class:`~txgeerpc.zookeeper.ZooKeeperDiscovery` feeding an XClient on the
test's reactor (the etcd test's scenario, ``tests/etcd/test_direct_etcd.py``).

1. Discovery lists both servers, and calls reach both.
2. One server is SIGKILLed (by PID): its session is no longer kept alive,
   ZooKeeper expires it and deletes its ephemeral node, the children watch
   tells discovery, which drops the server within session timeout + 1 s of
   the kill (measured and printed).  Calls keep succeeding all the while
   through the other server (fail-over).
3. The other server gets SIGTERM: it deletes its node on the way out, so it
   leaves the list at once.
4. The listing CLI (``python -m txgeerpc servers --zookeeper``) lists what
   ZooKeeper holds.

Every client is closed (kazoo's threads and the client's pool stopped) and
the reactor is left as it was found.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests._processes import ROOT, STARTUP_DEADLINE
from tests._zookeeper import ZooKeeperEnsemble
from tests.etcd.test_direct_etcd import ARGUMENT, METHOD, Load
from tests.integration.test_cluster import Listing, Processes, ReactorBaseline, Twistd, registered
from txgeerpc import connect
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import FailMode, XClient
from txgeerpc.zookeeper import ZooKeeperClient, ZooKeeperDiscovery

SESSION = 2
"""The servers' --zookeeper-session-timeout."""
SLACK = 1.0
REGISTERED = rb"zookeeper: (tcp@127\.0\.0\.1:\d+) registered as"
"""What a ``twistd geerpc --zookeeper`` server logs once registered."""


def _now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


def spawn_servers(
    processes: Processes, hosts: str, *args: str, count: int = 2, prefix: str = ""
) -> list[Twistd]:
    """``count`` ``twistd geerpc`` servers registering themselves in ZooKeeper."""
    return [
        processes.spawn(
            f"server {number}",
            "geerpc",
            *("--listen", "tcp:0:interface=127.0.0.1", "--registry-path", "none"),
            *("--zookeeper", hosts, "--advertise", "tcp@127.0.0.1:0"),
            *("--zookeeper-session-timeout", str(SESSION)),
            *(("--zookeeper-prefix", prefix) if prefix else ()),
            *args,
        )
        for number in range(1, count + 1)
    ]


def kazoo_threads() -> list[str]:
    return sorted(
        t.name
        for t in threading.enumerate()
        if "zookeeper" in t.name.lower() or "kazoo" in repr(getattr(t, "_target", ""))
    )


async def direct_scenario(ensemble: ZooKeeperEnsemble, workdir: str) -> dict[str, Any]:
    baseline = ReactorBaseline()
    threads_before = kazoo_threads()
    processes = Processes(workdir)
    prefix = "/direct/servers/"
    zookeeper = ZooKeeperClient(reactor, ensemble.hosts, session_timeout=SESSION, request_timeout=2)
    discovery = ZooKeeperDiscovery(zookeeper, reactor, prefix=prefix)
    listing = Listing(discovery)  # type: ignore[arg-type]
    xclient: XClient | None = None
    load: Load | None = None
    try:
        spawned = spawn_servers(processes, ensemble.hosts, prefix=prefix)
        servers = await registered(spawned, REGISTERED)
        addresses = sorted(servers)
        victim, survivor = addresses

        discovery.startService()
        await discovery.ready()
        await listing.until(lambda listed: listed == addresses, STARTUP_DEADLINE, "both listed")
        xclient = XClient(
            discovery,
            lambda address: connect(reactor, address, connect_timeout=2),
            reactor,
            selector=RoundRobinSelect(),
            mode=FailMode.FAIL_OVER,
            idempotent={METHOD},
        )
        for _ in range(10):
            assert await xclient.call(METHOD, ARGUMENT, timeout=3) == 42
        assert dict(xclient.calls_sent) == {victim: 5, survivor: 5}, xclient.calls_sent

        # The CLI lists what ZooKeeper holds (a subprocess: it runs its own reactor).
        listed = subprocess.run(
            [sys.executable, "-m", "txgeerpc", "servers", "--zookeeper", ensemble.hosts,
             "--zookeeper-prefix", prefix],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert listed.returncode == 0, listed
        assert listed.stdout.split() == addresses, listed

        # SIGKILL one, with calls going on; measure until discovery drops it.
        load = Load(xclient)
        load.start()
        await deferLater(reactor, 0.2, lambda: None)
        killed_at = _now()
        servers[victim].kill()
        dropped_at = await listing.until(
            lambda listed: victim not in listed, SESSION + SLACK + 10, f"dropping {victim}"
        )
        drop = dropped_at - killed_at
        await deferLater(reactor, 0.2, lambda: None)
        await load.stop()
        assert discovery.servers() == [survivor], discovery.servers()
        assert load.errors == [], load.errors
        assert load.answers > 0
        assert drop <= SESSION + SLACK, (drop, SESSION + SLACK)

        # SIGTERM the other: it deletes its node, it leaves at once.
        termed_at = _now()
        os.kill(servers[survivor].pid, signal.SIGTERM)
        left_at = await listing.until(
            lambda listed: survivor not in listed, SESSION + SLACK + 10, f"dropping {survivor}"
        )
        leave = left_at - termed_at
        await servers[survivor].wait_for(rb"zookeeper: " + survivor.encode() + rb" deregistered", 5)
        await servers[survivor].ended
        assert "Traceback" not in servers[survivor].log(), servers[survivor].log()
        assert leave < SESSION / 2, (leave, SESSION)
        assert discovery.servers() == []
        return {
            "session_timeout": SESSION,
            "sigkill_drop": round(drop, 3),
            "bound": SESSION + SLACK,
            "sigterm_drop": round(leave, 3),
            "calls_during_kill": load.answers,
        }
    finally:
        if load is not None:
            await load.stop()
        if xclient is not None:
            await xclient.close()
        discovery.stopService()
        await zookeeper.close()
        await processes.close()
        await baseline.settled()
        assert kazoo_threads() == threads_before, kazoo_threads()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_sigkilled_server_leaves_discovery_within_the_session_timeout(
    zookeeper: ZooKeeperEnsemble, tmp_path: Any
) -> None:
    workdir = tmp_path / "servers"
    workdir.mkdir()
    print("direct zookeeper:", await direct_scenario(zookeeper, str(workdir)))
