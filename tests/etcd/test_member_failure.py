"""
Losing one member of a three-member etcd cluster (the first one the servers
and the discovery talk to) never makes a live server disappear from
discovery: not when the member is frozen (SIGSTOP: its connections stay
open and nothing answers), not when it is killed (SIGKILL).

- Three etcd members; two ``twistd geerpc --etcd M0,M1,M2 --advertise
  tcp@127.0.0.1:0 --ttl 3 --etcd-timeout 5`` servers (the etcd request
  timeout longer than the TTL on purpose: a lease renewal must give up on a
  frozen member within its period, not wait the request timeout, or the
  lease lapses); an :class:`~txgeerpc.etcd.EtcdDiscovery` over an
  :class:`~txgeerpc.etcd.EtcdClient` with ``request_timeout=1,
  watch_probe=1``, member 0 first, feeding an XClient; every list the
  discovery reports is recorded with its time.
- Once both servers are listed and the discovery's watch is on member 0,
  member 0 is frozen or killed.  For ``LOSS_WINDOW`` (3 x TTL) calls keep
  going, and halfway through a fake server (``tcp@127.0.0.1:1``) is put
  under the discovery's prefix with a lease through the surviving members,
  then its lease is revoked: the discovery must still receive changes.
- Then: the discovery's reports were exactly both servers, both + the
  fake, both (neither real server ever left); every call succeeded (a call
  routed to the fake address is refused and fails over); each server's key
  is still in etcd under the lease its log last named (its renewals went on
  through the survivors); the watch moved off member 0.
- The servers get SIGTERM (by PID) and revoke their leases through the
  survivors, which the discovery sees; a frozen member 0 is SIGKILLed; the
  clients are closed and the reactor is left as found.

Runs under pytest (pytest-twisted) and under trial (the ``TestCase`` pytest
does not collect).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests._etcd import EtcdCluster, EtcdMember
from tests._processes import STARTUP_DEADLINE
from tests.etcd.test_direct_etcd import spawn_servers
from tests.integration.test_cluster import Listing, Processes, ReactorBaseline, registered
from txgeerpc import connect
from txgeerpc.errors import GeeRPCError
from txgeerpc.etcd import EtcdClient, EtcdDiscovery
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import FailMode, XClient

TTL = 3
"""The servers' --ttl."""
ETCD_TIMEOUT = 5
"""The servers' --etcd-timeout: longer than the TTL on purpose."""
LOSS_WINDOW = 3 * TTL
"""Seconds of calls after member 0 is lost."""
FAKE = "tcp@127.0.0.1:1"
"""A server address nobody listens on, registered by the test halfway through."""
SEEN_WITHIN = 5.0
"""Seconds the discovery gets to see the fake server come, and go."""
METHOD = "Arith.Multiply"
ARGUMENT = {"Num1": 6, "Num2": 7}
CALL_GAP = 0.02
"""Seconds between two calls of the load."""
_REGISTERED = rb"etcd: (tcp@127\.0\.0\.1:\d+) registered as \S+ \(lease ([0-9a-f]+),"


def _now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, max(0.0, seconds), lambda: None)


async def _until(condition: Any, what: str, timeout: float) -> float:
    """Wait (on the reactor, in 10 ms turns) until ``condition()``; when it held."""
    start = _now()
    while not condition():
        assert _now() - start < timeout, f"not within {timeout}s: {what}"
        await _pause(0.01)
    return _now()


class Load:
    """Calls one after another until :meth:`stop` or ``deadline``; records
    every outcome."""

    def __init__(self, xclient: XClient, deadline: float) -> None:
        self._xclient = xclient
        self._deadline = deadline
        self.answers = 0
        self.errors: list[tuple[float, GeeRPCError]] = []
        self._stopping = False
        self.running: Deferred[None] | None = None

    def start(self) -> None:
        self.running = Deferred.fromCoroutine(self._work())

    async def _work(self) -> None:
        while not self._stopping and _now() < self._deadline:
            try:
                answer = await self._xclient.call(METHOD, ARGUMENT, timeout=3)
            except GeeRPCError as error:
                self.errors.append((_now(), error))
            else:
                assert answer == 42, answer
                self.answers += 1
            await _pause(CALL_GAP)

    async def stop(self) -> None:
        self._stopping = True
        if self.running is not None:
            running, self.running = self.running, None
            await running


