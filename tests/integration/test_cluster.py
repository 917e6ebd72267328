"""
Issue 5 end to end, with real processes and sockets on 127.0.0.1: one
``twistd geerpc-registry`` and three ``twistd geerpc`` servers heartbeating to
it, called through XClients that find them with ``RegistryDiscovery``.

1. Round robin spreads calls exactly evenly (30 calls, 10 per server).
2. One server is SIGKILLed while calls to it are in flight and more keep
   coming.  With ``FAIL_OVER`` not a single call fails.
3. With ``FAIL_FAST`` only calls routed to the dead server fail, each with a
   typed ``txgeerpc.errors`` error and within its timeout.
4. The registry stops listing the dead server, and its purge timer drops it,
   within TTL + one purge interval of the kill.

``Cluster.Who`` (``_cluster_service.py``) only reads: it answers the server's
PID and changes nothing, so running it twice is harmless.  The fail-over
client therefore declares it idempotent.  That matters for the calls in
flight when the server dies: they fail with ``UnexpectedDisconnect``, and
the server may have run them.  The XClient retries such a call only for an
idempotent method.  A refused connection means the call was never sent, so
it is retried for every method.  A third client, fail-over *without* the
declaration, shows both rules: its calls in flight at the kill fail, and the
calls it routes to the dead server afterwards are refused and go elsewhere.

The server holds each call of the load for ``DELAY_MS``, so calls are in
flight all the time.  The kill is also timed: it comes when every client has
a call on the victim that started less than ``YOUNG`` (``DELAY_MS`` minus
100 ms) ago.  Such a call cannot have been answered yet.

The processes are spawned on the test's own reactor, so their logs are read
as they come and no pipe fills up during the run.  Process-level waits wait
for log lines and listing changes, with deadlines, and never sleep.  Every
process is killed by PID in a ``finally``.  The test runs under pytest
(pytest-twisted) and under trial, which has its own ``TestCase`` below; pytest
does not collect that class (STYLE.md §6.3).
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests._processes import STARTUP_DEADLINE, TWISTD, environment
from txgeerpc import connect
from txgeerpc.errors import ConnectFailed, GeeRPCError, UnexpectedDisconnect
from txgeerpc.registry import RegistryDiscovery, agent_request, purge_interval
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import FailMode, XClient

TTL = 3.0
"""The registry's --timeout: seconds an entry lives after its last heartbeat."""
HEARTBEAT = 0.5
PURGE = purge_interval(TTL)
"""The registry's purge interval for that TTL (1 s)."""
REFRESH = 0.1
"""Seconds between discovery's GETs: the resolution of the drop measurement."""
SLACK = 1.0
"""Leeway on time bounds: scheduling on a loaded machine, one refresh."""
DELAY_MS = 300
"""How long a server holds each call of the load."""
YOUNG = DELAY_MS / 1000 - 0.1
"""A call started less than this long ago cannot have been answered yet."""
TIMEOUT = 3.0
"""Each call's timeout."""
WORKERS = 6
"""Calls each client keeps going during the load."""
METHOD = "Cluster.Who"
SERVICE = "tests.integration._cluster_service:Cluster"

Condition = Callable[[list[str]], bool]


def _now() -> float:
    return reactor.seconds()


def _timeout(d: Deferred[Any], seconds: float, message: Callable[[], str]) -> None:
    """Fail ``d`` with an AssertionError saying ``message()`` after ``seconds``."""
    d.addTimeout(seconds, reactor, lambda *_: Failure(AssertionError(message())))


# -- processes ------------------------------------------------------------------


