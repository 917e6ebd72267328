"""
Go GeeRPC peers on registries that keep their entries in ZooKeeper (issue 20:
"a Go GeeRPC server heartbeating to a registry on ZooKeeper, found by the Go
XClient through another registry on the same ensemble"), with real processes
on 127.0.0.1; the etcd test's scenario (``test_interop_etcd.py``):

- a 3-member ZooKeeper ensemble (``tests/_zookeeper.py``) and two ``twistd
  geerpc-registry --zookeeper HOSTS --timeout 4`` processes, A and B, over it;
- a Go server (``geepeer server -registry A -heartbeat 250ms``: the
  reference's heartbeat, plain registry protocol, to A only) and a txgeerpc
  server registered directly in ZooKeeper (``twistd geerpc --zookeeper HOSTS
  --advertise tcp@127.0.0.1:0``: an ephemeral node, no registry involved);
- the Go XClient (``geepeer xclient -registry B``: the reference's plain
  ``GET``, to B only) and a txgeerpc ``RegistryDiscovery([A, B])``.

What is checked:

1. A and B answer the same list, both servers, though neither registry was
   told of the txgeerpc server and only A of the Go server.  The Go XClient,
   through B, spreads its calls over both; each server counts its own share.
   The Go server's periodic beats through A refresh its entry as B lists it.
2. A is SIGKILLed (by PID).  Through B nothing has changed for clients: B
   still lists both, the Go XClient still spreads over both, and the
   ``RegistryDiscovery`` fails over from A to B and still lists both.  (The
   Go server's next beat to A fails and, like the reference, it stops
   beating for good; its entry, a persistent node, lives on.)
3. So, the registries' timeout after its last beat, the Go server's entry
   is dropped: B lists only the txgeerpc server (and logs the Go one
   expired when its purge deletes the node), the discovery follows, the Go
   XClient through B now calls only the txgeerpc server.
4. The txgeerpc server, on SIGTERM, deletes its node: B lists nobody at
   once.  It and B stop cleanly (no traceback in their logs).

Every process is stopped by its PID; nothing waits by sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.error
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests import _processes
from tests._zookeeper import ZooKeeperEnsemble
from tests.integration.test_cluster import ReactorBaseline
from txgeerpc.registry import RegistryDiscovery, agent_request

from ._geepeer import run_xclient, running_server
from ._reactor_go import _clean_reactor_and_children  # noqa: F401 - the autouse fixture
from .test_interop_registry import (
    REGISTRY_PATH,
    debug_calls,
    go_server_calls,
    go_spread,
    listed,
    listing,
)

TTL = 4
"""The registries' --timeout: an entry older than this is not listed, and purged."""
GO_HEARTBEAT = "250ms"
"""The Go server's heartbeat period."""
SLACK = 2.0
"""Beyond the TTL: the discovery refreshes every REFRESH."""
REFRESH = 0.5
"""The RegistryDiscovery's refresh period."""
CALLS = 10
"""Calls of each Go XClient spread: 5 per server, whichever comes first."""


def _now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


async def _until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Let the reactor run until ``condition`` holds; fail after ``timeout``."""
    start = _now()
    while not condition():
        assert _now() - start < timeout, f"not within {timeout}s: {what}"
        await deferLater(reactor, 0.05, lambda: None)


def _unreachable(url: str) -> bool:
    try:
        listed(url)
    except urllib.error.URLError:
        return True
    return False


def heartbeat_of(registry: str, address: str) -> float:
    """When ``address`` last beat, as ``registry``'s JSON listing says."""
    (entry,) = [entry for entry in listing(registry) if entry["address"] == address]
    return float(entry["last_heartbeat"])


def go_calls_through(binary: Path, registry: str, calls: int = CALLS) -> dict[str, int]:
    """``geepeer xclient -registry REGISTRY -scenario spread``: calls per server
    (every reply checked).  The wide Option: geepeer's own server, faithful to
    the reference, would lose a request sent with the plain one."""
    lines = run_xclient(binary, registry, "spread", calls=calls, wide_option=True)
    assert len(lines) == calls, lines
    return dict(go_spread(lines))


def start_registries(
    stack: ExitStack, workdir: Path, cluster: ZooKeeperEnsemble, count: int
) -> list[tuple[subprocess.Popen[bytes], str]]:
    """``count`` ``twistd geerpc-registry --zookeeper`` processes on free ports
    (stopped by PID when ``stack`` closes); each one's process and URL."""
    processes = []
    for _ in range(count):
        process = _processes.start(
            workdir,
            "geerpc-registry",
            *("--zookeeper", cluster.hosts, "--timeout", str(TTL)),
            *("--listen", "tcp:0:interface=127.0.0.1"),
        )
        stack.callback(_processes.stop, process)
        processes.append(process)
    started = []
    for process in processes:
        port = _processes.wait_for(process, rb"Site starting on (\d+)")
        _processes.wait_for(process, rb"registry store: ZooKeeper at ")
        started.append((process, f"http://127.0.0.1:{port}{REGISTRY_PATH}"))
    return started