@implementer(ILogObserver)
class WatchLog:
    """The test process's log lines about etcd watches, with when."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def __call__(self, event: LogEvent) -> None:
        if str(event.get("log_format", "")).startswith("etcd: watch of"):
            self.lines.append((_now(), formatEvent(event)))


def _is_leader(member: EtcdMember) -> bool:
    status = member.request("/v3/maintenance/status", {}, timeout=2)
    return bool(status.get("leader") == status.get("header", {}).get("member_id"))


async def member_lost(cluster: EtcdCluster, workdir: str, freeze: bool) -> dict[str, Any]:
    baseline = ReactorBaseline()
    processes = Processes(workdir)
    victim = cluster.members[0]
    endpoints = cluster.endpoints  # member 0 first
    etcd = EtcdClient(reactor, endpoints, request_timeout=1, watch_probe=1)
    survivors = EtcdClient(reactor, endpoints[1:], request_timeout=1)
    discovery = EtcdDiscovery(etcd, reactor)
    listing = Listing(discovery)  # type: ignore[arg-type]
    xclient: XClient | None = None
    load: Load | None = None
    frozen = False
    watch_log = WatchLog()
    globalLogPublisher.addObserver(watch_log)
    try:
        spawned = spawn_servers(processes, endpoints, TTL, "--etcd-timeout", str(ETCD_TIMEOUT))
        servers = await registered(spawned, _REGISTERED)
        addresses = sorted(servers)

        # Both listed, and the discovery's watch on member 0.
        discovery.startService()
        await discovery.ready()
        await listing.until(lambda listed: listed == addresses, STARTUP_DEADLINE, "both listed")
        await _until(
            lambda: getattr(discovery._watch, "endpoint", None) is not None,
            "the discovery's watch connected",
            STARTUP_DEADLINE,
        )
        watch = discovery._watch
        assert getattr(watch, "endpoint", None) == victim.client_url, watch
        xclient = XClient(
            discovery,
            lambda address: connect(reactor, address, connect_timeout=2),
            reactor,
            selector=RoundRobinSelect(),
            mode=FailMode.FAIL_OVER,
            idempotent={METHOD},
        )
        for _ in range(4):
            assert await xclient.call(METHOD, ARGUMENT, timeout=3) == 42
        assert sorted(xclient.calls_sent) == addresses, xclient.calls_sent
        changes_before = len(listing.changes)
        was_leader = _is_leader(victim)

        # Lose member 0, with calls going on.
        lost_at = _now()
        if freeze:
            os.kill(victim.process.pid, signal.SIGSTOP)
            frozen = True
        else:
            victim.kill()
        load = Load(xclient, lost_at + LOSS_WINDOW)
        load.start()

        # Halfway: a fake server comes and goes, written through the survivors.
        await _pause(lost_at + LOSS_WINDOW / 2 - _now())
        fake_key = (discovery.prefix + FAKE).encode()
        lease = await survivors.grant(30)
        await survivors.put(fake_key, b"", lease=lease)
        put_at = _now()
        fake_seen_at = await listing.until(
            lambda listed: FAKE in listed, SEEN_WITHIN, "the fake server listed"
        )
        assert await survivors.revoke(lease) is True
        revoked_at = _now()
        fake_gone_at = await listing.until(
            lambda listed: FAKE not in listed, SEEN_WITHIN, "the fake server gone"
        )

        # The rest of the window, then the checks.
        assert load.running is not None
        await load.running
        ended_at = _now()
        changes = listing.changes[changes_before:]
        reported = [listed for _, listed in changes]
        timeline = [(round(at - lost_at, 3), listed) for at, listed in changes]
        assert reported == [sorted([*addresses, FAKE]), addresses], timeline
        assert discovery.servers() == addresses, discovery.servers()
        assert load.errors == [], load.errors
        assert load.answers > 0
        assert ended_at - lost_at >= LOSS_WINDOW
        watch = discovery._watch
        assert getattr(watch, "endpoint", None) not in (None, victim.client_url), watch
        reconnections = getattr(watch, "reconnections", None)
        assert reconnections, reconnections
        watch_lines = [(round(at - lost_at, 3), line) for at, line in watch_log.lines]

        # Each server's key is still under the lease it last registered with:
        # its renewals went on through the survivors for 3 x TTL.
        registrations = {}
        for address, server in servers.items():
            assert not server.ended.called, server.log()
            leases = [
                int(match.group(2), 16)
                for match in re.finditer(_REGISTERED, server.output)
                if match.group(1).decode() == address
            ]
            registrations[address] = len(leases)
            kv = await survivors.get((discovery.prefix + address).encode())
            assert kv is not None, f"{address}: key gone\n{server.log()}"
            assert kv.lease == leases[-1], (kv, leases, server.log())
        etcd_lines = {
            address: [
                line.split("] ", 1)[-1]
                for line in server.log().splitlines()
                if "etcd:" in line and "registered as" not in line
            ]
            for address, server in servers.items()
        }

        # Clean stops: each server revokes its lease through a survivor, and
        # the discovery sees both go.
        stopping_at = _now()
        for server in servers.values():
            os.kill(server.pid, signal.SIGTERM)
        for address, server in servers.items():
            await server.wait_for(rb"etcd: " + address.encode() + rb" deregistered", 10)
        await listing.until(lambda listed: listed == [], 10, "both servers gone")
        deregistered = _now() - stopping_at
        await gatherResults([server.ended for server in servers.values()])
        return {
            "lost": "frozen (SIGSTOP)" if freeze else "killed (SIGKILL)",
            "member_0_was_leader": was_leader,
            "calls": load.answers,
            "fake_put_after_loss": round(put_at - lost_at, 3),
            "fake_listed_after_put": round(fake_seen_at - put_at, 3),
            "fake_dropped_after_revoke": round(fake_gone_at - revoked_at, 3),
            "discovery_reports_after_loss": timeline,
            "watch_reconnections": reconnections,
            "watch_log": watch_lines,
            "registrations_per_server": registrations,
            "server_etcd_log": etcd_lines,
            "deregistered_within": round(deregistered, 3),
        }
    finally:
        globalLogPublisher.removeObserver(watch_log)
        if load is not None:
            await load.stop()
        if frozen:
            victim.kill()  # SIGKILL ends a stopped process too
        if xclient is not None:
            await xclient.close()
        await processes.close()
        discovery.stopService()
        await etcd.close()
        await survivors.close()
        await baseline.settled()


def _run(cluster: EtcdCluster, workdir: str, freeze: bool) -> Deferred[Any]:
    # On the next reactor turn, once trial has set its own timeout call: the
    # scenario's baseline then includes it.
    d = deferLater(reactor, 0, lambda: None)
    d.addCallback(lambda _: ensureDeferred(member_lost(cluster, workdir, freeze)))
    return d.addCallback(lambda measured: print("etcd member lost:", measured))


async def _pytest(tmp_path: Path, freeze: bool) -> None:
    workdir = tmp_path / "servers"
    workdir.mkdir()
    with EtcdCluster.start(tmp_path, members=3) as cluster:
        measured = await member_lost(cluster, str(workdir), freeze)
    print("etcd member lost:", measured)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_frozen_member_drops_no_server(tmp_path: Path) -> None:
    await _pytest(tmp_path, freeze=True)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_killed_member_drops_no_server(tmp_path: Path) -> None:
    await _pytest(tmp_path, freeze=False)


class MemberFailureTrialTests(TestCase):
    """The same scenarios for ``python -m twisted.trial``; pytest skips this
    class (trial's reactor-spinning TestCase does not mix with pytest-twisted)."""

    __test__ = False

    def _scenario(self, freeze: bool) -> Deferred[Any]:
        cluster = EtcdCluster.start(members=3)
        self.addCleanup(cluster.stop)
        workdir = self.mktemp()
        os.makedirs(workdir)
        return _run(cluster, workdir, freeze)

    def test_frozen_member_drops_no_server(self) -> Deferred[Any]:
        return self._scenario(freeze=True)

    def test_killed_member_drops_no_server(self) -> Deferred[Any]:
        return self._scenario(freeze=False)