class Twistd(ProcessProtocol):
    """A twistd process on the reactor: its output so far, waits for log
    lines, and a Deferred for its end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = b""
        self.pid = 0
        self.ended: Deferred[None] = Deferred()
        self._watchers: list[tuple[re.Pattern[bytes], Deferred[re.Match[bytes]]]] = []

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for watcher in list(self._watchers):
            pattern, waiter = watcher
            match = pattern.search(self.output)
            if match is not None:
                self._watchers.remove(watcher)
                waiter.callback(match)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        watchers, self._watchers = self._watchers, []
        for pattern, waiter in watchers:
            waiter.errback(
                AssertionError(
                    f"{self.name} ended ({reason.value}) before logging {pattern.pattern!r}:\n"
                    + self.log()
                )
            )
        self.ended.callback(None)

    def log(self) -> str:
        return self.output.decode(errors="replace")

    def wait_for(self, pattern: bytes, timeout: float) -> Deferred[re.Match[bytes]]:
        """The first match of ``pattern`` in the output, now or once logged;
        an AssertionError after ``timeout`` seconds."""
        compiled = re.compile(pattern)
        match = compiled.search(self.output)
        if match is not None:
            return succeed(match)
        waiter: Deferred[re.Match[bytes]] = Deferred(lambda d: self._watchers.remove((compiled, d)))
        self._watchers.append((compiled, waiter))
        _timeout(
            waiter,
            timeout,
            lambda: f"{self.name} did not log {pattern!r} within {timeout}s:\n{self.log()}",
        )
        return waiter

    def kill(self) -> None:
        """SIGKILL, by PID (nothing once it has ended: the PID may be reused)."""
        if self.pid and not self.ended.called:
            os.kill(self.pid, signal.SIGKILL)


class Processes:
    """The twistd processes of one test; :meth:`close` kills them all."""

    def __init__(self, workdir: str) -> None:
        self._workdir = workdir
        self._started: list[Twistd] = []

    def spawn(self, name: str, *args: str) -> Twistd:
        process = Twistd(name)
        argv = [*TWISTD, "-n", "--pidfile=", "--logfile=-", *args]
        reactor.spawnProcess(process, argv[0], argv, env=environment(), path=self._workdir)
        self._started.append(process)
        return process

    async def close(self) -> None:
        for process in self._started:
            process.kill()
        ended = gatherResults([process.ended for process in self._started])
        _timeout(ended, 30, lambda: "twistd processes still running after SIGKILL")
        await ended


# -- what the client side sees ----------------------------------------------------


class Listing:
    """Every list discovery reported, with when; waits for a condition on it."""

    def __init__(self, discovery: RegistryDiscovery) -> None:
        self._discovery = discovery
        self.changes: list[tuple[float, list[str]]] = []
        self._waiters: list[tuple[Condition, Deferred[float]]] = []
        discovery.on_change(self._changed)

    def _changed(self, servers: list[str]) -> None:
        now = _now()
        self.changes.append((now, servers))
        for waiter in list(self._waiters):
            condition, d = waiter
            if condition(servers):
                self._waiters.remove(waiter)
                d.callback(now)

    def until(self, condition: Condition, timeout: float, what: str) -> Deferred[float]:
        """When ``condition`` first held for the listed servers (now, if it does)."""
        if condition(self._discovery.servers()):
            return succeed(_now())
        d: Deferred[float] = Deferred(lambda d: self._waiters.remove((condition, d)))
        self._waiters.append((condition, d))
        _timeout(d, timeout, lambda: f"discovery: not {what} within {timeout}s: {self.changes}")
        return d


class RecordingRoundRobin(RoundRobinSelect):
    """Round robin that remembers every server it chose, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.picks: list[str] = []

    def select(self, servers: Sequence[str], key: str | None = None) -> str:
        chosen = super().select(servers, key)
        self.picks.append(chosen)
        return chosen


@dataclass(eq=False)
class Call:
    picked: str
    """The server the selector chose first (the only one, failing fast)."""
    started: float
    ended: float | None = None
    pid: int | None = None
    """Which server answered."""
    error: GeeRPCError | None = None