async def go_on_zookeeper_registries(binary: Path, workdir: Path) -> dict[str, float]:
    """Run the scenario (see the module docstring); the measured times."""
    began = _now()
    baseline = ReactorBaseline()
    discovery: RegistryDiscovery | None = None
    try:
        with ExitStack() as stack:
            # Closed in reverse (whatever is still running): the Go server,
            # the txgeerpc server (while ZooKeeper runs), the registries, ZooKeeper.
            cluster = ZooKeeperEnsemble.start(workdir, members=3)
            stack.callback(cluster.stop)
            (a, url_a), (b, url_b) = start_registries(stack, workdir, cluster, 2)
            server = _processes.start(
                workdir,
                "geerpc",
                *("--listen", "tcp:0:interface=127.0.0.1", "--registry-path", "none"),
                *("--zookeeper", cluster.hosts, "--advertise", "tcp@127.0.0.1:0"),
            )
            stack.callback(_processes.stop, server)
            ours = _processes.wait_for(server, rb"zookeeper: (tcp@127\.0\.0\.1:\d+) registered as")
            ours_hostport = ours.split("@", 1)[1]
            go = running_server(binary, registry=url_a, heartbeat=GO_HEARTBEAT)
            stack.enter_context(go)
            assert go.first_heartbeat == "200 OK", go.log
            both = sorted([go.advertised, ours])
            started = _now() - began

            # 1. One list through either registry; the Go XClient spreads over both.
            assert listed(url_a) == both
            assert listed(url_b) == both
            discovery = RegistryDiscovery(
                reactor, agent_request(reactor), [url_a, url_b], refresh=REFRESH
            )
            discovery.startService()
            await discovery.ready()
            assert (discovery.servers(), discovery.registry_url) == (both, url_a)
            assert go_calls_through(binary, url_b) == {go.advertised: 5, ours: 5}
            assert await go_server_calls(go, "Foo.Sum") == 5
            assert debug_calls(ours_hostport, "Foo.Sum") == 5

            # The Go server's periodic beats reach ZooKeeper through A: B sees its
            # entry refreshed.
            before = heartbeat_of(url_b, go.advertised)
            assert go.next_heartbeat() == "200 OK", go.log
            assert heartbeat_of(url_b, go.advertised) > before

            # 2. A dies without a word, right after one of those beats.
            os.kill(a.pid, signal.SIGKILL)
            a.wait(timeout=15)
            killed_at = _now()
            assert _unreachable(url_a), "registry A still answers after SIGKILL"
            # The Go server's beats to A fail from now on; it stops at the first failure.
            beats = 0
            while (status := go.next_heartbeat()) == "200 OK":
                beats += 1
            assert status.startswith("ERROR "), (status, go.log)
            # For clients, nothing has changed: B lists both, the Go XClient
            # through B still reaches both, the discovery fails over to B.
            assert listed(url_b) == both
            assert go_calls_through(binary, url_b) == {go.advertised: 5, ours: 5}
            assert await go_server_calls(go, "Foo.Sum") == 10
            assert debug_calls(ours_hostport, "Foo.Sum") == 10
            await discovery.refresh()  # perhaps one A answered before it died
            assert await discovery.refresh() == both
            assert (discovery.registry_url, discovery.failures) == (url_b, 0)

            # 3. The Go server's entry expires TTL after its last beat (through A).
            await _until(
                lambda: discovery is not None and discovery.servers() == [ours],
                f"{go.advertised} dropped",
                TTL + SLACK + 5,
            )
            dropped = _now() - killed_at
            assert TTL - 1 <= dropped <= TTL + SLACK, dropped
            assert listed(url_b) == [ours]
            _processes.wait_for(b, rb"registry: " + re.escape(go.advertised.encode()) + b" expired")
            assert go_calls_through(binary, url_b, 4) == {ours: 4}
            assert debug_calls(ours_hostport, "Foo.Sum") == 14
            assert await go_server_calls(go, "Foo.Sum") == 10
            # One heartbeat error in TTL s at 250 ms: it never beat again.
            assert go.log.count("heartbeat error") == 1, go.log
            assert discovery.registry_url == url_b

            discovery.stopService()
            discovery = None

            # The txgeerpc server (SIGTERM) deletes its node on the way out:
            # B lists nobody at once.  Then B stops cleanly too.
            os.kill(server.pid, signal.SIGTERM)
            server_log = _processes.output(server).decode(errors="replace")
            assert f"zookeeper: {ours} deregistered" in server_log, server_log
            assert listed(url_b) == []
            os.kill(b.pid, signal.SIGTERM)
            b_log = _processes.output(b).decode(errors="replace")
            for log in (server_log, b_log):
                assert "Server Shut Down." in log, log
                assert "Traceback" not in log and "Unhandled" not in log, log
        return {
            "started": round(started, 2),
            "late_beats_before_the_error": beats,
            "go_entry_dropped_after_kill": round(dropped, 2),
            "ttl": TTL,
            "total": round(_now() - began, 2),
        }
    finally:
        if discovery is not None:
            discovery.stopService()
        await baseline.settled()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_go_peers_on_registries_over_zookeeper(geepeer_jsonv2: Path, tmp_path: Path) -> None:
    print("go on zookeeper registries:", await go_on_zookeeper_registries(geepeer_jsonv2, tmp_path))
