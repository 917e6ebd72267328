"""
``twistd geerpc-registry --zookeeper`` against a real 3-member ZooKeeper
ensemble (``tests/_zookeeper.py``): two registry processes over one ensemble
show the same list, and killing one of them (SIGKILL) does not stop discovery
through the other (the etcd test's scenario, ``tests/etcd/test_registry_etcd.py``).

- Heartbeats through registry A are listed by registry B, and the other way
  round; a ``RegistryDiscovery`` pointed at B sees them all.
- A is SIGKILLed.  B still lists every entry (they are persistent nodes, not
  A's ephemeral ones), takes heartbeats, and the discovery keeps answering
  through it.  An entry whose heartbeats stop leaves the listing after the
  timeout and is purged, and B logs it expired.
- B stops cleanly on SIGTERM (its kazoo client closed, nothing logged as an
  error).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater

from tests import _processes
from tests._zookeeper import ZooKeeperEnsemble
from tests.integration.test_cluster import ReactorBaseline
from txgeerpc.registry import RegistryDiscovery, agent_request

TTL = 3
"""The registries' --timeout: the TTL of every entry's lease."""
BEAT = 0.5
"""Seconds between the heartbeats of the servers kept alive."""
DEADLINE = 10.0
S1, S2, S3, S4 = (f"tcp@127.0.0.1:{port}" for port in (7001, 7002, 7003, 7004))


def _now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


async def _pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def _until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    start = _now()
    while not condition():
        assert _now() - start < timeout, f"not within {timeout}s: {what}"
        await _pause(0.05)
    return _now() - start


def start_registry(
    workdir: Path, cluster: ZooKeeperEnsemble
) -> tuple[subprocess.Popen[bytes], str]:
    """``twistd geerpc-registry --zookeeper ...`` on a free port; its registry URL."""
    process = _processes.start(
        workdir,
        "geerpc-registry",
        *("--zookeeper", cluster.hosts),
        *("--listen", "tcp:0:interface=127.0.0.1", "--timeout", str(TTL)),
    )
    try:
        # twistd binds the ports (privilegedStartService) before it starts the services.
        port = _processes.wait_for(process, rb"Site starting on (\d+)")
        _processes.wait_for(process, rb"registry store: ZooKeeper at ")
    except BaseException:
        _processes.stop(process)
        raise
    return process, f"http://127.0.0.1:{port}/_geerpc_/registry"


async def two_registries(cluster: ZooKeeperEnsemble, workdir: Path) -> dict[str, float]:
    """Run the scenario (see the module docstring); the measured times."""
    baseline = ReactorBaseline()
    request = agent_request(reactor)

    async def beat(url: str, address: str) -> None:
        answer = await request(b"POST", url, {b"X-Geerpc-Server": address.encode()}, 5)
        assert (answer.status, answer.headers.get(b"x-geerpc-timeout")) == (200, b"3"), answer

    async def listed(url: str) -> list[str]:
        answer = await request(b"GET", url, {}, 5)
        assert answer.status == 200, answer
        servers = answer.headers[b"x-geerpc-servers"].decode()
        return servers.split(",") if servers else []

    processes: list[subprocess.Popen[bytes]] = []
    discovery: RegistryDiscovery | None = None
    try:
        a, url_a = start_registry(workdir, cluster)
        processes.append(a)
        b, url_b = start_registry(workdir, cluster)
        processes.append(b)

        # One list, whichever registry is asked or was told.
        await beat(url_a, S1)
        await beat(url_a, S2)
        await beat(url_b, S3)
        assert await listed(url_a) == [S1, S2, S3]
        assert await listed(url_b) == [S1, S2, S3]
        await beat(url_b, S1)  # A created it; B refreshes it
        _processes.wait_for(a, rb"registry: " + re.escape(S1.encode()) + rb" joined")

        discovery = RegistryDiscovery(reactor, request, url_b, refresh=BEAT)
        discovery.startService()
        await discovery.ready()
        assert discovery.servers() == [S1, S2, S3]

        # A dies without a word.
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=15)
        try:
            await listed(url_a)
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("registry A still answers after SIGKILL")

        # B answers the same list and takes heartbeats: S1 and S3 keep
        # beating through it, S4 joins, S2 beats once more and then stops.
        assert await listed(url_b) == [S1, S2, S3]
        for address in (S2, S1, S3, S4):
            await beat(url_b, address)
        last_s2 = _now()
        listing = await listed(url_b)
        assert listing == [S1, S2, S3, S4], listing
        while S2 in listing:
            assert _now() - last_s2 < TTL + 2, f"{S2} still listed: {listing}"
            for address in (S1, S3, S4):
                await beat(url_b, address)
            await _pause(BEAT)
            listing = await listed(url_b)
        dropped = _now() - last_s2
        assert listing == [S1, S3, S4], listing
        # Discovery through B follows.
        await _until(lambda: discovery.servers() == [S1, S3, S4], "discovery through B")
        _processes.wait_for(b, rb"registry: " + re.escape(S2.encode()) + rb" expired")

        for address in (S1, S3, S4):
            answer = await request(b"DELETE", url_b, {b"X-Geerpc-Server": address.encode()}, 5)
            assert answer.status == 200, answer
        assert await listed(url_b) == []

        discovery.stopService()
        discovery = None
        await baseline.settled()

        # B stops cleanly: its kazoo client is closed, nothing went wrong.
        os.kill(b.pid, signal.SIGTERM)
        log = _processes.output(b).decode(errors="replace")
        assert b.returncode in (0, -signal.SIGTERM), log  # twistd re-raises the signal
        assert "Server Shut Down." in log, log
        assert "Traceback" not in log and "Unhandled" not in log, log
        return {"dropped after": round(dropped, 2)}
    finally:
        if discovery is not None:
            discovery.stopService()
        for process in processes:
            _processes.stop(process)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_two_registries_over_one_ensemble(tmp_path: Path) -> None:
    with ZooKeeperEnsemble.start(tmp_path, members=3) as ensemble:
        print("two registries:", await two_registries(ensemble, tmp_path))