class Load:
    """One XClient and the calls made through it; :meth:`start` keeps
    ``WORKERS`` calls going until :meth:`stop`."""

    def __init__(
        self, name: str, xclient: XClient, selector: RecordingRoundRobin, on_start: Any
    ) -> None:
        self.name = name
        self.xclient = xclient
        self._selector = selector
        self._on_start = on_start
        self.calls: list[Call] = []
        self.outstanding: set[Call] = set()
        self.completed = 0
        self._stopping = False
        self._workers: list[Deferred[None]] = []

    async def call(self, delay_ms: int) -> Call:
        """One call of ``Cluster.Who``; a txgeerpc error is recorded, anything
        else fails the test."""
        picks = self._selector.picks
        before = len(picks)
        started = _now()
        d = self.xclient.call(METHOD, delay_ms, timeout=TIMEOUT)
        # The selector chose synchronously, inside call() (unless it failed first).
        record = Call(picks[before] if len(picks) > before else "", started)
        self.calls.append(record)
        self.outstanding.add(record)
        self._on_start(self, record)
        try:
            record.pid = await d
        except GeeRPCError as error:
            record.error = error
        record.ended = _now()
        self.outstanding.discard(record)
        self.completed += 1
        return record

    async def round(self, count: int) -> list[Call]:
        """``count`` calls at once (no delay on the server)."""
        return list(
            await gatherResults([Deferred.fromCoroutine(self.call(0)) for _ in range(count)])
        )

    async def _work(self) -> None:
        while not self._stopping:
            await self.call(DELAY_MS)

    def start(self) -> None:
        self._workers = [Deferred.fromCoroutine(self._work()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        """No new calls; fires when the last one has ended."""
        self._stopping = True
        await gatherResults(self._workers)

    def halt(self) -> Deferred[Any]:
        """:meth:`stop` for cleaning up after a failure: errors are not re-raised.
        (Before closing the XClient, or the workers would spin on its errors.)"""
        self._stopping = True
        return DeferredList(self._workers, consumeErrors=True)


class Kill:
    """SIGKILLs ``victim`` mid-load, at the first moment every load has a
    call on it that cannot have been answered yet (it started less than
    ``YOUNG`` ago).  Then watches the registry drop it."""

    def __init__(self, victim: str, process: Twistd, registry: Twistd, listing: Listing) -> None:
        self.victim = victim
        self._process = process
        self._registry = registry
        self._listing = listing
        self._loads: list[Load] = []
        self._warm: dict[str, int] = {}
        self.young: dict[str, list[Call]] = {}
        self.killed: Deferred[float] = Deferred()
        self.dropped: Deferred[float] | None = None
        self.purged: Deferred[float] | None = None

    def arm(self, loads: list[Load]) -> None:
        """Watch the calls of ``loads`` (they check as their calls start), and
        kill once each has completed ``2 * WORKERS`` more calls (mid-load)."""
        self._loads = loads
        self._warm = {load.name: load.completed + 2 * WORKERS for load in loads}
        _timeout(self.killed, 20, lambda: f"no moment with calls in flight on {self.victim}")

    def check(self, _load: Load, call: Call) -> None:
        if not self._loads or self.killed.called or call.picked != self.victim:
            return
        if any(load.completed < self._warm[load.name] for load in self._loads):
            return
        now = _now()
        young = {
            load.name: [
                c for c in load.outstanding if c.picked == self.victim and now - c.started < YOUNG
            ]
            for load in self._loads
        }
        if not all(young.values()):
            return
        self._process.kill()
        self.young = young
        bound = TTL + PURGE + SLACK + 10  # the assertions below use the real bound
        self.dropped = self._listing.until(
            lambda servers: self.victim not in servers, bound, f"dropping {self.victim}"
        )
        expired = self._registry.wait_for(
            rb"registry: " + re.escape(self.victim.encode()) + rb" expired", bound
        )
        self.purged = expired.addCallback(lambda _: _now())
        self.killed.callback(now)

    def cancel(self) -> None:
        """Stop waiting (the test failed on the way): nothing left pending."""
        for d in (self.killed, self.dropped, self.purged):
            if d is not None and not d.called:
                d.addErrback(lambda _: None)
                d.cancel()


# -- the scenario -------------------------------------------------------------------


async def registered(spawned: list[Twistd], pattern: bytes) -> dict[str, Twistd]:
    """Each server by the address it logged (``pattern``'s group) once
    registered; its name then says the address."""
    found = await gatherResults(
        [server.wait_for(pattern, STARTUP_DEADLINE) for server in spawned], consumeErrors=True
    )
    servers = {
        match.group(1).decode(): server for match, server in zip(found, spawned, strict=True)
    }
    assert len(servers) == len(spawned), servers
    for address, server in servers.items():
        server.name = f"{server.name} ({address})"
    return servers


class ReactorBaseline:
    """Delayed calls and sockets that existed before the scenario (trial's own
    timeout call, for one), to tell what the scenario leaves behind."""

    def __init__(self) -> None:
        self._calls = self._active_calls()
        self._sockets = self._selectables()

    @staticmethod
    def _active_calls() -> set[IDelayedCall]:
        return {call for call in reactor.getDelayedCalls() if call.active()}

    @staticmethod
    def _selectables() -> set[Any]:
        internal = set(getattr(reactor, "_internalReaders", ()))
        return (set(reactor.getReaders()) | set(reactor.getWriters())) - internal

    async def settled(self) -> None:
        """Wait (at most 5 s) for connection teardown, which Twisted finishes
        on later reactor turns; a timer set for later than that is an error."""
        deadline = _now() + 5
        while True:
            now = _now()
            calls = self._active_calls() - self._calls
            sockets = self._selectables() - self._sockets
            late = [call for call in calls if call.getTime() > now + 0.05]
            assert not late, f"delayed calls left behind: {late}"
            if not calls and not sockets:
                return
            assert now < deadline, f"left behind: {calls} {sockets}"
            await deferLater(reactor, 0.005, lambda: None)


def _by_pid(calls: list[Call]) -> Counter[int | None]:
    assert [c.error for c in calls if c.error] == []
    return Counter(c.pid for c in calls)


async def cluster_scenario(workdir: str) -> dict[str, float]:
    """Run the cluster and check everything; the measured times."""
    baseline = ReactorBaseline()
    processes = Processes(workdir)
    try:
        registry = processes.spawn(
            "registry",
            "geerpc-registry",
            *("--listen", "tcp:0:interface=127.0.0.1", "--timeout", f"{TTL:g}"),
        )
        started = await registry.wait_for(rb"Site starting on (\d+)", STARTUP_DEADLINE)
        url = f"http://127.0.0.1:{int(started.group(1))}/_geerpc_/registry"
        # Each server listens on a port of its own choosing and advertises it
        # (--advertise HOST:0), then logs the address it registered.
        spawned = [
            processes.spawn(
                f"server {number}",
                "geerpc",
                *("--listen", "tcp:0:interface=127.0.0.1"),
                *("--service", SERVICE, "--registry-path", "none"),
                *("--registry", url, "--advertise", "tcp@127.0.0.1:0"),
                *("--heartbeat", f"{HEARTBEAT:g}"),
            )
            for number in (1, 2, 3)
        ]
        servers = await registered(spawned, rb"heartbeat: (tcp@127\.0\.0\.1:\d+) registered at")
        addresses = sorted(servers)
        pids = {address: server.pid for address, server in servers.items()}
        victim, survivors = addresses[0], addresses[1:]

        discovery = RegistryDiscovery(
            reactor, agent_request(reactor), url, refresh=REFRESH, request_timeout=2.0
        )
        listing = Listing(discovery)
        kill = Kill(victim, servers[victim], registry, listing)
        loads: list[Load] = []
        discovery.startService()
        try:
            for name, mode, idempotent in [
                ("fail-over", FailMode.FAIL_OVER, {METHOD}),
                ("fail-over, not idempotent", FailMode.FAIL_OVER, set()),
                ("fail-fast", FailMode.FAIL_FAST, set()),
            ]:
                selector = RecordingRoundRobin()
                xclient = XClient(
                    discovery,
                    lambda address: connect(reactor, address, connect_timeout=TIMEOUT),
                    reactor,
                    selector=selector,
                    mode=mode,
                    idempotent=idempotent,
                )
                loads.append(Load(name, xclient, selector, kill.check))
            fail_over, strict, fail_fast = loads
            listed_at = await listing.until(
                lambda servers: servers == addresses, STARTUP_DEADLINE, "listing all three"
            )

            # 1. A stable list of three: 30 calls, exactly 10 each, from every client.
            for load in loads:
                assert _by_pid(await load.round(30)) == {pids[a]: 10 for a in addresses}, load.name

            # 2-4. Load, then SIGKILL the victim with calls in flight on it.
            kill.arm(loads)
            for load in loads:
                load.start()
            kill_at = await kill.killed
            assert kill.dropped is not None and kill.purged is not None
            dropped_at = await kill.dropped
            purged_at = await kill.purged
            for load in loads:
                await load.stop()

            # After the drop: the survivors share the calls, the dead server's
            # connection is gone.
            for load in loads:
                assert _by_pid(await load.round(30)) == {pids[a]: 15 for a in survivors}
                assert load.xclient.connections == survivors, load.name
            assert discovery.servers() == survivors
        finally:
            for load in loads:
                load.halt()
            for load in loads:
                await load.xclient.close()
            for load in loads:
                await load.halt()
            discovery.stopService()
            kill.cancel()
    finally:
        await processes.close()
    await baseline.settled()

    # The registry: it listed the survivors throughout and dropped the victim
    # once its TTL ran out (GET), and its purge timer forgot it, within
    # TTL + one purge interval of the kill.
    assert all(
        set(survivors) <= set(servers_) for at, servers_ in listing.changes if at >= listed_at
    ), listing.changes
    bound = TTL + PURGE + SLACK
    drop, purge = dropped_at - kill_at, purged_at - kill_at
    assert TTL / 3 < drop <= bound, (drop, bound)
    assert TTL / 3 < purge <= bound, (purge, bound)

    dead, alive = pids[victim], {pids[a] for a in survivors}
    # Every client had calls in flight on the victim at the kill.
    assert all(kill.young[load.name] for load in loads), kill.young

    # Fail-over, idempotent: no call failed.  The calls in flight at the kill
    # and those routed to the dead server afterwards were answered by others.
    assert [c for c in fail_over.calls if c.error] == []
    moved = [c for c in fail_over.calls if c.picked == victim and c.pid in alive]
    assert set(kill.young[fail_over.name]) <= set(moved)
    assert any(c.started > kill_at for c in moved)

    # Fail-over, not idempotent: only calls that may have run failed (in
    # flight on the victim when it died); refused ones went elsewhere.
    failed = [c for c in strict.calls if c.error]
    assert failed and all(
        c.picked == victim and isinstance(c.error, UnexpectedDisconnect) for c in failed
    ), [(c.picked, c.error) for c in failed]
    assert set(kill.young[strict.name]) <= set(failed)
    assert any(c.picked == victim and c.started > kill_at and c.pid in alive for c in strict.calls)

    # Fail-fast: only calls routed to the victim failed, each with a typed
    # error, each well within its timeout; every other call was answered by
    # the server it was routed to.
    failed = [c for c in fail_fast.calls if c.error]
    assert failed
    for c in failed:
        assert c.picked == victim and isinstance(c.error, (UnexpectedDisconnect, ConnectFailed)), (
            c.picked,
            c.error,
        )
        assert c.ended is not None and c.ended >= kill_at
        assert c.ended - c.started < TIMEOUT, (c.ended - c.started, c.error)
    assert set(kill.young[fail_fast.name]) <= set(failed)
    assert all(isinstance(c.error, UnexpectedDisconnect) for c in kill.young[fail_fast.name])
    assert any(isinstance(c.error, ConnectFailed) for c in failed)
    assert all(c.pid == pids[c.picked] for c in fail_fast.calls if not c.error)

    # Nobody answered from the dead server, and once the list dropped it no
    # call was routed to it.
    after_kill = [c for load in loads for c in load.calls if c.started > kill_at]
    assert dead not in {c.pid for c in after_kill}
    assert not [c for c in after_kill if c.picked == victim and c.started > dropped_at]

    return {
        "drop": drop,
        "purge": purge,
        "bound": bound,
        "fail_fast_failures": len(failed),
        "slowest_failure": max(c.ended - c.started for c in failed if c.ended is not None),
        "calls": sum(len(load.calls) for load in loads),
    }


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_cluster(tmp_path: Path) -> None:
    measured = await cluster_scenario(str(tmp_path))
    print("cluster:", measured)


class ClusterTrialTests(TestCase):
    """The same scenario for ``python -m twisted.trial``.  pytest skips this
    class: trial's reactor-spinning TestCase does not mix with pytest-twisted."""

    __test__ = False

    def test_cluster(self) -> Deferred[None]:
        workdir = self.mktemp()
        os.makedirs(workdir)
        # Start on the next reactor turn, once trial has set its own timeout
        # call: the scenario's baseline then includes it.
        d = deferLater(reactor, 0, lambda: None)
        d.addCallback(lambda _: Deferred.fromCoroutine(cluster_scenario(workdir)))
        return d.addCallback(lambda measured: print("cluster:", measured))
