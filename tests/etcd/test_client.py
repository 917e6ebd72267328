"""
:class:`~txgeerpc.etcd.EtcdClient` against real etcd processes
(``tests/_etcd.py``), on the real reactor.

- One member: every operation, lease expiry seen by a watch (puts told from
  deletes), a compacted start revision, fail-over past a dead endpoint, a
  cluster nobody answers for, auth with token renewal, TLS with a client
  certificate, and ``close()`` leaving no socket or timer behind.
- Three members: a watch whose member is SIGKILLed while a writer keeps
  writing resumes on another member, and not one change is missed or seen
  twice (checked against a second watch replaying the same revisions).

Each scenario is an ``async`` function run by pytest (pytest-twisted) and by
trial (the ``TestCase`` classes pytest does not collect).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests._etcd import EtcdCluster, free_ports
from tests.integration.test_cluster import ReactorBaseline
from txgeerpc.errors import EtcdAnswerTooLarge, EtcdCompacted, EtcdError, EtcdUnavailable
from txgeerpc.etcd import EtcdClient, EtcdTLS, KeyValue, WatchEvent

DEADLINE = 10.0


def _now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


async def _until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Wait (on the reactor, in 10 ms turns) until ``condition()``; the time it took."""
    start = _now()
    while not condition():
        assert _now() - start < timeout, f"not within {timeout}s: {what}"
        await deferLater(reactor, 0.01, lambda: None)
    return _now() - start


class Recorder:
    """Collects a watch's events."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.calls: list[tuple[list[WatchEvent], int]] = []

    def __call__(self, events: list[WatchEvent], revision: int) -> None:
        self.calls.append((events, revision))
        self.events.extend(events)


# -- one member ---------------------------------------------------------------


async def operations(cluster: EtcdCluster) -> None:
    baseline = ReactorBaseline()
    etcd = EtcdClient(reactor, cluster.endpoints, request_timeout=3)
    try:
        first = await etcd.put(b"/t/a", b"1")
        assert first > 1
        found = await etcd.get(b"/t/a")
        assert found == KeyValue(b"/t/a", b"1", first, first, 1, 0), found
        assert await etcd.get(b"/t/none") is None
        second = await etcd.put(b"/t/a", b"2")
        assert second == first + 1
        found = await etcd.get(b"/t/a")
        assert found is not None and (found.version, found.mod_revision) == (2, second)

        lease = await etcd.grant(30)
        assert lease > 0
        assert await etcd.create(b"/t/b", b"mine", lease=lease) is None
        existing = await etcd.create(b"/t/b", b"theirs")
        assert existing is not None and (existing.value, existing.lease) == (b"mine", lease)
        await etcd.put(b"/t0", b"after the prefix")  # just past it: not listed
        listed = await etcd.get_prefix(b"/t/")
        assert [kv.key for kv in listed.kvs] == [b"/t/a", b"/t/b"], listed
        assert listed.revision == second + 2
        assert await etcd.count_prefix(b"/t/") == 2
        assert 0 < await etcd.keep_alive(lease) <= 30

        recorder = Recorder()
        watch = etcd.watch_prefix(b"/t/", listed.revision + 1, recorder)
        await etcd.put(b"/t/c", b"3")
        assert await etcd.revoke(lease) is True  # deletes /t/b
        assert await etcd.revoke(lease) is False
        assert await etcd.keep_alive(lease) == 0
        assert await etcd.delete(b"/t/c") == 1
        assert await etcd.delete(b"/t/c") == 0
        await _until(lambda: len(recorder.events) == 3, "three events")
        assert [(e.kind, e.kv.key) for e in recorder.events] == [
            ("put", b"/t/c"),
            ("delete", b"/t/b"),
            ("delete", b"/t/c"),
        ]
        assert recorder.events[0].kv.value == b"3"
        revisions = [e.kv.mod_revision for e in recorder.events]
        assert revisions == sorted(set(revisions)) and watch.revision == revisions[-1]

        # A lease that is not renewed expires, and its key goes with it.
        short = await etcd.grant(1)
        await etcd.put(b"/t/short", b"", lease=short)
        granted = _now()
        await _until(
            lambda: ("delete", b"/t/short") in [(e.kind, e.kv.key) for e in recorder.events],
            "the short lease expires",
        )
        assert _now() - granted >= 0.9
        watch.stop()
        await watch.done

        try:
            await etcd.put(b"/t/x", b"", lease=12345)
        except EtcdError as error:
            assert error.code == 5 and "lease not found" in error.message, error
        else:
            raise AssertionError("a put with a made-up lease worked")
    finally:
        await etcd.close()
    await baseline.settled()


async def compaction(cluster: EtcdCluster) -> None:
    baseline = ReactorBaseline()
    etcd = EtcdClient(reactor, cluster.endpoints)
    try:
        old = await etcd.put(b"/c/a", b"1")
        latest = await etcd.put(b"/c/a", b"2")
        cluster.members[0].request("/v3/kv/compaction", {"revision": str(latest)})
        watch = etcd.watch_prefix(b"/c/", old, Recorder())
        try:
            await watch.done
        except EtcdCompacted as error:
            assert error.compact_revision == latest, error
        else:
            raise AssertionError("a watch from a compacted revision went on")
        # From the listing's revision on, the watch works.
        listed = await etcd.get_prefix(b"/c/")
        recorder = Recorder()
        watch = etcd.watch_prefix(b"/c/", listed.revision + 1, recorder)
        await etcd.put(b"/c/b", b"3")
        await _until(lambda: len(recorder.events) == 1, "the put after the listing")
        watch.stop()
    finally:
        await etcd.close()
    await baseline.settled()


async def fail_over(cluster: EtcdCluster) -> None:
    baseline = ReactorBaseline()
    (dead,) = free_ports(1)
    nobody = f"http://127.0.0.1:{dead}"
    etcd = EtcdClient(reactor, [nobody, *cluster.endpoints], request_timeout=2)
    alone = EtcdClient(reactor, [nobody], request_timeout=2)
    # Not etcd at all (a proxy's error page, another web server): the next is asked.
    web = reactor.listenTCP(0, Site(Resource(), timeout=None), interface="127.0.0.1")
    elsewhere = f"http://127.0.0.1:{web.getHost().port}"
    misdirected = EtcdClient(reactor, [elsewhere, *cluster.endpoints], request_timeout=2)
    try:
        await misdirected.put(b"/g/b", b"1")
        assert misdirected.endpoints[misdirected._preferred] == cluster.endpoints[0]
        # The dead endpoint is tried first, once; then the live one is preferred,
        # and the log says so.
        logged: list[str] = []
        observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        try:
            await etcd.put(b"/f/a", b"1")
            await etcd.put(b"/f/a", b"1")
        finally:
            globalLogPublisher.removeObserver(observer)
        switched = [line for line in logged if "now using" in line]
        assert len(switched) == 1 and nobody in switched[0], logged
        assert etcd.endpoints[etcd._preferred] == cluster.endpoints[0]
        recorder = Recorder()
        watch = etcd.watch_prefix(b"/f/", 1, recorder)
        await _until(lambda: len(recorder.events) == 2, "the watch through the live member")
        assert watch.endpoint == cluster.endpoints[0]
        watch.stop()
        started = _now()
        try:
            await alone.get(b"/f/a")
        except EtcdUnavailable as error:
            assert list(error.reasons) == [nobody], error.reasons
            assert "refused" in error.reasons[nobody].lower(), error.reasons
        else:
            raise AssertionError("a client of nobody got an answer")
        assert _now() - started < 2
    finally:
        await etcd.close()
        await alone.close()
        await misdirected.close()
        await web.stopListening()
    await baseline.settled()


class Silent(Protocol):
    """A "member" that takes connections and requests, and never answers."""

    def connectionMade(self) -> None:
        silent_connections.append(self)


silent_connections: list[Silent] = []


async def unanswered_member(cluster: EtcdCluster) -> None:
    """A member that answers nothing: an idempotent request moves on after
    the timeout, one that may have been applied does not; a request
    cancelled (or cut by ``close()``) is not sent anywhere else."""
    baseline = ReactorBaseline()
    port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
    silent = f"http://127.0.0.1:{port.getHost().port}"
    member = cluster.members[0]
    etcd = EtcdClient(reactor, [silent, *cluster.endpoints], request_timeout=0.5)
    try:
        # A put may be applied twice harmlessly: after the timeout, the next member.
        started = _now()
        await etcd.put(b"/u/put", b"1")
        assert 0.5 <= _now() - started < 2, _now() - started
        assert member.get(b"/u/put") == b"1"

        # A create that timed out may have been applied: it is not sent again.
        etcd._preferred = 0
        try:
            await etcd.create(b"/u/create", b"1")
        except EtcdUnavailable as error:
            assert list(error.reasons) == [silent], error.reasons
            assert "no answer within 0.5s" in error.reasons[silent], error.reasons
            assert "may have been applied" in error.reasons[silent], error.reasons
        else:
            raise AssertionError("a create that may have been applied was sent again")
        assert member.get(b"/u/create") is None
        # ... and its retry, a new request, starts at the next member.
        assert await etcd.create(b"/u/create", b"1") is None

        # Requests under way together each try every member once, whatever
        # the others meanwhile learnt about which one answers.
        etcd._preferred = 0
        first = etcd.get(b"/u/put")
        await deferLater(reactor, 0.2, lambda: None)
        second = etcd.get(b"/u/put")
        answers = await gatherResults([first, second])
        assert [kv.value for kv in answers if kv] == [b"1", b"1"], answers

        # Cancelled, or cut off by close(): nothing goes to another member.
        etcd._preferred = 0
        cancelled = etcd.put(b"/u/cancelled", b"1")
        await deferLater(reactor, 0.1, lambda: None)
        cancelled.cancel()
        # Its caller gave up on the silent member: the next request starts at the next.
        assert etcd.endpoints[etcd._preferred] == member.client_url
        etcd._preferred = 0
        closed = etcd.put(b"/u/closed", b"1")
        await deferLater(reactor, 0.1, lambda: None)
        await etcd.close()
        for d in (cancelled, closed):
            try:
                await d
            except CancelledError:
                pass
            else:
                raise AssertionError("a cancelled put was answered")
        await deferLater(reactor, 1.0, lambda: None)  # past the timeout: nothing moved on
        assert member.get(b"/u/cancelled") is None
        assert member.get(b"/u/closed") is None
    finally:
        await etcd.close()
        for connection in silent_connections:
            connection.transport.abortConnection()  # type: ignore[union-attr]
        silent_connections.clear()
        await port.stopListening()
    await baseline.settled()


async def oversized_watch_message(cluster: EtcdCluster) -> None:
    baseline = ReactorBaseline()
    etcd = EtcdClient(reactor, cluster.endpoints, max_answer=2048)
    try:
        start = await etcd.put(b"/o/small", b"1")
        watch = etcd.watch_prefix(b"/o/", start + 1, Recorder())
        await etcd.put(b"/o/large", b"x" * 4096)
        try:
            await watch.done
        except EtcdAnswerTooLarge as error:
            assert error.limit == 2048
        else:
            raise AssertionError("a watch message over the limit was taken")
        assert watch.reconnections == 0  # the same message again would not fit either
    finally:
        await etcd.close()
    await baseline.settled()


async def authenticated(cluster: EtcdCluster) -> None:
    member = cluster.members[0]
    member.request("/v3/auth/user/add", {"name": "root", "password": "s3cret"})
    member.request("/v3/auth/user/grant", {"user": "root", "role": "root"})
    member.request("/v3/auth/enable", {})
    baseline = ReactorBaseline()
    etcd = EtcdClient(reactor, cluster.endpoints, username="root", password="s3cret")
    anonymous = EtcdClient(reactor, cluster.endpoints)
    wrong = EtcdClient(reactor, cluster.endpoints, username="root", password="nope")
    try:
        await etcd.put(b"/a/k", b"v")
        first_token = etcd._token
        assert first_token
        # A token etcd no longer takes (expired, or from before a restart) is
        # renewed once, and the request goes through.
        etcd._token = first_token + "-stale"
        found = await etcd.get(b"/a/k")
        assert found is not None and found.value == b"v"
        assert etcd._token and etcd._token != first_token + "-stale"
        # A watch opened with a token etcd no longer takes renews it too.
        etcd._token = etcd._token + "-stale"
        recorder = Recorder()
        watch = etcd.watch_prefix(b"/a/", 1, recorder)
        await _until(lambda: len(recorder.events) == 1, "an authenticated watch")
        watch.stop()
        # Many requests needing a token share one login.
        logins = 0
        authenticate = etcd._authenticate

        async def counted(endpoint: str) -> str:
            nonlocal logins
            logins += 1
            return await authenticate(endpoint)

        etcd._authenticate = counted  # type: ignore[method-assign]
        etcd._token = None
        answers = await gatherResults([etcd.get(b"/a/k") for _ in range(10)])
        assert [kv.value for kv in answers if kv] == [b"v"] * 10
        assert logins == 1, logins
        # The request that started a login is cancelled: the others still get in.
        etcd._token = None
        started, waiting = etcd.get(b"/a/k"), etcd.get(b"/a/k")
        started.cancel()
        found = await waiting
        assert found is not None and found.value == b"v"
        assert logins == 2, logins
        started.addErrback(lambda failure: failure.trap(CancelledError))
        for client in (anonymous, wrong):
            try:
                await client.get(b"/a/k")
            except EtcdError as error:
                assert not isinstance(error, EtcdUnavailable), error
            else:
                raise AssertionError("etcd answered without valid credentials")
    finally:
        for client in (etcd, anonymous, wrong):
            await client.close()
    await baseline.settled()

    # A login that gets no answer sent nothing: even a grant goes on to the next member.
    port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
    silent = f"http://127.0.0.1:{port.getHost().port}"
    etcd = EtcdClient(
        reactor,
        [silent, *cluster.endpoints],
        username="root",
        password="s3cret",
        request_timeout=0.5,
    )
    try:
        assert await etcd.grant(5) > 0
    finally:
        await etcd.close()
        for connection in silent_connections:
            connection.transport.abortConnection()  # type: ignore[union-attr]
        silent_connections.clear()
        await port.stopListening()
    await baseline.settled()


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory = directory.resolve()
    files = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key")}
    files.update(client=directory / "client.pem", **{"client-key": directory / "client-key.pem"})

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", str(files["ca-key"]), "-out", str(files["ca"]), "-days", "2"),
        *("-subj", "/CN=txgeerpc test CA"),
    )
    for name, extension in [
        # etcd's gateway dials its own gRPC server with the server certificate.
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ]:
        (directory / f"{name}.ext").write_text(extension + "\n")
        openssl(
            *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
            *("-keyout", str(files[f"{name}-key"]), "-out", f"{name}.csr"),
            *("-subj", f"/CN=txgeerpc test {name}"),
        )
        openssl(
            *("x509", "-req", "-in", f"{name}.csr", "-CA", str(files["ca"])),
            *("-CAkey", str(files["ca-key"]), "-CAcreateserial", "-days", "2"),
            *("-out", str(files[name]), "-extfile", f"{name}.ext"),
        )
    return files


def start_tls_cluster(directory: Path) -> tuple[EtcdCluster, dict[str, Path]]:
    import ssl

    files = make_certificates(directory)
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.load_cert_chain(str(files["client"]), str(files["client-key"]))
    cluster = EtcdCluster.start(
        directory,
        extra_args=[
            *("--cert-file", str(files["server"]), "--key-file", str(files["server-key"])),
            *("--trusted-ca-file", str(files["ca"]), "--client-cert-auth"),
        ],
        client_ssl_context=context,
    )
    return cluster, files


async def tls(cluster: EtcdCluster, files: dict[str, Path]) -> None:
    baseline = ReactorBaseline()
    assert all(endpoint.startswith("https://") for endpoint in cluster.endpoints)
    certified = EtcdTLS(
        ca=str(files["ca"]), cert=str(files["client"]), key=str(files["client-key"])
    )
    etcd = EtcdClient(reactor, cluster.endpoints, tls=certified)
    uncertified = EtcdClient(reactor, cluster.endpoints, tls=EtcdTLS(ca=str(files["ca"])))
    try:
        await etcd.put(b"/s/k", b"v")
        recorder = Recorder()
        watch = etcd.watch_prefix(b"/s/", 1, recorder)
        await _until(lambda: len(recorder.events) == 1, "a watch over TLS")
        watch.stop()
        try:
            await uncertified.get(b"/s/k")
        except EtcdUnavailable:
            pass  # the handshake fails: there is no member to ask
        else:
            raise AssertionError("etcd answered a client without a certificate")
    finally:
        await etcd.close()
        await uncertified.close()
    await baseline.settled()


# -- three members ------------------------------------------------------------


async def watched_member_lost(cluster: EtcdCluster, freeze: bool = False) -> dict[str, Any]:
    """A writer keeps putting and deleting keys while the member the watch is
    connected to is SIGKILLed (or, with ``freeze``, SIGSTOPped: its sockets
    stay open and say nothing); the watch sees every change exactly once."""
    baseline = ReactorBaseline()
    watcher = EtcdClient(reactor, cluster.endpoints, request_timeout=1, watch_probe=1)
    writer = EtcdClient(reactor, cluster.endpoints, request_timeout=1)
    written = 0
    victim = None
    try:
        start = await writer.put(b"/k/start", b"")
        recorder = Recorder()
        watch = watcher.watch_prefix(b"/k/", start + 1, recorder)
        await _until(lambda: watch.endpoint is not None, "the watch connected")
        victim = next(m for m in cluster.members if m.client_url == watch.endpoint)
        acknowledged: list[int] = []

        async def write(number: int) -> None:
            # A write cut off by the kill is retried (it may then be in the
            # history twice; the check below is against etcd's own history).
            for _attempt in range(20):
                try:
                    if number % 4 == 3:
                        await writer.delete(b"/k/%04d" % (number - 1))
                        acknowledged.append(-(number - 1))
                    else:
                        acknowledged.append(await writer.put(b"/k/%04d" % number, b"%d" % number))
                    return
                except EtcdError:
                    await deferLater(reactor, 0.05, lambda: None)
            raise AssertionError(f"write {number} never went through")

        for number in range(120):
            if number == 40:
                await _until(lambda: len(recorder.events) >= 25, "events before the kill")
                if freeze:
                    os.kill(victim.process.pid, signal.SIGSTOP)
                else:
                    victim.kill()
                killed_at = _now()
            await write(number)
            written += 1
        final = await writer.put(b"/k/end", b"")
        await _until(
            lambda: watch.revision >= final, "the watch caught up after the kill", timeout=30
        )
        assert watch.endpoint != victim.client_url
        assert watch.reconnections >= 1

        # etcd's own history of the same revisions, through a survivor.
        replay = Recorder()
        survivors = [m.client_url for m in cluster.members if m is not victim]
        checker = EtcdClient(reactor, survivors)
        try:
            check = checker.watch_prefix(b"/k/", start + 1, replay)
            await _until(lambda: check.revision >= final, "the replay")
            check.stop()
        finally:
            await checker.close()
        seen = [(e.kind, e.kv.key, e.kv.mod_revision) for e in recorder.events]
        history = [(e.kind, e.kv.key, e.kv.mod_revision) for e in replay.events]
        assert seen == history, (len(seen), len(history))
        revisions = [revision for _, _, revision in seen]
        assert revisions == sorted(set(revisions)), "an event seen twice or out of order"
        puts = [a for a in acknowledged if a > 0]
        assert set(puts) <= set(revisions), "an acknowledged put was not seen"
        assert {"put", "delete"} == {kind for kind, _, _ in seen}
        watch.stop()
        return {
            "events": len(seen),
            "reconnections": watch.reconnections,
            "caught_up_after_kill": round(_now() - killed_at, 3),
        }
    finally:
        await watcher.close()
        await writer.close()
        await baseline.settled()
        if freeze and victim is not None:
            victim.kill()  # SIGKILL ends a stopped process too


# -- runners ------------------------------------------------------------------


def _run(scenario: Callable[..., Awaitable[Any]], *args: Any) -> Deferred[Any]:
    # On the next reactor turn, once trial has set its own timeout call: the
    # scenario's baseline then includes it.
    d = deferLater(reactor, 0, lambda: None)
    return d.addCallback(lambda _: ensureDeferred(scenario(*args)))  # type: ignore[arg-type]


Scenario = Callable[[EtcdCluster], Awaitable[None]]
ONE_MEMBER: list[Scenario] = [
    operations,
    compaction,
    fail_over,
    unanswered_member,
    oversized_watch_message,
    authenticated,
]


@pytest.mark.parametrize("scenario", ONE_MEMBER, ids=lambda scenario: scenario.__name__)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_one_member(
    tmp_path: Path, scenario: Callable[[EtcdCluster], Awaitable[None]]
) -> None:
    with EtcdCluster.start(tmp_path) as cluster:
        await scenario(cluster)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_tls(tmp_path: Path) -> None:
    cluster, files = start_tls_cluster(tmp_path)
    with cluster:
        await tls(cluster, files)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_watched_member_killed(tmp_path: Path) -> None:
    with EtcdCluster.start(tmp_path, members=3) as cluster:
        print("watch across a killed member:", await watched_member_lost(cluster))


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_watched_member_frozen(tmp_path: Path) -> None:
    with EtcdCluster.start(tmp_path, members=3) as cluster:
        print("watch across a frozen member:", await watched_member_lost(cluster, freeze=True))


class ClientTrialTests(TestCase):
    """The same scenarios for ``python -m twisted.trial``; pytest skips this
    class (trial's reactor-spinning TestCase does not mix with pytest-twisted)."""

    __test__ = False

    def cluster(self, members: int = 1) -> EtcdCluster:
        cluster = EtcdCluster.start(members=members)
        self.addCleanup(cluster.stop)
        return cluster

    def test_operations(self) -> Deferred[Any]:
        return _run(operations, self.cluster())

    def test_compaction(self) -> Deferred[Any]:
        return _run(compaction, self.cluster())

    def test_fail_over(self) -> Deferred[Any]:
        return _run(fail_over, self.cluster())

    def test_unanswered_member(self) -> Deferred[Any]:
        return _run(unanswered_member, self.cluster())

    def test_oversized_watch_message(self) -> Deferred[Any]:
        return _run(oversized_watch_message, self.cluster())

    def test_authenticated(self) -> Deferred[Any]:
        return _run(authenticated, self.cluster())

    def test_tls(self) -> Deferred[Any]:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        cluster, files = start_tls_cluster(directory)
        self.addCleanup(cluster.stop)
        return _run(tls, cluster, files)

    def test_watched_member_killed(self) -> Deferred[Any]:
        return _run(watched_member_lost, self.cluster(3))

    def test_watched_member_frozen(self) -> Deferred[Any]:
        return _run(watched_member_lost, self.cluster(3), True)
